"""Open micro-CT volumes lazily: zarr (v2/v3), OME-Zarr, multi-page TIFF, TIFF folders.

Every reader returns a :class:`Volume` whose ``levels`` are dask arrays; nothing
is read until a slice is displayed or computed.  :func:`convert_to_ome_zarr`
turns a TIFF stack into chunked multiscale OME-Zarr.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

__all__ = [
    "Volume",
    "VolumeError",
    "open_volume",
    "sample_contrast_limits",
    "SUPPORTED_DTYPES",
]

TIFF_SUFFIXES = (".tif", ".tiff")
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


class VolumeError(ValueError):
    """A path that exists but cannot be opened as a 3-D image volume."""


@dataclass
class Volume:
    """A lazily opened image volume.

    Attributes
    ----------
    levels : list of dask.array.Array
        Resolution levels, full resolution first; each ``(Z, Y, X)``.
    path : Path
        Where it was opened from.
    kind : str
        ``"zarr"``, ``"ome-zarr"``, ``"tiff"`` or ``"tiff-folder"``.
    voxel_size : tuple of float or None
        ``(z, y, x)`` in micrometres, when the file says.
    name : str
        A short name for layers.
    attrs : dict
        Extra metadata read from the file.
    """

    levels: list[da.Array]
    path: Path
    kind: str
    voxel_size: tuple[float, float, float] | None = None
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> da.Array:
        """The full-resolution level ``(Z, Y, X)``."""
        return self.levels[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the full-resolution level."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return self.data.dtype

    @property
    def multiscale(self) -> bool:
        """True when the store has more than one resolution level."""
        return len(self.levels) > 1

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: shape, dtype, chunks, voxel size, levels."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "chunks": [int(c[0]) for c in self.data.chunks],
            "voxel_size_um": list(self.voxel_size) if self.voxel_size else None,
            "levels": [list(lv.shape) for lv in self.levels],
            "size_gb": round(self.data.nbytes / 1e9, 3),
        }


def open_volume(path: str | Path, *, array: str | None = None) -> Volume:
    """Open a 3-D volume lazily.

    Parameters
    ----------
    path : str or Path
        A zarr array or group (v2 or v3), an OME-Zarr image, a (multi-page)
        TIFF file, or a folder of per-slice TIFF files.  ``store.zarr/name``
        selects an array inside a group.
    array : str, optional
        Name of the array inside a zarr group (default: the OME-Zarr levels,
        else ``image``/``raw``/``data``/``volume``/``0``, else the only array).

    Returns
    -------
    Volume
        Dask-backed levels ``(Z, Y, X)``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    VolumeError
        If it is not a readable image, not 3-D, of an unsupported dtype, a
        corrupt zarr store, an empty TIFF folder or slices of mismatched shape.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {str(path)!r}")
    if path.is_file():
        if path.suffix.lower() not in TIFF_SUFFIXES:
            raise VolumeError(
                f"{str(path)!r} is not a supported volume: expected a zarr/OME-Zarr store, "
                "a .tif/.tiff file or a folder of .tif slices"
            )
        vol = _open_tiff(path)
    elif is_zarr_store(path):
        vol = _open_zarr(path, array)
    elif _tiff_files(path):
        vol = _open_tiff_folder(path)
    elif is_zarr_store(path.parent) and array is None:
        vol = _open_zarr(path.parent, path.name)
    else:
        raise VolumeError(
            f"folder {str(path)!r} holds no zarr store and no .tif/.tiff slices; "
            "open a zarr/OME-Zarr store, a TIFF file or a folder of TIFF slices"
        )
    for lv in vol.levels:
        _check_array(lv, path)
    vol.name = vol.name or _short_name(path)
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
        return Volume([_from_zarr(node, path)], path, "zarr", _voxel_from_attrs(node.attrs))
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales and array is None:
        return _open_ome(node, path, multiscales[0])
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
    return Volume([_from_zarr(arr, path)], path, "zarr", voxel, name=array, attrs=attrs)


