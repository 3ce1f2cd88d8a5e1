"""TIFF in: one file (2-D, a stack, ImageJ, OME-TIFF, RGB) or a folder of per-slice files.

The axes tifffile reports decide the shape: Y and X are the image, colour
samples (``S``) become grey, one more axis of any size becomes Z (none: Z = 1),
a channel axis ``C`` of more than one channel is refused.  The pixel size comes
from ImageJ metadata (unit, spacing), OME-XML (``PhysicalSize*``) or the
resolution tags with a length unit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

from napari_brainfeatures.io.base import (
    Volume,
    VolumeError,
    length_unit_um,
    print_resolution,
    to_grey,
)

TIFF_SUFFIXES = (".tif", ".tiff")
_RESUNIT_UM = {2: 25_400.0, 3: 10_000.0, 4: 1_000.0, 5: 1.0}  # INCH, CM, MM, MICROMETER
_Z_AXES = "ZIQTR"  # what a stack's page axis may be called


def open_tiff(path: Path) -> Volume:
    """A TIFF file as a grey ``(Z, Y, X)`` volume (one section for a 2-D image)."""
    notes: list[str] = []
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series or not tif.series[0].shape:
                raise VolumeError(f"TIFF file {str(path)!r} holds no image")
            series = tif.series[0]
            axes = series.axes
            voxel_yxz = _tiff_pixel_size(tif, notes)
            palette = _palette_lut(series.keyframe)
            ij = tif.imagej_metadata or {}
            # tifffile writes a plain 3-D array with imagej=True as grey "channels"
            grey_c = tif.is_imagej and ij.get("mode", "grayscale") == "grayscale"
            shaped = tif.is_shaped
        node = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        # a pyramid (OME-TIFF SubIFDs, QuPath, bfconvert): a group of levels, full size first
        keys = sorted(node.array_keys(), key=int) if isinstance(node, zarr.Group) else []
        raw = [da.from_zarr(node[k]) for k in keys] if keys else [da.from_zarr(node)]
    except (tifffile.TiffFileError, ValueError, OSError, KeyError, TypeError) as err:
        if isinstance(err, VolumeError):
            raise
        raise VolumeError(f"{str(path)!r} is not a readable TIFF image: {err}") from None
    named = ij.get("Labels") if isinstance(ij.get("Labels"), list) else None
    c_is_z = grey_c and axes == "CYX" and not named  # named channels are channels
    if axes == "SYX" and shaped:  # tifffile stores a plain 3- or 4-slice stack as planar RGB
        axes, c_is_z = "CYX", True
    levels = []
    for i, arr in enumerate(raw):
        said = notes if i == 0 else []  # the notes once, for the full-size level
        if palette is not None:
            arr = arr.map_blocks(lambda b: palette[b], dtype=palette.dtype)
            said.append("palette (indexed colour) image converted to grey")
        arr = _to_zyx(arr, axes, path, said, c_is_z=c_is_z, named=named)
        levels.append(arr.rechunk((1, *arr.shape[1:])) if arr.chunksize[0] != 1 else arr)
    if len(levels) > 1:
        notes.append(f"a pyramid of {len(levels)} levels (full size first)")
    voxel = _voxel(voxel_yxz, levels[0].shape[0], notes)
    origin = [float(ij.get(f"{a}origin") or 0.0) for a in "zyx"]  # ImageJ's, in pixels
    moved = voxel is not None and len(levels) == 1 and any(origin)
    where = [tuple(-o * v for o, v in zip(origin, voxel, strict=True))] if moved else []  # type: ignore[arg-type]
    return Volume(levels, path, "tiff", voxel, notes=notes, level_translations=where)


def _to_zyx(
    arr: da.Array,
    axes: str,
    path: Path,
    notes: list[str],
    *,
    c_is_z: bool = False,
    named: list[Any] | None = None,
) -> da.Array:
    """Reorder tifffile's axes to (Z, Y, X): grey from S, refuse channels, add Z.

    ``c_is_z``: the channel axis of a grey ImageJ "CYX" file is its stack.
    ``named``: the channels' names (ImageJ ``Labels``), said when they are refused.
    """
    if c_is_z:
        axes = axes.replace("C", "Z")
        notes.append(f"the file's {arr.shape[0]} channels or samples are read as Z slices")
    if "S" in axes:
        mode = {2: "grey + alpha", 3: "RGB", 4: "RGBA"}.get(arr.shape[axes.index("S")], "colour")
        arr = to_grey(arr, axes.index("S"))
        axes = axes.replace("S", "")
        notes.append(f"{mode} image converted to grey (0.299 R + 0.587 G + 0.114 B)")
    extra = [(a, n) for a, n in zip(axes, arr.shape, strict=True) if a not in "YX"]
    for a, n in extra:
        if a == "C" and n > 1 and named:  # an exported map's channels, say
            shown = ", ".join(map(str, named[:4])) + (", …" if len(named) > 4 else "")
            raise VolumeError(
                f"{str(path)!r} has {n} named channels ({shown}); a grey volume is expected: "
                "save one channel per TIFF (for exported maps, open their OME-Zarr)"
            )
        if a == "C" and n > 1:
            raise VolumeError(
                f"{str(path)!r} has {n} channels (axis 'C' of {axes!r}, shape "
                f"{tuple(arr.shape)!r}); open one channel: save it as its own TIFF"
            )
    big = [(a, n) for a, n in extra if n > 1]
    if len(big) > 1:
        raise VolumeError(
            f"{str(path)!r} is {len(big) + 2}-D (axes {axes!r}, shape {tuple(arr.shape)!r}); "
            "a (Z, Y, X) volume is expected: save one Z stack per file"
        )
    if big and big[0][0] not in _Z_AXES + "C":
        raise VolumeError(f"{str(path)!r} has an unknown axis {big[0][0]!r} in {axes!r}")
    if big and big[0][0] == "T":
        notes.append("the TIFF's time axis (T) is read as Z")
    keep = [i for i, a in enumerate(axes) if a in "YX" or (big and a == big[0][0])]
    idx = tuple(slice(None) if i in keep else 0 for i in range(arr.ndim))
    arr = arr[idx]
    kept = "".join(axes[i] for i in keep)
    if len(kept) == 2:
        arr = arr[None]
        notes.append("a single 2-D image: opened as one section (Z = 1)")
        kept = "Z" + kept
    order = [kept.index(a) for a in kept if a not in "YX"] + [kept.index("Y"), kept.index("X")]
    return arr.transpose(order)


def _palette_lut(page: Any) -> np.ndarray | None:
    """Grey lookup table of a palette (indexed colour) page, else None."""
    if getattr(page, "photometric", None) != tifffile.PHOTOMETRIC.PALETTE:
        return None
    cmap = np.asarray(page.colormap, np.float64)  # (3, 2**bits)
    if cmap.ndim != 2 or cmap.shape[0] != 3:
        return None
    grey = 0.299 * cmap[0] + 0.587 * cmap[1] + 0.114 * cmap[2]
    return np.round(grey).astype(np.uint16)


def _tiff_pixel_size(
    tif: tifffile.TiffFile, notes: list[str]
) -> tuple[float | None, float | None, float | None]:
    """(y, x, z) in µm as far as the file says; each None when it does not.

    A resolution in dots per inch or cm of at most ``PRINT_DPI`` is a picture's print
    setting, not a pixel size (:func:`~.base.print_resolution`): None, with a note.
    """
    if tif.is_ome and tif.ome_metadata:
        got = _ome_tiff_pixel_size(tif.ome_metadata)
        if got[0] is not None:
            return got
    page = tif.pages.first
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        if not xres[0] or not yres[0]:
            return (None, None, None)
        px_x, px_y = xres[1] / xres[0], yres[1] / yres[0]  # units per pixel
    except (KeyError, TypeError, IndexError):
        return (None, None, None)
    ij = tif.imagej_metadata or {}
    if ij.get("unit"):
        scale = length_unit_um(str(ij["unit"]).replace("\\u00B5", "µ"))
        if scale is None:
            return (None, None, None)
        spacing = ij.get("spacing")
        z = float(spacing) * scale if spacing else None
        if z is None and int(ij.get("slices", 1) or 1) > 1:
            z = scale  # ImageJ writes no spacing when the voxel depth is 1 unit
        return (px_y * scale, px_x * scale, z)
    unit = int(page.tags["ResolutionUnit"].value) if "ResolutionUnit" in page.tags else 1
    if unit not in _RESUNIT_UM:
        return (None, None, None)
    shaped = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    z = shaped.get("spacing") if isinstance(shaped, dict) else None
    scale = _RESUNIT_UM[unit]
    if unit in (2, 3) and print_resolution(min(px_y, px_x) * scale, notes):  # inch, cm
        return (None, None, None)
    return (px_y * scale, px_x * scale, float(z) * scale if z else None)


def _ome_tiff_pixel_size(xml: str) -> tuple[float | None, float | None, float | None]:
    try:
        image = tifffile.xml2dict(xml)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    except (KeyError, IndexError, TypeError, ValueError):
        return (None, None, None)

    def size(ax: str) -> float | None:
        if f"PhysicalSize{ax}" not in pixels:
            return None
        scale = length_unit_um(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        return float(pixels[f"PhysicalSize{ax}"]) * scale if scale else None

    return (size("Y"), size("X"), size("Z"))


def _voxel(
    yxz: tuple[float | None, float | None, float | None], n_z: int, notes: list[str]
) -> tuple[float, float, float] | None:
    y, x, z = yxz
    if y is None or x is None or y <= 0 or x <= 0:
        return None
    if z is None or z <= 0:
        z = y
        if n_z > 1:
            notes.append("the file gives no Z spacing: taken equal to the pixel size")
    return (float(f"{z:.6g}"), float(f"{y:.6g}"), float(f"{x:.6g}"))


# -- folders of slices -------------------------------------------------------
def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def tiff_files(path: Path) -> list[Path]:
    """The ``.tif``/``.tiff`` files of a folder in natural order (``z_2`` before ``z_10``)."""
    return sorted(
        (
            p
            for p in path.iterdir()
            if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".") and p.is_file()
        ),
        key=_natural_key,
    )


def _slice_header(f: Path) -> tuple[tuple[int, ...], np.dtype, str]:
    try:
        with tifffile.TiffFile(f) as tif:
            series = tif.series[0]
            return tuple(series.shape), np.dtype(series.dtype), series.axes
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as err:
        raise VolumeError(f"slice {str(f)!r} is not a readable TIFF: {err}") from None


def open_tiff_folder(path: Path, *, check_all_below: int = 2000) -> Volume:
    """A folder of 2-D TIFF slices (or of one multi-page TIFF) as a ``(Z, Y, X)`` volume."""
    files = tiff_files(path)
    if not files:
        raise VolumeError(f"folder {str(path)!r} holds no .tif/.tiff slices")
    shape, dtype, axes = _slice_header(files[0])
    colour = axes == "YXS" and shape[-1] in (2, 3, 4)
    if axes not in ("YX", "YXS") or (axes == "YXS" and not colour):
        if len(files) == 1:
            vol = open_tiff(files[0])
            vol.notes.append(f"the folder holds one TIFF, {files[0].name!r}: opened that stack")
            return vol
        raise VolumeError(
            f"slices in {str(path)!r} must be 2-D images; {files[0].name!r} has shape "
            f"{shape!r} (axes {axes!r}) and the folder holds {len(files)} TIFF files: "
            "open each stack file on its own, or keep one 2-D slice per file"
        )
    # Headers are cheap, but thousands of them are not: check all of a normal
    # stack, an even sample of a huge one (every slice is re-checked on read).
    step = max(1, len(files) // check_all_below)
    for f in [*files[::step], files[-1]]:
        s, d, _ = _slice_header(f)
        if s != shape or d != dtype:
            raise VolumeError(
                f"TIFF slices in {str(path)!r} differ: {files[0].name!r} is {shape} {dtype}, "
                f"{f.name!r} is {s} {d}; all slices must have one shape and dtype"
            )

    def _read(block_id: tuple[int, ...]) -> np.ndarray:
        f = files[block_id[0]]
        img = tifffile.imread(f)
        if img.shape != shape or img.dtype != dtype:
            raise VolumeError(
                f"slice {str(f)!r} is {img.shape} {img.dtype}, expected {shape} {dtype}"
            )
        if colour:
            img = to_grey(img, -1)
        return img[None]

    arr = da.map_blocks(
        _read,
        dtype=dtype,
        chunks=((1,) * len(files), (shape[0],), (shape[1],)),
        meta=np.empty((0, 0, 0), dtype=dtype),
    )
    notes = ["colour slices converted to grey (0.299 R + 0.587 G + 0.114 B)"] if colour else []
    try:
        with tifffile.TiffFile(files[0]) as tif:
            yxz = _tiff_pixel_size(tif, notes)
    except (tifffile.TiffFileError, OSError, ValueError):
        yxz = (None, None, None)
    voxel = _voxel(yxz, len(files), notes)
    return Volume([arr], path, "tiff-folder", voxel, attrs={"files": len(files)}, notes=notes)
