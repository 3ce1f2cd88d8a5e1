"""Test a trained CNN: accuracy, confusion matrix, per-class scores, slice maps.

:func:`evaluate` scores a model on a :class:`~.patches.PatchSet` (scikit-learn
metrics) and returns an :class:`Evaluation`, which saves to and loads from
JSON; :func:`confusion_figure` draws its confusion matrix into a PNG.
:func:`predict_slice` (a progress generator) classifies a whole 2-D slice on a
grid of patch centres and returns the predicted-area and confidence maps at
full resolution.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.checkpoint import device_of
from napari_brainfeatures.models.cnn import BrainAreaCNN, to_input
from napari_brainfeatures.progress import Progress, ProgressGen
from napari_brainfeatures.progress import run as run_gen
from napari_brainfeatures.train.patches import PatchSet

__all__ = [
    "Evaluation",
    "SlicePrediction",
    "evaluate",
    "iter_evaluate",
    "predict_proba",
    "predict_slice",
    "slice_accuracy",
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


def _model_device(model: BrainAreaCNN, device: str | torch.device | None) -> torch.device:
    dev = device_of(str(device)) if device else next(model.parameters()).device
    model.to(dev).eval()
    return dev


def trained_with_flips(meta: dict[str, Any]) -> bool:
    """Whether a model's metadata says it was trained with the flip/rotation augmentation.

    The default for scoring with ``tta``: averaging over the 8 flips suits a
    network trained to be indifferent to them, not one trained without
    augmentation.  Models without a training record (e.g. imported) count as
    augmented, as the paper's were.
    """
    training = meta.get("training") if isinstance(meta, dict) else None
    return bool(training.get("augment", True)) if isinstance(training, dict) else True


@contextmanager
def _channels_last(model: BrainAreaCNN) -> Iterator[None]:
    """Run ``model`` channels-last (~1.8x faster convolutions on a CPU, same values).

    Restores the contiguous layout afterwards; inside another such block (or
    for a model already channels-last) it changes nothing.
    """
    w = model.convs[-1].weight  # (O, I, k, k) with I > 1: the two layouts differ
    if w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous():
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def _dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips/rotations of the square of ``x`` ``(B, C, P, P)``."""
    turns = [torch.rot90(x, k, (-2, -1)) for k in range(4)]
    return turns + [t.transpose(-1, -2) for t in turns]


def iter_predict_proba(
    model: BrainAreaCNN,
    patches: NDArray[Any],
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    scale: float | None = None,
    tta: bool = False,
) -> ProgressGen[NDArray[np.float32]]:
    """Softmax probabilities ``(N, K)`` of raw patches ``(N, P, P)``, yielding per batch.

    With ``tta`` each patch's probabilities are the mean over its 8
    flips/rotations (the symmetries the network was trained with): 8x the
    work, about 1.5 points of test accuracy on the synthetic sample.
    """
    if patches.ndim != 3 or patches.shape[1:] != (model.config.patch_size,) * 2:
        raise ValueError(
            f"patches must be (N, {model.config.patch_size}, {model.config.patch_size}) for "
            f"this model, got shape {patches.shape!r}"
        )
    dev = _model_device(model, device)
    out = np.zeros((len(patches), model.config.n_classes), np.float32)
    n = len(patches)
    cl = torch.channels_last
    with _channels_last(model):
        for i in range(0, n, int(batch_size)):
            x = to_input(
                np.ascontiguousarray(patches[i : i + batch_size]),
                scale=scale,
                in_channels=model.config.in_channels,
                device=dev,
            )  # (B, C, P, P)
            views = _dihedral(x) if tta else [x]
            with torch.inference_mode():
                p = sum(
                    torch.softmax(model(v.contiguous(memory_format=cl)), 1).float() for v in views
                )  # (B, K)
                out[i : i + len(x)] = (p / len(views)).cpu().numpy()
            yield Progress(min(i + batch_size, n), n, f"patches {min(i + batch_size, n)}/{n}")
    return out


def predict_proba(model: BrainAreaCNN, patches: NDArray[Any], **kw: Any) -> NDArray[np.float32]:
    """Softmax probabilities ``(N, K)``; see :func:`iter_predict_proba`."""
    return run_gen(iter_predict_proba(model, patches, **kw))


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
    """:func:`evaluate` as a progress generator (one record per batch)."""
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


