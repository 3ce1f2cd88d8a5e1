"""2-D pictures, single-section and colour TIFFs, OME-TIFF, folders holding one stack."""

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_brainfeatures.cli import main
from napari_brainfeatures.io.volume import VolumeError, open_volume

SEC = (np.arange(30 * 40).reshape(30, 40) % 251).astype(np.uint8)
RGB = np.dstack([SEC, SEC // 2, 255 - SEC])
GREY_OF_RGB = np.round(0.299 * RGB[..., 0] + 0.587 * RGB[..., 1] + 0.114 * RGB[..., 2])


def test_png_with_pixel_size_is_one_section(tmp_path):
    Image.fromarray(SEC).save(tmp_path / "s.png", dpi=(25_400 / 0.65, 25_400 / 0.65))
    vol = open_volume(tmp_path / "s.png")
    assert vol.kind == "image" and vol.shape == (1, 30, 40) and vol.name == "s"
    assert vol.voxel_size == pytest.approx((0.65, 0.65, 0.65), rel=1e-5)
    np.testing.assert_array_equal(vol.data.compute()[0], SEC)


def test_png_without_pixel_size_has_unknown_voxel_size(tmp_path, capsys):
    iio.imwrite(tmp_path / "s.png", SEC.astype(np.uint16) * 200)
    vol = open_volume(tmp_path / "s.png")
    assert vol.voxel_size is None and vol.dtype == np.uint16
    assert main(["info", str(tmp_path / "s.png")]) == 0
    assert '"voxel_size": "unknown"' in capsys.readouterr().out


def test_colour_and_palette_become_grey_with_a_note(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "c.png")
    Image.fromarray(RGB).convert("P").save(tmp_path / "p.png")
    vol = open_volume(tmp_path / "c.png")
    np.testing.assert_array_equal(vol.data.compute()[0], GREY_OF_RGB)
    assert any("RGB image converted to grey" in n for n in vol.describe()["notes"])
    pal = open_volume(tmp_path / "p.png")
    assert pal.shape == (1, 30, 40) and pal.dtype == np.uint8
    assert any("palette" in n for n in pal.notes)
    iio.imwrite(tmp_path / "c.jpg", RGB)
    jpg = open_volume(tmp_path / "c.jpg")
    assert jpg.shape == (1, 30, 40) and jpg.voxel_size is None
    assert np.abs(jpg.data.compute()[0].astype(int) - GREY_OF_RGB).mean() < 8  # lossy


def test_2d_and_single_slice_tiffs_keep_their_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", SEC)
    tifffile.imwrite(tmp_path / "ij.tif", SEC[None], imagej=True, resolution=(2.0, 2.0),
                     metadata={"unit": "um"})  # fmt: skip
    tifffile.imwrite(tmp_path / "p.tif", SEC[None], resolution=(2.0, 2.0),
                     resolutionunit="MICROMETER")  # fmt: skip
    tifffile.imwrite(tmp_path / "cm.tif", SEC, resolution=(20_000.0, 20_000.0),
                     resolutionunit="CENTIMETER")  # fmt: skip
    expected = {"a": None, "ij": (0.5, 0.5, 0.5), "p": (0.5, 0.5, 0.5), "cm": (0.5, 0.5, 0.5)}
    for name, voxel in expected.items():
        vol = open_volume(tmp_path / f"{name}.tif")
        assert vol.shape == (1, 30, 40), name
        assert vol.voxel_size == (pytest.approx(voxel) if voxel else None), name
        np.testing.assert_array_equal(vol.data.compute()[0], SEC)


def test_rgb_tiff_and_ome_tiff(tmp_path):
    tifffile.imwrite(tmp_path / "rgb.tif", RGB, photometric="rgb")
    vol = open_volume(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(vol.data.compute()[0], GREY_OF_RGB)
    stack = np.stack([SEC, SEC, SEC]).astype(np.uint16)
    tifffile.imwrite(tmp_path / "n.ome.tif", stack, metadata={
        "axes": "ZYX", "PhysicalSizeX": 500.0, "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 500.0, "PhysicalSizeYUnit": "nm", "PhysicalSizeZ": 2.0})  # fmt: skip
    ome = open_volume(tmp_path / "n.ome.tif")
    assert ome.shape == (3, 30, 40) and ome.voxel_size == pytest.approx((2.0, 0.5, 0.5))


def test_small_plain_stacks_stay_stacks(tmp_path):
    """tifffile stores a plain (3, Y, X) uint8 array as planar RGB: still 3 slices here."""
    stack = np.stack([SEC, SEC + 1, SEC + 2])
    tifffile.imwrite(tmp_path / "s.tif", stack)
    vol = open_volume(tmp_path / "s.tif")
    assert vol.shape == (3, 30, 40)
    np.testing.assert_array_equal(vol.data.compute(), stack)


def test_multichannel_tiff_refused_naming_the_axis(tmp_path):
    data = np.zeros((3, 2, 30, 40), np.uint8)
    tifffile.imwrite(tmp_path / "zc.tif", data, imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(VolumeError, match="2 channels \\(axis 'C'"):
        open_volume(tmp_path / "zc.tif")


def test_folder_with_one_multipage_tiff_opens_that_stack(tmp_path, volume):
    one = tmp_path / "one"
    one.mkdir()
    tifffile.imwrite(one / "stack.tif", volume, imagej=True, metadata={"spacing": 2.0,
                     "unit": "um"}, resolution=(1.0, 1.0))  # fmt: skip
    vol = open_volume(one)
    assert vol.shape == (6, 40, 50) and vol.voxel_size == pytest.approx((2.0, 1.0, 1.0))
    np.testing.assert_array_equal(vol.data.compute(), volume)
    assert any("one TIFF" in n for n in vol.notes)
    tifffile.imwrite(one / "stack2.tif", volume, imagej=True)
    with pytest.raises(VolumeError, match=r"2-D images; 'stack2?\.tif' has shape \(6, 40, 50\)"):
        open_volume(one)
    assert main(["info", str(one)]) == 2


def test_folder_of_colour_slices_becomes_grey(tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"z{i}.tif", RGB, photometric="rgb")
    vol = open_volume(folder)
    assert vol.shape == (3, 30, 40)
    np.testing.assert_array_equal(vol.data.compute()[2], GREY_OF_RGB)


def test_broken_picture_is_refused(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(VolumeError, match="not a readable image"):
        open_volume(tmp_path / "x.png")


def test_pyramidal_ome_tiff_opens_with_its_levels(tmp_path):
    """A pyramid (SubIFDs, as QuPath and bfconvert write) opens full size first, in µm."""
    stack = np.stack([SEC, SEC[::-1], SEC]).astype(np.uint16) * 100
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.65, "PhysicalSizeY": 0.7, "PhysicalSizeZ": 2.5}
    with tifffile.TiffWriter(tmp_path / "p.ome.tif", bigtiff=True) as tif:
        tif.write(stack, subifds=1, tile=(16, 16), compression="zlib", metadata=meta)
        tif.write(stack[:, ::2, ::2], subfiletype=1, tile=(16, 16), compression="zlib")
    vol = open_volume(tmp_path / "p.ome.tif")
    assert [lv.shape for lv in vol.levels] == [(3, 30, 40), (3, 15, 20)]
    assert vol.voxel_size == pytest.approx((2.5, 0.7, 0.65))
    assert vol.scales[1] == pytest.approx((2.5, 1.4, 1.3))
    np.testing.assert_array_equal(vol.data.compute(), stack)
    assert "a pyramid of 2 levels" in " ".join(vol.notes)


@pytest.mark.parametrize("kind", ["jpg", "png", "tif"])
def test_a_print_resolution_is_not_a_pixel_size(tmp_path, kind):
    """72 dpi (an image editor's default) would make a 0.3 mm section 18 cm wide: unknown."""
    path = tmp_path / f"s.{kind}"
    if kind == "tif":
        tifffile.imwrite(path, SEC, resolution=(72, 72), resolutionunit="INCH")
    else:
        Image.fromarray(SEC).save(path, dpi=(72, 72))
    vol = open_volume(path)
    assert vol.voxel_size is None
    assert "72 dpi" in " ".join(vol.notes) and "not a pixel size" in " ".join(vol.notes)
    fine = tmp_path / f"f.{kind}"  # 2540 dpi: 10 µm pixels, a plausible scan
    if kind == "tif":
        tifffile.imwrite(fine, SEC, resolution=(2540, 2540), resolutionunit="INCH")
    else:
        Image.fromarray(SEC).save(fine, dpi=(2540, 2540))
    assert open_volume(fine).voxel_size == pytest.approx((10.0, 10.0, 10.0), rel=1e-4)
