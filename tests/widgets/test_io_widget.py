import numpy as np
import pytest

from napari_brainfeatures._widgets.io import LoadWidget


def test_open_zarr_in_viewer(make_napari_viewer, qtbot, zarr_array, volume):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    w.is_folder.value = True
    w.path.value = zarr_array
    w.open_button.clicked.emit()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1 and not w.runner.running, timeout=10000)
    layer = viewer.layers[0]
    assert layer.scale.tolist() == pytest.approx([1.17, 1.17, 1.17])
    np.testing.assert_array_equal(np.asarray(layer.data[2]), volume[2])
    assert "shape (Z, Y, X): (6, 40, 50)" in w.info.value
    assert "workspace: " in w.info.value and w.info.tooltip.endswith(".brainfeatures")
    assert "brainfeatures_workspace" in layer.metadata


def test_open_ome_zarr_multiscale(make_napari_viewer, qtbot, tiff_stack, tmp_path):
    from napari_brainfeatures.io.convert import convert_to_ome_zarr
    from napari_brainfeatures.progress import run

    out = run(
        convert_to_ome_zarr(tiff_stack, tmp_path / "m.ome.zarr", chunks=(2, 16, 16), levels=2)
    )
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    w.path.value = out
    w.open()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1, timeout=10000)
    assert viewer.layers[0].multiscale


def test_bad_path_notifies_and_adds_nothing(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    (tmp_path / "empty").mkdir()
    w.path.value = tmp_path / "empty"
    w.open()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=10000)
    assert len(viewer.layers) == 0
    assert w.runner.last_error is not None and "no .tif" in str(w.runner.last_error)
    assert w.info.value == "not opened: empty (see the message)"  # not a previous volume
