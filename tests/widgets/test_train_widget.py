"""TrainWidget: sample, train (live curves), evaluate, save/load, predict — tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_brainfeatures.classes import default_table
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig, save_cnn

P = 56  # the smallest patch the paper's network takes is 54


def toy():
    rng = np.random.default_rng(0)
    areas = np.zeros((7, 72, 150), np.uint8)
    areas[:, :, :75], areas[:, :, 75:] = 1, 5
    img = np.where(areas == 1, rng.normal(110, 8, areas.shape), rng.normal(110, 40, areas.shape))
    return np.clip(img, 0, 255).astype(np.uint8), areas


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    from napari_brainfeatures._widgets.train import TrainWidget

    viewer = make_napari_viewer()
    img, areas = toy()
    viewer.add_image(img, name="ct")
    viewer.add_labels(areas, name="areas", metadata={"classes": default_table().to_dict()})
    viewer.dims.set_current_step(0, 1)
    w = TrainWidget(viewer)
    w.patch_size.value, w.per_class.value, w.eval_per_class.value = P, 12, 6
    w.epochs.value, w.batch_size.value = 2, 8
    yield w
    if w.runner.worker is not None:
        w.runner.cancel()
        qtbot.waitUntil(lambda: w.runner.worker is None, timeout=30_000)


def wait(qtbot, w, timeout=120_000):
    qtbot.waitUntil(lambda: w.runner.worker is None, timeout=timeout)
    assert w.runner.last_error is None, w.runner.last_error


def test_default_slices_follow_current_z(widget):
    # 7 slices, 1.17 µm: 50 µm is clipped to fit: z=1 -> 1, 3, 5
    assert (widget.train_slice.value, widget.val_slice.value, widget.test_slice.value) == (1, 3, 5)
    widget.viewer.dims.set_current_step(0, 6)  # no room after z=6: centred instead
    widget.default_slices()
    assert (widget.train_slice.value, widget.val_slice.value, widget.test_slice.value) == (0, 3, 6)
    assert widget.status.value.startswith("slices 0/3/6: 4 µm apart")
    assert "43 slices at 1.17 µm, assumed: the image has no voxel size" in widget.status.value
    assert not widget.train_slice.native.isHidden()  # a volume: its slices are chosen


def test_sample_train_evaluate_predict_save_load(widget, qtbot, tmp_path):
    w = widget
    w.sample()
    wait(qtbot, w)
    points = w.viewer.layers["patch centres"]
    assert len(points.data) == 2 * 12 + 2 * 6 * 2
    assert set(points.data[:, 0]) == {1, 3, 5}
    assert "Ctx 12" in w.counts.value and "WM 6" in w.counts.value

    w.train()
    wait(qtbot, w)
    assert len(w.history) >= 1 and w.model is not None
    assert w.figure.axes[0].lines  # the live curves were drawn
    labels = [ln.get_label() for ln in w.figure.axes[1].lines]
    assert "chance 50%" in labels  # val: 6 Ctx, 6 WM patches
    assert "best val accuracy" in w.status.value
    assert f"{w.meta['training_precision']} steps" in w.status.value  # float32 or bfloat16

    w.evaluate()
    wait(qtbot, w)
    assert w.evaluation is not None and w.evaluation.n == 12 and w.evaluation.tta
    assert "test accuracy" in w.scores.value and "mean of 8 flips" in w.scores.value
    assert "(chance 50.0%)" in w.scores.value
    assert ("WARNING" in w.scores.value) == bool(w.evaluation.warnings())
    w.tta.value = False  # each test patch scored once
    w.evaluate()
    wait(qtbot, w)
    assert not w.evaluation.tta and "flips" not in w.scores.value
    assert w.table.shape == (2, 4) and w.table.row_headers == ("Ctx", "WM")
    assert w.cm_figure.axes

    w.stride.value = 16
    w.predict()
    wait(qtbot, w)
    areas = w.viewer.layers["predicted areas"]
    assert areas.data.shape == (1, 72, 150)
    assert set(np.unique(areas.data)) <= {0, 1, 5}
    assert np.isnan(w.viewer.layers["confidence"].data[0, 0, 0])
    assert areas.contour > 0  # outlines over the user's painted labels, not a second fill
    w.viewer.layers["confidence"].visible = True
    assert w.viewer.layers["confidence"].colorbar.visible  # a continuous map: its colour bar

    path = tmp_path / "m.safetensors"
    w.model_path.value = path
    w.save()
    assert path.exists()
    old = w.model
    w.model = None
    w.history = []
    w.load()
    assert w.model is not None and w.model is not old
    assert len(w.history) >= 1 and w.figure.axes[0].lines  # the file's curves are shown
    assert w.classes.names == ["Ctx", "WM"]


def test_load_refuses_model_for_other_classes(widget, qtbot, tmp_path, monkeypatch):
    import napari_brainfeatures._widgets.train as mod

    errors = []
    monkeypatch.setattr(mod, "show_error", errors.append)
    widget.sample()
    wait(qtbot, widget)
    other = tmp_path / "six.safetensors"
    save_cnn(other, BrainAreaCNN(CNNConfig(patch_size=P)), classes=default_table())
    widget.model_path.value = other
    widget.load()
    assert widget.model is None
    assert errors and "trained for classes" in errors[0]
    small = tmp_path / "p64.safetensors"
    two = default_table().remove(2).remove(3).remove(4).remove(6)
    save_cnn(small, BrainAreaCNN(CNNConfig(patch_size=64, n_classes=2)), classes=two)
    widget.model_path.value = small
    widget.load()
    assert widget.model is None and "64 px patches" in errors[-1]
    # a model trained on another dtype than the image: refused before any work
    widget.model = BrainAreaCNN(CNNConfig(patch_size=P, n_classes=2))
    widget.meta = {"normalisation": "uint16/65535", "input_scale": 1 / 65535}
    for action in (widget.predict, widget.evaluate):
        action()
        assert "trained on uint16 images" in errors[-1] and "uint8" in errors[-1]
        assert not widget.runner.running


def test_content_scrolls_instead_of_squeezing_plots(widget):
    from qtpy.QtWidgets import QScrollArea

    area = widget.native.findChild(QScrollArea)
    assert area is not None
    for w in (widget.canvas, widget.cm_canvas, widget.table.native, widget.train_button.native):
        assert area.widget().isAncestorOf(w)
    assert widget.cm_canvas.minimumHeight() == 280 and widget.table.native.minimumHeight() == 170
    # the dock is asked for the content's width: only the height scrolls
    assert area.minimumSizeHint().width() >= area.widget().minimumSizeHint().width()


def test_sampling_from_brush_strokes(widget, qtbot, monkeypatch):
    from napari_brainfeatures._widgets import train as train_mod

    shown = []
    monkeypatch.setattr(train_mod, "show_warning", shown.append)
    strokes = np.zeros((7, 72, 150), np.uint8)
    strokes[:, :, :70] = 1
    strokes[:, 33:38, 80:140] = 5  # a 5-px stroke of WM: no 56 px patch fits inside
    strokes[3, 33:38, 80:140] = 0  # and not painted on the validation slice
    widget.viewer.layers["areas"].data = strokes
    widget.sample()
    wait(qtbot, widget)
    assert widget.splits.train.centred == (5,)
    assert any(
        "training slices: no 56x56 patch fits inside the paint of class(es) 'WM' (id 5" in m
        for m in shown
    )
    assert any(m.startswith("validation slices: class(es) ['WM']") for m in shown)
    assert "WM 0" in widget.counts.value  # val has no WM; the network keeps its output


def test_cancel_training_keeps_the_best_model_so_far(widget, qtbot):
    w = widget
    w.sample()
    wait(qtbot, w)
    w.epochs.value = 200
    w.train()
    qtbot.waitUntil(lambda: len(w.history) >= 1, timeout=60_000)
    w.runner.cancel()
    wait(qtbot, w)
    assert w.model is not None  # the best epoch's model, read back from the workspace file
    assert w.status.value.startswith("stopped: kept the best model so far (epoch ")
    from pathlib import Path

    kept = Path(w.status.tooltip)  # the status names the file; its tooltip has the path
    assert kept.exists() and w.status.value.endswith(f"in {kept.name}")
    w.evaluate()  # and it is usable at once
    wait(qtbot, w)
    assert w.evaluation is not None
    # the Feature maps and Analyse docks offer the image's newest model themselves
    from napari_brainfeatures._widgets.analyse import AnalyseWidget
    from napari_brainfeatures._widgets.features import FeatureMapWidget

    for dock in (FeatureMapWidget(w.viewer), AnalyseWidget(w.viewer)):
        dock.image.value = w.viewer.layers["ct"]
        assert Path(str(dock.model_path.value)) == kept


def test_default_slices_move_back_to_keep_50um(make_napari_viewer):
    from napari_brainfeatures._widgets.train import TrainWidget

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((128, 8, 8), np.uint8), name="ct", scale=(1.17, 1.17, 1.17))
    viewer.dims.set_current_step(0, 63)
    w = TrainWidget(viewer)
    w.default_slices()
    assert (w.train_slice.value, w.val_slice.value, w.test_slice.value) == (41, 84, 127)
    assert "50 µm apart (train slice moved back from z=63 to fit)" in w.status.value


def test_progress_and_curves_sit_under_the_train_button(widget):
    from qtpy.QtWidgets import QScrollArea

    body = widget.native.findChild(QScrollArea).widget().layout()
    rows = [body.itemAt(i).widget() for i in range(body.count())]

    def row_of(qwidget):
        return next(
            i
            for i, r in enumerate(rows)
            if r is not None and (r is qwidget or r.isAncestorOf(qwidget))
        )

    train, runner = row_of(widget.train_button.native), row_of(widget.runner.native)
    assert train < runner and row_of(widget.canvas) == runner + 1
    assert row_of(widget.canvas) < row_of(widget.evaluate_button.native)
    assert row_of(widget.cm_canvas) == row_of(widget.table.native) + 1


def test_one_painted_section_is_split_by_blocks_and_drawn(make_napari_viewer, qtbot):
    from napari_brainfeatures._widgets.train import TrainWidget
    from napari_brainfeatures.train.recipe import overlapping_patches

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    areas = np.zeros((1, 320, 500), np.uint8)
    areas[:, 10:, :250], areas[:, 10:, 250:] = 1, 5
    img = rng.integers(0, 256, areas.shape, dtype=np.uint8)
    viewer.add_image(img, name="ct")
    viewer.add_labels(areas, name="areas", metadata={"classes": default_table().to_dict()})
    w = TrainWidget(viewer)
    assert w.split.mode.value == "spatial blocks" and "painted on one slice" in w.status.value
    assert w.test_slice.native.isHidden()  # a one-section volume: no slices to choose
    w.patch_size.value, w.per_class.value, w.eval_per_class.value = P, 12, 6
    w.sample()
    wait(qtbot, w)
    layer = viewer.layers["split regions"]
    regions = layer.data[0]
    assert set(np.unique(regions)) == {0, 1, 2, 3}
    # a key: fixed colours the status line names, and each region's name on hover
    blue = np.array([0x43, 0x63, 0xD8]) / 255
    np.testing.assert_allclose(layer.colormap.map(np.array([1]))[0][:3], blue, atol=1e-6)
    assert list(layer.features["split"]) == ["", "train", "validation", "test"]
    assert "blue train, orange validation, magenta test" in w.status.value
    s = w.splits
    assert s.split_map is not None and s.record()["guard"] == P
    assert overlapping_patches(s.train, s.test) == overlapping_patches(s.train, s.val) == 0
    shapes = viewer.add_shapes(  # three drawn rectangles: train, validation, test
        [[[0, 0], [150, 0], [150, 499], [0, 499]], [[200, 0], [319, 0], [319, 240], [200, 240]],
         [[200, 260], [319, 260], [319, 499], [200, 499]]], shape_type="rectangle",
    )  # fmt: skip
    w.split.mode.value, w.split.layer.value = "from a layer", shapes
    w.sample()
    wait(qtbot, w)
    assert w.splits.record()["mode"] == "mask" and w.splits.split_map.region("test")[300, 400]


def test_a_2d_section_layer_gets_2d_regions_and_patch_centres(make_napari_viewer, qtbot):
    """A single section added as a 2-D image: the split and the centres lie on its grid."""
    from napari_brainfeatures._widgets.train import TrainWidget
    from napari_brainfeatures._widgets.train_views import on_slice, slice_data

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    areas = np.zeros((320, 500), np.uint8)
    areas[10:, :250], areas[10:, 250:] = 1, 5
    img = rng.integers(0, 256, areas.shape, dtype=np.uint8)
    image = viewer.add_image(img, name="ct", scale=(2.0, 2.0), translate=(10.0, 0.0))
    viewer.add_labels(areas, name="areas", scale=(2.0, 2.0), translate=(10.0, 0.0),
                      metadata={"classes": default_table().to_dict()})  # fmt: skip
    w = TrainWidget(viewer)
    assert w.split.mode.value == "spatial blocks"
    # one section: no train / validation / test slices to choose
    assert w.train_slice.native.isHidden() and w.slices_button.native.isHidden()
    w.patch_size.value, w.per_class.value, w.eval_per_class.value = P, 12, 6
    w.sample()
    wait(qtbot, w)
    regions, points = viewer.layers["split regions"], viewer.layers["patch centres"]
    assert regions.data.shape == areas.shape and set(np.unique(regions.data)) == {0, 1, 2, 3}
    assert tuple(regions.scale) == (2.0, 2.0) and tuple(regions.translate) == (10.0, 0.0)
    assert points.data.shape[1] == 2 and tuple(points.scale) == (2.0, 2.0)
    y, x = points.data[0].astype(int)
    assert areas[y, x] > 0  # a centre on its painted pixel, on the image's own grid
    assert slice_data(image, areas).shape == areas.shape and on_slice(image, 0)["scale"] == (2, 2)
    w.epochs.value, w.batch_size.value = 1, 8
    w.train()
    wait(qtbot, w)
    w.stride.value = 16
    w.predict()  # the section itself, not a row of it
    wait(qtbot, w)
    pred = viewer.layers["predicted areas"]
    assert pred.ndim == 2 and tuple(pred.scale) == (2.0, 2.0)
    assert set(np.unique(pred.data)) - {0} <= {1, 5} and (pred.data > 0).any()


def test_repeats_train_each_seed_and_report_median_and_range(widget, qtbot):
    from napari_brainfeatures.models.cnn import load_cnn

    w = widget
    w.epochs.value = 1
    w.sample()
    wait(qtbot, w)
    w.repeats.value = 3
    w.train()
    assert "Train CNN ×3" in w.runner.status.value or w.runner.worker is not None
    wait(qtbot, w, timeout=240_000)
    res = w.repeat_runs
    assert res["seeds"] == [0, 1, 2]
    accs = [r["test_accuracy"] for r in res["runs"]]
    acc = res["summary"]["test_accuracy"]
    assert acc.values == tuple(accs) and acc.low <= acc.median <= acc.high
    assert f"[{acc.low:.1%}–{acc.high:.1%}] over 3 runs" in w.status.value
    assert "seed 2: " in w.status.value
    first = w.model_file
    assert first.name.endswith("_seed0.safetensors") and w.model is not None
    for seed, a in enumerate(accs):  # each run's model saved, named by its seed, with its score
        meta = load_cnn(first.with_name(first.name.replace("_seed0", f"_seed{seed}")))[1]
        assert meta["training"]["seed"] == seed and meta["test"]["accuracy"] == a


def test_tissue_mask_wide_context_and_real_scan_augmentation(make_napari_viewer, qtbot):
    from napari_brainfeatures._widgets.tissue import TISSUE_KEY
    from napari_brainfeatures._widgets.train import TrainWidget

    rng = np.random.default_rng(0)
    areas = np.zeros((7, 128, 300), np.uint8)
    areas[:, :, :150], areas[:, :, 150:] = 1, 5
    img = np.where(areas == 1, rng.normal(110, 8, areas.shape), rng.normal(110, 40, areas.shape))
    tissue = np.zeros_like(areas)
    tissue[:, :, 30:270] = 1  # background at both sides
    viewer = make_napari_viewer()
    viewer.add_image(np.clip(img, 0, 255).astype(np.uint8), name="ct")
    viewer.add_labels(areas, name="areas", metadata={"classes": default_table().to_dict()})
    viewer.add_labels(tissue, name="ct tissue", metadata={TISSUE_KEY: True})
    viewer.dims.set_current_step(0, 1)
    w = TrainWidget(viewer)
    assert w.scan_options.tissue.layer.value is viewer.layers["ct tissue"]  # found by itself
    w.per_class.value, w.eval_per_class.value, w.epochs.value, w.batch_size.value = 8, 4, 1, 8
    w.patch_size.value = 113  # no central view for a context of 2: said, nothing sampled
    w.scan_options.context.value = 2
    w.sample()
    assert w.splits is None and w.runner.worker is None
    w.patch_size.value = 112  # 56 px views
    w.scan_options.real_scans.value = True
    w.sample()
    wait(qtbot, w)
    xs = w.viewer.layers["patch centres"].data[:, 2]
    assert xs.min() >= 30 + 56 - 12 and xs.max() <= 270 - 56 + 12  # >= 90 % of a window in tissue
    w.train()
    wait(qtbot, w)
    assert w.model.config.context == 2 and w.model.config.view_size == 56
    assert w.meta["intensity_gradient"] == 0.5 and w.meta["local_contrast"] == 0.5
    assert w.meta["training"]["min_tissue"] == pytest.approx(0.9)  # recorded in the model


def test_a_class_without_test_patches_reads_n_a_not_zero():
    from napari_brainfeatures._widgets.train_views import score_row

    d = {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 8}
    assert score_row(d) == [0.5, 0.25, 0.333, 8]
    none = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert score_row(none, predicted=False) == ["n/a", "n/a", "n/a", 0]
    assert score_row(none, predicted=True) == [0.0, "n/a", "n/a", 0]  # called, always wrongly


def test_patches_of_another_image_are_not_trained_or_scored(widget, qtbot, monkeypatch):
    """Changing the image after sampling: Train and Evaluate say so instead of using them."""
    import napari_brainfeatures._widgets.train as mod

    said = []
    monkeypatch.setattr(mod, "show_info", said.append)
    widget.sample()
    wait(qtbot, widget)
    other = widget.viewer.add_image(toy()[0].astype(np.float32) * 1.5, name="ct float")
    widget.image.value = other
    widget.model = BrainAreaCNN(CNNConfig(patch_size=P, n_classes=2))
    for action in (widget.train, widget.evaluate):
        action()
        assert not widget.runner.running
        assert "sampled from 'ct', not 'ct float'" in said[-1]
    widget.image.value = widget.viewer.layers["ct"]
    widget.evaluate()  # the image the patches came from: scored
    wait(qtbot, widget)
    assert widget.evaluation is not None
