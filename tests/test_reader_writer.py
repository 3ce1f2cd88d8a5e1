import numpy as np
import pytest
import tifffile
import zarr

from napari_brainfeatures._reader import get_reader
from napari_brainfeatures._writer import write_labels


def test_reader_accepts_volumes_and_declines_others(tiff_stack, tiff_folder, zarr_array, tmp_path):
    for path in (tiff_stack, tiff_folder, zarr_array):
        reader = get_reader(str(path))
        assert reader is not None
        (data, kwargs, kind), = reader(str(path))
        assert kind == "image" and data.shape == (6, 40, 50)
        assert kwargs["contrast_limits"][1] > kwargs["contrast_limits"][0]
    (tmp_path / "a.png").write_bytes(b"x")
    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader([str(tiff_stack), str(tiff_stack)]) is None


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_write_labels_round_trip_and_replace(tmp_path, suffix):
    labels = np.zeros((3, 10, 12), np.int32)
    labels[1, 2:4, 2:5] = 5
    target = tmp_path / f"labels{suffix}"
    assert write_labels(str(target), labels, {"name": "areas"}) == [str(target)]
    labels[0, 0, 0] = 300
    write_labels(str(target), labels, {"name": "areas"})  # replaces atomically
    back = (
        np.asarray(zarr.open_array(str(target))[:])
        if suffix == ".zarr"
        else tifffile.imread(target)
    )
    np.testing.assert_array_equal(back, labels)
    assert back.dtype == np.uint16
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_write_labels_bad_input_keeps_old_file(tmp_path):
    target = tmp_path / "l.tif"
    write_labels(str(target), np.ones((2, 3, 3), np.uint8), {})
    with pytest.raises(ValueError, match="integers"):
        write_labels(str(target), np.ones((2, 3, 3), np.float32), {})
    with pytest.raises(ValueError, match=".zarr, .tif"):
        write_labels(str(tmp_path / "l.png"), np.ones((2, 3, 3), np.uint8), {})
    np.testing.assert_array_equal(tifffile.imread(target), np.ones((2, 3, 3)))
