"""``brainfeatures demo``: the sample in napari, every widget docked, the science already run.

The window opens with the micro-CT sample, the CNN shipped for it copied into
the sample's workspace (``models/cnn-sample.safetensors``) and loaded in the
*Train CNN* dock, the viewer on the model's held-out test slice; then, in the
docks' own workers (progress bars, Cancel), the *Feature maps* dock computes the
slice's dense maps, the *NMF factors and clusters* dock factorises them, selects
factors against the areas and clusters the cortex, and the *Train CNN* dock
samples patches so that **Train** retrains in one click.  Every output says the
model's test accuracy and chance level (layer metadata ``brainfeatures_model``,
the docks' status lines, the window title).

``--headless DIR`` runs the whole pipeline without a window instead
(see :mod:`napari_brainfeatures.pipeline`) and writes every result and a
picture of each map into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures._util.ranges import SEED

#: Dense-map stride of the demo's test slice (1536 x 1024 px; under a minute on 2 cores).
DEMO_STRIDE = 4
#: Cortex erosion and smoothing (image px) of the demo's cluster map: half a patch.
DEMO_ERODE = DEMO_SMOOTH = 64
MODEL_NAME = "cnn-sample.safetensors"  # "cnn-*": the docks' newest-model rule finds it
READY = "brainfeatures demo ready:"  # --exit-when-ready's line
META_KEY = "brainfeatures_model"  # layer metadata: which model made the layer, how good


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--headless",
        metavar="DIR",
        type=Path,
        default=None,
        help="run the whole pipeline without a window, writing results and pictures into DIR",
    )
    parser.add_argument(
        "--size",
        choices=["tiny", "small", "full"],
        default="small",
        help="tiny (a minute or two; its model is not meant to be good), small (default, a few "
        "minutes, the shipped CNN on the sample) or full (paper sizes)",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help="headless: train the CNN anew (small, full: the full recipe, about 10 min on 2 "
        "cores) instead of using the model shipped for the sample",
    )
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--no-show", action="store_true", help=argparse.SUPPRESS)
    # benchmarks: print one JSON line when every dock's work is done and its layers drawn, quit
    parser.add_argument("--exit-when-ready", action="store_true", help=argparse.SUPPRESS)


def run(name: str, args: argparse.Namespace) -> int:
    if args.headless is not None:
        from napari_brainfeatures.pipeline import run_pipeline
        from napari_brainfeatures.progress import run as run_gen

        train = True if args.train else None
        gen = run_pipeline(args.headless, size=args.size, seed=args.seed, train=train)
        summary = run_gen(gen, progress_printer)
        print(json.dumps(summary, indent=2))
        return 0
    problem = display_problem()
    if problem and not args.no_show:
        print(f"brainfeatures demo: {problem}", file=sys.stderr)
        return 2
    from napari_brainfeatures._napari.sample_data import ensure_microct
    from napari_brainfeatures.progress import run as run_gen

    # Generate the sample once (about a minute), with progress, before the window opens.
    run_gen(ensure_microct(seed=args.seed), progress_printer)
    outcome: dict[str, Any] = {}
    on_ready = (lambda out: _exit_when_ready(out, outcome)) if args.exit_when_ready else None
    viewer = open_demo_viewer(show=not args.no_show, explore=not args.no_show, on_ready=on_ready)
    if args.no_show:
        viewer.close()
        return 0
    import napari

    napari.run()
    return 0 if outcome.get("ok", True) else 1


def _exit_when_ready(out: dict[str, Any], outcome: dict[str, Any]) -> None:
    """``--exit-when-ready``: draw, print ``READY {json}`` (wall-clock time, steps), close."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()  # the last layers drawn
    outcome.update({k: out[k] for k in ("ok", "steps", "step_s", "error")})
    outcome["unix_time"] = time.time()
    print(f"{READY} {json.dumps(outcome)}", flush=True)
    QTimer.singleShot(0, QApplication.closeAllWindows)


def display_problem() -> str | None:
    """Why a napari window cannot open here (no display on Linux), or None.

    Qt aborts the whole process when it finds no display, so the demo asks first.
    """
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display to open the napari window on (neither DISPLAY nor WAYLAND_DISPLAY is "
        "set). Run it where a display is, or under a virtual one (`xvfb-run -a "
        "brainfeatures demo`), or run the whole pipeline without a window: "
        "`brainfeatures demo --headless DIR`."
    )


