"""A 2-D picture (PNG, JPEG, BMP, WebP, GIF) as a one-section ``(1, Y, X)`` volume.

Read with imageio's pillow plugin when a slice is first needed (the header alone
at open).  Colour and palette images become grey (luma) with a note; the pixel
size comes from the file's resolution (PNG ``pHYs``, JPEG/JFIF density) when it
has one, else it is unknown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from napari_brainfeatures.io.base import Volume, VolumeError, print_resolution, to_grey

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
# Pillow modes imageio returns as-is and that are grey already.
_GREY_MODES = ("L", "I", "I;16", "I;16B", "I;16L", "F")


def open_image2d(path: Path) -> Volume:
    """Open ``path`` lazily as ``(1, Y, X)``; the pixel size when the file gives one."""
    import imageio.v3 as iio

    try:
        meta = iio.immeta(path, plugin="pillow", index=0)
        props = iio.improps(path, plugin="pillow", index=0)
    except Exception as err:  # pillow raises many types for a broken file
        raise VolumeError(f"{str(path)!r} is not a readable image: {err}") from None
    mode = str(meta.get("mode", ""))
    read_mode = "L" if mode == "1" else None  # bilevel: 0/255 grey, not bool
    shape, dtype = tuple(props.shape), np.dtype(props.dtype)
    if mode == "1":
        shape, dtype = shape[:2], np.dtype(np.uint8)
    notes = ["a single 2-D image: opened as one section (Z = 1)"]
    colour = len(shape) == 3
    if colour:
        what = "palette (indexed colour)" if mode.startswith("P") else mode or "colour"
        notes.append(f"{what} image converted to grey (0.299 R + 0.587 G + 0.114 B)")
    elif mode not in _GREY_MODES + ("1",):
        notes.append(f"pillow mode {mode!r} read as grey")

    def _read() -> np.ndarray:
        img = iio.imread(path, plugin="pillow", index=0, mode=read_mode)
        if img.ndim == 3:
            img = to_grey(img, -1)
        return np.asarray(img)[None]

    arr = da.from_delayed(dask.delayed(_read)(), shape=(1, *shape[:2]), dtype=dtype)
    voxel = _pixel_size(meta)
    if voxel is not None and print_resolution(min(voxel[1:]), notes):
        voxel = None
    return Volume([arr], path, "image", voxel, notes=notes)


def _pixel_size(meta: dict[str, Any]) -> tuple[float, float, float] | None:
    """(z, y, x) µm from pillow's ``dpi`` (PNG pHYs in metres, JFIF dots per inch or cm).

    Z of a single section is taken equal to the pixel's height.
    """
    dpi = meta.get("dpi")
    if meta.get("jfif_unit", 1) == 0:  # an aspect ratio only, no physical size
        return None
    try:
        dx, dy = (float(v) for v in dpi)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if not (dx > 0 and dy > 0):
        return None
    y, x = (float(f"{25_400.0 / d:.6g}") for d in (dy, dx))
    return (y, y, x)
