"""Test a trained CNN: accuracy, confusion matrix and per-class scores.

:func:`evaluate` (blocking twin of :func:`iter_evaluate`) scores a model on a
:class:`~.patches.PatchSet` (scikit-learn metrics) and returns an
:class:`Evaluation`, which saves to and loads from JSON;
:func:`confusion_figure` draws its confusion matrix into a PNG.  Whole-slice
maps are in :mod:`napari_brainfeatures.train.predict`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.cnn import BrainAreaCNN
from napari_brainfeatures.progress import ProgressGen, blocking
from napari_brainfeatures.train.bounds import BATCH_SIZE
from napari_brainfeatures.train.patches import PatchSet
from napari_brainfeatures.train.predict import iter_predict_proba
from napari_brainfeatures.train.recorded import chance_of, near_chance

__all__ = [
    "Evaluation",
    "evaluate",
    "iter_evaluate",
    "trained_with_flips",
    "confusion_figure",
    "plot_confusion",
]


@dataclass
class Evaluation:
    """Test scores of a model on labelled patches (class order = the model's outputs).

    Attributes
    ----------
    accuracy : float
    confusion : ndarray (K, K) int64
        Rows: true class; columns: predicted class.
    precision, recall, f1 : ndarray (K,) float64
    support : ndarray (K,) int64
        Patches of each true class.
    macro_f1 : float
        Mean F1 over the classes present (support > 0).
    class_names : list of str
    class_ids : list of int
    tta : bool
        Whether each patch was scored as the mean of its 8 flips/rotations
        (test-time augmentation) rather than once.
    """

    accuracy: float
    confusion: NDArray[np.int64]
    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    f1: NDArray[np.float64]
    support: NDArray[np.int64]
    macro_f1: float
    class_names: list[str]
    class_ids: list[int]
    tta: bool = False

    @property
    def n(self) -> int:
        """Number of patches scored."""
        return int(self.support.sum())

    @property
    def chance_level(self) -> float:
        """Accuracy of always guessing the most frequent test class."""
        return chance_of(self.support) or 0.0

    def warnings(self) -> list[str]:
        """What makes this model unfit to build on, in words (empty when nothing does).

        A test accuracy under twice the chance level (the most frequent class's
        share; ``1/K`` for balanced classes), and classes with test patches that
        the model never predicts.  Shown with the scores and carried by every
        later output made with the model.
        """
        out = []
        chance = self.chance_level
        if self.n and near_chance(self.accuracy, chance):
            out.append(
                f"test accuracy {self.accuracy:.1%} is near chance ({chance:.1%}): "
                "features and factors from this model mostly show texture, not areas"
            )
        never = [
            name
            for name, sup, col in zip(self.class_names, self.support, self.confusion.T, strict=True)
            if sup > 0 and col.sum() == 0
        ]
        if never:
            out.append(f"never predicted: {', '.join(never)}")
        return out

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{name: {"precision", "recall", "f1", "support"}}``."""
        return {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(
                self.class_names, self.precision, self.recall, self.f1, self.support, strict=True
            )
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "accuracy": float(self.accuracy),
            "macro_f1": float(self.macro_f1),
            "n": self.n,
            "class_names": list(self.class_names),
            "class_ids": [int(i) for i in self.class_ids],
            "tta": bool(self.tta),
            "chance_level": self.chance_level,
            "warnings": self.warnings(),
            "confusion": self.confusion.tolist(),
            "per_class": self.per_class(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evaluation:
        """Rebuild from :meth:`to_dict`."""
        try:
            names = list(d["class_names"])
            pc = d["per_class"]
            col = lambda k: np.array([pc[n][k] for n in names], np.float64)  # noqa: E731
            return cls(
                float(d["accuracy"]),
                np.asarray(d["confusion"], np.int64),
                col("precision"),
                col("recall"),
                col("f1"),
                col("support").astype(np.int64),
                float(d["macro_f1"]),
                names,
                [int(i) for i in d["class_ids"]],
                bool(d.get("tta", False)),
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"not an evaluation record: missing or bad {err}") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{path.name}")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Evaluation:
        """Read a JSON file written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(path)!r} is not valid JSON: {err}") from None
        return cls.from_dict(data)


def trained_with_flips(meta: dict[str, Any]) -> bool:
    """Whether a model's metadata says it was trained with the flip/rotation augmentation.

    The default for scoring with ``tta``: averaging over the 8 flips suits a
    network trained to be indifferent to them, not one trained without
    augmentation.  Models without a training record (e.g. imported) count as
    augmented, as the paper's were.
    """
    training = meta.get("training") if isinstance(meta, dict) else None
    return bool(training.get("augment", True)) if isinstance(training, dict) else True


def _scores(y: NDArray[np.int64], pred: NDArray[np.int64], classes: ClassTable) -> Evaluation:
    k = len(classes)
    labels = np.arange(k)
    cm = confusion_matrix(y, pred, labels=labels).astype(np.int64)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    present = s > 0
    return Evaluation(
        float((y == pred).mean()) if len(y) else float("nan"),
        cm,
        p.astype(np.float64),
        r.astype(np.float64),
        f.astype(np.float64),
        s.astype(np.int64),
        float(f[present].mean()) if present.any() else float("nan"),
        classes.names,
        classes.ids,
    )


def iter_evaluate(
    model: BrainAreaCNN,
    patches: PatchSet,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    classes: ClassTable | None = None,
    tta: bool = True,
) -> ProgressGen[Evaluation]:
    """Accuracy, confusion matrix and per-class precision/recall/F1 on ``patches``.

    Parameters
    ----------
    model : BrainAreaCNN
    patches : PatchSet
        Labelled patches (usually unrestricted test patches).
    batch_size : int
        Patches per forward pass; default 64.
    device : str or torch.device, optional
        Default: where the model is.
    classes : ClassTable, optional
        The model's classes in output order; default ``patches.classes``.
    tta : bool
        Score each patch as the mean of its 8 flips/rotations (default), the
        symmetries of the training augmentation; ``False`` scores it once (use
        :func:`trained_with_flips` on the model's metadata to choose).

    Returns
    -------
    Evaluation

    Yields
    ------
    Progress
        One per batch.
    """
    batch_size = BATCH_SIZE.check("batch_size", batch_size)
    classes = classes or patches.classes
    if len(classes) != model.config.n_classes:
        raise ValueError(
            f"{len(classes)} classes given for a model with {model.config.n_classes} outputs; "
            "pass the model's class table"
        )
    lut = {cid: k for k, cid in enumerate(classes.ids)}
    unknown = sorted({int(v) for v in np.unique(patches.labels)} - set(lut))
    if unknown:
        raise ValueError(f"patch labels {unknown!r} are not classes of the model {classes.ids!r}")
    y = np.array([lut[int(v)] for v in patches.labels], np.int64)
    probs = yield from iter_predict_proba(
        model, patches.patches, batch_size=batch_size, device=device, tta=tta
    )
    ev = _scores(y, probs.argmax(1), classes)
    ev.tta = bool(tta)
    return ev


evaluate = blocking(iter_evaluate)


def plot_confusion(evaluation: Evaluation, ax: Any, *, normalise: bool = True) -> Any:
    """Draw the confusion matrix (rows true, columns predicted) into a matplotlib Axes."""
    cm = evaluation.confusion.astype(np.float64)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalise else cm
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalise else None)
    names = evaluation.class_names
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {evaluation.accuracy:.1%}, macro F1 {evaluation.macro_f1:.3f}")
    top = shown.max() if shown.size else 1
    for (i, j), v in np.ndenumerate(shown):
        txt = f"{v:.2f}" if normalise else f"{int(v)}"
        ax.text(
            j,
            i,
            txt,
            ha="center",
            va="center",
            fontsize=7,
            color="white" if v > 0.6 * top else "black",
        )
    return im


def confusion_figure(
    evaluation: Evaluation, path: str | os.PathLike[str], *, normalise: bool = True, dpi: int = 120
) -> Path:
    """Write the confusion matrix as a PNG (Agg canvas, no pyplot state); returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.2 + 0.7 * len(evaluation.class_names),) * 2, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.colorbar(plot_confusion(evaluation, ax, normalise=normalise), ax=ax, shrink=0.8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