def open_demo_viewer(  # type: ignore[no-untyped-def]
    *,
    show: bool = True,
    viewer=None,
    explore: bool | None = None,
    stride: int = DEMO_STRIDE,
    erode: int = DEMO_ERODE,
    smooth: int = DEMO_SMOOTH,
    on_ready: Callable[[dict[str, Any]], Any] | None = None,
):
    """A napari viewer with the micro-CT sample, every plugin widget docked, the shipped CNN.

    Parameters
    ----------
    show : bool
        Show the window (a new viewer only).
    viewer : napari.Viewer, optional
        Fill this viewer instead of opening a new one (tests pass the one their
        fixture closes); ``show`` is then ignored.
    explore : bool, optional
        Compute, in the docks' workers, the current slice's feature maps
        (``stride`` px), NMF factors, their selection against the areas and a
        cortex cluster map (``erode``, ``smooth`` in image px), and sample the
        training patches; default: when this function opens the window.  The
        window is usable at once; ``on_ready`` gets the outcome (``{"ok": bool,
        "steps": [...], "model": {...}, ...}``) when all is done or a step failed.
    """
    import napari
    from npe2 import PluginManager

    opened = viewer is None
    if explore is None:
        explore = opened
    if opened:
        viewer = napari.Viewer(title="napari-brainfeatures demo", show=show)
    viewer.open_sample("napari-brainfeatures", "microct")
    manifest = PluginManager.instance().get_manifest("napari-brainfeatures")
    docks, widgets = {}, {}
    for i, c in enumerate(manifest.contributions.widgets or []):
        dock, widget = viewer.window.add_plugin_dock_widget(
            "napari-brainfeatures", c.display_name, tabify=i > 0
        )
        docks[c.display_name], widgets[c.display_name] = dock, widget
    arrange_docks(docks, maximize=opened and show)  # a window the demo opened: the screen
    demo = DemoSession(viewer, widgets, stride=stride, erode=erode, smooth=smooth)
    demo.on_ready, demo.docks = on_ready, docks
    explore = demo.setup() and explore
    demo.raise_dock("Feature maps" if explore else "Train CNN")  # the maps as they come
    if explore:
        demo.start()
    elif on_ready is not None:
        on_ready(demo.outcome(ok=True))
    return viewer


#: Tab titles of the demo's docks (their title bars keep the full names); the seven
#: stage docks fit one row of tabs above the right column.
TAB_TITLES = {"Annotate areas": "Annotate", "Train CNN": "Train", "Feature maps": "Features",
              "NMF factors and clusters": "NMF", "Analyse features": "Analyse",
              "Explore and correct": "Explore", "Latent sliders": "Latent"}  # fmt: skip
#: Docks tabbed with napari's layer list (left column, as narrow as it): files, not stages.
BESIDE_LAYERS = {"Open volume": "Open", "Results": "Results"}
DOCK_SHARE, LEFT_SHARE = 0.29, 0.16  # of the window's width: the stage docks, the layer list


def arrange_docks(docks: dict[str, Any], *, maximize: bool = False) -> None:
    """Tabbed docks, tabs on top, every dock the full height, the canvas the widest part.

    napari stacks plugin docks, each squeezing the others (results off-screen),
    or tabifies them with truncated tabs at the bottom.  Here the stage docks
    are one tab group on the right and the file docks (Open volume, Results)
    tabs beside napari's layer list, so each shows whole tab titles at 1600 px
    and the canvas keeps about half the window.
    """
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QDockWidget, QTabWidget

    if not docks:
        return
    window = next(iter(docks.values())).parentWidget()  # the QMainWindow
    right, left = Qt.DockWidgetArea.RightDockWidgetArea, Qt.DockWidgetArea.LeftDockWidgetArea
    if maximize:  # the whole screen (set as well: no window manager, no maximising)
        window.setGeometry(window.screen().availableGeometry())
        window.showMaximized()
        QApplication.processEvents()  # the new width, for the shares below
    side = [d for d in window.findChildren(QDockWidget) if window.dockWidgetArea(d) == left]
    side = sorted((d for d in side if d.isVisible()), key=lambda d: d.y())[-1:]  # layer list
    groups: dict[Any, Any] = {}  # area -> the dock the others are tabbed with
    for name, dock in docks.items():
        area = left if name in BESIDE_LAYERS and side else right
        window.setTabPosition(area, QTabWidget.TabPosition.North)
        first = groups.setdefault(area, side[0] if area == left else dock)
        if window.dockWidgetArea(dock) != area:
            window.addDockWidget(area, dock)
        if dock is not first:
            window.tabifyDockWidget(first, dock)
        dock.setWindowTitle({**TAB_TITLES, **BESIDE_LAYERS}.get(name, name))
    if side:
        side[0].raise_()  # the layers stay in view
    shares = [(groups.get(right), DOCK_SHARE), *((d, LEFT_SHARE) for d in side)]
    shares = [(d, int(max(window.width(), 1) * f)) for d, f in shares if d is not None]
    window.resizeDocks([d for d, _ in shares], [w for _, w in shares], Qt.Orientation.Horizontal)


