"""Exports other tools read: OME-Zarr validated by ome-zarr-models and reopened by our reader."""

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_brainfeatures.factors.results import Factors
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.io.base import VolumeError
from napari_brainfeatures.io.volume import open_volume
from napari_brainfeatures.results.export import export_result, validate_ome_zarr
from napari_brainfeatures.results.kinds import save_clusters_result, save_factors_result
from napari_brainfeatures.results.tables import read_table


@pytest.fixture
def clusters(tmp_path):
    lab = np.zeros((150, 140), np.int32)
    lab[:70], lab[70:, :60], lab[70:, 60:] = 1, 2, 3
    return save_clusters_result(
        tmp_path / "ws", lab, scale=(2.0, 0.5, 0.5), translate=(6.0, 1.0, 1.5),
        scores={"ari": 0.5, "per": {"a": [1, 2]}},
    )  # fmt: skip


def test_label_map_as_ome_zarr_labels_with_colours_and_names(clusters, tmp_path):
    out = tmp_path / "out"
    (path,) = export_result(clusters, out, ["ome-zarr"])
    assert path == out / "clusters.ome.zarr"
    model = validate_ome_zarr(path)  # the independent validator
    assert type(model).__name__ == "Image"
    vol = open_volume(path)  # our own reader
    assert vol.shape == (1, 150, 140)
    assert vol.voxel_size == pytest.approx((2.0, 0.5, 0.5))
    assert tuple(vol.translation) == pytest.approx((6.0, 1.0, 1.5))
    assert vol.multiscale and len(vol.levels) == 2  # 150x140 -> one level at 75x70
    labels = open_volume(path / "labels" / "clusters")
    assert labels.shape == (1, 150, 140) and labels.voxel_size == pytest.approx((2.0, 0.5, 0.5))
    assert np.array_equal(np.asarray(labels.data[0]), np.asarray(vol.data[0]))
    meta = dict(zarr.open_group(str(path / "labels" / "clusters"), mode="r").attrs)["ome"]
    names = {p["label-value"]: p["name"] for p in meta["image-label"]["properties"]}
    assert names == {1: "cluster 1", 2: "cluster 2", 3: "cluster 3"}
    assert meta["image-label"]["source"] == {"image": "../../"}  # tied to its image
    assert all(len(c["rgba"]) == 4 for c in meta["image-label"]["colors"])
    axes = dict(zarr.open_group(str(path), mode="r").attrs)["ome"]["multiscales"][0]["axes"]
    assert {a["unit"] for a in axes} == {"micrometer"}


def test_factor_maps_one_ome_zarr_per_factor_and_a_tiff(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.random((2, 6, 8)).astype(np.float32)
    fac = Factors(maps, rng.random((2, 4)).astype(np.float32), FeatureGrid((6, 8), step=(4, 4)))
    res = save_factors_result(tmp_path / "ws", fac, scale=(2.0, 2.0), translate=(1.0, 1.0))
    out = tmp_path / "out"
    paths = export_result(res, out, ["ome-zarr", "tiff"])
    names = sorted(p.name for p in paths)
    assert names == ["factor_maps-F0.ome.zarr", "factor_maps-F1.ome.zarr", "factor_maps.tif"]
    for i in range(2):
        p = out / f"factor_maps-F{i}.ome.zarr"
        validate_ome_zarr(p)
        vol = open_volume(p)  # a 2-D map opens as one section
        ms = dict(zarr.open_group(str(p), mode="r").attrs)["ome"]["multiscales"][0]
        assert ms["name"] == f"factor_maps-F{i}"  # which factor, inside the file too
        assert vol.shape == (1, 6, 8) and vol.voxel_size[1:] == pytest.approx((2.0, 2.0))
        np.testing.assert_allclose(np.asarray(vol.data[0]), maps[i])
    with tifffile.TiffFile(out / "factor_maps.tif") as tif:
        assert tif.series[0].shape == (2, 6, 8)
        assert tif.imagej_metadata["unit"] == "um"
        x_res = tif.pages[0].tags["XResolution"].value
        assert x_res[0] / x_res[1] == pytest.approx(0.5)  # pixels per µm
        assert tif.imagej_metadata["Labels"] == ["F0", "F1"]
        assert tif.imagej_metadata["xorigin"] == pytest.approx(-0.5)  # 1 µm at 2 µm/px
    with pytest.raises(VolumeError, match="2 named channels .*open their OME-Zarr"):
        open_volume(out / "factor_maps.tif")  # not read as a Z stack of two slices


def test_tiff_channel_names_follow_the_plane_order(tmp_path):
    from napari_brainfeatures.results.export import _tiff
    from napari_brainfeatures.results.maps import MapLayer

    data = np.zeros((3, 2, 4, 4), np.float32)  # C, Z, Y, X
    m = MapLayer("m", data, "image", "czyx", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), channels=list("abc"))
    with tifffile.TiffFile(_tiff(m, tmp_path)) as tif:
        assert tif.imagej_metadata["Labels"] == ["a", "b", "c", "a", "b", "c"]  # Z-major


