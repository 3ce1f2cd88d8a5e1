import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_brainfeatures._napari.reader import get_reader
from napari_brainfeatures._napari.writer import write_labels


def test_reader_accepts_volumes_and_declines_others(tiff_stack, tiff_folder, zarr_array, tmp_path):
    for path in (tiff_stack, tiff_folder, zarr_array):
        reader = get_reader(str(path))
        assert reader is not None
        ((data, kwargs, kind),) = reader(str(path))
        assert kind == "image" and data.shape == (6, 40, 50)
        assert kwargs["contrast_limits"][1] > kwargs["contrast_limits"][0]
    (tmp_path / "a.png").write_bytes(b"x")
    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader([str(tiff_stack), str(tiff_stack)]) is None


def test_reader_claims_2d_pictures_and_declines_what_it_cannot_open(tmp_path):
    """napari falls back to another reader only when this one returns None."""
    tifffile.imwrite(tmp_path / "sec.tif", np.arange(12, dtype=np.uint8).reshape(3, 4))
    Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(tmp_path / "sec.png")
    for name in ("sec.tif", "sec.png"):
        ((data, kwargs, kind),) = get_reader(str(tmp_path / name))(str(tmp_path / name))
        assert kind == "image" and data.shape == (1, 3, 4) and "scale" not in kwargs
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    tifffile.imwrite(tmp_path / "zc.tif", np.zeros((3, 2, 4, 4), np.uint8), imagej=True,
                     metadata={"axes": "ZCYX"})  # fmt: skip
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for name in ("bad.tif", "zc.tif", "notes.txt", "empty", "missing.tif"):
        assert get_reader(str(tmp_path / name)) is None, name


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


def test_reader_opens_a_population_store_for_the_latent_dock(tmp_path):
    """'brainfeatures sample population' output opens as sections, clean sections and ROIs."""
    from napari_brainfeatures.cli import main

    store = tmp_path / "pop.zarr"
    small = ["--n", "6", "--section-shape", "64", "96"]
    assert main(["sample", "population", str(store), *small]) == 0
    reader = get_reader(str(store))
    assert reader is not None
    layers = reader(str(store))
    (images, kw, kind), (clean, ckw, ckind), (rois, rkw, rkind) = layers
    assert kind == ckind == "image" and rkind == "labels"
    assert images.shape == clean.shape == (6, 64, 96) and rois.shape == (64, 96)
    assert kw["name"] == "pop" and len(kw["metadata"]["artifact"]) == 6
    assert ckw["metadata"]["clean_of"] == "pop" and ckw["visible"] is False
    assert rkw["metadata"]["roi_names"] and len(kw["metadata"]["factor_names"]) > 0
    # a group holding a volume array is still a volume, not a population
    g = zarr.open_group(str(tmp_path / "vol.zarr"), mode="w")
    g.create_array("image", data=np.zeros((2, 8, 8), np.uint8))
    g.create_array("images", data=np.zeros((2, 8, 8), np.uint8))
    ((data, vkw, vkind),) = get_reader(str(tmp_path / "vol.zarr"))(str(tmp_path / "vol.zarr"))
    assert vkind == "image" and "clean_of" not in vkw["metadata"]


def test_ome_zarr_label_images_open_as_labels_in_their_colours(tmp_path):
    """An OME-Zarr label image (ours exported, or another tool's) is a Labels layer."""
    from napari_brainfeatures.results.export import export_result
    from napari_brainfeatures.results.kinds import save_clusters_result

    lab = np.zeros((40, 30), np.int32)
    lab[:20], lab[20:] = 1, 2
    res = save_clusters_result(tmp_path / "ws", lab, scale=(2.0, 0.5, 0.5), translate=(6, 1, 1))
    (path,) = export_result(res, tmp_path / "out", ["ome-zarr"])
    image, labels = get_reader(str(path))(str(path))
    assert image[2] == "image" and labels[2] == "labels" and labels[1]["name"].endswith("labels")
    assert tuple(labels[1]["translate"]) == (6.0, 1.0, 1.0)
    assert set(labels[1]["colormap"]) >= {1, 2} and "contrast_limits" not in labels[1]
    (alone,) = get_reader(str(path / "labels" / "clusters"))(str(path / "labels" / "clusters"))
    assert alone[2] == "labels" and np.asarray(alone[0]).max() == 2
