"""Dock widget: train or load a β-VAE / VAE / PCA on a population and explore its latents.

Pick a population (a 3-D N×H×W image layer) and its ROI labels, preview the
pre-processing, train (live recon / KL curves; Cancel keeps the best model so
far) or load a model, then move one slider per latent: every move decodes in
the GUI thread (~13 ms on one CPU thread at 320×448) into the "β-VAE decode"
layer.  Projective fields (all latents in one RGB picture beside the
sections), receptive fields (impact heatmap, covariance, disentanglement
score) and quality (CW-SSIM, PCA-Fréchet distance, artifact rejection against
a layer of clean sections) run in a worker with a progress bar and Cancel;
their scores fill one table with a row per model tried in this session.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSlider,
    FloatSpinBox,
    PushButton,
    SpinBox,
    Table,
)
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from napari_brainfeatures._widgets._common import (
    align_labels,
    insert_after,
    layers_of,
    plain_numbers,
    put_layer,
    refresh_choices_on_layer_change,
    say_file,
    scroll_body,
    status_label,
)
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures.latent.explore import (
    active_units,
    disentanglement_score,
    impact_covariance,
    projective_field,
    projective_rgb,
    receptive_fields,
)
from napari_brainfeatures.latent.population import (
    PCA_KIND,
    check_population_size,
    crop_offset,
    preprocess,
    roi_names_for,
)
from napari_brainfeatures.latent.quality import model_quality, reconstruction_picture, tile
from napari_brainfeatures.latent.train import (
    MODEL_NAMES,
    VAELatentModel,
    fit_pca,
    load_latent_model,
    model_label,
    torch_threads,
    train_vae,
)
from napari_brainfeatures.models.checkpoint import check_save_path
from napari_brainfeatures.models.vae import KIND as VAE_KIND
from napari_brainfeatures.models.vae import VAEConfig, save_vae
from napari_brainfeatures.progress import Progress, ProgressGen

DECODE_LAYER = "β-VAE decode"


def _fit_pca_gen(images: np.ndarray, latent_dim: int) -> ProgressGen[tuple[Any, dict]]:
    yield Progress(0, 1, "fitting PCA")
    return fit_pca(images, latent_dim=latent_dim)


def _projective_gen(
    model: Any, z0: np.ndarray, c_max: float, step: float
) -> ProgressGen[np.ndarray]:
    fields = []
    for k in range(len(z0)):
        fields.append(projective_rgb(projective_field(model, z0, k, c_max=c_max, step=step)))
        yield Progress(k + 1, len(z0), f"latent {k + 1}/{len(z0)}")
    return np.stack(fields)  # (L, H, W, 3)


def _display_range(images: np.ndarray) -> tuple[float, float]:
    """Fixed contrast limits for sections: 0 to the 99.5th percentile of a sample of pixels.

    Pre-processed sections sit around 1/clip (the dataset mean brightness) in
    [0, 1]; limits (0, 1) would show them as a dim, nearly flat image.  Fixed
    while the sliders move, so brightness changes stay visible.
    """
    flat = np.asarray(images, dtype=np.float32).reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    top = float(np.nanpercentile(sample, 99.5)) if np.isfinite(sample).any() else 1.0
    return 0.0, max(top, 1e-6)


class LatentWidget(Container):
    """Train / load a latent model of a population and traverse its latents with sliders."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.population = ComboBox(label="population (N×H×W)", choices=self._population_choices)
        self.rois = ComboBox(label="ROI labels", choices=self._roi_choices, nullable=True)
        self.preview_button = PushButton(text="Preview pre-processing")
        self.model_type = ComboBox(label="model", choices=list(MODEL_NAMES), value="beta-vae")
        self.latent = SpinBox(label="latents L", value=8, min=1, max=64)
        self.beta = FloatSpinBox(label="β", value=3.0, min=0.01, max=100.0, step=0.5)
        self.epochs = SpinBox(label="epochs", value=10, min=1, max=10_000)
        # CPU preset (paper: 64 / 2e-4, hours on a GPU); see train_vae
        self.batch = SpinBox(label="batch size", value=16, min=1, max=1024)
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4)
        self.train_button = PushButton(text="Train")
        self.model_path = FileEdit(label="model file", mode="w", filter="*.safetensors")
        self.load_button = PushButton(text="Load")
        self.save_button = PushButton(text="Save")
        self.start = ComboBox(label="start from", choices=["population mean", "current section"])
        self.reset_button = PushButton(text="Reset")
        self.random_button = PushButton(text="Randomize")
        self.difference = CheckBox(text="show difference from start")
        self.sliders = Container(labels=True)
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
        # one row per model tried in this session: β-VAE, VAE, PCA, a sweep of L
        # numbers as _fmt writes them (magicgui's delegate turns 0.0075 into 7.500e-03)
        self.table = plain_numbers(Table())
        self.comparison: dict[str, dict[str, float]] = {}
        self.status = status_label("Pick a population layer, then train or load a model.")
        self.runner = TaskRunner()
        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        files = Container(widgets=[self.load_button, self.save_button], layout="horizontal")
        moves = Container(widgets=[self.reset_button, self.random_button], layout="horizontal")
        sweep = Container(widgets=[self.c_max, self.c_step], layout="horizontal")
        super().__init__(
            widgets=[
                self.population, self.rois, self.preview_button, self.model_type, self.latent,
                self.beta, self.epochs, self.batch, self.lr, self.train_button,
                self.status, self.runner,  # progress and Cancel in view while training
                self.model_path, files, self.start, moves, self.difference, self.sliders, sweep,
                self.projective_button, self.receptive_button, self.clean, self.quality_button,
                self.table,
            ]
        )  # fmt: skip
        insert_after(self, self.runner, self.canvas)  # live curves under the progress bar
        scroll_body(self, {self.canvas: 220, self.table.native: 120})
        self.model: Any = None
        self.meta: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []
        self.z_start: np.ndarray | None = None
        self.start_image: np.ndarray | None = None
        self.mean = np.zeros(0, np.float32)  # population latent mean (slider centres)
        self.clim = (0.0, 1.0)  # contrast of decoded sections (set with the model)
        self.codes: np.ndarray | None = None  # population latent codes (N, L)
        self.active: np.ndarray | None = None  # which latents vary over the population (L,)
        self.receptive_result: Any = None
        self._scratch: Path | None = None  # the running training's best-model file
        self.offset = (0, 0)  # where the model's input sits in the sections (decode layer)
        self._done = False  # whether the running training returned its model
        self._pending: tuple[Any, dict[str, Any]] | None = None  # its model, to adopt
        self._quiet = False
        refresh_choices_on_layer_change(viewer, self.population, self.rois, self.clean)
        self.population.changed.connect(self._pick_clean)
        self.preview_button.changed.connect(self.preview)
        self.train_button.changed.connect(self.train)
        self.load_button.changed.connect(self.load)
        self.save_button.changed.connect(self.save)
        self.reset_button.changed.connect(self.reset)
        self.random_button.changed.connect(self.randomize)
        self.start.changed.connect(self.reset)
        self.difference.changed.connect(self.update_decode)
        self.projective_button.changed.connect(self.projective)
        self.receptive_button.changed.connect(self.receptive)
        self.quality_button.changed.connect(self.quality)
        self._pick_clean()

    # -- inputs -------------------------------------------------------------
    def _population_choices(self, _w: Any = None) -> list[tuple[str, Image]]:
        """3-D image layers, populations first.

        So the default is not a micro-CT volume or a population's clean copy.
        """

        def rank(la: Image) -> int:
            meta = la.metadata
            if any(k in meta for k in ("artifact", "factors", "factor_names")):
                return 0  # a population (the sample's, or a population store)
            if "clean_of" in meta or "brainfeatures" in meta:
                return 2  # clean sections, or a volume opened by the plugin (micro-CT)
            return 1

        layers = [la for la in layers_of(self.viewer, Image) if la.ndim == 3 and not la.rgb]
        return [(la.name, la) for la in sorted(layers, key=rank)]

    def _clean_choices(self, _w: Any = None) -> list[tuple[str, Image]]:
        pop = self.population.value if hasattr(self, "population") else None
        return [
            (name, la) for name, la in self._population_choices()
            if pop is None or (la is not pop and la.data.shape == pop.data.shape)
        ]  # fmt: skip

    def _pick_clean(self, _event: Any = None) -> None:
        """Preselect the population's ROI labels and clean sections when none are chosen.

        ROI labels: the first Labels layer of the section size; clean sections:
        the layer whose metadata says so (``clean_of``, as the sample data's).
        """
        self.clean.reset_choices()
        pop = self.population.value
        if pop is None:
            return
        if self.rois.value is None:
            for _, la in self._roi_choices():
                if la.data.shape == pop.data.shape[1:]:
                    self.rois.value = la
                    break
        for _, la in self._clean_choices():
            if la.metadata.get("clean_of") == pop.name:
                self.clean.value = la
                return

    def _roi_choices(self, _w: Any = None) -> list[tuple[str, Labels]]:
        return [(la.name, la) for la in layers_of(self.viewer, Labels)]

    def _images(self) -> np.ndarray | None:
        layer = self.population.value
        if layer is None:
            show_info("Choose a population image layer (N×H×W) first.")
            return None
        if layer.multiscale:
            show_error(
                f"{layer.name!r} is a multiscale image, a volume rather than a population: "
                "choose a stack of 2-D sections (N×H×W)"
            )
            return None
        try:
            check_population_size(layer.data.shape, name=repr(layer.name))
        except ValueError as err:
            show_error(str(err))
            return None
        return np.asarray(layer.data)

    def _scaled(self) -> np.ndarray | None:
        """The population pre-processed with the model's constants."""
        images = self._images()
        if images is None:
            return None
        pre = self.meta.get("preprocessing", {})
        return preprocess(images, mean=pre.get("mean"), clip=pre.get("clip", 3.8))[0]

    def preview(self) -> None:
        """Add the pre-processed population as a layer beside the original."""
        images = self._images()
        if images is not None:
            scaled, info = preprocess(images)
            self._set_layer("pre-processed", scaled, contrast_limits=_display_range(scaled))
            self.status.value = f"mean brightness {info['mean']:.4g}, clip at {info['clip']}×"

    # -- training and files ---------------------------------------------------
    def train(self) -> None:
        """Train the chosen model type on the population in a worker."""
        if self.runner.running:
            show_info("Another task is still running; cancel it or wait.")
            return
        images = self._images()
        if images is None:
            return
        kind = self.model_type.value
        if kind == "pca":
            gen = _fit_pca_gen(images, self.latent.value)
        else:
            beta = 1.0 if kind == "vae" else self.beta.value
            try:
                cfg = VAEConfig.for_shape(images.shape[1:], latent_dim=self.latent.value, beta=beta)
            except ValueError as err:
                show_error(f"Cannot train on sections of shape {images.shape[1:]}: {err}")
                return
            # the best model so far goes to a scratch file, so Cancel (or a failure in a
            # later epoch) still leaves it in the dock; Save writes it where the user wants
            self._scratch = Path(tempfile.mkdtemp(prefix="brainfeatures-vae-")) / "best.safetensors"
            gen = train_vae(
                images, config=cfg, epochs=self.epochs.value, batch_size=self.batch.value,
                lr=self.lr.value, roi_names=self._names(), checkpoint_path=self._scratch,
            )  # fmt: skip
        self.history = []
        self._done = False
        self.runner.start(gen, name=f"Train {MODEL_NAMES[kind]}", on_progress=self._on_epoch,
                          on_done=self._trained, on_finish=self._keep_best)  # fmt: skip

    def _keep_best(self) -> None:
        """After a run: adopt its model, or after a cancelled / failed one the best it saved."""
        scratch, self._scratch = self._scratch, None
        pending, self._pending = self._pending, None
        message = None
        try:
            if pending is None and not self._done and scratch is not None and scratch.exists():
                pending = load_latent_model(scratch)
                tr = pending[1].get("training", {})
                message = (
                    f"stopped: kept the best model so far (epoch {tr.get('best_epoch')}, "
                    f"{len(self.history)} finished); Save writes it to a file"
                )
        finally:
            if scratch is not None:
                shutil.rmtree(scratch.parent, ignore_errors=True)
        if pending is not None:
            self.adopt(*pending, message=message)

    def _on_epoch(self, rec: Progress) -> None:
        if not rec.values:
            return
        self.history.append(rec.values)
        self.figure.clear()
        for i, key in enumerate(("recon", "kl")):
            ax = self.figure.add_subplot(1, 2, i + 1)
            ep = [h.get("epoch", i + 1) for i, h in enumerate(self.history)]  # from 1
            ax.plot(ep, [h[key] for h in self.history], ".-", label="train")  # dots: 1 epoch
            ax.plot(ep, [h[f"val_{key}"] for h in self.history], ".-", label="val")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0.5, max(ep) + 0.5)  # one epoch: an axis around it, not 0.96 … 1.04
            ax.set_title(key)
            ax.set_xlabel("epoch")
        ax.legend(fontsize="small")
        self.canvas.draw_idle()

    def _trained(self, result: Any) -> None:
        self._done = True  # adopted when the worker has finished (_keep_best)
        self._pending = (
            result if isinstance(result, tuple) else (result.latent_model(), result.meta)
        )

    def load(self) -> None:
        """Load a β-VAE / VAE / PCA model file."""
        if self.runner.running:
            show_info("Another task is still running; cancel it or wait.")
            return
        try:
            model, meta = load_latent_model(str(self.model_path.value))
        except (ValueError, OSError) as err:  # ModelFileError is a ValueError
            show_error(f"Cannot load the model: {err}")
            return
        self.adopt(model, meta, file=self.model_path.value)

    def save(self) -> None:
        """Save the current model to the model file."""
        if self.model is None:
            show_info("Train or load a model first.")
            return
        path = str(self.model_path.value)
        is_vae = isinstance(self.model, VAELatentModel)
        try:
            check_save_path(path, VAE_KIND if is_vae else PCA_KIND)
            if is_vae:
                out = save_vae(path, self.model.model, meta=self.meta)
            else:
                out = self.model.save(path, meta=self.meta)
        except (OSError, ValueError) as err:
            show_error(f"Could not save the model: {err}")
            return
        say_file(self.status, "saved {}", out)

    def _names(self) -> list[str]:
        lab = self.rois.value
        ids = sorted(int(i) for i in np.unique(np.asarray(lab.data)) if i) if lab else []
        return roi_names_for(ids, lab.metadata.get("roi_names") if lab is not None else None)

    # -- sliders --------------------------------------------------------------
    def adopt(
        self, model: Any, meta: dict[str, Any], *, message: str | None = None, file: Any = None
    ) -> None:
        """:meth:`set_model`, with the population encoded in a worker (seconds at full size)."""
        images = self._images() if self.population.value is not None else None

        def job() -> ProgressGen[dict[str, Any]]:
            yield Progress(0, None, "encoding the population for the sliders")
            return _population_codes(model, meta, images)

        def done(codes: dict[str, Any]) -> None:
            self.set_model(model, meta, codes=codes)
            if message:
                self.status.value = message
            elif file is not None:
                say_file(self.status, "loaded {}", file)

        self.runner.start(job(), name="Encode", on_done=done)

    def set_model(
        self, model: Any, meta: dict[str, Any], *, codes: dict[str, Any] | None = None
    ) -> None:
        """Use ``model`` (numpy latent interface): one slider per latent, ±3σ of the population.

        ``codes``: what :func:`_population_codes` gives (computed here when None).
        """
        if codes is None:
            images = self._images() if self.population.value is not None else None
            codes = _population_codes(model, meta, images)
        self.model, self.meta = model, dict(meta)
        L = model.latent_dim
        offset = codes["offset"]
        self.mean, std, self.codes = codes["mean"], codes["std"], codes["codes"]
        self.clim = codes["clim"]
        # latents the model does not use (a β-VAE switches some off): their sliders
        # barely change the decode, so say so rather than leave the user guessing
        has_spread = self.codes is not None and len(self.codes) >= 2
        self.active = active_units(self.codes) if has_spread else None
        self._quiet = True
        self.sliders.clear()
        for k in range(L):
            lo, hi = float(self.mean[k] - 3 * std[k]), float(self.mean[k] + 3 * std[k])
            off = self.active is not None and not self.active[k]
            s = FloatSlider(label=f"z{k} (inactive)" if off else f"z{k}", min=lo, max=hi,
                            value=float(self.mean[k]), step=None)  # fmt: skip
            s.tooltip = f"code std over the population {std[k]:.3g}: " + (
                "the model does not use this latent" if off else "±3 std"
            )
            s.changed.connect(self.update_decode)
            self.sliders.append(s)
        align_labels(self.sliders)
        self._quiet = False
        kind = meta.get("model_type", "beta-vae")
        n_active = "" if self.active is None else f", {int(self.active.sum())} active"
        name = MODEL_NAMES.get(kind, kind)
        self.status.value = f"{name} with L = {L}{n_active}: move the sliders"
        if self.active is not None:
            self._compare({"active": f"{int(self.active.sum())}/{L}"})
        if offset not in (None, (0, 0)):
            (H, W), (h, w) = codes["shape"], model.image_shape
            self.status.value += f" (on the {h}×{w} centre of the {H}×{W} sections)"
        self.offset = offset or (0, 0)
        self.reset()

    @property
    def z(self) -> np.ndarray:
        """The latent vector the sliders show."""
        return np.array([s.value for s in self.sliders], dtype=np.float32)

    def _set_sliders(self, z: np.ndarray) -> None:
        self._quiet = True
        for s, v in zip(self.sliders, z, strict=True):
            s.value = float(np.clip(v, s.min, s.max))
        self._quiet = False
        self.update_decode()

    def reset(self, _event: Any = None) -> None:
        """Sliders back to the start: population mean or the current section's encoding."""
        if self.model is None:
            return
        z0 = self.mean
        if self.start.value == "current section" and self.population.value is not None:
            i = int(self.viewer.dims.current_step[0])
            scaled = self._scaled()
            if scaled is not None:
                z0 = self.model.encode(scaled[min(max(i, 0), len(scaled) - 1)][None])[0]
        self.z_start = np.asarray(z0, np.float32)
        self.start_image = self.model.decode(self.z_start[None])[0]
        self._set_sliders(self.z_start)

    def randomize(self) -> None:
        """A random latent vector from the population's latent distribution."""
        if self.model is not None:
            rng = np.random.default_rng()
            lo = np.array([s.min for s in self.sliders])
            hi = np.array([s.max for s in self.sliders])
            self._set_sliders(self.mean + rng.normal(size=len(lo)) * (hi - lo) / 6)

    def update_decode(self, _event: Any = None) -> np.ndarray | None:
        """Decode the sliders' vector into the decode layer (GUI thread, one decode)."""
        if self._quiet or self.model is None:
            return None
        with torch_threads(1):  # robust latency when the cores are busy (see torch_threads)
            img = self.model.decode(self.z[None])[0]  # (H, W)
        if self.difference.value and self.start_image is not None:
            img = img - self.start_image
            m = max(float(np.abs(img).max()), 1e-6)
            cmap, clim = "PiYG", (-m, m)
        else:
            cmap, clim = "magma", self.clim
        layer = self._set_layer(
            DECODE_LAYER,
            img,
            in_place=True,
            colormap=cmap,
            contrast_limits=clim,
            translate=self.offset,
        )
        if layer.colormap.name != cmap:  # the difference box was toggled
            layer.colormap = cmap
        return img

    def _set_layer(self, name: str, data: np.ndarray, **kwargs: Any) -> Image:
        """Show ``data`` in this dock's own layer ``name`` (never a user's layer of that name)."""
        return put_layer(self.viewer, name, data, "image", owner="Latent", **kwargs)

    # -- analyses -------------------------------------------------------------
    def projective(self) -> None:
        """Projective fields of all latents around the start vector, as one RGB stack."""
        if self.model is None or self.z_start is None:
            show_info("Train or load a model first.")
            return
        n = 2 * int(round(self.c_max.value / self.c_step.value)) + 1
        self.runner.start(
            _projective_gen(self.model, self.z_start, self.c_max.value, self.c_step.value),
            name=f"Projective fields ({n} decodes per latent)", on_done=self._show_projective,
        )  # fmt: skip

    def _show_projective(self, fields: np.ndarray) -> None:
        """All latents' fields in one picture beside the sections (not one per section)."""
        montage = tile(fields)
        width = self.population.value.data.shape[-1] if self.population.value else fields.shape[2]
        layer = self._set_layer("projective fields", montage, rgb=True)
        layer.translate = (0.0, 1.1 * width)  # to the right of the sections
        cols = min(len(fields), 4)
        self.status.value = (
            f"projective fields z0..z{len(fields) - 1}, {cols} per row; red: small −c, "
            "green: small +c, blue: large |c|"
        )

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
        art = np.asarray(self.population.value.metadata.get("artifact", []))
        if art.shape == (len(scaled),) and np.count_nonzero(art == 0) >= 2:
            scaled = scaled[art == 0]
        labels = np.asarray(self.rois.value.data)
        ids = sorted(int(i) for i in np.unique(labels) if i)
        gen = receptive_fields(self.model, scaled, labels, roi_ids=ids, roi_names=self._names())
        self.runner.start(gen, name="Receptive fields", on_done=self._show_receptive)

    def _show_receptive(self, rf: Any) -> None:
        self._compare({"disentanglement": disentanglement_score(rf.impact)})
        self.receptive_result = rf
        self.figure.clear()
        ax = self.figure.add_subplot(1, 2, 1)
        ax.imshow(rf.impact, cmap="viridis", aspect="auto")
        ax.set_yticks(range(len(rf.roi_names)), rf.roi_names, fontsize="small")
        L = rf.impact.shape[1]
        zs = [f"z{k}" for k in range(L)]
        ax.set_xticks(range(L), zs, fontsize="x-small")
        ax.set_title("impact (KL)", fontsize="small")
        ax2 = self.figure.add_subplot(1, 2, 2)
        ax2.imshow(impact_covariance(rf.impact), cmap="magma")
        ax2.set_xticks(range(L), zs, fontsize="x-small")
        ax2.set_yticks(range(L), zs, fontsize="x-small")
        ax2.set_title("covariance A", fontsize="small")
        active = self.active if self.active is not None and len(self.active) == L else None
        if active is not None and not active.all():
            ax.set_title("impact (KL); grey: inactive", fontsize="small")
            ticks = [*ax.get_xticklabels(), *ax2.get_xticklabels(), *ax2.get_yticklabels()]
            for k, tick in enumerate(ticks):
                if not active[k % L]:
                    tick.set_color("0.6")
        self.canvas.draw_idle()
        self.status.value = (
            f"disentanglement {self.comparison[self._model_label()]['disentanglement']:.3g} "
            "(in the table, beside the other models tried)"
        )

    # -- quality ---------------------------------------------------------------
    def _model_label(self) -> str:
        return model_label(self.model, self.meta)

    def _compare(self, values: dict[str, float]) -> None:
        """Add ``values`` to the current model's row of the comparison table."""
        self.comparison.setdefault(self._model_label(), {}).update(values)
        columns = [c for c in QUALITY_COLUMNS if any(c in r for r in self.comparison.values())]
        rows = [[_fmt(r.get(c)) for c in columns] for r in self.comparison.values()]
        self.table.value = {
            "data": rows, "index": list(self.comparison),
            "columns": [QUALITY_COLUMNS[c] for c in columns],
        }  # fmt: skip
        self.table.native.resizeColumnsToContents()

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
            pre = self.meta.get("preprocessing", {})
            clean = preprocess(np.asarray(self.clean.value.data), mean=pre.get("mean"),
                               clip=pre.get("clip", 3.8))[0]  # fmt: skip
        art = np.asarray(self.population.value.metadata.get("artifact", []))
        art = art if art.shape == (len(scaled),) else None
        gen = _quality_gen(self.model, scaled, clean, art)
        self.runner.start(gen, name="Quality", on_done=self._show_quality)

    def _show_quality(self, result: tuple[dict[str, Any], np.ndarray, str]) -> None:
        report, montage, what = result
        self._compare({k: v for k, v in report.items() if k in QUALITY_COLUMNS})
        layer = self._set_layer("reconstructions", montage, contrast_limits=self.clim,
                                colormap="magma")  # fmt: skip
        # left of the sections (the projective fields go to their right)
        layer.translate = (0.0, -montage.shape[1] - 0.1 * self.model.image_shape[1])
        self.status.value = f"table updated; left of the sections: {what}"


