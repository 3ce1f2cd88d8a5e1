"""The Explore dock's live classifier: paint strokes, it retrains and repaints the view.

**Start** adds a "live strokes" Labels layer over the image.  Every stroke (and every
pan or zoom) asks for an update: a worker reads the stored features of the visible
region once per view, refits the :class:`~..explore.live.LiveClassifier` on the
features under the strokes and predicts the region; the GUI thread only copies the
strokes and swaps the "live prediction" and "live uncertainty" layers' data.  Strokes
painted while a fit runs are taken by the next one.  **Stop** ends it, **Keep**
leaves the last prediction as layers of their own, **Save** writes the classifier
with its strokes to the workspace's ``models/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import Container, PushButton, SpinBox
from napari.layers import Image
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from threadpoolctl import threadpool_limits

from napari_brainfeatures._widgets._common import (
    OWNER_KEY,
    OWNER_TAG,
    put_layer,
    say_file,
    status_label,
    workspace_root,
)
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures.explore.live import (
    CONTEXT_PX,
    LiveResult,
    LiveSession,
    OneClassError,
    save_live_model,
)
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.models.checkpoint import ModelFileError
from napari_brainfeatures.progress import Progress, ProgressGen

STROKES, PREDICTION, UNCERTAINTY = "live strokes", "live prediction", "live uncertainty"
# 2-D overlays need no depth test, and without it a software-rendered frame is ~10 ms
# shorter for each of the two full-view layers (Labels default to depth-tested blending)
FLAT = "translucent_no_depth"
MAX_VIEW = 2048  # grid points per side predicted at most (the view's centre beyond that)


class LivePanel(Container):
    """Start / Stop / Keep / Save for a live classifier on the explored slice.

    ``source`` returns the slice's grid (with features), the image layer it is shown
    over (or None) and a mask on the grid to predict within (or None: everywhere).
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, source: Callable[[], tuple[Any, Image | None, Any]]
    ) -> None:
        self.viewer, self.source = viewer, source
        self.start_button = PushButton(text="Start live classifier")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.keep_button = PushButton(text="Keep prediction")
        self.save_button = PushButton(text="Save model…")
        self.context = SpinBox(
            label="context (image px)", min=0, max=1024, value=int(CONTEXT_PX),
            tooltip="The classifier also sees the features' mean over about this many "
            "pixels around each pixel (0: the pixel's own features only).",
        )  # fmt: skip
        self.status = status_label("Start, then paint strokes of two or more new classes.")
        self.runner = TaskRunner(bar=False)  # refits many times a second: no bar to repaint
        buttons = Container(
            layout="horizontal",
            widgets=[self.start_button, self.stop_button, self.keep_button, self.save_button],
        )
        buttons.margins = (0, 0, 0, 0)
        super().__init__(widgets=[self.context, buttons, self.status, self.runner])
        self.start_button.changed.connect(self.start)
        self.stop_button.changed.connect(self.stop)
        self.keep_button.changed.connect(self.keep)
        self.save_button.changed.connect(self.save)
        self.session: LiveSession | None = None
        self.strokes: Any = None
        self.image: Image | None = None
        self.result: LiveResult | None = None
        self.latency_s: list[float] = []  # stroke end -> prediction shown, per update
        self._asked: float | None = None  # when the pending update was asked for
        self._dirty = False
        self._pending = False  # a launch waits for the event loop's next turn
        self._hidden_unc: tuple[np.ndarray, dict[str, Any]] | None = None  # for a hidden layer
        self._unc_layer: Any = None  # the uncertainty layer whose showing we follow
        self._watching = False  # connected to the camera's events
        self._view_timer = QTimer()
        self._view_timer.setSingleShot(True)
        self._view_timer.setInterval(300)  # pan/zoom settles, then one update
        self._view_timer.timeout.connect(self.request)

    # -- starting and stopping ---------------------------------------------------------------
    def start(self, *_: Any) -> None:
        """Add the strokes layer and update after every stroke."""
        grid, image, within = self.source()
        if grid is None or grid.features is None:
            show_error(
                "Live classifier: it needs the feature store's features; open a feature "
                "store (or factors whose store is still there) and press Plot first."
            )
            return
        self.stop()
        context = float(self.context.value)
        self.session = LiveSession(grid, within=within, context_px=context)
        self.image, self.result = image, None
        plane = grid.image_shape[-2:] if grid.image_shape else None
        if plane is None:
            (h, w), (oy, ox), (sy, sx) = grid.shape, grid.origin, grid.step
            plane = (oy + sy * h, ox + sx * w)
        geo = self._geometry(FeatureGrid(tuple(plane), z=grid.z))
        data = np.zeros((1, *plane) if len(geo["scale"]) == 3 else tuple(plane), np.uint8)
        # the prediction's layers now, under the strokes, as the first update will fill
        # them: adding a layer takes a few hundred ms, and a new shape or scale a
        # new texture, which the first stroke's update would otherwise stall on
        try:
            box = self.visible_box()
            first = self.session.region_grid(box, self.thin_for(box))
        except ValueError:  # the view is off the store: the first update says so
            first = FeatureGrid(tuple(plane), z=grid.z)
        pgeo = self._geometry(first)
        shape = (1, *first.shape) if len(pgeo["scale"]) == 3 else first.shape
        self._put_maps(np.zeros(shape, np.uint8), np.full(shape, np.nan, np.float32), pgeo)
        self.strokes = put_layer(
            self.viewer, STROKES, data, "labels", owner="explore", blending=FLAT, **geo
        )
        self.strokes.data[...] = 0  # a layer kept from a last run starts clean
        self.strokes.refresh()
        self.strokes.brush_size = 6
        self.strokes.selected_label = 1
        self.strokes.mode = "paint"
        self.viewer.layers.selection.active = self.strokes
        self.strokes.events.paint.connect(self.request)
        self.strokes.events.data.connect(self.request)
        if not self._watching:
            _camera(self.viewer).events.center.connect(self._view_changed)
            _camera(self.viewer).events.zoom.connect(self._view_changed)
            self._watching = True
        self.stop_button.enabled, self.start_button.enabled = True, False
        self.status.value = (
            "Paint label 1 on one kind of tissue, label 2 on another (more labels: more "
            "classes); the prediction follows each stroke."
        )
        self._launch()  # reads the visible region now, so the first stroke does not wait

    def stop(self, *_: Any) -> None:
        """Stop updating (the layers stay)."""
        self._view_timer.stop()
        if self.strokes is not None:
            for ev in (self.strokes.events.paint, self.strokes.events.data):
                ev.disconnect(self.request)
        if self._watching:
            for ev in (_camera(self.viewer).events.center, _camera(self.viewer).events.zoom):
                ev.disconnect(self._view_changed)
            self._watching = False
        self.runner.cancel()
        self.strokes, self._dirty, self._asked = None, False, None
        self.stop_button.enabled, self.start_button.enabled = False, True

    def keep(self, *_: Any) -> None:
        """Stop, and leave the prediction as layers the next run does not replace."""
        if self.result is None:
            show_info("Live classifier: nothing to keep yet; paint strokes of two classes.")
            return
        if self._unc_layer is not None:  # the kept uncertainty is the last one, and is left be
            self._fill_uncertainty()
            self._unc_layer.events.visible.disconnect(self._unc_shown)
            self._unc_layer = None
        kept = []
        for layer in list(self.viewer.layers):
            tag = layer.metadata.get(OWNER_TAG, "")
            if tag in (f"explore: {PREDICTION}", f"explore: {UNCERTAINTY}"):
                layer.metadata.pop(OWNER_TAG)
                layer.metadata.pop(OWNER_KEY, None)
                layer.name = f"{layer.name} (kept)"
                kept.append(layer.name)
        if not kept:
            show_info("Live classifier: nothing to keep yet; paint strokes of two classes.")
            return
        self.stop()
        self.status.value = f"kept: {', '.join(kept)}"

    def save(self, *_: Any) -> None:
        """Write the classifier and its strokes to ``<workspace>/models/live-TIME.safetensors``."""
        if self.session is None or self.session.samples is None:
            show_error("Live classifier: nothing to save yet; paint strokes of two classes.")
            return
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        if self.image is not None:
            path = workspace_root(self.image) / "models" / f"live-{stamp}.safetensors"
        else:
            store = Path(str(self.session.grid.source))
            path = store.with_name(f"{store.stem}_live-{stamp}.safetensors")
        try:
            out = save_live_model(path, self.session)
        except (OSError, ValueError, ModelFileError) as err:
            show_error(f"Live classifier: could not save: {err}")
            return
        say_file(self.status, "live classifier and its strokes saved to {}", out)

    # -- updating ------------------------------------------------------------------------------
    def _geometry(self, grid: FeatureGrid) -> dict[str, tuple[float, ...]]:
        img = self.image
        return grid.layer_kwargs(
            None if img is None else img.scale, None if img is None else img.translate
        )

    def _view_changed(self, *_: Any) -> None:
        if self.session is not None and self.session.samples is not None:
            self._view_timer.start()

    def visible_box(self) -> tuple[int, int, int, int]:
        """The grid box under the canvas (at most :data:`MAX_VIEW` points a side)."""
        session = self.session
        assert session is not None  # noqa: S101 -- only called while running
        canvas = getattr(self.viewer, "canvas", None)  # napari >= 0.6; before: _canvas_size
        h, w = getattr(canvas, "size", None) or getattr(self.viewer, "_canvas_size", (800, 800))
        camera = _camera(self.viewer)
        zoom, centre = camera.zoom, camera.center[-2:]
        half = np.array([h, w]) / (2.0 * max(zoom, 1e-9))
        scale = np.ones(2) if self.image is None else np.asarray(self.image.scale[-2:])
        shift = np.zeros(2) if self.image is None else np.asarray(self.image.translate[-2:])
        lo = (np.asarray(centre) - half - shift) / scale  # image pixels
        hi = (np.asarray(centre) + half - shift) / scale
        i0, i1, j0, j1 = session.box_of(lo[0], hi[0], lo[1], hi[1])
        ci, cj = (i0 + i1) // 2, (j0 + j1) // 2
        if i1 - i0 > MAX_VIEW:
            i0, i1 = ci - MAX_VIEW // 2, ci + MAX_VIEW // 2
        if j1 - j0 > MAX_VIEW:
            j0, j1 = cj - MAX_VIEW // 2, cj + MAX_VIEW // 2
        return i0, i1, j0, j1

    def thin_for(self, box: tuple[int, int, int, int]) -> int:
        """Grid points per screen pixel in ``box`` (1 when zoomed in): what is predicted."""
        canvas = getattr(self.viewer, "canvas", None)
        h, w = getattr(canvas, "size", None) or getattr(self.viewer, "_canvas_size", (800, 800))
        i0, i1, j0, j1 = box
        return max(1, int(min((i1 - i0) / max(h, 1), (j1 - j0) / max(w, 1))))

    def request(self, *_: Any) -> None:
        """Ask for an update; one runs at a time, the strokes of meanwhile go to the next."""
        if self.session is None or self.strokes is None:
            return
        if self._asked is None:
            self._asked = time.perf_counter()
        if self.runner.running:
            self._dirty = True
            return
        if not self._pending:  # the strokes are copied at the event loop's next turn: napari
            self._pending = True  # emits `paint` before it writes an edit made outside a
            QTimer.singleShot(0, self._launch_pending)  # brush stroke (fill, a script)

    def _launch_pending(self) -> None:
        self._pending = False
        if self.runner.running:
            self._dirty = True
        else:
            self._launch()

    def _launch(self) -> None:
        session, asked = self.session, self._asked
        if session is None or self.strokes is None:
            return
        data = self.strokes.data
        plane = np.array(data[0] if data.ndim == 3 else data)  # a copy: painting goes on
        try:
            box = self.visible_box()
            thin = self.thin_for(box)
        except ValueError as err:
            self._asked = None
            show_error(f"Live classifier: {err}")
            return

        def job() -> ProgressGen[tuple[LiveResult | str, float | None] | None]:
            if session.view(box, thin=thin):
                yield Progress(1, 2, "read the visible region's features")
            if not plane.any():  # started: the view is read, the fit waits for strokes
                import scipy.optimize  # noqa: F401 -- the first fit does not pay for it

                session.prepare()  # nor for the context map
                return None
            yield Progress(1, 2, "fitting")
            try:
                # in this thread alone: a BLAS pool's threads would take the cores the viewer
                # renders on (a software-GL frame takes twice as long beside them), for ~10 %
                # on a product of 64 x a few classes
                with threadpool_limits(1, user_api="blas"):
                    return session.update(plane), asked
            except OneClassError as err:  # a first class painted: not an error, the next step
                return f"class {err.ids[0]} painted; paint a second class to start", asked

        self._asked = None
        self.runner.start(job(), name="Live classifier", on_done=self._show, on_finish=self._next)

    def _show(self, out: tuple[LiveResult | str, float | None] | None) -> None:
        if out is None or self.session is None:
            return
        res, asked = out
        if isinstance(res, str):  # nothing to fit yet: say what to do next
            self.status.value = res
            return
        self.result = res
        geo = self._geometry(res.grid)
        labels, unc = res.labels, res.uncertainty
        if len(geo["scale"]) == 3:
            labels, unc = labels[None], unc[None]

        def put() -> None:  # the layers at the event loop's next turn, the status line now:
            self._put_maps(labels, unc, geo)  # two short blocks of the GUI thread, not one
            if self.strokes is not None:
                self.viewer.layers.selection.active = self.strokes  # painting goes on
            if asked is not None:
                self.latency_s.append(time.perf_counter() - asked)

        QTimer.singleShot(0, put)
        n = ", ".join(f"{c}: {k}" for c, k in res.n_samples.items())
        h, w = res.labels.shape
        self.status.value = (
            f"samples per class {n}; fit {res.fit_s * 1e3:.0f} ms, predicted {h}×{w} in "
            f"{res.predict_s * 1e3:.0f} ms"
        )

    def _put_maps(self, labels: np.ndarray, unc: np.ndarray, geo: dict[str, Any]) -> None:
        kw = {"owner": "explore", "in_place": True, **geo}
        put_layer(self.viewer, PREDICTION, labels, "labels", opacity=0.5, blending=FLAT, **kw)
        shown = self._unc_layer
        if shown in self.viewer.layers and not shown.visible:  # updated when shown (a GUI-thread
            self._hidden_unc = (unc, kw)  # copy and refresh fewer per stroke)
            return
        self._hidden_unc = None
        layer = put_layer(
            self.viewer, UNCERTAINTY, unc, "image", colormap="inferno", contrast_limits=(0.0, 1.0),
            opacity=0.6, visible=False, **kw,
        )  # fmt: skip
        if layer is not self._unc_layer:
            self._unc_layer = layer
            layer.events.visible.connect(self._unc_shown)

    def _unc_shown(self, _event: Any = None) -> None:
        if self._unc_layer is not None and self._unc_layer.visible:
            self._fill_uncertainty()

    def _fill_uncertainty(self) -> None:
        """Write the prediction's uncertainty that waited for its hidden layer, if any."""
        if self._hidden_unc is not None:
            unc, kw = self._hidden_unc
            self._hidden_unc = None
            put_layer(self.viewer, UNCERTAINTY, unc, "image", **kw)

    def _next(self) -> None:
        if self._dirty and self.session is not None:
            self._dirty = False
            self._launch()


def _camera(viewer: Any) -> Any:
    """The viewer's camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera
