"""What every reader returns: :class:`Volume`, :class:`VolumeError`, units and grey.

Shared by the format modules (``tiff``, ``image2d``, ``ome``) and ``volume``, which
re-exports :class:`Volume` and :class:`VolumeError`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

__all__ = [
    "PRINT_DPI",
    "Volume",
    "VolumeError",
    "check_voxel_size",
    "length_unit_um",
    "print_resolution",
    "to_grey",
]

Triple = tuple[float, float, float]

# Length units (OME-NGFF names, then common spellings) -> micrometres per unit.
_NGFF_UM = {
    "yoctometer": 1e-18, "zeptometer": 1e-15, "attometer": 1e-12, "femtometer": 1e-9,
    "picometer": 1e-6, "angstrom": 1e-4, "nanometer": 1e-3, "micrometer": 1.0,
    "millimeter": 1e3, "centimeter": 1e4, "decimeter": 1e5, "meter": 1e6,
    "hectometer": 1e8, "kilometer": 1e9, "megameter": 1e12, "gigameter": 1e15,
    "terameter": 1e18, "petameter": 1e21, "exameter": 1e24, "zettameter": 1e27,
    "yottameter": 1e30, "inch": 25_400.0, "foot": 304_800.0, "yard": 914_400.0,
    "mile": 1_609_344e3, "parsec": 3.0857e22,
}  # fmt: skip
_ALIASES_UM = {
    "pm": 1e-6, "å": 1e-4, "\\u00c5": 1e-4, "nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0,
    "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6,
    "in": 25_400.0,
}  # fmt: skip
LENGTH_UNITS = tuple(_NGFF_UM)
_GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as PIL's convert("L")


class VolumeError(ValueError):
    """A path that exists but cannot be opened as a 3-D image volume."""


#: A resolution of at most this many dots per inch (pixels of 84.7 µm or more) is a
#: picture's screen or print setting (72 and 96 dpi are image editors' defaults), never
#: the pixel of a scan of brain tissue: such a file's voxel size is read as unknown.
PRINT_DPI = 300.0


def print_resolution(pixel_um: float, notes: list[str]) -> bool:
    """Whether a pixel size read from a dpi-style resolution is a print setting (noted)."""
    if pixel_um < 25_400.0 / PRINT_DPI:
        return False
    notes.append(
        f"the file's resolution ({25_400.0 / pixel_um:.3g} dpi, {pixel_um:.4g} µm pixels) is "
        f"a screen or print setting (at most {PRINT_DPI:g} dpi), not a pixel size: the voxel "
        "size is unknown; set it with convert --voxel-size or in the Open volume dock"
    )
    return True


def length_unit_um(unit: Any) -> float | None:
    """Micrometres per ``unit`` (``"nanometer"`` -> 0.001), or None if not a length."""
    if not isinstance(unit, str):
        return None
    key = unit.strip().lower().replace("metre", "meter")
    for table in (_NGFF_UM, _ALIASES_UM):
        for name in (key, key.removesuffix("s")):
            if name in table:
                return table[name]
    return None


def check_voxel_size(voxel: Any, *, what: str = "voxel size") -> Triple:
    """``voxel`` as three positive finite floats (z, y, x), or a ValueError saying why."""
    try:
        vals = tuple(float(v) for v in voxel)
    except (TypeError, ValueError):
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise ValueError(
            f"{what} must be three positive micrometre values (z, y, x), got {voxel!r}"
        )
    return (vals[0], vals[1], vals[2])


def to_grey(arr: Any, axis: int) -> Any:
    """Collapse a colour ``axis`` (RGB[A] or grey+alpha) to grey, keeping the dtype.

    Three or more samples: luma ``0.299 R + 0.587 G + 0.114 B`` (alpha dropped);
    two (grey + alpha): the first; one: squeezed.  ``arr`` is a numpy or dask array.
    """
    xp = da if isinstance(arr, da.Array) else np
    if arr.shape[axis] < 3:
        return xp.take(arr, 0, axis=axis)
    axis %= arr.ndim
    rgb = xp.take(arr, [0, 1, 2], axis=axis).astype(np.float32)
    w = np.asarray(_GREY_WEIGHTS, np.float32).reshape([3 if i == axis else 1
                                                        for i in range(arr.ndim)])  # fmt: skip
    grey = (rgb * w).sum(axis=axis)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        grey = xp.clip(xp.round(grey), info.min, info.max)
    return grey.astype(arr.dtype)


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
        ``"zarr"``, ``"ome-zarr"``, ``"tiff"``, ``"tiff-folder"`` or ``"image"``
        (a 2-D PNG/JPEG/... opened as one section).
    voxel_size : tuple of float or None
        ``(z, y, x)`` of the full-resolution level in micrometres; None when the
        file does not say (unknown: set it with :meth:`set_voxel_size`).
    name : str
        A short name for layers.
    attrs : dict
        Extra metadata read from the file.
    level_scales : list of (float, float, float)
        Voxel size of every level in micrometres, when the file gives it per
        level (OME-Zarr); empty: derived from ``voxel_size`` and the shapes.
    level_translations : list of (float, float, float)
        Offset of every level's first voxel centre in micrometres (OME-Zarr
        ``translation``); empty: zero.
    notes : list of str
        What was done to make it a grey (Z, Y, X) volume (colour to grey,
        singleton axes dropped, units converted, ...).
    """

    levels: list[da.Array]
    path: Path
    kind: str
    voxel_size: Triple | None = None
    name: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    level_scales: list[Triple] = field(default_factory=list)
    level_translations: list[Triple] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

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

    @property
    def scales(self) -> list[Triple] | None:
        """Voxel size of every level (µm), None when the voxel size is unknown."""
        if self.level_scales:
            return list(self.level_scales)
        if self.voxel_size is None:
            return None
        z0 = self.shape
        return [
            tuple(v * a / b for v, a, b in zip(self.voxel_size, z0, lv.shape, strict=True))  # type: ignore[misc]
            for lv in self.levels
        ]

    @property
    def translation(self) -> Triple:
        """Offset (µm) of the full-resolution level's first voxel centre."""
        return self.level_translations[0] if self.level_translations else (0.0, 0.0, 0.0)

    def set_voxel_size(self, voxel: Sequence[float]) -> None:
        """Set the voxel size (µm, z y x) of the full-resolution level; lower levels follow."""
        new = check_voxel_size(voxel)
        if self.level_scales and self.voxel_size:
            ratio = [n / o for n, o in zip(new, self.voxel_size, strict=True)]
            self.level_scales = [
                tuple(s * r for s, r in zip(sc, ratio, strict=True))  # type: ignore[misc]
                for sc in self.level_scales
            ]
        else:
            self.level_scales = []
        self.voxel_size = new

    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary: shape, dtype, chunks, voxel size, levels, notes."""
        v = self.voxel_size
        out: dict[str, Any] = {
            "path": str(self.path),
            "kind": self.kind,
            "shape": list(self.shape),
            "dtype": str(self.dtype),
            "chunks": [int(c[0]) for c in self.data.chunks],
            "voxel_size_um": list(v) if v else None,
            "voxel_size": " x ".join(f"{x:g}" for x in v) + " µm" if v else "unknown",
            "levels": [list(lv.shape) for lv in self.levels],
            "size_gb": round(self.data.nbytes / 1e9, 3),
        }
        if self.level_scales and self.multiscale:
            out["level_scales_um"] = [list(s) for s in self.level_scales]
        if any(self.translation):
            out["translation_um"] = list(self.translation)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def short_name(path: Path) -> str:
    """A layer name: the file name without its image suffix."""
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name if path.is_dir() else path.stem
