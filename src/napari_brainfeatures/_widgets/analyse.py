"""Dock widget: how good are the CNN's features? Probes, V-measure, Gram matrix, noise (paper 000).

One core call, :func:`napari_brainfeatures.analyse.report.analyse_model`, run by the
:class:`TaskRunner` on patches sampled from a training and a test slice: the trained
network against the same architecture with random weights (and optionally a
torchvision network from a local weights file).  Results: a table and a figure
(Gram matrices, PCA scatters, noise curves, probe accuracies).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    LineEdit,
    PushButton,
    SpinBox,
    Table,
)
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.utils.notifications import show_error

from napari_brainfeatures._widgets._common import (
    current_z,
    fill_model_path,
    image_choices,
    image_shape,
    labels_choices,
    plain_numbers,
    refresh_choices_on_layer_change,
    scroll_body,
    status_label,
)
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.results_keep import keep_report
from napari_brainfeatures.analyse.report import ModelAnalysis, analyse_model, report_figure
from napari_brainfeatures.models.checkpoint import ModelFileError, read_header
from napari_brainfeatures.train.recorded import recorded_slices

PLOT_ROW_PX = 200  # height of one row of the stacked report plots


def _records_split(path: Path) -> bool:
    """Whether a model file records its training and test slices or regions."""
    try:
        meta = read_header(path)["meta"]
    except ModelFileError:
        return False  # analyse_model names the problem
    return recorded_slices(meta, "train") is not None and recorded_slices(meta, "test") is not None


def parse_sigmas(text: str) -> list[float]:
    """``"0, 0.05 0.1"`` -> ``[0.0, 0.05, 0.1]``."""
    try:
        values = [float(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"noise levels must be numbers like '0, 0.05, 0.1', got {text!r}"
        ) from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"give at least one noise level >= 0, got {text!r}")
    return values


class AnalyseWidget(Container):
    """Compare the trained CNN's features with random-weight (and ImageNet) baselines."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=image_choices(viewer))
        self.area_labels = ComboBox(label="area labels", choices=labels_choices(viewer))
        self.model_path = FileEdit(label="model file", mode="r", filter="*.safetensors")
        self.own_split = CheckBox(
            text="the model's own split (its slices, or its regions of one section)", value=True
        )
        self.train_slice = SpinBox(label="train z", min=0, max=1_000_000, value=0)
        self.test_slice = SpinBox(label="test z", min=0, max=1_000_000, value=0)
        self.per_class = SpinBox(label="patches / class", min=2, max=100_000, value=200)
        self.sigmas = LineEdit(label="noise σ", value="0, 0.05, 0.1, 0.2, 0.3")
        self.relu = CheckBox(text="post-ReLU features (paper: pre-ReLU)", value=False)
        self.tv_arch = LineEdit(label="torchvision arch", value="")
        self.tv_weights = FileEdit(label="its weights", mode="r")
        self.run_button = PushButton(text="Analyse features")
        self.table = plain_numbers(Table())
        self.status = status_label("Pick image, labels and a trained model file.")
        self.runner = TaskRunner()
        super().__init__(
            widgets=[
                self.image,
                self.area_labels,
                self.model_path,
                self.own_split,
                self.train_slice,
                self.test_slice,
                self.per_class,
                self.sigmas,
                self.relu,
                self.tv_arch,
                self.tv_weights,
                self.run_button,
                self.status,
                self.runner,
                self.table,
            ]
        )
        self.figure = Figure(figsize=(4.8, 6), layout="constrained")  # dock stays narrow
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.native.layout().addWidget(self.canvas)
        scroll_body(self, {self.canvas: 420, self.table.native: 160})
        refresh_choices_on_layer_change(viewer, self.image, self.area_labels)
        self.run_button.changed.connect(self.run)
        self.own_split.changed.connect(self._split_choice)
        self.image.changed.connect(self.default_slices)
        self.image.changed.connect(lambda *_: fill_model_path(self.model_path, self.image.value))
        self.report: dict[str, Any] | None = None
        self.default_slices()
        self._split_choice()
        fill_model_path(self.model_path, self.image.value)  # the model trained on this image

    def _split_choice(self, *_: Any) -> None:
        """The slice boxes count only when the model's own split is not used."""
        for box in (self.train_slice, self.test_slice):
            box.enabled = not self.own_split.value

    def default_slices(self, *_: Any) -> None:
        """Train z = the current slice, test z 50 µm away (the paper's spacing), if it fits."""
        layer = self.image.value
        if layer is None or len(image_shape(layer)) != 3:
            return
        n_z = image_shape(layer)[0]
        voxel = layer.metadata.get("brainfeatures", {}).get("voxel_size_um") or [layer.scale[0]]
        voxel_z = 1.17 if float(voxel[0]) == 1.0 else float(voxel[0])  # 1.0: napari's default
        gap = min(max(1, round(50.0 / voxel_z)), n_z - 1)
        z = current_z(self.viewer, layer)
        self.train_slice.value = z
        self.test_slice.value = z + gap if z + gap < n_z else max(0, z - gap)

    def run(self, *_: Any) -> None:
        """Sample patches and run every analysis in a worker."""
        img, lab, path = self.image.value, self.area_labels.value, Path(str(self.model_path.value))
        if img is None or lab is None or not path.is_file():
            show_error("Analyse: pick an image, its area labels and a model file first.")
            return
        try:
            sigmas = parse_sigmas(str(self.sigmas.value))
        except ValueError as err:
            show_error(f"Analyse: {err}")
            return
        shapes = [tuple((ly.data[0] if ly.multiscale else ly.data).shape) for ly in (img, lab)]
        if shapes[0] != shapes[1]:
            show_error(
                f"Analyse: the labels {lab.name!r} have shape {shapes[1]}, the image "
                f"{img.name!r} {shapes[0]}; pick the labels painted on this image"
            )
            return
        own = bool(self.own_split.value) and _records_split(path)
        notes = []
        if self.own_split.value and not own:
            notes.append("the model records no split: using the slices above")
        if not own and img.ndim == 3 and self.train_slice.value == self.test_slice.value:
            notes.append("note: train and test slices are the same")
        if img.ndim == 2 and not own:
            notes.append("note: one section: probes are trained and tested on it alike")
        # a failed run must not leave the last run's result
        self.status.value = "running…" + (f" ({'; '.join(notes)})" if notes else "")
        arch = str(self.tv_arch.value).strip()
        self._keep_args = (  # what the report is kept with (the boxes may change meanwhile)
            {"model": str(path), "labels": lab.name, "torchvision": arch or None},
            {"own_split": own, "train_z": int(self.train_slice.value), "sigmas": sigmas,
             "test_z": int(self.test_slice.value), "per_class": int(self.per_class.value),
             "relu": bool(self.relu.value)},
        )  # fmt: skip
        gen = analyse_model(
            path,
            img.data[0] if img.multiscale else img.data,
            lab.data,
            train_slices=None if own else int(self.train_slice.value),
            test_slices=None if own else int(self.test_slice.value),
            per_class=int(self.per_class.value),
            sigmas=sigmas,
            relu=bool(self.relu.value),
            torchvision=(arch, str(self.tv_weights.value)) if arch else None,
        )
        self.runner.start(
            gen,
            name="Analyse",
            on_done=self._done,
            on_finish=self._stopped,
        )

    def _stopped(self) -> None:
        if self.status.value.startswith("running…"):  # cancelled or failed: no result
            self.status.value = "stopped: no result (cancelled or failed; see the message)"
            self.report = None
            self.table.clear()  # not the last run's numbers under a line saying 'no result'
            self.figure.clear()
            self.canvas.draw_idle()

    def _done(self, result: ModelAnalysis) -> None:
        self.report = report = result.report
        names = list(report)
        rows = [
            [round(report[n]["probes"][m], 3) for n in names]
            for m in ("linear_svm", "rbf_svm", "logistic")
        ]
        rows.append([round(report[n]["vmeasure"], 3) for n in names])
        rows.append([round(report[n]["gram_distance"], 3) for n in names])
        rows.append([round(report[n]["noise"]["accuracy"][-1], 3) for n in names])
        last = report[names[0]]["noise"]["sigmas"][-1]
        index = [
            "linear SVM",
            "RBF SVM",
            "logistic",
            "GMM V-measure",
            "Gram distance",
            f"LR acc. at σ={last:g}",
        ]
        self.table.value = {"data": rows, "index": index, "columns": names}
        self.canvas.setMinimumHeight(PLOT_ROW_PX * (len(report) + 2))  # narrow: one row each
        report_figure(report, self.figure, classes=result.classes, narrow=True)
        self.canvas.draw_idle()
        self.status.value = "done: " + ", ".join(
            f"{n} V-measure {report[n]['vmeasure']:.2f}" for n in names
        )
        keep_report(self, result, *self._keep_args)