class DemoSession:
    """The demo's docks, the shipped model put in place, and the chain of dock actions.

    Each step calls one dock's public action; the next starts when that dock's
    runner is idle again (polled on the GUI thread, so the window stays live).
    """

    def __init__(
        self, viewer: Any, widgets: dict[str, Any], *, stride: int, erode: int, smooth: int
    ) -> None:
        self.viewer, self.w = viewer, widgets
        self.stride, self.erode, self.smooth = stride, erode, smooth
        self.on_ready: Callable[[dict[str, Any]], Any] | None = None
        self.docks: dict[str, Any] = {}
        self.steps: list[str] = []
        self.step_s: dict[str, float] = {}  # each step's seconds, start to settled
        self.model: dict[str, Any] = {}
        self.model_path: Path | None = None
        self.error: str | None = None
        self._timer: Any = None
        layers = {layer.name: layer for layer in viewer.layers}
        self.image = layers.get("micro-CT (synthetic)")
        self.areas = layers.get("areas (truth)")
        self.truth_layers = layers.get("cortical layers (truth)")

    # -- the model ----------------------------------------------------------------
    def setup(self) -> bool:
        """Copy the shipped model into the sample's workspace; point the docks at it.

        False (and a notification) when there is no shipped model to use.
        """
        from napari.utils.notifications import show_warning

        from napari_brainfeatures._widgets._common import say_file, workspace_for
        from napari_brainfeatures.synthetic import weights

        if self.image is None:
            return False
        try:
            self.model = weights.sample_model_summary()
            folder = workspace_for(self.image).path("models")
            self.model_path = weights.install_sample_model(folder, name=MODEL_NAME)
        except (OSError, ValueError, KeyError) as err:  # missing or unreadable: train instead
            self.error = f"no shipped model: {err}"
            show_warning(f"Demo: {self.error}; train one in the Train CNN dock.")
            return False
        self.model["path"] = str(self.model_path)
        self.viewer.title = f"napari-brainfeatures demo: {self.describe()}"
        z = self.model["test_slice"]
        if z < self.image.data.shape[0]:  # the held-out slice (a small test sample has none)
            self.viewer.dims.set_point(0, z * float(self.image.scale[0]))
        train = self.w.get("Train CNN")
        if train is not None:
            train.image.value, train.area_labels.value = self.image, self.areas
            train.model_path.value = self.model_path
            train.load()
            slices = self.model["slices"]
            if max(slices.values()) < self.image.data.shape[0]:
                train.train_slice.value, train.val_slice.value = slices["train"], slices["val"]
                train.test_slice.value = slices["test"]
            say_file(train.status, f"loaded {{}}: {self.describe()}", self.model_path)
        features = self.w.get("Feature maps")
        if features is not None:
            features.image.value = self.image
            features.model_path.value = self.model_path  # loads it, shows its classes
            features.model_info.value += f"\n{self.describe()}"
        return True

    def raise_dock(self, name: str) -> None:
        """Bring dock ``name``'s tab to the front (when docked)."""
        if name in self.docks:
            self.docks[name].raise_()

    def describe(self) -> str:
        """'shipped sample CNN: test accuracy 90.3 % on slice 106 (chance 16.7 %, ...)'."""
        m = self.model
        return (
            f"shipped sample CNN: test accuracy {m['test_accuracy']:.1%} on held-out slice "
            f"{m['test_slice']} (chance {m['chance_level']:.1%}, macro-F1 {m['macro_f1']:.2f})"
        )

    # -- the chain ------------------------------------------------------------------
    def start(self) -> None:
        """Run the steps one after another in the docks' workers."""
        from qtpy.QtCore import QTimer

        chain = [
            ("feature maps", "Feature maps", self._features),
            ("NMF", "NMF factors and clusters", self._nmf),
            ("clusters", "NMF factors and clusters", self._clusters),
            ("patches", "Train CNN", self._patches),
        ]
        self._todo = [c for c in chain if c[1] in self.w]
        self._busy: Any = None
        # Owned by a dock: it stops with the window; the lambda keeps this session alive.
        self._timer = QTimer(next(iter(self.w.values())).native)
        self._timer.setInterval(200)
        self._timer.timeout.connect(lambda: self._tick())
        self._tick()
        self._timer.start()

    def _tick(self) -> None:
        if self._busy is not None:
            name, widget = self._busy
            if widget.runner.running:
                return
            err, ok = widget.runner.last_error, self._succeeded(name)
            if err is None and ok and not self._settled(name):
                return
            self._busy = None
            if err is not None or not ok:
                self._finish(f"{name} failed: {err}" if err else f"{name}: no result")
                return
            self.steps.append(name)
            self.step_s[name] = round(time.perf_counter() - self._started, 1)
            self._tag()
        if not self._todo:
            self._finish(None)
            return
        name, dock, step = self._todo.pop(0)
        widget = self.w[dock]
        try:
            step(widget)
        except (ValueError, OSError, RuntimeError) as err:
            self._finish(f"{name} failed: {err}")
            return
        if not widget.runner.running:  # refused (a notification says why)
            self._finish(f"{name} did not start")
            return
        self._busy, self._started = (name, widget), time.perf_counter()

    def _succeeded(self, name: str) -> bool:
        if name == "feature maps":
            return self.w["Feature maps"].store is not None
        if name == "NMF":
            return self.w["NMF factors and clusters"].factors is not None
        return True

    def _settled(self, name: str) -> bool:
        """After the NMF: all its heatmap layers are in (the dock adds one per event-loop turn)."""
        if name != "NMF":
            return True
        k = self.w["NMF factors and clusters"].factors.k
        made = {ly.name for ly in self.viewer.layers if ly.name.startswith("NMF factor ")}
        return all(f"NMF factor {i}" in made for i in range(k))

    def _features(self, fm: Any) -> None:
        fm.stride.value = self.stride
        fm.region.value = "current slice"
        fm.overwrite.value = True  # the demo's own store (named for model and stride)
        fm.run()

    def _nmf(self, fa: Any) -> None:
        fa.store_path.value = self.w["Feature maps"].store.path
        fa.z.value, fa.image.value, fa.rois.value = 0, self.image, self.areas
        fa.run_nmf()

    def _clusters(self, fa: Any) -> None:
        fa.select()  # the factors that best cover each area (synchronous)
        ctx = next(c for c in self.w["Train CNN"].classes or [] if c.name == "Ctx")
        fa.mask.value, fa.mask_id.value = self.areas, ctx.id
        fa.erode.value, fa.smooth.value = self.erode, self.smooth
        fa.truth.value = self.truth_layers
        fa.cluster()

    def _patches(self, train: Any) -> None:
        train.sample()  # then "Train" retrains from scratch in one click

    def _tag(self) -> None:
        """Stamp the model's figures on every layer the feature and factor docks made."""
        from napari_brainfeatures._widgets._common import OWNER_KEY

        stamp = {k: self.model[k] for k in ("model_source", "test_accuracy", "chance_level")}
        stamp |= {"macro_f1": self.model["macro_f1"], "model": self.model.get("path")}
        for layer in self.viewer.layers:
            if layer.metadata.get(OWNER_KEY) in ("feature maps", "factors"):
                layer.metadata[META_KEY] = stamp

    def _finish(self, error: str | None) -> None:
        from napari.utils.notifications import show_error, show_info

        if self._timer is not None:
            self._timer.stop()
        self.error = error
        self._tag()
        done = ", ".join(self.steps) or "nothing"
        text = f"Demo ready ({done}); {self.describe()}." if error is None else f"Demo: {error}."
        for dock in ("Feature maps", "NMF factors and clusters", "Train CNN"):
            if dock in self.w:
                self.w[dock].status.value += f"\n{self.describe()}"
        if "patches" in self.steps:
            self.w["Train CNN"].status.value += " is loaded; Train retrains it from these patches."
        self._calm_view()
        self.raise_dock("NMF factors and clusters" if "clusters" in self.steps else "Train CNN")
        (show_info if error is None else show_error)(text)
        if self.on_ready is not None:
            self.on_ready(self.outcome(ok=error is None))

    def _calm_view(self) -> None:
        """Show the result, not the working: patch centres hidden, the areas layer selected."""
        layers = self.viewer.layers
        for layer in layers:
            if type(layer).__name__ == "Points":  # the sampled patch centres
                layer.visible = False
        images = [ly for ly in layers if type(ly).__name__ == "Image" and not ly.rgb]
        if images:
            layers.selection.active = images[0]

    def outcome(self, *, ok: bool) -> dict[str, Any]:
        """What the demo did: ``ok``, ``steps``, ``error``, ``model``, ``widgets`` (by name)."""
        out = {"ok": ok, "steps": list(self.steps), "error": self.error, "model": self.model}
        out["step_s"] = dict(self.step_s)
        return out | {"widgets": dict(self.w)}
