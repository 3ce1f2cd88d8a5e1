"""What the Train dock shows: patch centres, predicted areas, training curves, test scores.

Plain functions of the viewer, a figure or a table and a core result, so that
:mod:`napari_brainfeatures._widgets.train` keeps to its controls and actions.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from napari.utils.colormaps import DirectLabelColormap

from napari_brainfeatures._widgets._display import OWNER_KEY
from napari_brainfeatures.train.evaluation import Evaluation, plot_confusion
from napari_brainfeatures.train.predict import SlicePrediction
from napari_brainfeatures.train.splits import Splits

POINTS_LAYER, AREAS_LAYER, CONFIDENCE_LAYER = "patch centres", "predicted areas", "confidence"


def _replace(viewer: napari.viewer.Viewer, *names: str) -> None:
    for name in names:
        if name in viewer.layers:
            viewer.layers.remove(name)


def show_patch_centres(viewer: napari.viewer.Viewer, image: Any, splits: Splits) -> int:
    """A Points layer of every patch centre, coloured by class, on ``image``'s grid.

    Returns the number of patches.
    """
    parts = (splits.train, splits.val, splits.test)
    centres = np.concatenate([p.centres for p in parts])  # (N, 3): z, y, x
    if image.ndim == 2:  # a single section added as a 2-D image
        centres = centres[:, 1:]
    rgba = {c.id: c.rgba for c in splits.train.classes}
    colours = np.array([rgba[int(i)] for p in parts for i in p.labels])  # (N, 4)
    _replace(viewer, POINTS_LAYER)
    # a white rim: class-coloured dots would vanish on the same colour of painted labels
    viewer.add_points(
        centres,
        name=POINTS_LAYER,
        face_color=colours,
        size=8,
        border_color="white",
        border_width=0.2,
        scale=image.scale,
        translate=image.translate,
        units=image.units,
    )
    return len(centres)


def counts_text(splits: Splits) -> str:
    """One line per split: ``train: Ctx 12, WM 12``."""
    names = {c.id: c.name for c in splits.train.classes}
    return "\n".join(
        f"{split}: " + ", ".join(f"{names[c]} {n}" for c, n in counts.items())
        for split, counts in splits.counts().items()
    )


def plot_history(
    figure: Figure, history: list[dict[str, float]], *, chance: float | None = None
) -> None:
    """Loss and accuracy per epoch, training and validation, side by side.

    ``chance``: the accuracy of always guessing the largest class, drawn as a
    dashed line so that a curve near it reads as a model that learnt nothing.
    """
    figure.clear()
    loss, acc = figure.subplots(1, 2)
    if history:
        ep = [h["epoch"] for h in history]
        for key, ax in (("loss", loss), ("acc", acc)):
            ax.plot(ep, [h[f"train_{key}"] for h in history], ".-", label="train")
            ax.plot(ep, [h[f"val_{key}"] for h in history], ".-", label="val")
        if chance is not None:
            acc.axhline(chance, color="grey", ls="--", lw=1, label=f"chance {chance:.0%}")
        acc.legend(fontsize=7)
    loss.set_title("loss", fontsize=8)
    acc.set_title("accuracy", fontsize=8)
    for ax in (loss, acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs: 1, 2, not 1.5
        ax.set_xlabel("epoch", fontsize=7)
        if history:  # one epoch: a readable axis around it, not 0.96 … 1.04
            ax.set_xlim(0.5, history[-1]["epoch"] + 0.5)
    figure.canvas.draw_idle()


def score_row(d: dict[str, Any], predicted: bool = True) -> list[Any]:
    """Precision, recall, F1 and n of one class; "n/a" where a score has no patches to count.

    With no test patches of the class (n = 0) its recall and F1 are undefined, and so
    is its precision when nothing was called that class either: 0.0 there would read
    as a class the network always misses.
    """
    n = int(d.get("support") or 0)
    na = "n/a"
    precision = round(float(d["precision"]), 3) if predicted else na
    if not n:
        return [precision, na, na, 0]
    return [precision, round(float(d["recall"]), 3), round(float(d["f1"]), 3), n]


def show_evaluation(table: Any, figure: Figure, ev: Evaluation) -> str:
    """Per-class scores into ``table``, the confusion matrix into ``figure``; a summary line."""
    per = ev.per_class()
    predicted = np.asarray(ev.confusion).sum(0)  # (K,) patches called each class
    rows = [score_row(d, bool(n)) for d, n in zip(per.values(), predicted, strict=True)]
    table.value = {"data": rows, "index": list(per), "columns": ["precision", "recall", "F1", "n"]}
    figure.clear()
    plot_confusion(ev, figure.add_subplot())
    figure.canvas.draw_idle()
    views = " (mean of 8 flips)" if ev.tta else ""
    text = (
        f"test accuracy {ev.accuracy:.1%} (chance {ev.chance_level:.1%}), "
        f"macro F1 {ev.macro_f1:.3f}{views}"
    )
    return text + "".join(f"\nWARNING: {w}" for w in ev.warnings())


def on_slice(image: Any, z: int) -> dict[str, Any]:
    """``scale``, ``translate``, ``units`` of a layer at slice ``z`` of ``image``.

    The layer's data is :func:`slice_data`: ``(1, Y, X)`` on a volume, ``(Y, X)``
    on a 2-D image (a single section added as such).
    """
    scale, translate = tuple(image.scale), tuple(image.translate)
    if image.ndim == 3:
        translate = (translate[0] + z * scale[0], *translate[1:])
    return {"scale": scale, "translate": translate, "units": image.units}


def slice_data(image: Any, arr: Any) -> Any:
    """A ``(Y, X)`` map as the data of an :func:`on_slice` layer of ``image``."""
    return arr[None] if image.ndim == 3 else arr


def show_slice(viewer: napari.viewer.Viewer, image: Any, pred: SlicePrediction, z: int) -> None:
    """Predicted-area (labels) and confidence (image, hidden) layers at slice ``z`` of ``image``."""
    geo = on_slice(image, z)
    _replace(viewer, AREAS_LAYER, CONFIDENCE_LAYER)
    viewer.add_image(
        slice_data(image, pred.confidence),
        name=CONFIDENCE_LAYER,
        metadata={OWNER_KEY: "Train CNN"},  # a dock's continuous map: it gets a colour bar
        colormap="viridis",
        contrast_limits=(0, 1),
        visible=False,
        **geo,
    )
    areas = viewer.add_labels(
        slice_data(image, pred.areas),
        name=AREAS_LAYER,
        opacity=0.8,
        colormap=DirectLabelColormap(color_dict=pred.classes.color_dict()),
        **geo,
    )
    areas.contour = 2  # outlines: painted labels under it stay readable in the same colours
