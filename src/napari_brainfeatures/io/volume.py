"""Open micro-CT volumes lazily: zarr (v2/v3), OME-Zarr, TIFF files and folders, 2-D images.

Every reader returns a :class:`Volume` whose ``levels`` are dask arrays; nothing
is read until a slice is displayed or computed.  The formats live beside this
module (``tiff``, ``image2d``, ``ome``); this one picks the reader for a path,
opens plain zarr and checks the result.  :func:`convert_to_ome_zarr` turns any of
them into chunked multiscale OME-Zarr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_brainfeatures.io.base import Volume, VolumeError, short_name
from napari_brainfeatures.io.image2d import IMAGE_SUFFIXES, open_image2d
from napari_brainfeatures.io.ome import is_ome_zarr, open_ome_zarr
from napari_brainfeatures.io.tiff import TIFF_SUFFIXES, open_tiff, open_tiff_folder, tiff_files

__all__ = [
    "Volume",
    "VolumeError",
    "open_volume",
    "sample_contrast_limits",
    "SUPPORTED_DTYPES",
    "IMAGE_SUFFIXES",
    "TIFF_SUFFIXES",
]

SUPPORTED_DTYPES = tuple(
    np.dtype(t)
    for t in (
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "int8",
        "int16",
        "int32",
        "int64",
        "float32",
        "float64",
    )  # int64: numpy's default integer, so many label volumes
)
# Preferred names of the image array inside a plain zarr group.
IMAGE_NAMES = ("image", "raw", "data", "volume", "0")


def open_volume(path: str | Path, *, array: str | None = None) -> Volume:
    """Open a 3-D volume (or a 2-D image as one section) lazily.

    Parameters
    ----------
    path : str or Path
        A zarr array or group (v2 or v3), an OME-Zarr image (NGFF 0.4/0.5), a
        TIFF file (2-D, stack, ImageJ, OME-TIFF), a folder of per-slice TIFF
        files (or holding one multi-page TIFF), or a 2-D PNG/JPEG/BMP/WebP/GIF.
        ``store.zarr/name`` selects an array inside a group.
    array : str, optional
        Name of the array inside a zarr group (default: the OME-Zarr levels,
        else ``image``/``raw``/``data``/``volume``/``0``, else the only array).

    Returns
    -------
    Volume
        Dask-backed grey levels ``(Z, Y, X)``; ``voxel_size`` in micrometres or
        None when the file does not give it; ``notes`` say what was converted.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    VolumeError
        If it is not a readable image, has more than one channel or non-spatial
        entries, is 4-D or more, has an unsupported dtype, a non-length unit, a
        non-positive scale or levels that disagree, is a corrupt zarr store, an
        empty TIFF folder or slices of mismatched shape.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {str(path)!r}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in TIFF_SUFFIXES:
            vol = open_tiff(path)
        elif suffix in IMAGE_SUFFIXES:
            vol = open_image2d(path)
        else:
            raise VolumeError(
                f"{str(path)!r} is not a supported volume: expected a zarr/OME-Zarr store, "
                "a .tif/.tiff file, a folder of .tif slices or a 2-D image ("
                + ", ".join(IMAGE_SUFFIXES)
                + ")"
            )
    elif is_zarr_store(path):
        vol = _open_zarr(path, array)
    elif tiff_files(path):
        vol = open_tiff_folder(path)
    elif is_zarr_store(path.parent) and array is None:
        vol = _open_zarr(path.parent, path.name)
    else:
        raise VolumeError(
            f"folder {str(path)!r} holds no zarr store and no .tif/.tiff slices; "
            "open a zarr/OME-Zarr store, a TIFF file or a folder of TIFF slices"
        )
    for lv in vol.levels:
        _check_array(lv, path)
    vol.name = vol.name or short_name(path)
    return vol


# -- zarr ----------------------------------------------------------------
def is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any(
        (path / f).exists() for f in ("zarr.json", ".zarray", ".zgroup", ".zattrs")
    )


