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


def test_unknown_voxel_size_is_set_in_the_dock(make_napari_viewer, qtbot, tmp_path, tiff_stack):
    from PIL import Image

    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / "section.png")
    viewer = make_napari_viewer()
    w = LoadWidget(viewer)
    w.is_folder.value = False
    w.path.value = tiff_stack  # known: the fields show it and are locked
    w.open()
    qtbot.waitUntil(lambda: len(viewer.layers) == 1 and not w.runner.running, timeout=10000)
    assert [b.value for b in w.voxel] == pytest.approx([1.17] * 3)
    assert not any(b.enabled for b in w.voxel)
    w.path.value = tmp_path / "section.png"
    w.open()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2 and not w.runner.running, timeout=10000)
    layer = viewer.layers[-1]
    assert layer.data.shape == (1, 20, 30) and layer.scale.tolist() == [1.0, 1.0, 1.0]
    assert "voxel size: unknown" in w.info.value and "converted to grey" in w.info.value
    assert all(b.enabled for b in w.voxel) and "(µm)" in w.voxel[0].label
    for box, v in zip(w.voxel, (5.0, 0.65, 0.65), strict=True):
        box.value = v
    assert layer.scale.tolist() == pytest.approx([5.0, 0.65, 0.65])
    assert layer.metadata["brainfeatures"]["voxel_size_um"] == pytest.approx([5.0, 0.65, 0.65])
    assert w.volume.voxel_size == pytest.approx((5.0, 0.65, 0.65))
    assert viewer.layers[0].scale.tolist() == pytest.approx([1.17] * 3)  # others untouched


def test_world_units_scale_bar_and_colour_bars(make_napari_viewer, qtbot, zarr_array):
    """A volume of known voxel size: µm on every layer, the scale bar on, maps with colour bars."""
    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((6, 40, 50), np.uint8))  # before: follows the volume
    w = LoadWidget(viewer)
    assert not viewer.canvas.overlays.scale_bar.visible  # nothing in µm yet
    w.is_folder.value = True
    w.path.value = zarr_array
    w.open()
    qtbot.waitUntil(lambda: len(viewer.layers) == 2 and not w.runner.running, timeout=10000)
    assert [str(u) for u in viewer.layers[-1].units] == ["micrometer"] * 3
    assert [str(u) for u in labels.units] == ["micrometer"] * 3
    assert viewer.canvas.overlays.scale_bar.visible
    owned = {"brainfeatures_owner": "Feature maps"}
    rng = np.random.default_rng(0)
    fmap = viewer.add_image(rng.random((40, 50)), colormap="viridis", metadata=owned)
    grey = viewer.add_image(rng.random((40, 50)), metadata=owned)
    mine = viewer.add_image(rng.random((40, 50)), colormap="magma")  # the user's own layer
    assert [str(u) for u in fmap.units] == ["micrometer"] * 2
    assert fmap.colorbar.visible and not grey.colorbar.visible and not mine.colorbar.visible
    second = viewer.add_image(rng.random((40, 50)), colormap="magma", metadata=owned)
    assert second.colorbar.visible and not fmap.colorbar.visible  # one bar: the newest map
    viewer.layers.selection.active = fmap
    assert fmap.colorbar.visible and not second.colorbar.visible  # ... or the selected one
    composite = viewer.add_image(rng.random((40, 50, 3)), rgb=True, metadata=owned)
    assert not fmap.colorbar.visible and not second.colorbar.visible  # the RGB shows: no bar
    composite.visible = False
    assert second.colorbar.visible