QUALITY_COLUMNS = {
    "active": "active",
    "disentanglement": "disentangl.",
    "cwssim_recon": "CW-SSIM",
    "cwssim_artifact": "CW-SSIM artifact",
    "artifact_penalty": "penalty",
    "pca_fd_recon": "FD recon",
    "pca_fd_samples": "FD samples",
}


def _fmt(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"


def _quality_gen(
    model: Any, images: np.ndarray, clean: np.ndarray | None, artifact: np.ndarray | None
) -> ProgressGen[tuple[dict[str, Any], np.ndarray, str]]:
    """The quality report, then a picture: rows of input | reconstruction (| clean)."""
    report = yield from model_quality(model, images, clean=clean, artifact=artifact)
    picture, idx, columns = reconstruction_picture(model, images, clean=clean, artifact=artifact)
    return report, picture, " | ".join(columns) + f" of sections {', '.join(map(str, idx))}"


def _population_codes(
    model: Any, meta: dict[str, Any], images: np.ndarray | None
) -> dict[str, Any]:
    """The population's latent codes and what the sliders need from them.

    Pre-processed with the model's constants: codes, their mean and spread
    (the sliders' centres and ranges), the display range and where the model's
    input sits in the sections; a neutral set without a fitting population.
    """
    L = model.latent_dim
    offset = None
    if images is not None:
        pre = meta.get("preprocessing", {})
        scaled = preprocess(images, mean=pre.get("mean"), clip=pre.get("clip", 3.8))[0]
        try:
            offset = crop_offset(scaled.shape, model.image_shape)
        except ValueError:
            offset = None
    if offset is None:
        mean = np.zeros(L, np.float32)
        return {
            "codes": None,
            "mean": mean,
            "std": np.full(L, 7 / 3),
            "offset": None,
            "clim": _display_range(model.decode(mean[None])),
            "shape": None,
        }
    codes = model.encode(scaled)  # (N, L); larger sections: their centre
    return {
        "codes": codes,
        "mean": codes.mean(0),
        "std": np.maximum(codes.std(0), 1e-3),
        "offset": offset,
        "clim": _display_range(scaled),
        "shape": scaled.shape[1:],
    }