def _open_zarr(path: Path, array: str | None) -> Volume:
    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises many types for corrupt metadata
        raise VolumeError(f"{str(path)!r} is not a readable zarr store: {err}") from None
    if isinstance(node, zarr.Array):
        notes: list[str] = []
        arr = _plain_zyx(_from_zarr(node, path), notes)
        return Volume([arr], path, "zarr", _voxel_from_attrs(node.attrs), notes=notes)
    attrs = dict(node.attrs)
    if is_ome_zarr(attrs) and array is None:
        return open_ome_zarr(node, path)
    names = sorted(name for name, _ in node.arrays())
    if array is None:
        array = next((n for n in IMAGE_NAMES if n in names), names[0] if len(names) == 1 else None)
        if array is None:
            raise VolumeError(
                f"zarr group {str(path)!r} holds arrays {names!r}; say which one to open "
                f"(e.g. {str(path / names[0]) if names else 'store.zarr/name'!r})"
            )
    if array not in names:
        raise VolumeError(f"zarr group {str(path)!r} has no array {array!r}; it has {names!r}")
    arr = node[array]
    voxel = _voxel_from_attrs(arr.attrs) or _voxel_from_attrs(node.attrs)
    notes = []
    data = _plain_zyx(_from_zarr(arr, path), notes)
    return Volume([data], path, "zarr", voxel, name=array, attrs=attrs, notes=notes)


def _plain_zyx(arr: da.Array, notes: list[str]) -> da.Array:
    """A plain array without axis names: 2-D gets Z = 1, leading singleton axes go."""
    if arr.ndim == 2:
        notes.append("a 2-D array: opened as one section (Z = 1)")
        return arr[None]
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
        notes.append("a leading axis of size 1 dropped")
    return arr


def _from_zarr(arr: zarr.Array, path: Path) -> da.Array:
    try:
        return da.from_zarr(arr)
    except Exception as err:
        raise VolumeError(f"cannot read zarr array in {str(path)!r}: {err}") from None


def _voxel_from_attrs(attrs: Any) -> tuple[float, float, float] | None:
    for key in ("voxel_size_um", "voxel_size", "resolution_um"):
        v = attrs.get(key) if attrs is not None else None
        if v is not None:
            try:
                vals = [float(x) for x in v][-3:]
            except (TypeError, ValueError):
                continue
            if len(vals) == 3 and all(x > 0 for x in vals):
                return (vals[0], vals[1], vals[2])
    return None


# -- checks and helpers --------------------------------------------------
def _check_array(arr: da.Array, path: Path) -> None:
    if arr.ndim != 3:
        raise VolumeError(
            f"{str(path)!r} is {arr.ndim}-D with shape {tuple(arr.shape)!r}; a (Z, Y, X) "
            "volume is expected: save one Z stack per array"
        )
    if np.dtype(arr.dtype) not in SUPPORTED_DTYPES:
        raise VolumeError(
            f"{str(path)!r} has dtype {arr.dtype}; supported: "
            + ", ".join(str(d) for d in SUPPORTED_DTYPES)
        )
    if 0 in arr.shape:
        raise VolumeError(f"{str(path)!r} is empty (shape {tuple(arr.shape)!r})")


def sample_contrast_limits(
    volume: Volume | da.Array,
    *,
    percentiles: tuple[float, float] = (0.5, 99.5),
    max_voxels: int = 2_000_000,
) -> tuple[float, float]:
    """Contrast limits from a small sample of the data, never the whole volume.

    Reads the middle slice of the finest level whose slice has at most 16 M
    pixels (strided, not averaged, down to about ``max_voxels``) and returns
    its ``percentiles``.

    Returns
    -------
    (low, high) : tuple of float
        With ``high > low``.
    """
    levels = volume.levels if isinstance(volume, Volume) else [volume]
    arr = next((lv for lv in levels if np.prod(lv.shape[-2:]) <= 16_000_000), levels[-1])
    sl = arr[arr.shape[0] // 2] if arr.ndim == 3 else arr
    step = max(1, int(np.ceil(np.sqrt(sl.size / max_voxels))))
    sample = np.asarray(sl[::step, ::step], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = (float(v) for v in np.percentile(sample, percentiles))
    if hi <= lo:
        hi = lo + 1.0
    return (lo, hi)


def describe_json(volume: Volume) -> str:
    """:meth:`Volume.describe` as indented JSON."""
    return json.dumps(volume.describe(), indent=2)
