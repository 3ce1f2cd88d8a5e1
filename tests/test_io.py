import numpy as np
import pytest
import tifffile
import zarr

from napari_brainfeatures.io.volume import VolumeError, open_volume, sample_contrast_limits


def test_tiff_stack_is_lazy_and_exact(tiff_stack, volume):
    vol = open_volume(tiff_stack)
    assert vol.kind == "tiff"
    assert vol.shape == volume.shape and vol.dtype == np.uint8
    assert vol.voxel_size == pytest.approx((1.17, 1.17, 1.17))
    np.testing.assert_array_equal(vol.data[3].compute(), volume[3])
    np.testing.assert_array_equal(vol.data.compute(), volume)


def test_tiff_folder_natural_order(tiff_folder, volume):
    # slice_10 must come after slice_9: add more slices to exercise natural sort.
    for i in range(6, 12):
        tifffile.imwrite(tiff_folder / f"slice_{i}.tif", np.full(volume.shape[1:], i, np.uint8))
    vol = open_volume(tiff_folder)
    assert vol.kind == "tiff-folder" and vol.shape == (12, 40, 50)
    assert vol.data.chunks[0] == (1,) * 12
    np.testing.assert_array_equal(vol.data[:6].compute(), volume)
    assert int(vol.data[10, 0, 0]) == 10 and int(vol.data[11, 0, 0]) == 11


def test_zarr_v2_and_v3(zarr_array, volume):
    vol = open_volume(zarr_array)
    assert vol.kind == "zarr" and vol.data.chunksize == (2, 16, 16)
    assert vol.voxel_size == (1.17, 1.17, 1.17)
    np.testing.assert_array_equal(vol.data.compute(), volume)


def test_zarr_group_picks_image_array(tmp_path, volume):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("areas", shape=volume.shape, dtype="uint8")
    g.create_array("image", shape=volume.shape, dtype="uint8")[:] = volume
    vol = open_volume(tmp_path / "g.zarr")
    assert vol.name == "image"
    np.testing.assert_array_equal(vol.data.compute(), volume)
    assert open_volume(tmp_path / "g.zarr", array="areas").data.max().compute() == 0
    assert open_volume(tmp_path / "g.zarr" / "areas").name == "areas"


def test_group_without_obvious_image_asks_for_a_name(tmp_path):
    g = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    g.create_array("a", shape=(2, 3, 4), dtype="uint8")
    g.create_array("b", shape=(2, 3, 4), dtype="uint8")
    with pytest.raises(VolumeError, match=r"holds arrays \['a', 'b'\]"):
        open_volume(tmp_path / "g.zarr")


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_volume("/nonexistent/brain.zarr")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(VolumeError, match="not a supported volume"):
        open_volume(tmp_path / "notes.txt")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"this is not a tiff")
    with pytest.raises(VolumeError, match="not a readable TIFF"):
        open_volume(bad)


def test_wrong_dimensionality(tmp_path):
    zarr.create_array(str(tmp_path / "x.zarr"), shape=(2, 3, 40, 50), dtype="uint8")
    with pytest.raises(VolumeError, match="4-D"):
        open_volume(tmp_path / "x.zarr")


def test_plain_2d_and_leading_singleton_zarr_open_as_volumes(tmp_path):
    zarr.create_array(str(tmp_path / "a.zarr"), data=np.arange(20, dtype=np.uint8).reshape(4, 5))
    vol = open_volume(tmp_path / "a.zarr")
    assert vol.shape == (1, 4, 5) and vol.voxel_size is None
    assert vol.describe()["voxel_size"] == "unknown"
    np.testing.assert_array_equal(vol.data[0].compute(), np.arange(20).reshape(4, 5))
    zarr.create_array(str(tmp_path / "b.zarr"), shape=(1, 1, 2, 4, 5), dtype="uint16")
    assert open_volume(tmp_path / "b.zarr").shape == (2, 4, 5)


def test_int64_labels_open(tmp_path):
    """numpy's default integer: label volumes written from numpy code are often int64."""
    zarr.create_array(str(tmp_path / "l.zarr"), data=np.ones((2, 3, 4), np.int64))
    assert open_volume(tmp_path / "l.zarr").dtype == np.int64


@pytest.mark.parametrize("dtype", ["complex64", "bool"])
def test_unsupported_dtype(tmp_path, dtype):
    zarr.create_array(str(tmp_path / "x.zarr"), shape=(2, 3, 4), dtype=dtype)
    with pytest.raises(VolumeError, match="dtype"):
        open_volume(tmp_path / "x.zarr")


def test_corrupt_zarr(tmp_path):
    path = tmp_path / "c.zarr"
    path.mkdir()
    (path / "zarr.json").write_text("{ not json")
    with pytest.raises(VolumeError, match="not a readable zarr"):
        open_volume(path)


def test_empty_and_mismatched_tiff_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(VolumeError, match="no zarr store and no .tif"):
        open_volume(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    tifffile.imwrite(mixed / "a0.tif", np.zeros((10, 10), np.uint8))
    tifffile.imwrite(mixed / "a1.tif", np.zeros((10, 12), np.uint8))
    with pytest.raises(VolumeError, match="differ"):
        open_volume(mixed)
    before = sorted(p.name for p in mixed.iterdir())
    assert before == ["a0.tif", "a1.tif"]  # nothing written


def test_contrast_limits_from_a_sample(volume):
    import dask.array as da

    arr = da.from_array(volume.astype(np.float32), chunks=(1, 40, 50))
    arr[0, 0, 0] = np.nan
    lo, hi = sample_contrast_limits(arr)
    assert 0 <= lo < 10 and 245 < hi <= 255
    flat = da.zeros((3, 10, 10), chunks=5)
    assert sample_contrast_limits(flat) == (0.0, 1.0)
