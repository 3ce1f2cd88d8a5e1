"""The latent dock's analyses: projective and receptive fields, quality, the comparison table.

:class:`LatentAnalyses` is a part of
:class:`~napari_brainfeatures._widgets.latent.LatentWidget` (a mixin): its
buttons each start one core generator in the dock's worker and show what it
returns as layers, the impact plot and a row of the comparison table.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, PushButton, Table
from matplotlib.figure import Figure
from napari.utils.notifications import show_error, show_info

from napari_brainfeatures._widgets._common import plain_numbers
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.latent_panels import (
    QUALITY_COLUMNS,
    fill_comparison,
    plot_impact,
)
from napari_brainfeatures._widgets.results_keep import keep_latent
from napari_brainfeatures.latent.explore import (
    ReceptiveFields,
    disentanglement_score,
    projective_fields,
    projective_rgb,
    receptive_fields,
)
from napari_brainfeatures.latent.model import model_label
from napari_brainfeatures.latent.population import crop_offset, preprocess_for
from napari_brainfeatures.latent.quality import QualityReport, quality_report, tile


class LatentAnalyses:
    """Projective fields, receptive fields and quality of the dock's model, one button each.

    The dock provides the attributes annotated below and ``_scaled`` (its
    population pre-processed for the model), ``_names`` (ROI names),
    ``_set_layer`` and ``_clean_choices``.
    """

    # the dock's, used here
    model: Any
    meta: dict[str, Any]
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
        self.comparison: dict[str, dict[str, float | str]] = {}
        self.receptive_result: ReceptiveFields | None = None
        self.projective_button.changed.connect(self.projective)
        self.receptive_button.changed.connect(self.receptive)
        self.quality_button.changed.connect(self.quality)
        sweep = Container(widgets=[self.c_max, self.c_step], layout="horizontal")
        return [sweep, self.projective_button, self.receptive_button, self.clean,
                self.quality_button, self.table]  # fmt: skip

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
        self.status.value = (
            f"projective fields z0..z{len(fields) - 1}, {min(len(fields), 4)} per row; red: "
            "small −c, green: small +c, blue: large |c|"
        )
        keep_latent(self, fields=fields, picture=picture)

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
        art = self._artifact(len(scaled))
        if art is not None and np.count_nonzero(art == 0) >= 2:
            scaled = scaled[art == 0]
        labels = np.asarray(self.rois.value.data)
        ids = sorted(int(i) for i in np.unique(labels) if i)
        gen = receptive_fields(self.model, scaled, labels, roi_ids=ids, roi_names=self._names())
        self.runner.start(gen, name="Receptive fields", on_done=self._show_receptive)

    def _show_receptive(self, rf: ReceptiveFields) -> None:
        score = disentanglement_score(rf.impact)
        self._compare({"disentanglement": score})
        self.receptive_result = rf
        plot_impact(self.figure, rf.impact, rf.roi_names, self.active)
        self.canvas.draw_idle()
        self.status.value = f"disentanglement {score:.3g} (in the table, beside the other models)"
        keep_latent(self, impact=rf)

    def _compare(self, values: dict[str, float | str]) -> None:
        """Add ``values`` to the current model's row of the comparison table."""
        self.comparison.setdefault(model_label(self.model, self.meta), {}).update(values)
        fill_comparison(self.table, self.comparison)

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
        gen = quality_report(self.model, scaled, clean=clean, artifact=self._artifact(len(scaled)))
        self.runner.start(gen, name="Quality", on_done=self._show_quality)

    def _show_quality(self, report: QualityReport) -> None:
        self._compare({k: v for k, v in report.scores.items() if k in QUALITY_COLUMNS})
        layer = self._set_layer("reconstructions", report.picture, contrast_limits=self.clim,
                                colormap="magma")  # fmt: skip
        # left of the sections (the projective fields go to their right)
        layer.translate = (0.0, -report.picture.shape[1] - 0.1 * self.model.image_shape[1])
        self.status.value = f"table updated; left of the sections: {report.caption}"
        keep_latent(self, picture=report.picture)