def test_tiff_of_a_volume_map_keeps_its_z_spacing(clusters, tmp_path):
    (path,) = export_result(clusters, tmp_path / "o", ["tiff"])
    vol = open_volume(path)
    assert vol.shape == (1, 150, 140) and vol.voxel_size == pytest.approx((2.0, 0.5, 0.5))
    assert tuple(vol.translation) == pytest.approx((6.0, 1.0, 1.5))  # on its slice, as exported


def test_csv_and_png_exports(clusters, tmp_path):
    out = tmp_path / "o"
    paths = export_result(clusters, out, ["csv", "png"])
    names = sorted(p.name for p in paths)
    assert names == ["cluster_sizes.csv", "scores_json.csv"]
    cols, rows = read_table(out / "cluster_sizes.csv")
    assert (
        cols == ["id", "cluster", "pixels", "area_um2"] and rows[0][-1] == "2450"
    )  # 70x140 px of 0.5x0.5 µm
    assert read_table(out / "scores_json.csv")[1] == [["ari", "0.5"], ["per.a", "1 2"]]


def test_bad_format_and_export_into_the_result_are_refused(clusters):
    with pytest.raises(ValueError, match="formats must be some of"):
        export_result(clusters, clusters.parent / "x", ["jpeg"])
    with pytest.raises(ValueError, match="outside the result"):
        export_result(clusters, clusters / "sub", ["csv"])
    assert json.loads((clusters / "provenance.json").read_text())["kind"] == "clusters"


def test_export_again_replaces_its_own_earlier_files(clusters, tmp_path):
    out = tmp_path / "o"
    export_result(clusters, out, ["ome-zarr"])
    export_result(clusters, out, ["ome-zarr"])
    assert sorted(p.name for p in out.iterdir()) == ["clusters.ome.zarr"]  # no temporaries left


def test_cli_exports_a_result_and_a_whole_workspace(clusters, tmp_path, capsys):
    from napari_brainfeatures.cli import main

    out = tmp_path / "cli"
    assert main(["export", str(clusters), "--to", str(out), "--format", "ome-zarr", "csv"]) == 0
    written = json.loads(capsys.readouterr().out)["written"]
    assert str(out / "clusters.ome.zarr") in written and str(out / "cluster_sizes.csv") in written
    validate_ome_zarr(out / "clusters.ome.zarr")
    ws = clusters.parents[2]
    assert main(["export", str(ws), "--to", str(tmp_path / "all"), "--format", "csv"]) == 0
    assert (tmp_path / "all" / "clusters" / clusters.name / "cluster_sizes.csv").exists()
    capsys.readouterr()
    assert main(["export", str(tmp_path), "--to", str(out)]) == 2  # neither: a clear error
    assert "neither a result folder" in capsys.readouterr().err