def evaluate(
    model: BrainAreaCNN,
    patches: PatchSet,
    *,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    classes: ClassTable | None = None,
    tta: bool = True,
) -> Evaluation:
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
    """
    return run_gen(
        iter_evaluate(
            model, patches, batch_size=batch_size, device=device, classes=classes, tta=tta
        )
    )


@dataclass
class SlicePrediction:
    """Per-pixel maps of :func:`predict_slice` (``(H, W)`` each).

    ``areas``: predicted class id (0 where no full patch fits); ``confidence``:
    the top softmax probability (NaN there); ``stride``; ``classes``.
    """

    areas: NDArray[np.int32]
    confidence: NDArray[np.float32]
    stride: int
    classes: ClassTable


def predict_slice(
    model: BrainAreaCNN,
    image2d: Any,
    *,
    stride: int = 16,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    classes: ClassTable | None = None,
) -> ProgressGen[SlicePrediction]:
    """Classify the patch centred on every ``stride``-th pixel of a 2-D slice.

    Each pixel takes the prediction of the nearest grid centre (nearest-neighbour
    upsampling aligned to the centres); pixels whose own patch would leave the
    image (within ``P // 2`` of the top/left edge, ``P - P // 2 - 1`` of the
    bottom/right) get area 0 and confidence NaN.

    Parameters
    ----------
    model : BrainAreaCNN
    image2d : array-like (H, W)
        Raw slice (uint8 for micro-CT); numpy, zarr or dask.
    stride : int
        Distance between classified centres in pixels; default 16.
    batch_size : int
        Default 256.
    device : str or torch.device, optional
    classes : ClassTable, optional
        Ids to write into ``areas``; default ids 1..K.

    Yields
    ------
    Progress
        One per batch.

    Returns
    -------
    SlicePrediction
    """
    img = np.asarray(image2d.compute() if hasattr(image2d, "compute") else image2d)
    p, k = model.config.patch_size, model.config.n_classes
    if img.ndim != 2:
        raise ValueError(f"image2d must be 2-D (H, W), got shape {img.shape!r}")
    if min(img.shape) < p:
        raise ValueError(f"slice {img.shape!r} is smaller than the {p} px patch")
    if int(stride) < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    classes = classes or ClassTable.from_names([f"class{i + 1}" for i in range(k)])
    if len(classes) != k:
        raise ValueError(f"{len(classes)} classes for a model with {k} outputs")
    stride, half = int(stride), p // 2
    (h, w), ny, nx = img.shape, (img.shape[0] - p) // stride + 1, (img.shape[1] - p) // stride + 1
    view = np.lib.stride_tricks.sliding_window_view(img, (p, p))[::stride, ::stride]  # (ny,nx,P,P)
    probs = np.zeros((ny * nx, k), np.float32)
    n, bs = ny * nx, int(batch_size)
    with _channels_last(model):  # once for the slice, not per batch
        for i in range(0, n, bs):
            gy, gx = np.divmod(np.arange(i, min(i + bs, n)), nx)
            batch = view[gy, gx]  # (B, P, P): only this batch is copied
            probs[i : i + bs] = predict_proba(model, batch, batch_size=bs, device=device)
            yield Progress(min(i + bs, n), n, f"patches {min(i + bs, n)}/{n}")
    ids = np.asarray(classes.ids, np.int32)
    grid_area = ids[probs.argmax(1)].reshape(ny, nx)
    grid_conf = probs.max(1).reshape(ny, nx)
    areas = np.zeros((h, w), np.int32)
    conf = np.full((h, w), np.nan, np.float32)
    ys, xs = np.arange(half, h - p + half + 1), np.arange(half, w - p + half + 1)
    iy = np.clip(np.rint((ys - half) / stride).astype(int), 0, ny - 1)
    ix = np.clip(np.rint((xs - half) / stride).astype(int), 0, nx - 1)
    areas[ys[:, None], xs] = grid_area[iy[:, None], ix]
    conf[ys[:, None], xs] = grid_conf[iy[:, None], ix]
    return SlicePrediction(areas, conf, stride, classes)


def slice_accuracy(pred: SlicePrediction, labels2d: Any) -> float:
    """Share of labelled pixels (label > 0, with a prediction) predicted correctly."""
    lab = np.asarray(labels2d)
    if lab.shape != pred.areas.shape:
        raise ValueError(f"labels {lab.shape!r} do not match the prediction {pred.areas.shape!r}")
    m = (lab > 0) & (pred.areas > 0)
    return float((lab[m] == pred.areas[m]).mean()) if m.any() else float("nan")


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
