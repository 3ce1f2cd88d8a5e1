"""The latent dock's training: one run, or repeats of one model with seeds 0..N−1.

:class:`LatentTraining` is a part of
:class:`~napari_brainfeatures._widgets.latent.LatentWidget` (a mixin): Train
starts :func:`~napari_brainfeatures.latent.model.fit_latent_model` (or, with
repeats, :func:`~napari_brainfeatures.latent.repeats.fit_latent_repeats`) in
the dock's worker; each run's best model goes to a scratch file, so Cancel
keeps every run so far.  The dock adopts the first run; the analyses then
score every run and the comparison table shows their median and range.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, ComboBox, FloatSpinBox, SpinBox
from napari.utils.notifications import show_error, show_info

from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.latent_panels import plot_curves
from napari_brainfeatures.latent.model import MODEL_NAMES, FittedModel, load_latent_model
from napari_brainfeatures.latent.repeats import fit_latent_repeats
from napari_brainfeatures.latent.train import area_weight
from napari_brainfeatures.progress import Progress


def run_seed(model: Any, meta: dict[str, Any]) -> int:
    """The seed a model was fitted with (its training record, or a PCA's solver seed)."""
    return int((meta.get("training") or {}).get("seed", getattr(model, "seed", 0)))


class LatentTraining:
    """Train the chosen model once, or once per seed; adopt the first run, keep them all.

    The dock provides the attributes annotated below and ``_images``,
    ``_names``, ``adopt``, ``figure`` and ``canvas``.
    """

    model_type: ComboBox
    latent: SpinBox
    beta: FloatSpinBox
    epochs: SpinBox
    batch: SpinBox
    lr: FloatSpinBox
    repeats: SpinBox
    balance: CheckBox
    runner: TaskRunner
    figure: Any
    canvas: Any

    def _training_state(self) -> None:
        self.history: list[dict[str, float]] = []
        self._scratch: Path | None = None  # the running training's best-model file(s)
        self._done = False  # whether the running training returned its model(s)
        self._pending: list[tuple[int, Any, dict[str, Any]]] | None = None  # runs to adopt

    def train(self) -> None:
        """Train the chosen model type on the population in a worker (once per seed)."""
        if self.runner.running:
            show_info("Another task is still running; cancel it or wait.")
            return
        images = self._images()  # type: ignore[attr-defined]
        if images is None:
            return
        kind, n = self.model_type.value, int(self.repeats.value)
        # the best model so far goes to a scratch file, so Cancel (or a failure in a later
        # epoch) still leaves it in the dock; Save writes it where the user wants
        scratch = Path(tempfile.mkdtemp(prefix="brainfeatures-vae-")) / "best.safetensors"
        options = dict(
            kind=kind, latent_dim=self.latent.value, beta=self.beta.value,
            epochs=self.epochs.value, batch_size=self.batch.value, lr=self.lr.value,
            roi_names=self._names(), checkpoint_path=scratch,  # type: ignore[attr-defined]
        )  # fmt: skip
        if kind != "pca" and self.balance.value:  # the paper's recon / β·KL balance
            options["recon_weight"] = max(1.0, area_weight(tuple(images.shape[-2:])))
        try:
            gen = fit_latent_repeats(images, seeds=list(range(n)), **options)
        except ValueError as err:
            shutil.rmtree(scratch.parent, ignore_errors=True)
            show_error(f"Cannot train on sections of shape {images.shape[1:]}: {err}")
            return
        self._scratch, self.history, self._done = scratch, [], False
        name = f"Train {MODEL_NAMES[kind]}" + (f" ×{n} (seeds 0–{n - 1})" if n > 1 else "")
        self.runner.start(gen, name=name, on_progress=self._on_epoch, on_done=self._trained,
                          on_finish=self._keep_best)  # fmt: skip

    def _keep_best(self) -> None:
        """After a run: adopt its models, or after a cancelled / failed one the best it saved."""
        scratch, self._scratch = self._scratch, None
        runs, self._pending = self._pending, None
        message = None
        try:
            if runs is None and not self._done and scratch is not None:
                # every run so far: the finished ones and the best epoch of the cut one
                files = scratch.parent.glob("*_seed*.safetensors")
                loaded = [load_latent_model(f) for f in files]
                runs = sorted(((run_seed(*m), *m) for m in loaded), key=lambda r: r[0]) or None
                if runs is not None:
                    tr = runs[-1][2].get("training", {})
                    message = (
                        f"stopped: kept the best model so far (epoch {tr.get('best_epoch')}, "
                        f"{len(self.history)} finished)" + seeds_text(runs) + "; Save writes "
                        "the shown model to a file"
                    )
        finally:
            if scratch is not None:
                shutil.rmtree(scratch.parent, ignore_errors=True)
        if runs:
            self.adopt(runs[0][1], runs[0][2], message=message, runs=runs)  # type: ignore[attr-defined]

    def _on_epoch(self, rec: Progress) -> None:
        if "run" in rec.values:  # the start of a run: its own curves
            self.history = []
        elif rec.values:  # an epoch's end: its losses
            self.history.append(rec.values)
            plot_curves(self.figure, self.history)
            self.canvas.draw_idle()

    def _trained(self, fitted: list[FittedModel]) -> None:
        self._done = True  # adopted when the worker has finished (_keep_best)
        self._pending = [(run_seed(f.model, f.meta), f.model, f.meta) for f in fitted]


def seeds_text(runs: list[tuple[int, Any, dict[str, Any]]]) -> str:
    """``""`` for one run, ``" (3 runs, seeds 0, 1, 2)"`` for repeats."""
    if len(runs) < 2:
        return ""
    return f" ({len(runs)} runs, seeds {', '.join(str(s) for s, *_ in runs)})"
