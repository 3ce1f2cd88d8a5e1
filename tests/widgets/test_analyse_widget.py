import numpy as np
import pytest

from helpers import tiny_cnn, two_areas
from napari_brainfeatures._widgets.analyse import AnalyseWidget, parse_sigmas
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.cnn import save_cnn


@pytest.fixture
def model_file(tmp_path):
    return save_cnn(tmp_path / "m", tiny_cnn(2), classes=ClassTable.from_names(["a", "b"]))


def test_analyse_trained_vs_random(make_napari_viewer, qtbot, model_file):
    image, areas = two_areas()
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct")
    viewer.add_labels(areas, name="areas")
    w = AnalyseWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_path.value = model_file
    assert (w.train_slice.value, w.test_slice.value) == (0, 1)  # 50 µm does not fit: 1 apart
    w.per_class.value = 12
    w.sigmas.value = "0, 0.5"
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert w.runner.last_error is None, w.runner.last_error
    assert set(w.report) == {"trained", "random"}
    assert w.table.shape == (6, 2)
    assert w.report["trained"]["noise"]["sigmas"] == [0.0, 0.5]
    assert len(w.figure.axes) == 6 and "V-measure" in w.status.value


def test_bad_inputs(make_napari_viewer, qtbot, model_file, monkeypatch):
    viewer = make_napari_viewer()
    w = AnalyseWidget(viewer)
    shown = []
    monkeypatch.setattr("napari_brainfeatures._widgets.analyse.show_error", shown.append)
    w.run_button.clicked.emit()
    assert shown and "pick an image" in shown[0]
    assert parse_sigmas("0, 0.1 0.2") == [0.0, 0.1, 0.2]
    with pytest.raises(ValueError, match="numbers"):
        parse_sigmas("0, a")
    with pytest.raises(ValueError, match=">= 0"):
        parse_sigmas("-1")
    viewer.add_image(np.zeros((2, 40, 40), np.uint8), name="ct")
    viewer.add_labels(np.ones((2, 40, 40), np.uint8), name="areas")  # one class only
    w.model_path.value = model_file
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert "fewer than two" in str(w.runner.last_error)
    w.area_labels.value = viewer.add_labels(np.ones((40, 40), np.uint8), name="flat")
    w.run_button.clicked.emit()  # 2-D labels for a volume: said before any work
    assert not w.runner.running and "have shape (40, 40), the image 'ct' (2, 40, 40)" in shown[-1]


def test_default_slices_50um_apart_and_cancel_clears_running(make_napari_viewer, qtbot, model_file):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((100, 40, 40), np.uint8), name="ct", scale=(1.17, 1.17, 1.17))
    viewer.add_labels(np.ones((100, 40, 40), np.uint8), name="areas", scale=(1.17, 1.17, 1.17))
    viewer.dims.set_current_step(0, 70)
    w = AnalyseWidget(viewer)
    assert (w.train_slice.value, w.test_slice.value) == (70, 27)  # 43 slices = 50 µm, back
    viewer.dims.set_current_step(0, 10)
    w.default_slices()
    assert (w.train_slice.value, w.test_slice.value) == (10, 53)
    w.model_path.value = model_file
    w.table.value = {"data": [[0.9]], "index": ["linear SVM"], "columns": ["trained"]}  # earlier
    w.run_button.clicked.emit()
    w.runner.cancel()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.status.value.startswith("stopped: no result")
    assert w.table.shape[0] == 0  # no earlier numbers left under 'no result'


def test_own_split_uses_the_models_regions_and_falls_back_to_the_slices(
    make_napari_viewer, qtbot, tmp_path, model_file
):
    from helpers import one_section_split_model
    from napari_brainfeatures.train.recipe import overlapping_patches

    split_model, image, areas, sm = one_section_split_model(tmp_path)
    p = sm.patch_size
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct")
    viewer.add_labels(areas, name="areas")
    w = AnalyseWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.own_split.value and not w.train_slice.enabled  # the model's split by default
    w.model_path.value = split_model
    w.per_class.value = 8
    w.sigmas.value = "0"
    captured = {}
    done = w._done
    w._done = lambda result: (captured.setdefault("r", result), done(result))
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert w.runner.last_error is None, w.runner.last_error
    res = captured["r"]
    assert overlapping_patches(res.train, res.test) == 0  # regions a guard band apart
    for _, y, x in res.test.centres:
        assert sm.region("test")[y - p // 2 : y - p // 2 + p, x - p // 2 : x - p // 2 + p].all()
    w.model_path.value = model_file  # records no split: the slice boxes are used
    w.run_button.clicked.emit()
    assert "records no split" in w.status.value
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert w.runner.last_error is None, w.runner.last_error
    w.own_split.value = False
    assert w.train_slice.enabled and w.test_slice.enabled
