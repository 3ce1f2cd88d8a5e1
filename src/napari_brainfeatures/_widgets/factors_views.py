"""What the Factors dock shows: the score table as fractions, one heatmap at a time, legends.

* :func:`fill_scores` writes coverage and leakage as fractions of each ROI (the
  raw counts and the score in each cell's tooltip), colours the picks (green)
  and weak picks (amber) and returns the status text that names them.
* :func:`one_at_a_time` makes the factor heatmaps behave as one choice: showing
  one hides the others, so a factor is read alone with its colour bar.
* :func:`rgb_legend` says which factor (and ROI) each colour of the composite
  is, on the canvas, while the composite is shown.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtGui import QColor
from qtpy.QtWidgets import QAbstractScrollArea, QSizePolicy

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.factors.select import WEAK_COVERAGE, Selection

__all__ = ["HEADER_TIP", "fill_scores", "one_at_a_time", "rgb_legend", "roi_names"]

PICK, WEAK = "#2e7d32", "#b26a00"
_HOOKED: weakref.WeakSet[Any] = weakref.WeakSet()  # heatmaps already connected
_LEGENDS: weakref.WeakSet[Any] = weakref.WeakSet()  # RGB layers already connected
HEADER_TIP = (
    "Each cell: coverage/leakage of factor F for the ROI, as fractions of the ROI's size.\n"
    "coverage: share of the ROI where the factor is active;\n"
    "leakage: active pixels outside the ROI per ROI pixel (before λ).\n"
    "score = coverage − λ·leakage (in pixels); the greedy rule picks the highest scores.\n"
    f"green: picked; amber: a weak pick (score ≤ 0 or coverage < {WEAK_COVERAGE:.0%})."
)


def _share(v: float) -> str:
    """A fraction of the ROI's size: a percentage up to twice it, then a multiple."""
    return f"{v:.0%}" if v <= 2 else f"{v:.0f}x"


def fill_scores(table: Any, sel: Selection, names: dict[int, str]) -> str:
    """Fill ``table`` (magicgui Table) with ``sel``'s fractions; return the status text."""
    cover, leak = sel.fractions()  # (k, r) each
    table.value = {
        "data": [
            [f"{c:.0%}/{_share(lk)}" for c, lk in zip(crow, lrow, strict=True)]
            for crow, lrow in zip(cover, leak, strict=True)
        ],
        "index": [f"F{i}" for i in range(cover.shape[0])],
        "columns": [names[a] for a in sel.roi_ids],
    }
    q = table.native
    q.resizeColumnsToContents()
    # a wide table scrolls inside the dock instead of widening it over the canvas
    q.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustIgnored)
    q.setSizePolicy(QSizePolicy.Policy.Ignored, q.sizePolicy().verticalPolicy())
    q.setToolTip(HEADER_TIP)
    for i in range(cover.shape[0]):
        for j, a in enumerate(sel.roi_ids):
            item = q.item(i, j)
            if item is not None:
                item.setToolTip(
                    f"F{i} for {names[a]}: active on {int(sel.coverage[i, j])} of "
                    f"{sel.roi_sizes[j]} ROI px and {int(sel.leakage[i, j])} px outside; "
                    f"score {sel.scores[i, j]:.4g} px"
                )
    weak = {(f, a): why for f, a, why in sel.weak_picks()}
    for f, a, _ in sel.pairs:
        item = q.item(f, sel.roi_ids.index(a))
        if item is not None:
            item.setBackground(QColor(WEAK if (f, a) in weak else PICK))
    picks = ", ".join(
        f"F{f}→{names[a]} ({c:.0%} covered)"
        for (f, a, _), c in zip(sel.pairs, sel.coverage_fraction, strict=True)
    )
    text = f"selected: {picks or 'none'} (cells: coverage/leakage of the ROI; tooltip)"
    if weak:
        text += "\nweak picks, not to be read as the area's factor: " + "; ".join(
            f"F{f}→{names[a]}: {why}" for (f, a), why in weak.items()
        )
    return text


def one_at_a_time(heatmaps: Callable[[], list[Any]], layer: Any) -> None:
    """Connect ``layer`` so that showing it hides the other ``heatmaps()`` (once per layer)."""
    if layer in _HOOKED:
        return

    def _shown(_event: Any) -> None:
        if not layer.visible:
            return
        for other in heatmaps():
            if other is not layer and other.visible:
                other.visible = False

    layer.events.visible.connect(_shown)
    _HOOKED.add(layer)


def rgb_legend(viewer: Any, layer: Any, channels: list[str]) -> None:
    """Say on the canvas which factor each colour of the RGB ``layer`` is, while it shows."""
    text = viewer.canvas.overlays.text
    text.text = "NMF RGB  " + "  ".join(
        f"{c}: {name}" for c, name in zip("RGB", channels, strict=True)
    )
    text.position = "top_left"
    text.color = "white"

    def _follow(_event: Any = None) -> None:
        text.visible = layer.visible and layer in viewer.layers

    if layer not in _LEGENDS:  # one connection per layer
        layer.events.visible.connect(_follow)
        viewer.layers.events.removed.connect(_follow)
        _LEGENDS.add(layer)
    _follow()


def roi_names(layer: Any, ids: Any) -> dict[int, str]:
    """ROI id -> the class name in the labels layer's metadata (``"ROI n"`` without one)."""
    names = {int(a): f"ROI {a}" for a in ids}
    raw = getattr(layer, "metadata", {}).get("classes")
    if isinstance(raw, dict):
        try:
            table = ClassTable.from_dict(raw)
        except (KeyError, TypeError, ValueError):
            return names
        names.update({c.id: c.name for c in table if c.id in names})
    return names
