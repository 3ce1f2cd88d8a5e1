"""OME-Zarr as other tools write it: ome-zarr-py (NGFF 0.4 and 0.5), hand-written odd cases."""

import re
import warnings

import numpy as np
import pytest
import zarr

from napari_brainfeatures.cli import main
from napari_brainfeatures.io.convert import convert_to_ome_zarr
from napari_brainfeatures.io.volume import VolumeError, open_volume
from napari_brainfeatures.progress import run

IMG = np.random.default_rng(1).integers(0, 200, size=(4, 32, 40), dtype=np.uint8)


def ome_zarr_py(path, data, version, *, units="micrometer", scale=(2.0, 0.5, 0.5), axes="tczyx"):
    """Write ``data`` with ome-zarr-py (0.4: zarr v2, 0.5: zarr v3), two halvings of y/x."""
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image

    fmt = FormatV04() if version == "0.4" else FormatV05()
    spatial = [a for a in axes if a in "zyx"]
    scale = scale[-len(spatial) :]
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_image(data, group, fmt=fmt, axes=axes, scale=dict(zip(spatial, scale, strict=True)),
                    axes_units=dict.fromkeys(spatial, units), scale_factors=(2, 4))  # fmt: skip
    return path


def hand_written(path, levels, scales, *, units=("micrometer",) * 3, translations=None, axes=None):
    """An NGFF 0.4 store with metadata written by hand (the cases ome-zarr-py will not write)."""
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    for i, lv in enumerate(levels):
        g.create_array(f"s{i}", data=lv)
    axes = axes or [
        {"name": n, "type": "space", "unit": u} for n, u in zip("zyx", units, strict=True)
    ]
    datasets = []
    for i, s in enumerate(scales):
        ct = [{"type": "scale", "scale": list(s)}]
        if translations:
            ct.append({"type": "translation", "translation": list(translations[i])})
        datasets.append({"path": f"s{i}", "coordinateTransformations": ct})
    g.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    return path


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_py_5d_store_opens_in_micrometres(tmp_path, version):
    data = IMG[None, None]  # (t, c, z, y, x) = (1, 1, 4, 32, 40)
    path = ome_zarr_py(tmp_path / "a.ome.zarr", data, version, units="nanometer")
    vol = open_volume(path)
    assert vol.kind == "ome-zarr" and vol.shape == (4, 32, 40)
    assert [lv.shape for lv in vol.levels] == [(4, 32, 40), (4, 16, 20), (4, 8, 10)]
    assert vol.voxel_size == pytest.approx((0.002, 0.0005, 0.0005))  # nm -> µm
    assert vol.scales[2] == pytest.approx((0.002, 0.002, 0.002))
    np.testing.assert_array_equal(vol.data.compute(), IMG)
    notes = " ".join(vol.describe()["notes"])
    assert "nanometer converted" in notes and "t, c dropped" in notes


def test_units_converted_when_written_back(tmp_path):
    src = ome_zarr_py(tmp_path / "nm.ome.zarr", IMG, "0.4", units="nanometer", axes="zyx",
                      scale=(500.0, 250.0, 250.0))  # fmt: skip
    out = run(convert_to_ome_zarr(src, tmp_path / "um.ome.zarr", levels=2, chunks=(2, 16, 16)))
    ms = zarr.open_group(str(out)).attrs["multiscales"][0]
    assert {a["unit"] for a in ms["axes"]} == {"micrometer"}
    s0, s1 = (d["coordinateTransformations"] for d in ms["datasets"])
    assert s0[0]["scale"] == pytest.approx([0.5, 0.25, 0.25])
    assert s1[0]["scale"] == pytest.approx([0.5, 0.5, 0.5])
    assert s1[1]["translation"] == pytest.approx([0.0, 0.125, 0.125])  # half of the new pixel
    back = open_volume(out)
    assert back.voxel_size == pytest.approx((0.5, 0.25, 0.25))
    assert back.level_translations[1] == pytest.approx((0.0, 0.125, 0.125))


