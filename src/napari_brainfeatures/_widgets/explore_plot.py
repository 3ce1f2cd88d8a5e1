"""The density plot of the Explore dock: a matplotlib canvas with a lasso and a rectangle.

:class:`DensityPlot` shows a :class:`~..explore.density.Density` as an image (log
counts, or a colour per bin: the majority class or cluster, the mean of a factor),
draws the current selection's bins over it, and reports a lasso (vertices) or a
rectangle (two corners) drawn on it to ``on_select``.  The plot is one imshow of
``bins × bins`` pixels however many points there are.  The highlight is an animated
artist blitted over the last full draw: a new selection redraws the axes' pixels
only, not the figure's layout, ticks and colour bar (a full draw takes 100-300 ms).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.widgets import LassoSelector, RectangleSelector
from qtpy.QtWidgets import QSizePolicy

from napari_brainfeatures.classes import on_white
from napari_brainfeatures.explore.density import Density

TOOLS = ("lasso", "rectangle")
_HIGHLIGHT = ListedColormap([(0.0, 0.0, 0.0, 0.0), (0.0, 1.0, 1.0, 0.75)])  # clear, cyan


class DensityPlot(FigureCanvasQTAgg):
    """A 2-D histogram on a matplotlib canvas, with a lasso or rectangle selector.

    Parameters
    ----------
    on_select : callable
        Called with ``("lasso", vertices (M, 2))`` or ``("rectangle", ((x0, x1), (y0, y1)))``
        in plot coordinates when a selection is drawn.
    """

    def __init__(self, on_select: Callable[[str, Any], Any]) -> None:
        self.figure = Figure(figsize=(4, 4), dpi=90, layout="constrained")
        super().__init__(self.figure)
        self.setMinimumHeight(320)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.ax = self.figure.add_subplot()
        self.on_select = on_select
        self.density: Density | None = None
        self._base: Any = None
        self._overlay: Any = None
        self._selector: Any = None
        self._background: Any = None  # the axes' pixels of the last full draw
        self.tool = "lasso"
        self.mpl_connect("draw_event", self._drawn)
        self.ax.set_title("open a feature store or factors, then Plot", fontsize=9)

    # -- drawing -------------------------------------------------------------------------
    def show(  # type: ignore[override]
        self,
        dens: Density,
        colour: np.ndarray | None = None,
        *,
        kind: str = "",
        key: dict[int, tuple[str, str]] | None = None,
    ) -> None:
        """Show ``dens``: log counts, or ``colour`` ``(bins, bins)`` (labels or values) per bin.

        ``kind`` "labels": ``colour`` holds ids (0: empty), shown categorical with a
        legend: ``key`` maps an id to its name and colour (a class table's), else
        ids are "cluster N" in matplotlib's ten colours.  Otherwise values.
        """
        self.density = dens
        if self._selector is not None:
            self._selector.disconnect_events()
            self._selector = None
        self.figure.clear()  # the old colour bar too
        self.ax = self.figure.add_subplot()
        self._overlay, self._background = None, None
        x0, x1, y0, y1 = dens.extent
        kw = {"origin": "lower", "extent": (x0, x1, y0, y1), "aspect": "auto"}
        log = np.log1p(dens.counts.astype(np.float32))
        if colour is None:
            self._base = self.ax.imshow(np.ma.masked_equal(log, 0), cmap="magma", **kw)
            self.figure.colorbar(self._base, ax=self.ax, label="log(1 + points)", shrink=0.8)
        else:
            alpha = np.clip(log / max(float(log.max()), 1e-6), 0.15, 1.0) * (dens.counts > 0)
            if kind == "labels":
                rgba, names = _categorical(colour, key)
                rgba[..., 3] = alpha * (colour > 0)  # bins whose majority is no class: clear
                self._base = self.ax.imshow(rgba, interpolation="nearest", **kw)
                handles = [Patch(color=c, label=n) for n, c in names]
                self.ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.7)
            else:
                self._base = self.ax.imshow(colour, cmap="viridis", **kw)
                self.figure.colorbar(self._base, ax=self.ax, shrink=0.8)
                self._base.set_alpha(alpha)
        self.ax.set_xlabel(dens.points.axes[0])
        self.ax.set_ylabel(dens.points.axes[1])
        self.ax.set_title(f"{len(dens.points):,} points in {dens.bins}² bins", fontsize=9)
        self.set_tool(self.tool)
        self.draw_idle()

    def highlight(self, counts: np.ndarray | None) -> None:
        """Outline the bins with selected points (``counts`` ``(bins, bins)``; None: clear)."""
        if self.density is None:
            return
        if counts is None:
            if self._overlay is not None:
                self._overlay.set_visible(False)
            self._blit()
            return
        data = (np.asarray(counts) > 0).astype(np.uint8)
        if self._overlay is None:
            x0, x1, y0, y1 = self.density.extent
            self._overlay = self.ax.imshow(
                data, cmap=_HIGHLIGHT, vmin=0, vmax=1, origin="lower", extent=(x0, x1, y0, y1),
                aspect="auto", interpolation="nearest", animated=True,
            )  # fmt: skip
        else:
            self._overlay.set_data(data)
        self._overlay.set_visible(True)
        self._blit()

    def _drawn(self, _event: Any) -> None:
        """After a full draw: keep its pixels, then put the highlight back over them."""
        self._background = self.copy_from_bbox(self.figure.bbox)
        if self._overlay is not None and self._overlay.get_visible():
            self.ax.draw_artist(self._overlay)

    def _blit(self) -> None:
        """Show the highlight over the kept pixels (a full draw when none are kept yet)."""
        if self._background is None:
            self.draw_idle()  # _drawn adds the highlight
            return
        self.restore_region(self._background)
        if self._overlay is not None and self._overlay.get_visible():
            self.ax.draw_artist(self._overlay)
        # the canvas's buffer now holds the picture: paint it with the window's next paint
        # (blit() repaints at once, and a repaint takes the whole window, viewer included)
        self.update()

    # -- selecting -----------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        """Draw selections with ``"lasso"`` or ``"rectangle"``."""
        if tool not in TOOLS:
            raise ValueError(f"tool must be one of {TOOLS!r}, got {tool!r}")
        self.tool = tool
        if self._selector is not None:
            self._selector.set_active(False)
            self._selector.disconnect_events()
        if tool == "lasso":
            self._selector = LassoSelector(self.ax, self._lasso, useblit=True)
        else:
            self._selector = RectangleSelector(self.ax, self._rect, useblit=True, interactive=False)

    def _lasso(self, vertices: Any) -> None:
        if len(vertices) >= 3:
            self.on_select("lasso", np.asarray(vertices, dtype=float))

    def _rect(self, press: Any, release: Any) -> None:
        xs, ys = (press.xdata, release.xdata), (press.ydata, release.ydata)
        if None not in xs + ys and xs[0] != xs[1] and ys[0] != ys[1]:
            self.on_select("rectangle", (xs, ys))


def _categorical(
    ids: np.ndarray, key: dict[int, tuple[str, str]] | None
) -> tuple[np.ndarray, list[tuple[str, Any]]]:
    """RGBA ``(bins, bins, 4)`` of the ids (0: clear) and the legend's (name, colour) rows."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba

    present = [int(i) for i in np.unique(ids) if i > 0]
    tab = colormaps["tab10"]
    rows = {i: key[i] if key and i in key else (f"cluster {i}", tab((i - 1) % 10)) for i in present}
    rgba = np.zeros((*ids.shape, 4), np.float32)
    rows = {i: (name, on_white(c) if isinstance(c, str) else c) for i, (name, c) in rows.items()}
    for i, (_, c) in rows.items():
        rgba[ids == i] = to_rgba(c)
    return rgba, list(rows.values())
