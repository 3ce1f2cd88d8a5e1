"""The latent dock's analyses: projective and receptive fields, quality, the comparison table.

:class:`LatentAnalyses` is a part of
:class:`~napari_brainfeatures._widgets.latent.LatentWidget` (a mixin): its
buttons each start one core generator in the dock's worker and show what it
returns as layers, the impact plot and a row of the comparison table.
Receptive fields and quality score every run of repeats (one after the other);
the table shows their median [min–max], or each run with "each run" ticked.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, PushButton, Table
from matplotlib.figure import Figure
from napari.utils.notifications import show_error, show_info

from napari_brainfeatures._widgets._common import plain_numbers
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.latent_panels import (
    QUALITY_COLUMNS,
    fill_comparison,
    impact_notes,
    plot_impact,
)
from napari_brainfeatures._widgets.results_keep import keep_latent
from napari_brainfeatures.latent.codes import active_units
from napari_brainfeatures.latent.disentangle import impact_scores, mutual_info_gap
from napari_brainfeatures.latent.explore import (
    ReceptiveFields,
    projective_fields,
    projective_rgb,
    receptive_fields,
)
from napari_brainfeatures.latent.model import model_label
from napari_brainfeatures.latent.population import crop_offset, preprocess_for
from napari_brainfeatures.latent.quality import QualityReport, quality_report, tile
from napari_brainfeatures.latent.repeats import iter_repeats
from napari_brainfeatures.progress import ProgressGen


class LatentAnalyses:
    """Projective fields, receptive fields and quality of the dock's model, one button each.

    The dock provides the attributes annotated below and ``_scaled`` (its
    population pre-processed for the model), ``_names`` (ROI names),
    ``_set_layer`` and ``_clean_choices``.
    """

    # the dock's, used here
    model: Any
    meta: dict[str, Any]
    runs: list[tuple[int, Any, dict[str, Any]]]  # (seed, model, meta), the current model first
    z_start: np.ndarray | None
    active: np.ndarray | None
    clim: tuple[float, float]
    population: ComboBox
    rois: ComboBox
    runner: TaskRunner
    status: Any
    figure: Figure
    canvas: Any

    def _analysis_widgets(self) -> list[Any]:
        """Build the analyses' widgets and connect them; the ones to lay out, in order."""
        self.projective_button = PushButton(text="Projective fields")
        # c in [-c_max, c_max] with this spacing; the paper's 0.005 is 10x the decodes of 0.05
        self.c_max = FloatSpinBox(label="c max", value=7.0, min=0.1, max=50.0, step=0.5)
        self.c_step = FloatSpinBox(label="step", value=0.05, min=0.001, max=1.0, step=0.005)
        self.receptive_button = PushButton(text="Receptive fields")
        self.clean = ComboBox(
            label="clean sections", choices=self._clean_choices, nullable=True,
            tooltip="Optional: the same sections without artifacts (N×H×W), to score how well "
            "the model rejects them (the sample data has them as a hidden layer)",
        )  # fmt: skip
        self.quality_button = PushButton(text="Quality")
        # one row per model tried in this session: β-VAE, VAE, PCA, a sweep of L; numbers
        # as fill_comparison writes them (magicgui's delegate turns 0.0075 into 7.500e-03)
        self.table = plain_numbers(Table())
        self.each_run = CheckBox(text="each run (repeats: one row per seed)")
        self.scores: dict[str, dict[int, dict[str, float]]] = {}  # label -> seed -> scores
        self.comparison: dict[str, dict[str, float]] = {}  # one row per run, as kept
        self.each_run.changed.connect(self._fill_table)
        self.receptive_result: ReceptiveFields | None = None
        self.projective_button.changed.connect(self.projective)
        self.receptive_button.changed.connect(self.receptive)
        self.quality_button.changed.connect(self.quality)
        sweep = Container(widgets=[self.c_max, self.c_step], layout="horizontal")
        return [sweep, self.projective_button, self.receptive_button, self.clean,
                self.quality_button, self.each_run, self.table]  # fmt: skip

    def projective(self) -> None:
        """Projective fields of all latents around the start vector, as one RGB picture."""
        if self.model is None or self.z_start is None:
            show_info("Train or load a model first.")
            return
        n = 2 * int(round(self.c_max.value / self.c_step.value)) + 1
        gen = projective_fields(
            self.model, self.z_start, c_max=self.c_max.value, step=self.c_step.value
        )
        self.runner.start(gen, name=f"Projective fields ({n} decodes per latent)",
                          on_done=self._show_projective)  # fmt: skip

    def _show_projective(self, fields: np.ndarray) -> None:
        """All latents' fields in one picture beside the sections (not one per section)."""
        width = self.population.value.data.shape[-1] if self.population.value else fields.shape[2]
        picture = tile(projective_rgb(fields))
        layer = self._set_layer("projective fields", picture, rgb=True)
        layer.translate = (0.0, 1.1 * width)  # to the right of the sections
        self._label_tiles(fields.shape[1:3], len(fields), layer.translate)
        self.viewer.reset_view()  # the sections and the fields beside them, both in view
        c, half = float(self.c_max.value), float(self.c_max.value) / 2
        self.status.value = (
            f"projective fields z0..z{len(fields) - 1} (labelled), {min(len(fields), 4)} per "
            f"row, c from −{c:g} to {c:g}: red −{half:g} ≤ c ≤ 0, green 0 ≤ c ≤ {half:g}, "
            f"blue |c| ≥ {half:g}"
        )
        keep_latent(self, fields=fields, picture=picture)

    def _label_tiles(self, shape: tuple[int, int], n: int, translate: Any) -> None:
        """Name each tile of the fields' picture (``z3``, ``z5 (inactive)``) in a Points layer."""
        (h, w), gap, cols = shape, 4, min(n, 4)  # as quality.tile lays them out
        corners = [((k // cols) * (h + gap) + 2, (k % cols) * (w + gap) + 2) for k in range(n)]
        off = np.asarray(translate, np.float64)[-2:]
        active = self.active if self.active is not None and len(self.active) == n else None
        names = [f"z{k}" + ("" if active is None or active[k] else " (inactive)") for k in range(n)]
        mark = {"brainfeatures_owner": "Latent", "brainfeatures_output": "Latent: tile labels"}
        for old in [ly for ly in self.viewer.layers if ly.metadata.get("brainfeatures_output")
                    == mark["brainfeatures_output"]]:  # fmt: skip
            self.viewer.layers.remove(old)  # this dock's own labels only, never a user's layer
        self.viewer.add_points(
            np.asarray(corners, np.float64) + off, name="projective field labels", size=1,
            face_color="transparent", border_width=0, features={"latent": names}, metadata=mark,
            text={"string": "{latent}", "color": "white", "anchor": "upper_left", "size": 9},
        )  # fmt: skip

    def _artifact(self, n: int) -> np.ndarray | None:
        """The population layer's artifact kind per section (0 = none), when it says."""
        art = np.asarray(self.population.value.metadata.get("artifact", []))
        return art if art.shape == (n,) else None

    def receptive(self) -> None:
        """Receptive fields: ROI × latent impact, covariance and disentanglement score.

        Uses the sections without artifacts when the population layer's
        metadata says which (``artifact``, 0 = none, as the sample data has).
        """
        if self.model is None or self.rois.value is None:
            show_info("Load a model and choose the ROI labels layer first.")
            return
        scaled = self._scaled()
        if scaled is None:
            return
        art, factors = self._artifact(len(scaled)), self._factors(len(scaled))
        if art is not None and np.count_nonzero(art == 0) >= 2:
            scaled = scaled[art == 0]
            factors = None if factors is None else factors[art == 0]
        labels = np.asarray(self.rois.value.data)
        ids = sorted(int(i) for i in np.unique(labels) if i)
        names = self._names()

        def one(model: Any, _meta: Any) -> ProgressGen[tuple[ReceptiveFields, dict[str, Any]]]:
            return _receptive_run(model, scaled, labels, ids, names, factors)

        self._over_runs(one, "Receptive fields", self._show_receptive)

    def _factors(self, n: int) -> np.ndarray | None:
        """The population layer's known generative factors (N, F), when it has them."""
        f = np.asarray(self.population.value.metadata.get("factors", []), dtype=float)
        return f if f.ndim == 2 and len(f) == n and n >= 3 else None

    def _over_runs(self, make: Any, name: str, on_done: Any) -> None:
        """Start ``make(model, meta)`` for every run of the current model, one after the other."""
        by_seed = {seed: (model, meta) for seed, model, meta in self.runs}
        seeds = list(by_seed)
        gen = iter_repeats(lambda s: make(*by_seed[s]), seeds)
        name += f" of {len(seeds)} runs" if len(seeds) > 1 else ""
        done = lambda res: on_done(dict(zip(seeds, res, strict=True)))  # noqa: E731
        self.runner.start(gen, name=name, on_done=done)

    def _show_receptive(self, results: dict[int, tuple[ReceptiveFields, dict[str, Any]]]) -> None:
        for seed, (_, values) in results.items():
            self._compare(values, seed=seed)
        rf, values = next(iter(results.values()))  # the current model's
        score = values["disentanglement"]
        self.receptive_result = rf
        plot_impact(self.figure, rf.impact, rf.roi_names, self.active)
        self.canvas.draw_idle()
        self.status.value = f"disentanglement {score:.3g} (in the table, beside the other models)"
        if "mig" in values:
            self.status.value += f"; MIG on the known factors {values['mig']:.3g}"
        notes = impact_notes(rf.impact, rf.roi_names, self.active)
        if notes:
            self.status.value += "\n" + notes
        keep_latent(self, impact=rf)

    def _compare(self, values: dict[str, Any], *, seed: int | None = None) -> None:
        """Add ``values`` to the current model's run ``seed`` (default: the shown model's)."""
        seed = self.runs[0][0] if seed is None else seed
        runs = self.scores.setdefault(model_label(self.model, self.meta), {})
        runs.setdefault(seed, {}).update(values)
        self._fill_table()

    def _fill_table(self, _event: Any = None) -> None:
        fill_comparison(self.table, self.scores, each_run=self.each_run.value)
        self.comparison = {
            label if len(runs) == 1 else f"{label} seed {seed}": dict(row)
            for label, runs in self.scores.items() for seed, row in runs.items()
        }  # fmt: skip

    def quality(self) -> None:
        """CW-SSIM and PCA-Fréchet distance of reconstructions and samples; artifact rejection."""
        if self.model is None:
            show_info("Train or load a model first.")
            return
        scaled = self._scaled()
        if scaled is None:
            return
        try:
            crop_offset(scaled.shape, self.model.image_shape, name="the population's sections")
        except ValueError as err:
            show_error(str(err))
            return
        clean = None
        if self.clean.value is not None:
            if self.clean.value.data.shape != self.population.value.data.shape:
                show_error(f"{self.clean.value.name!r} does not match the population's shape.")
                return
            clean = preprocess_for(np.asarray(self.clean.value.data), self.meta)
        art = self._artifact(len(scaled))

        def one(model: Any, _meta: Any) -> ProgressGen[QualityReport]:
            return quality_report(model, scaled, clean=clean, artifact=art)

        self._over_runs(one, "Quality", self._show_quality)

    def _show_quality(self, reports: dict[int, QualityReport]) -> None:
        for seed, rep in reports.items():
            self._compare({k: v for k, v in rep.scores.items() if k in QUALITY_COLUMNS}, seed=seed)
        report = next(iter(reports.values()))  # the current model's picture
        layer = self._set_layer("reconstructions", report.picture, contrast_limits=self.clim,
                                colormap="magma")  # fmt: skip
        # left of the sections (the projective fields go to their right)
        layer.translate = (0.0, -report.picture.shape[1] - 0.1 * self.model.image_shape[1])
        self.status.value = f"table updated; left of the sections: {report.caption}"
        keep_latent(self, picture=report.picture)


def _receptive_run(
    model: Any, scaled: np.ndarray, labels: np.ndarray, ids: list[int], names: list[str],
    factors: np.ndarray | None,
) -> ProgressGen[tuple[ReceptiveFields, dict[str, Any]]]:  # fmt: skip
    """One run's receptive fields; the paper's score over all and active latents; its MIG."""
    rf = yield from receptive_fields(model, scaled, labels, roi_ids=ids, roi_names=names)
    codes = model.encode(scaled)  # (N, L)
    values = impact_scores(rf.impact, active_units(codes) if len(codes) >= 2 else None)
    if factors is not None:  # a standard measure on the known factors, blind to unused latents
        values["mig"] = mutual_info_gap(codes, factors)["mig"]
    return rf, values
