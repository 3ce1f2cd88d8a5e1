"""Dock widget: sample patches from painted areas, train / load the CNN, test it, predict a slice.

Pick the image and its labels, choose three slices (by default the current z
and the next two sections 50 µm apart), "Sample patches" (centres shown as a
Points layer coloured by class, counts per class), then "Train" (progress bar,
Cancel, live loss/accuracy curves; the best model so far is kept in the workspace),
"Evaluate" on the test slice (accuracy, per-class table, confusion matrix), save or
load model files, and "Predict this slice" (predicted areas and confidence at the z).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    PushButton,
    SpinBox,
    Table,
)
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Image
from napari.utils.notifications import show_error, show_info, show_warning

from napari_brainfeatures._widgets._common import (
    current_z,
    image_choices,
    image_shape,
    insert_after,
    labels_choices,
    plain_numbers,
    refresh_choices_on_layer_change,
    say_file,
    scroll_body,
    status_label,
    workspace_for,
)
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.results_keep import keep_evaluation
from napari_brainfeatures._widgets.train_options import TrainOptions
from napari_brainfeatures._widgets.train_repeats import start_repeats
from napari_brainfeatures._widgets.train_split import SPLIT_KEY, SplitControls, show_split
from napari_brainfeatures._widgets.train_views import (
    counts_text,
    plot_history,
    show_evaluation,
    show_patch_centres,
    show_slice,
)
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.checkpoint import ModelFileError, check_save_path
from napari_brainfeatures.models.cnn import KIND, check_image_dtype, load_cnn, save_cnn
from napari_brainfeatures.progress import Progress
from napari_brainfeatures.train.evaluation import (
    Evaluation,
    iter_evaluate,
    trained_with_flips,
)
from napari_brainfeatures.train.fit import train_cnn
from napari_brainfeatures.train.plan import split_centres
from napari_brainfeatures.train.predict import SlicePrediction, predict_slice
from napari_brainfeatures.train.recipe import DEFAULTS, VARIANTS, make_config, training_history
from napari_brainfeatures.train.recorded import chance_of
from napari_brainfeatures.train.splits import (
    Splits,
    iter_sample_splits,
    painted_classes,
    split_slices,
)


def _data(layer: Any) -> Any:
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


class TrainWidget(Container):
    """Sample patches, train / load / save the brain-area CNN, evaluate, predict a slice."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=image_choices(viewer))
        self.area_labels = ComboBox(label="labels", choices=labels_choices(viewer))
        self.patch_size = SpinBox(label="patch size", value=128, min=16, max=1024)
        self.scan_options = TrainOptions(viewer)  # tissue, wide context, real-scan augmentation
        self.per_class = SpinBox(
            label="train / class", value=DEFAULTS["per_class"], min=1, max=1_000_000
        )
        self.eval_per_class = SpinBox(
            label="val, test / class", value=DEFAULTS["eval_per_class"], min=1, max=1_000_000
        )
        self.train_slice = SpinBox(label="train slice", min=0, max=0)
        self.val_slice = SpinBox(label="val slice", min=0, max=0)
        self.test_slice = SpinBox(label="test slice", min=0, max=0)
        self.slices_button = PushButton(text="Slices from current z (50 µm apart)")
        self.split = SplitControls(viewer)
        self.sample_button = PushButton(text="Sample patches")
        self.counts = Label(value="")
        self.variant = ComboBox(label="network", choices=list(VARIANTS), value="default")
        self.epochs = SpinBox(label="epochs", value=DEFAULTS["epochs"], min=1, max=10_000)
        self.batch_size = SpinBox(label="batch size", value=DEFAULTS["batch_size"], min=1, max=4096)
        self.repeats = SpinBox(label="repeats (seeds 0..N-1)", value=1, min=1, max=50)
        self.train_button = PushButton(text="Train")
        self.evaluate_button = PushButton(text="Evaluate on test slice")
        self.tta = CheckBox(text="score each patch as the mean of its 8 flips", value=True)
        self.scores = status_label("")
        self.table = plain_numbers(Table())
        self.model_path = FileEdit(label="model file", mode="w", filter="*.safetensors")
        self.save_button = PushButton(text="Save model…")
        self.load_button = PushButton(text="Load model…")
        self.stride = SpinBox(label="predict stride", value=16, min=1, max=512)
        self.predict_button = PushButton(text="Predict this slice")
        self.status = status_label("Pick an image and its labels, then sample patches.")
        self.runner = TaskRunner()
        files = Container(widgets=[self.save_button, self.load_button], layout="horizontal")
        super().__init__(widgets=[
            self.image, self.area_labels, self.scan_options.tissue, self.patch_size,
            self.scan_options.context, self.per_class, self.eval_per_class,
            self.train_slice, self.val_slice, self.test_slice, self.slices_button,
            self.split, self.sample_button, self.counts, self.variant, self.scan_options.real_scans,
            self.epochs, self.batch_size,
            self.repeats, self.train_button, self.status, self.runner, self.evaluate_button,
            self.tta, self.scores, self.table, self.model_path, files, self.stride,
            self.predict_button,
        ])  # fmt: skip
        self.figure = Figure(figsize=(4, 2.4), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.cm_figure = Figure(figsize=(4, 3.6), layout="constrained")
        self.cm_canvas = FigureCanvasQTAgg(self.cm_figure)
        # progress, Cancel and the live curves right under Train, where the eye is
        insert_after(self, self.runner, self.canvas)
        insert_after(self, self.table, self.cm_canvas)
        scroll_body(self, {self.canvas: 200, self.cm_canvas: 280, self.table.native: 170})
        self.splits: Splits | None = None
        self._sampled_from: Image | None = None  # the image layer the patches came from
        self.model: Any = None
        self._checkpoint: Path | None = None  # the running training's best-model file
        self._done = False
        self.meta: dict[str, Any] = {}
        self.classes: ClassTable | None = None
        self.history: list[dict[str, float]] = []
        self.evaluation: Evaluation | None = None
        refresh_choices_on_layer_change(viewer, self.image, self.area_labels)
        self.image.changed.connect(self.default_slices)
        self.area_labels.changed.connect(self.default_split)
        self.slices_button.changed.connect(self.default_slices)
        self.sample_button.changed.connect(self.sample)
        self.train_button.changed.connect(self.train)
        self.evaluate_button.changed.connect(self.evaluate)
        self.save_button.changed.connect(self.save)
        self.load_button.changed.connect(self.load)
        self.predict_button.changed.connect(self.predict)
        self.default_slices()
        self.default_split()

    # -- slices and patches ----------------------------------------------------
    def default_split(self, _event: Any = None) -> None:
        """Spatial blocks for labels painted on one slice (said in the status line)."""
        if self.area_labels.value is not None:
            labels = _data(self.area_labels.value)
            why = self.split.default_for(labels, labels.shape[0] if labels.ndim == 3 else 1)
            if why:
                self.status.value = why

    def default_slices(self, _event: Any = None) -> None:
        """Train slice = current z; validation and test 50 µm and 100 µm further on."""
        layer = self.image.value
        shape = image_shape(layer) if layer is not None else ()
        single = len(shape) == 2 or (len(shape) == 3 and shape[0] == 1)  # one section: regions
        for box in (self.train_slice, self.val_slice, self.test_slice, self.slices_button):
            box.visible = not single
        if len(shape) != 3 or single:
            return
        n_z = shape[0]
        voxel = layer.metadata.get("brainfeatures", {}).get("voxel_size_um") or [layer.scale[0]]
        assumed = float(voxel[0]) == 1.0  # napari's default scale: no voxel size known
        voxel_z = 1.17 if assumed else float(voxel[0])
        for box in (self.train_slice, self.val_slice, self.test_slice):
            box.max = n_z - 1
        want = max(1, round(50.0 / voxel_z))
        z = current_z(self.viewer, layer)
        start = min(z, n_z - 1 - 2 * want) if n_z - 1 >= 2 * want else z  # keep 50 µm
        try:
            zs = split_slices(n_z, voxel_size=voxel_z, start=start)
        except ValueError:
            zs = split_slices(n_z, voxel_size=voxel_z) if n_z >= 3 else (0, 0, 0)
        self.train_slice.value, self.val_slice.value, self.test_slice.value = zs
        got = zs[1] - zs[0]
        where = "assumed: the image has no voxel size" if assumed else "from the image"
        self.status.value = f"slices {zs[0]}/{zs[1]}/{zs[2]}: {got * voxel_z:.0f} µm apart"
        if zs[0] < z and got == want:
            self.status.value += f" (train slice moved back from z={z} to fit)"
        if got < want:
            self.status.value += (
                f" (50 µm is {want} slices at {voxel_z:g} µm, {where}; the volume has {n_z})"
            )

    def _label_table(self) -> ClassTable | None:
        raw = self.area_labels.value.metadata.get("classes") if self.area_labels.value else None
        return ClassTable.from_dict(raw) if isinstance(raw, dict) else None

    def sample(self) -> None:
        """Sample train / validation / test patches in a worker."""
        if self.image.value is None or self.area_labels.value is None:
            show_info("Choose an image layer and a labels layer first.")
            return
        image, labels = _data(self.image.value), _data(self.area_labels.value)
        zs = (self.train_slice.value, self.val_slice.value, self.test_slice.value)
        split_map, p = None, self.patch_size.value
        try:
            extra = self.scan_options.sampling(image, self.variant.value, p)
            if self.split.by_region:  # one section: the current slice, by region
                z = current_z(self.viewer, self.image.value)  # 0 for a 2-D image
                shape = tuple(labels.shape[-2:])
                centres = split_centres(shape, p, z, extra.get("tissue"), extra.get("min_tissue"))
                split_map = self.split.split_map(
                    self.image.value, labels, patch_size=p, z=z, centres=centres
                )
                show_split(self.viewer, self.image.value, split_map)
                self.status.value = f"sampling; {SPLIT_KEY}"
                zs = (z, z, z)
        except ValueError as err:
            show_error(f"Sample patches: {err}")
            return
        gen = iter_sample_splits(
            image,
            labels,
            slices=zs,
            **extra,
            patch_size=self.patch_size.value,
            per_class=self.per_class.value,
            eval_per_class=self.eval_per_class.value,
            classes=painted_classes(self._label_table(), labels, zs[0]) or None,
            warn=False,  # shown as notifications by _show_patches
            split_map=split_map,
        )
        source = self.image.value
        self.runner.start(
            gen, name="Sample patches", on_done=lambda r: self._show_patches(r, source)
        )

    def _show_patches(self, splits: Splits, source: Image) -> None:
        self.splits, self.classes, self._sampled_from = splits, splits.train.classes, source
        for msg in splits.warned:
            show_warning(msg)
        n = show_patch_centres(self.viewer, source, splits)
        self.counts.value = counts_text(splits)
        key = f" ({SPLIT_KEY})" if splits.split_map is not None else ""
        self.status.value = f"{n} patches sampled{key}; train when ready."

    # -- training ---------------------------------------------------------------
    def train(self) -> None:
        """Train in a worker; the best model so far is written to the workspace."""
        if self.splits is None:
            show_info("Sample patches first.")
            return
        if not self._patches_of_image("Train"):
            return
        s = self.splits
        try:
            config = make_config(
                self.variant.value, patch_size=s.train.patch_size,
                n_classes=len(s.train.class_ids), context=self.scan_options.k,
            )  # fmt: skip
        except ValueError as err:
            show_error(f"Train CNN: {err}")
            return
        name = f"cnn-{time.strftime('%Y%m%d-%H%M%S')}.safetensors"
        path = workspace_for(self.image.value).path("models", name)
        layer = self.image.value
        if self.repeats.value > 1:  # one model per seed, each tested (train_repeats)
            return start_repeats(self, path)
        gen = train_cnn(
            s.train,
            s.val,
            config=config,
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            checkpoint_path=path,
            classes=self.classes,
            voxel_size=tuple(float(v) for v in layer.scale[-3:]),
            split=s.record(),
            **self.scan_options.augmentation(),
        )
        self.history = []
        self._plot_history()
        say_file(self.status, "training; best model so far kept in {}", path)
        self._checkpoint, self._done = path, False
        self.runner.start(
            gen,
            name="Train CNN",
            on_progress=self._on_epoch,
            on_done=self._trained,
            on_finish=self._keep_best,
        )

    def _keep_best(self) -> None:
        """After a cancelled or failed run: load the best model it saved (if an epoch ended)."""
        path, self._checkpoint = self._checkpoint, None
        if self._done or path is None or not Path(path).is_file():
            if not self._done and path is not None:
                self.status.value = "stopped before the first epoch ended: no model saved"
            return
        try:
            model, meta = load_cnn(path)
        except ModelFileError as err:  # a half-written file cannot happen (atomic), but say so
            show_error(f"Train CNN: the best model so far could not be read: {err}")
            return
        self.model, self.meta, self.classes = model, meta, meta.pop("class_table")
        self.tta.value, self.model_file = trained_with_flips(self.meta), path
        tr = self.meta.get("training", {})
        say_file(
            self.status,
            f"stopped: kept the best model so far (epoch "
            f"{tr.get('best_epoch')}, val accuracy "
            f"{float(tr.get('best_val_acc', float('nan'))):.1%}) in {{}}",
            path,
        )

    def _on_epoch(self, rec: Progress) -> None:
        if "val_acc" in rec.values:
            self.history.append(dict(rec.values))
            self._plot_history()

    def _plot_history(self) -> None:
        counts = self.splits.val.counts.values() if self.splits is not None else []
        plot_history(self.figure, self.history, chance=chance_of(counts))

    def _trained(self, result: Any) -> None:
        self._done = True
        self.model, self.meta, self.model_file = result.model, result.meta, result.path
        self.tta.value = trained_with_flips(self.meta)
        say_file(
            self.status,
            f"best val accuracy {result.best_val_acc:.1%} (epoch {result.best_epoch}, "
            f"{result.meta['training_precision']} steps); model saved as {{}}",
            result.path,
        )

    # -- evaluation and prediction ------------------------------------------------
    def evaluate(self) -> None:
        """Score the model on the test patches in a worker."""
        if self.model is None or self.splits is None:
            show_info("Train or load a model, and sample patches, first.")
            return
        test = self.splits.test
        if not self._patches_of_image("Evaluate") or not self._dtype_ok(test.patches.dtype):
            return
        gen = iter_evaluate(self.model, self.splits.test, classes=self.classes, tta=self.tta.value)
        self.runner.start(gen, name="Evaluate", on_done=self._show_evaluation)

    def _patches_of_image(self, what: str) -> bool:
        """False (and a notification) when the sampled patches came from another image."""
        src, now = self._sampled_from, self.image.value
        if src is None or now is None or src is now:
            return True
        self.status.value = (
            f"{what}: the patches were sampled from {src.name!r}, not {now.name!r}; press "
            f"'{self.sample_button.text}' for {now.name!r} first (or choose {src.name!r} again)."
        )
        show_info(self.status.value)
        return False

    def _dtype_ok(self, dtype: Any) -> bool:
        """False (and a notification) when the model was trained on another dtype."""
        try:
            check_image_dtype(self.meta or {}, dtype)
        except ValueError as err:
            show_error(f"Train CNN: {err}")
            self.status.value = f"Refused: {err}"
            return False
        return True

    def _show_evaluation(self, ev: Evaluation) -> None:
        self.evaluation = ev
        self.scores.value = show_evaluation(self.table, self.cm_figure, ev)
        for text in ev.warnings():  # a weak model is never shown as if it were good
            show_warning(f"Train CNN: {text}")
        keep_evaluation(self, ev)

    def predict(self) -> None:
        """Classify the current z-slice; adds predicted-area and confidence layers."""
        if self.model is None or self.image.value is None:
            show_info("Train or load a model and choose an image first.")
            return
        layer = self.image.value
        if not self._dtype_ok(_data(layer).dtype):
            return
        z, data = current_z(self.viewer, layer), _data(layer)
        section = data[z] if data.ndim == 3 else data
        gen = predict_slice(self.model, section, stride=self.stride.value, classes=self.classes)
        self.runner.start(gen, name="Predict slice", on_done=lambda r: self._show_slice(r, z))

    def _show_slice(self, pred: SlicePrediction, z: int) -> None:
        show_slice(self.viewer, self.image.value, pred, z)
        self.status.value = f"predicted slice z={z} (stride {pred.stride})"

    # -- files ----------------------------------------------------------------------
    def _path(self) -> str | None:
        path = str(self.model_path.value)
        if not path or path == "." or self.model_path.value.is_dir():
            show_info("Choose a model file (.safetensors) first.")
            return None
        return path

    def save(self) -> None:
        """Write the current model to the chosen file."""
        path = self._path()
        if path is None:
            return
        if self.model is None:
            show_info("Train or load a model first.")
            return
        try:
            check_save_path(path, KIND)
            out = save_cnn(path, self.model, classes=self.classes, meta=self.meta)
        except (OSError, ValueError) as err:
            show_error(f"Could not save the model: {err}")
            return
        say_file(self.status, "model saved to {}", out)

    def load(self) -> None:
        """Load a model file; refused (notification) if it does not fit the sampled patches."""
        path = self._path()
        if path is None:
            return
        expect = {}
        if self.splits is not None:
            expect = {
                "expect_classes": self.splits.train.classes,
                "expect_patch_size": self.splits.train.patch_size,
            }
        try:
            model, meta = load_cnn(path, **expect)
        except ModelFileError as err:
            show_error(f"Model not loaded: {err}")
            return
        self.model, self.meta, self.classes = model, meta, meta.pop("class_table")
        self.tta.value, self.model_file = trained_with_flips(self.meta), Path(path)
        self.history = training_history(self.meta)  # the file's training curves, if it has them
        self._plot_history()
        self.patch_size.value = model.config.patch_size
        say_file(self.status, "loaded {}: " + ", ".join(self.classes.names), path)
