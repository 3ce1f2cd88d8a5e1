"""Make the README's screenshots: one per dock, as a user sees it, from the sample data.

Usage (one command; re-runs itself under ``xvfb-run`` when there is no display)::

    make screenshots            # or: .venv/bin/python scripts/screenshots.py [--out DIR]

The window is 1600 x 1000 px.  It opens like ``brainfeatures demo`` (the micro-CT
sample, the shipped CNN, the current slice's feature maps, NMF factors and a
cortex cluster map, every dock tabbed on the right), then raises each dock in
turn and saves ``docs/images/<stage>.png``.  The Analyse dock runs its analysis
first, and the Latent dock loads the β-VAE shipped for the synthetic population
(on that population), so that their pictures show results; every other dock shows what the
demo left in it.  Takes a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1600, 1000)
# manifest display name -> file stem (the stage's name everywhere else)
STAGES = {
    "Open volume": "io",
    "Annotate areas": "annotate",
    "Train CNN": "train",
    "Feature maps": "features",
    "NMF factors and clusters": "factors",
    "Analyse features": "analyse",
    "Explore and correct": "explore",
    "Results": "results",
    "Latent sliders": "latent",  # last: it clears the canvas for the population
}
IMAGE = "micro-CT (synthetic)"
# what each picture shows on the canvas (layers whose name ends with one of these)
CANVAS = {
    "io": [IMAGE],
    "annotate": [IMAGE, "areas (truth)"],
    "train": [IMAGE, "predicted areas", "patch centres"],
    "features": [IMAGE, "confidence"],
    "factors": [IMAGE, "NMF RGB"],
    "analyse": [IMAGE, "areas (truth)"],
    "explore": [IMAGE, "clusters", "explore selection"],
    "results": [IMAGE, "clusters"],
}


def main(argv: list[str] | None = None) -> int:
    """Parse the options, find a display (or re-run under xvfb-run), take the pictures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            print(
                "screenshots: no display and no xvfb-run (run `make system-deps`)", file=sys.stderr
            )
            return 2
        screen = f"-screen 0 {SIZE[0]}x{SIZE[1]}x24"
        cmd = ["xvfb-run", "-a", "-s", screen, sys.executable, __file__, *sys.argv[1:]]
        return subprocess.call(cmd)
    args.out.mkdir(parents=True, exist_ok=True)
    # a home of its own: the pictures never write into the user's sample workspace
    os.environ.setdefault("BRAINFEATURES_HOME", str(ROOT / ".screenshots-home"))
    return Shooter(args.out).run()