def test_xy_only_pyramid_and_translation(tmp_path):
    """BossDB exports halve x and y only; a translation places the volume."""
    levels = [IMG, IMG[:, ::2, ::2], IMG[:, ::4, ::4]]
    scales = [(8.0, 4.0, 4.0), (8.0, 8.0, 8.0), (8.0, 16.0, 16.0)]
    trans = [(100.0, 10.0, 20.0), (100.0, 12.0, 22.0), (100.0, 16.0, 26.0)]
    path = hand_written(tmp_path / "boss.zarr", levels, scales, units=("nanometer",) * 3,
                        translations=trans)  # fmt: skip
    vol = open_volume(path)
    assert [lv.shape for lv in vol.levels] == [(4, 32, 40), (4, 16, 20), (4, 8, 10)]
    assert vol.voxel_size == pytest.approx((0.008, 0.004, 0.004))
    assert vol.translation == pytest.approx((0.1, 0.01, 0.02))
    from napari_brainfeatures._napari.reader import get_reader

    ((data, kwargs, _),) = get_reader(str(path))(str(path))
    assert kwargs["multiscale"] and len(data) == 3
    assert kwargs["scale"] == pytest.approx((0.008, 0.004, 0.004))
    assert kwargs["translate"] == pytest.approx((0.1, 0.01, 0.02))


def test_2d_ome_zarr_is_one_section(tmp_path):
    path = ome_zarr_py(tmp_path / "yx.ome.zarr", IMG[0], "0.4", axes="yx", scale=(0.5, 0.5, 0.5))
    vol = open_volume(path)
    assert vol.shape == (1, 32, 40) and vol.voxel_size == pytest.approx((0.5, 0.5, 0.5))
    # the section stays one pixel of level 0 thick at every level (they shrink in y, x)
    np.testing.assert_allclose(vol.scales, [(0.5, 0.5, 0.5), (0.5, 1.0, 1.0), (0.5, 2.0, 2.0)])


def _refused(path, match, tmp_path, capsys):
    with pytest.raises(VolumeError, match=match):
        open_volume(path)
    assert main(["convert", str(path), str(tmp_path / "out.ome.zarr")]) == 2
    assert re.search(match, capsys.readouterr().err)  # the CLI says why
    assert not (tmp_path / "out.ome.zarr").exists()
    assert not list(tmp_path.glob(".out.ome.zarr.partial*"))


def test_channel_axis_refused_naming_it(tmp_path, capsys):
    path = ome_zarr_py(tmp_path / "c.ome.zarr", np.stack([IMG, IMG])[None], "0.4")
    _refused(path, r"2 channels on axis 'c'", tmp_path, capsys)


def test_non_spatial_unit_refused(tmp_path, capsys):
    path = hand_written(tmp_path / "u.zarr", [IMG], [(1, 1, 1)], units=("second", "nm", "nm"))
    _refused(path, r"axis 'z' has unit 'second', not a length", tmp_path, capsys)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_zero_or_negative_scale_refused(tmp_path, capsys, bad):
    path = hand_written(tmp_path / "s.zarr", [IMG], [(1.0, bad, 1.0)])
    _refused(path, r"spatial scale must be a positive number", tmp_path, capsys)


def test_levels_that_disagree_refused(tmp_path, capsys):
    levels = [IMG, IMG[:, ::2, ::2], IMG[:, ::2, ::2]]  # level 2 says 4x but is 2x
    path = hand_written(tmp_path / "l.zarr", levels, [(1, 1, 1), (1, 2, 2), (1, 4, 4)])
    _refused(path, r"levels disagree in shape: level 's0'", tmp_path, capsys)
    levels = [IMG, IMG[:2, ::2, ::2]]  # Z halved, scale says it is not
    path = hand_written(tmp_path / "z.zarr", levels, [(1, 1, 1), (1, 2, 2)])
    _refused(path, r"axis 'z'", tmp_path, capsys)


def test_unsupported_version_and_invalid_metadata(tmp_path):
    path = hand_written(tmp_path / "v.zarr", [IMG], [(1, 1, 1)])
    g = zarr.open_group(str(path), mode="r+")
    ms = g.attrs["multiscales"]
    g.attrs["multiscales"] = [{**ms[0], "version": "0.3"}]
    with pytest.raises(VolumeError, match="version '0.3'"):
        open_volume(path)
    g.attrs["multiscales"] = [{**ms[0], "axes": [{"name": "x", "type": "space"}]}]
    with pytest.raises(VolumeError, match="invalid metadata"):
        open_volume(path)