def _open_ome(group: Any, path: Path, ms: dict[str, Any]) -> Volume:
    levels, voxel = [], None
    for i, ds in enumerate(ms.get("datasets", [])):
        try:
            arr = group[ds["path"]]
        except KeyError:
            raise VolumeError(
                f"OME-Zarr {str(path)!r} lists level {ds['path']!r} but it is missing"
            ) from None
        levels.append(_from_zarr(arr, path))
        if i == 0:
            for t in ds.get("coordinateTransformations", []):
                if t.get("type") == "scale":
                    voxel = tuple(float(s) for s in t["scale"][-3:])
    if not levels:
        raise VolumeError(f"OME-Zarr {str(path)!r} lists no resolution levels")
    return Volume(levels, path, "ome-zarr", voxel, attrs=dict(group.attrs))  # type: ignore[arg-type]


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
            if len(vals) == 3:
                return (vals[0], vals[1], vals[2])
    return None


# -- TIFF ----------------------------------------------------------------
def _open_tiff(path: Path) -> Volume:
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0] if tif.series else None
            if series is None or not series.shape:
                raise VolumeError(f"TIFF file {str(path)!r} holds no image")
            voxel = _tiff_voxel(tif)
        store = tifffile.imread(path, aszarr=True)
        arr = da.from_zarr(zarr.open(store, mode="r"))
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        if isinstance(err, VolumeError):
            raise
        raise VolumeError(f"{str(path)!r} is not a readable TIFF image: {err}") from None
    if arr.ndim == 3 and arr.chunksize[0] != 1:
        arr = arr.rechunk((1, *arr.shape[1:]))
    return Volume([arr], path, "tiff", voxel)


def _tiff_voxel(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    ij = tif.imagej_metadata or {}
    page = tif.pages.first
    try:
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        unit = str(ij.get("unit", "")).lower()
        scale = {"micron": 1.0, "um": 1.0, "\\u00b5m": 1.0, "µm": 1.0, "nm": 1e-3, "mm": 1e3}.get(
            unit
        )
        if scale is None or "spacing" not in ij:
            return None
        return (
            float(ij["spacing"]) * scale,
            yres[1] / yres[0] * scale,
            xres[1] / xres[0] * scale,
        )
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _tiff_files(path: Path) -> list[Path]:
    return sorted(
        (
            p
            for p in path.iterdir()
            if p.suffix.lower() in TIFF_SUFFIXES and not p.name.startswith(".")
        ),
        key=_natural_key,
    )


def _slice_header(f: Path) -> tuple[tuple[int, ...], np.dtype]:
    try:
        with tifffile.TiffFile(f) as tif:
            page = tif.pages.first
            return tuple(page.shape), np.dtype(page.dtype)
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        raise VolumeError(f"slice {str(f)!r} is not a readable TIFF: {err}") from None


def _open_tiff_folder(path: Path, *, check_all_below: int = 2000) -> Volume:
    files = _tiff_files(path)
    if not files:
        raise VolumeError(f"folder {str(path)!r} holds no .tif/.tiff slices")
    shape, dtype = _slice_header(files[0])
    if len(shape) != 2:
        raise VolumeError(
            f"slices in {str(path)!r} must be 2-D images; {files[0].name!r} has shape {shape!r}"
        )
    # Headers are cheap, but thousands of them are not: check all of a normal
    # stack, an even sample of a huge one (every slice is re-checked on read).
    step = max(1, len(files) // check_all_below)
    for f in [*files[::step], files[-1]]:
        s, d = _slice_header(f)
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
        return img[None]

    arr = da.map_blocks(
        _read,
        dtype=dtype,
        chunks=((1,) * len(files), (shape[0],), (shape[1],)),
        meta=np.empty((0, 0, 0), dtype=dtype),
    )
    return Volume([arr], path, "tiff-folder", None, attrs={"files": len(files)})


# -- checks and helpers --------------------------------------------------
def _check_array(arr: da.Array, path: Path) -> None:
    if arr.ndim != 3:
        raise VolumeError(
            f"{str(path)!r} is {arr.ndim}-D with shape {tuple(arr.shape)!r}; a (Z, Y, X) "
            "volume is expected (for a single 2-D slice, save it as a stack of one)"
        )
    if np.dtype(arr.dtype) not in SUPPORTED_DTYPES:
        raise VolumeError(
            f"{str(path)!r} has dtype {arr.dtype}; supported: "
            + ", ".join(str(d) for d in SUPPORTED_DTYPES)
        )
    if 0 in arr.shape:
        raise VolumeError(f"{str(path)!r} is empty (shape {tuple(arr.shape)!r})")


def _short_name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


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
