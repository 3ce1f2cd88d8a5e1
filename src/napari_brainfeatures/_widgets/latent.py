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

from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    PushButton,
    SpinBox,
)
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info, show_warning

from napari_brainfeatures._widgets._common import (
    OWNER_TAG,
    insert_after,
    layers_of,
    put_layer,
    refresh_choices_on_layer_change,
    say_file,
    scroll_body,
    status_label,
)
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.latent_analyses import LatentAnalyses
from napari_brainfeatures._widgets.latent_panels import LatentSliders, show_training
from napari_brainfeatures._widgets.latent_training import LatentTraining, run_seed, seeds_text
from napari_brainfeatures.latent.codes import PopulationCodes, display_range, population_codes
from napari_brainfeatures.latent.model import (
    MODEL_NAMES,
    load_latent_model,
)
from napari_brainfeatures.latent.pca import PCA_KIND
from napari_brainfeatures.latent.population import (
    check_population_size,
    preprocess,
    preprocess_for,
    roi_names_for,
)
from napari_brainfeatures.latent.train import VAELatentModel, torch_threads
from napari_brainfeatures.models.checkpoint import check_save_path
from napari_brainfeatures.models.vae import KIND as VAE_KIND
from napari_brainfeatures.models.vae import save_vae
from napari_brainfeatures.progress import run

DECODE_LAYER = "β-VAE decode"


