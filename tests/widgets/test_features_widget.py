from pathlib import Path

import numpy as np
import pytest
import torch
from napari.layers import Image, Labels

from napari_brainfeatures._widgets.features import FeatureMapWidget
from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.features.store import FeatureStore
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig, save_cnn

TINY = dict(channels=(4, 8, 8), kernels=(5, 3, 3), fc=(16, 8), n_classes=3)


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = BrainAreaCNN(CNNConfig(patch_size=32, paddings=(0, 0, 0), **TINY))
    return save_cnn(
        tmp_path / "tiny.safetensors", model, classes=ClassTable(default_table().classes[:3])
    )


def _widget(make_napari_viewer, data):
    viewer = make_napari_viewer()
    viewer.add_image(data, name="ct", scale=(1.0, 2.0, 2.0)[-data.ndim :])
    w = FeatureMapWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w


def test_run_on_current_slice_shows_live_layers(make_napari_viewer, qtbot, model_file):
    vol = np.random.default_rng(0).integers(0, 256, (3, 40, 36), dtype=np.uint8)
    viewer, w = _widget(make_napari_viewer, vol)
    viewer.dims.set_point(0, 1)
    w.model_path.value = model_file
    assert "3 classes (Ctx, HypoTh, Str)" in w.model_info.value and "exact" in w.model_info.value
    assert not w.exact.value
    w.stride.value = 2
    out = str(w.out.value)
    assert out.endswith("features/tiny-s2-z1_2.zarr") and ".brainfeatures" in out  # by job
    refreshes = []
    original = w.refresh_layers
    w.refresh_layers = lambda: (refreshes.append(1), original())[1]
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    assert refreshes  # layers were refreshed while tiles arrived
    areas, conf = viewer.layers["ct predicted areas"], viewer.layers["ct confidence"]
    assert isinstance(areas, Labels) and isinstance(conf, Image)
    assert areas.data.shape == (1, 20, 18)
    np.testing.assert_allclose(areas.scale, (1, 4, 4))
    np.testing.assert_allclose(areas.translate, (1, 0, 0))
    assert set(np.unique(np.asarray(areas.data))) <= {1, 2, 3}
    store = FeatureStore(out)
    assert store.complete and store.attrs["region"]["z"] == [1, 2]
    w.channel.value = 5
    w.channel_button.clicked.emit()
    layer = viewer.layers["ct feature 5"]
    np.testing.assert_array_equal(np.asarray(layer.data), np.asarray(store.features()[:, 5]))
    # a second run on another slice moves the layers there
    viewer.dims.set_point(0, 2)
    w.out.value = str(Path(out).with_name("second.zarr"))
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    for name in ("ct predicted areas", "ct confidence", "ct feature 5"):
        np.testing.assert_allclose(viewer.layers[name].translate, (2, 0, 0))
    # a layer of the user's under an output's name is never touched
    viewer.layers.remove("ct predicted areas")
    mine = viewer.add_labels(np.zeros((3, 40, 36), np.uint8), name="ct predicted areas")
    w.out.value = str(Path(out).with_name("third.zarr"))
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert not np.asarray(mine.data).any() and mine.data.shape == (3, 40, 36)
    ours = [
        ly for ly in viewer.layers if ly.name.startswith("ct predicted areas") and ly is not mine
    ]
    assert len(ours) == 1 and ours[0].data.shape == (1, 20, 18)
    # another job into an existing store: refused, in the dock's own words
    w.stride.value = 4
    w.out.value = str(Path(out).with_name("third.zarr"))
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    err = str(w.runner.last_error)
    assert "made by another job" in err and "tick 'replace a store made by another job'" in err
    assert "overwrite=True" not in err and FeatureStore(Path(out).with_name("third.zarr")).complete
    # ticked: the new store is built beside (shown live from there) and swapped in at the end
    w.overwrite.value = True
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    third = Path(out).with_name("third.zarr")
    assert w.store is not None and w.store.path == third and FeatureStore(third).stride == 4
    assert not [p for p in third.parent.iterdir() if p.name.startswith(".third.zarr.")]


def test_padded_model_offers_exact_mode_and_box_region(make_napari_viewer, qtbot, tmp_path):
    torch.manual_seed(1)
    cfg = CNNConfig.authors(patch_size=32, paddings=(1, 1, 0), **TINY)
    path = save_cnn(
        tmp_path / "padded", BrainAreaCNN(cfg), classes=ClassTable(default_table().classes[:3])
    )
    img = np.random.default_rng(1).random((30, 30)).astype(np.float32)
    viewer, w = _widget(make_napari_viewer, img)
    w.model_path.value = path
    assert "deviates by" in w.model_info.value and w.exact.value
    viewer.add_shapes([np.array([[8, 10], [8, 30], [20, 30], [20, 10]])], shape_type="rectangle")
    w.shapes.reset_choices()
    w.region.value = "box of a Shapes layer"
    w.stride.value = 3
    w.run_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    store = w.store
    assert store.attrs["method"] == "patch"
    assert store.attrs["region"]["y"] == [4, 11] and store.attrs["region"]["x"] == [5, 16]


def test_channel_contrast_comes_from_the_whole_plane():
    import dask.array as da

    from napari_brainfeatures._widgets._display import channel_range

    plane = np.zeros((1, 1024, 1024), np.float32)
    plane[:, 512:, 512:] = np.linspace(0, 10, 512 * 512).reshape(512, 512)  # dark corner
    lo, hi = channel_range(da.from_array(plane, chunks=(1, 256, 256)))
    assert lo == 0 and 9 < hi <= 10
    assert channel_range(np.full((4, 4), np.nan)) == (0.0, 1.0)


def test_a_weak_model_is_flagged_beside_its_maps(make_napari_viewer, qtbot, tmp_path, model_file):
    torch.manual_seed(0)
    model = BrainAreaCNN(CNNConfig(patch_size=32, paddings=(0, 0, 0), **TINY))
    counts = {"val": {"1": 40, "2": 40, "3": 40}}
    weak = save_cnn(
        tmp_path / "weak.safetensors",
        model,
        classes=ClassTable(default_table().classes[:3]),
        meta={"training": {"best_val_acc": 0.36, "counts": counts}},
    )
    img = np.random.default_rng(1).random((30, 30)).astype(np.float32)
    _, w = _widget(make_napari_viewer, img)
    w.model_path.value = model_file  # no training record: nothing said
    assert "WARNING" not in w.model_info.value
    w.model_path.value = weak
    assert "WARNING: weak model: validation accuracy 36.0% is near chance" in w.model_info.value
    # the long message pushes the rows below it down instead of running over them
    w.native.window().show()  # laid out as on screen
    w.native.resize(420, 900)
    qtbot.wait(100)
    row, below = w.model_info.native.parentWidget(), w.exact.native
    assert w.model_info.native.height() > 3 * w.model_info.native.fontMetrics().lineSpacing()
    assert below.mapTo(w.native, below.rect().topLeft()).y() >= row.geometry().bottom()