class Shooter:
    """Drives the demo viewer on Qt's event loop and writes one PNG per dock."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.viewer: Any = None
        self.written: list[Path] = []

    def run(self) -> int:
        """Open the demo, wait for its maps, then raise and photograph each dock."""
        import napari

        from napari_brainfeatures._cli.demo import open_demo_viewer
        from napari_brainfeatures._napari.sample_data import ensure_microct
        from napari_brainfeatures.progress import run as run_gen

        run_gen(ensure_microct())
        self.viewer = napari.Viewer(title="napari-brainfeatures", show=True)
        self.viewer.window._qt_window.resize(*SIZE)
        self.ready: dict[str, Any] | None = None
        open_demo_viewer(viewer=self.viewer, explore=True, on_ready=self._on_ready)
        self._wait(lambda: self.ready is not None, 900, "the demo's maps")
        if not self.ready.get("ok"):
            print(f"screenshots: the demo failed: {self.ready}", file=sys.stderr)
            return 1
        for title, stem in STAGES.items():
            widget = self._dock(title)
            if widget is None:
                print(f"screenshots: no dock {title!r}", file=sys.stderr)
                continue
            self._show_only(CANVAS.get(stem))
            getattr(self, f"_prepare_{stem}", lambda _w: None)(widget)
            self.shot(stem)
        self.viewer.close()
        print("\n".join(str(p) for p in self.written))
        return 0

    # -- docks -------------------------------------------------------------------------
    def _on_ready(self, outcome: dict[str, Any]) -> None:
        self.ready = outcome

    def _dock(self, title: str) -> Any:
        from qtpy.QtWidgets import QDockWidget

        for name, inner in self.viewer.window.dock_widgets.items():
            if name.startswith(title):
                qt = getattr(inner, "native", inner)
                while qt is not None and not isinstance(qt, QDockWidget):
                    qt = qt.parentWidget()
                if qt is not None:
                    qt.raise_()  # the dock wrapper: its tab comes to the front
                return qt.widget() if qt is not None else None
        return None

    def _show_only(self, names: list[str] | None) -> None:
        if names is None:
            return
        for layer in self.viewer.layers:
            layer.visible = any(layer.name.endswith(n) for n in names)

    def _prepare_annotate(self, body: Any) -> None:
        """Labels bound to the workspace: the class legend shows, as after a user's first click."""
        w = self._find(body, "bind_button")
        if w is not None:
            w.bind()

    def _prepare_analyse(self, body: Any) -> None:
        """The shipped model analysed against the sample's areas (the bound labels are empty)."""
        from napari_brainfeatures._widgets._common import newest_model

        w = self._find(body, "run_button")
        if w is not None:
            image = self.viewer.layers[IMAGE]
            w.image.value, w.area_labels.value = image, self.viewer.layers["areas (truth)"]
            w.model_path.value = newest_model(image)
            w.run()
            self._wait(lambda: not w.runner.running, 600, "the analysis")

    def _prepare_explore(self, body: Any) -> None:
        """The slice's features as a PCA density coloured by predicted area (the Plot button)."""
        from napari_brainfeatures._widgets._common import newest_store

        w = self._find(body, "plot_button")
        if w is None:
            return
        image = self.viewer.layers[IMAGE]
        w.source_path.value, w.image.value = newest_store([image]), image
        w.method.value, w.colour.value = "PCA", "predicted area"
        w.run_plot()
        self._wait(lambda: not w.runner.running, 600, "the feature-space plot")
        if w.density is not None:  # a rectangle around the densest bins: its pixels light up
            dens = w.density
            row, col = np.unravel_index(int(np.argmax(dens.counts)), dens.counts.shape)
            xs, ys = dens.to_plot(np.array([col - 12, col + 12]), np.array([row - 12, row + 12]))
            w._selected("rectangle", (tuple(xs), tuple(ys)))

    def _prepare_latent(self, body: Any) -> None:
        """The shipped β-VAE on its population, loaded in the dock (as a user's Load does)."""
        import tempfile

        from napari_brainfeatures._napari.reader import population_layers
        from napari_brainfeatures.synthetic.weights.latent import (
            install_sample_vae,
            sample_population,
        )

        w = self._find(body, "load_button")
        if w is None:
            return
        pop = sample_population()
        fields = ("images", "clean", "rois", "artifact", "factors", "factor_names", "roi_names")
        self.viewer.layers.clear()  # the picture shows the population alone
        added = []
        for data, kwargs, kind in population_layers(
            {k: getattr(pop, k) for k in fields}, name="sections (synthetic)"
        ):
            added.append(getattr(self.viewer, f"add_{kind}")(data, **kwargs))
        w.population.reset_choices()
        w.population.value = added[0]
        self._tmp = tempfile.TemporaryDirectory(prefix="brainfeatures-shots-")
        w.model_path.value = install_sample_vae("beta_vae", self._tmp.name)
        w.load()
        self._wait(lambda: not w.runner.running, 600, "loading the β-VAE")
        self.viewer.reset_view()
        self._dock("Latent sliders")

    def _find(self, body: Any, attr: str) -> Any:
        """The dock's magicgui Container that has ``attr`` (scroll areas wrap some docks)."""
        from qtpy.QtWidgets import QWidget

        for child in [body, *body.findChildren(QWidget)]:
            owner = getattr(child, "_magic_widget", None)
            if owner is not None and hasattr(owner, attr):
                return owner
        return None

    # -- the event loop ----------------------------------------------------------------
    def _wait(self, done: Any, timeout: float, what: str) -> None:
        from qtpy.QtWidgets import QApplication

        t0 = time.monotonic()
        while not done():
            QApplication.processEvents()
            time.sleep(0.02)
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"screenshots: {what} took over {timeout:.0f} s")

    def shot(self, stem: str) -> None:
        """Save the whole window as ``<out>/<stem>.png``."""
        from qtpy.QtWidgets import QApplication

        for _ in range(20):  # let the raised dock lay out and the canvas redraw
            QApplication.processEvents()
            time.sleep(0.02)
        path = self.out / f"{stem}.png"
        shot = self.viewer.screenshot(canvas_only=False)  # (H, W, 4) uint8
        _save_small(shot, path)
        self.written.append(path)


def _save_small(rgba: Any, path: Path, width: int = 1280) -> None:
    """The window at ``width`` px as an optimised 8-bit PNG (a few hundred kB, text legible)."""
    from PIL import Image

    img = Image.fromarray(rgba).convert("RGB")
    if img.width > width:
        img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