class LatentWidget(LatentTraining, LatentAnalyses, Container):
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
        tip = "train N times (seeds 0..N-1): the table shows each score's median [min–max]"
        self.repeats = SpinBox(label="repeats", value=1, min=1, max=50, tooltip=tip)
        self.balance = CheckBox(
            text="paper's loss balance on small sections", value=True,
            tooltip="Weigh the reconstruction by the ratio of the paper's 320×448 section to "
            "these sections (e.g. ×23 at 64×96), so that β weighs as much as in the paper; "
            "off: the plain loss, under which small sections' latents collapse.",
        )  # fmt: skip
        self.train_button = PushButton(text="Train")
        self.model_path = FileEdit(label="model file", mode="w", filter="*.safetensors")
        self.load_button = PushButton(text="Load")
        self.save_button = PushButton(text="Save")
        self.start = ComboBox(label="start from", choices=["population mean", "current section"])
        self.reset_button = PushButton(text="Reset")
        self.random_button = PushButton(text="Randomize")
        self.difference = CheckBox(text="show difference from start")
        self.sliders = LatentSliders(on_move=self.update_decode)
        self.status = status_label("Pick a population layer, then train or load a model.")
        self.runner = TaskRunner()
        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        files = Container(widgets=[self.load_button, self.save_button], layout="horizontal")
        moves = Container(widgets=[self.reset_button, self.random_button], layout="horizontal")
        super().__init__(
            widgets=[
                self.population, self.rois, self.preview_button, self.model_type, self.latent,
                self.beta, self.epochs, self.batch, self.lr, self.repeats, self.balance,
                self.train_button,
                self.status, self.runner,  # progress and Cancel in view while training
                self.model_path, files, self.start, moves, self.difference, self.sliders,
                *self._analysis_widgets(),  # projective, receptive, quality, comparison table
            ]
        )  # fmt: skip
        insert_after(self, self.runner, self.canvas)  # live curves under the progress bar
        scroll_body(self, {self.canvas: 220, self.table.native: 180})  # the table uncut
        self.model: Any = None
        self.meta: dict[str, Any] = {}
        self.runs: list[tuple[int, Any, dict[str, Any]]] = []  # (seed, model, meta) of repeats
        self._training_state()
        self.z_start: np.ndarray | None = None
        self.start_image: np.ndarray | None = None
        self.mean = np.zeros(0, np.float32)  # population latent mean (slider centres)
        self.clim = (0.0, 1.0)  # contrast of decoded sections (set with the model)
        self.codes: np.ndarray | None = None  # population latent codes (N, L)
        self.active: np.ndarray | None = None  # which latents vary over the population (L,)
        self.offset = (0, 0)  # where the model's input sits in the sections (decode layer)
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
        return preprocess_for(images, self.meta)

    def preview(self) -> None:
        """Add the pre-processed population as a layer beside the original."""
        images = self._images()
        if images is not None:
            scaled, info = preprocess(images)
            self._set_layer("pre-processed", scaled, contrast_limits=display_range(scaled))
            self.status.value = f"mean brightness {info['mean']:.4g}, clip at {info['clip']}×"

    # -- files ------------------------------------------------------------------
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
        self, model: Any, meta: dict[str, Any], *, message: str | None = None, file: Any = None,
        runs: list[tuple[int, Any, dict[str, Any]]] | None = None,
    ) -> None:  # fmt: skip
        """:meth:`set_model`, with the population encoded in a worker (seconds at full size)."""
        images = self._images() if self.population.value is not None else None

        def done(codes: PopulationCodes) -> None:
            self.set_model(model, meta, codes=codes, runs=runs)
            about = self.status.value  # what set_model said (the sections it sees included)
            if message:
                self.status.value = message
            elif file is not None:
                say_file(self.status, "loaded {}: " + about, file)

        gen = population_codes(model, images, meta=meta)
        self.runner.start(gen, name="Encode the population", on_done=done)

    def set_model(
        self, model: Any, meta: dict[str, Any], *, codes: PopulationCodes | None = None,
        runs: list[tuple[int, Any, dict[str, Any]]] | None = None,
    ) -> None:  # fmt: skip
        """Use ``model`` (numpy latent interface): one slider per latent, ±3σ of the population.

        ``codes``: :func:`~napari_brainfeatures.latent.codes.population_codes` of
        the population layer (computed here when None).  ``runs``: ``(seed, model,
        meta)`` of every repeat, ``model`` among them (default: ``model`` alone);
        the analyses score each.
        """
        if codes is None:
            images = self._images() if self.population.value is not None else None
            codes = run(population_codes(model, images, meta=meta))
        stale = {f"Latent: {n}" for n in ("projective fields", "reconstructions", "tile labels")}
        for old in [ly for ly in self.viewer.layers if ly.metadata.get(OWNER_TAG) in stale]:
            self.viewer.layers.remove(old)  # another model's pictures, not this one's
        self.model, self.meta = model, dict(meta)
        self.runs = runs or [(run_seed(model, meta), model, self.meta)]
        self.mean, self.codes, self.active = codes.mean, codes.codes, codes.active
        self.clim, self.offset = codes.clim, codes.offset or (0, 0)
        self.sliders.build(codes)
        L, kind = model.latent_dim, meta.get("model_type", "beta-vae")
        n_active = "" if codes.active is None else f", {int(codes.active.sum())} active"
        name = MODEL_NAMES.get(kind, kind)
        self.status.value = (
            f"{name} with L = {L}{n_active}{seeds_text(self.runs)}: move the sliders"
        )
        show_training(self.figure, meta, name)
        self.canvas.draw_idle()
        if codes.active is not None:
            self._compare({"active": int(codes.active.sum())})
        if codes.section_shape is not None and self.offset != (0, 0):
            (H, W), (h, w) = codes.section_shape, model.image_shape
            self.status.value += f" (on the {h}×{w} centre of the {H}×{W} sections)"
        trained_on = meta.get("cropped_from") or list(model.image_shape)
        if codes.section_shape is not None and list(trained_on) != list(codes.section_shape):
            (H, W), (h, w) = codes.section_shape, trained_on
            show_warning(
                f"Latent: the model was trained on {h}×{w} sections, these are {H}×{W}: its "
                "fields and scores describe what it sees of them and do not compare with a "
                "model trained on sections like these"
            )
        self.reset()

    @property
    def z(self) -> np.ndarray:
        """The latent vector the sliders show."""
        return self.sliders.z

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
        self.sliders.set_z(self.z_start)

    def randomize(self) -> None:
        """A random latent vector from the population's latent distribution."""
        if self.model is not None:
            std = np.array([s.max - s.min for s in self.sliders]) / 6  # sliders span ±3 std
            self.sliders.set_z(self.mean + np.random.default_rng().normal(size=len(std)) * std)

    def update_decode(self, _event: Any = None) -> np.ndarray | None:
        """Decode the sliders' vector into the decode layer (GUI thread, one decode)."""
        if self.model is None:
            return None
        with torch_threads(1):  # robust latency when the cores are busy (see torch_threads)
            img = self.model.decode(self.z[None])[0]  # (H, W)
        if self.difference.value and self.start_image is not None:
            img = img - self.start_image
            m = max(float(np.abs(img).max()), 1e-6)
            cmap, clim = "PiYG", (-m, m)
        else:
            cmap, clim = "magma", self.clim
        layer = self._set_layer(DECODE_LAYER, img, in_place=True, colormap=cmap,
                                contrast_limits=clim, translate=self.offset)  # fmt: skip
        if layer.colormap.name != cmap:  # the difference box was toggled
            layer.colormap = cmap
        kind = (self.meta or {}).get("model_type", "beta-vae")
        named = f"{MODEL_NAMES.get(kind, kind)} decode"  # a PCA's decode is not a β-VAE's
        if not layer.name.startswith(named):  # (napari's free name for a clash stays)
            layer.name = named
        return img

    def _set_layer(self, name: str, data: np.ndarray, **kwargs: Any) -> Image:
        """Show ``data`` in this dock's own layer ``name`` (never a user's layer of that name)."""
        return put_layer(self.viewer, name, data, "image", owner="Latent", **kwargs)
