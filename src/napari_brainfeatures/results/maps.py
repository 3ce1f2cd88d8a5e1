"""Maps kept in a result: a zarr array that knows where it lies and what its values name.

A map is one zarr array (``NAME.zarr``) whose ``brainfeatures`` attribute says::

    kind        "result-map"
    layer       "image" (numbers) or "labels" (ids)
    axes        "zyx", "yx", "czyx" or "cyx" (c: channels, e.g. one per NMF factor)
    scale       per spatial axis, micrometres between pixels
    translate   per spatial axis, micrometres to the first pixel's centre
    units       "micrometer"
    classes     labels only: {"<id>": {"name": ..., "color": [r, g, b, a]}} (0..1)
    channels    channel names (with a "c" axis)

which is what a napari layer needs (scale, translate, colours) and what an
OME-Zarr or TIFF export writes (:mod:`.export`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MapLayer", "open_map_layer", "write_map"]

KIND = "result-map"
ATTR = "brainfeatures"
AXES = ("zyx", "yx", "czyx", "cyx")
UNITS = "micrometer"


@dataclass(frozen=True)
class MapLayer:
    """A map read back: its data (dask) and geometry."""

    name: str
    data: Any
    layer: str
    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]
    units: str = UNITS
    classes: dict[int, tuple[str, tuple[float, ...]]] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)

    @property
    def spatial(self) -> str:
        """The spatial axes (``"zyx"`` or ``"yx"``)."""
        return self.axes.replace("c", "")


def _floats(values: Sequence[float], n: int, what: str) -> list[float]:
    out = [float(v) for v in values]
    if len(out) != n or not all(np.isfinite(out)):
        raise ValueError(f"{what} must be {n} finite numbers, one per spatial axis; got {values!r}")
    return out


def write_map(
    path: str | os.PathLike[str],
    data: Any,
    *,
    layer: str = "image",
    axes: str = "zyx",
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    classes: Mapping[int, tuple[str, Sequence[float]]] | None = None,
    channels: Sequence[str] | None = None,
) -> Path:
    """Write ``data`` as the map ``path`` (a ``.zarr`` array; the caller makes it atomic).

    Parameters
    ----------
    data : array
        Numbers (``layer="image"``, stored as float32) or ids (``"labels"``, stored as
        the smallest unsigned type that holds them).  Its dimensions follow ``axes``.
    layer : {"image", "labels"}
    axes : {"zyx", "yx", "czyx", "cyx"}
    scale, translate : sequences of float, optional
        Micrometres per pixel and to the first pixel, one per spatial axis
        (default 1 and 0).
    classes : mapping, optional
        Labels: id -> (name, RGBA in 0..1).
    channels : sequence of str, optional
        Names of the channels (with a ``c`` axis).
    """
    import zarr

    if layer not in ("image", "labels"):
        raise ValueError(f"layer must be 'image' or 'labels', got {layer!r}")
    if axes not in AXES:
        raise ValueError(f"axes must be one of {AXES!r}, got {axes!r}")
    arr = np.asarray(data)
    if arr.ndim != len(axes):
        raise ValueError(f"a map with axes {axes!r} needs {len(axes)} dimensions, got {arr.shape}")
    n = len(axes.replace("c", ""))
    scale = _floats(scale if scale is not None else [1.0] * n, n, "scale")
    translate = _floats(translate if translate is not None else [0.0] * n, n, "translate")
    if layer == "labels":
        top = int(arr.max(initial=0))
        if arr.dtype.kind not in "iub" or int(arr.min(initial=0)) < 0:
            raise ValueError(f"a label map needs ids >= 0, got dtype {arr.dtype}")
        arr = arr.astype(np.min_scalar_type(max(top, 255)), copy=False)
    else:
        arr = arr.astype(np.float32, copy=False)
    chunks = tuple(min(s, 1 if i < arr.ndim - 2 else 1024) for i, s in enumerate(arr.shape))
    out = zarr.create_array(str(path), shape=arr.shape, dtype=arr.dtype, chunks=chunks)
    out[...] = arr
    attrs: dict[str, Any] = {
        "kind": KIND,
        "layer": layer,
        "axes": axes,
        "scale": scale,
        "translate": translate,
        "units": UNITS,
    }
    if classes:
        attrs["classes"] = {
            str(int(i)): {"name": str(nm), "color": [float(c) for c in rgba]}
            for i, (nm, rgba) in classes.items()
        }
    if channels:
        attrs["channels"] = [str(c) for c in channels]
    out.attrs[ATTR] = attrs
    return Path(path)


def open_map_layer(path: str | os.PathLike[str]) -> MapLayer:
    """Read a map written by :func:`write_map` (data as a dask array).

    Raises
    ------
    ValueError
        ``path`` is not such a map.
    """
    import dask.array as da
    import zarr

    path = Path(path)
    try:
        arr = zarr.open_array(str(path), mode="r")
        attrs = dict(arr.attrs.get(ATTR) or {})
    except Exception as err:  # zarr raises several kinds for "not an array"
        raise ValueError(f"{str(path)!r} is not a result map: {err}") from None
    if attrs.get("kind") != KIND or attrs.get("axes") not in AXES:
        raise ValueError(f"{str(path)!r} is not a result map (no {KIND!r} attributes)")
    classes = {
        int(i): (str(c["name"]), tuple(float(v) for v in c["color"]))
        for i, c in (attrs.get("classes") or {}).items()
    }
    return MapLayer(
        name=path.name.removesuffix(".zarr"),
        data=da.from_zarr(arr),
        layer=str(attrs["layer"]),
        axes=str(attrs["axes"]),
        scale=tuple(attrs["scale"]),
        translate=tuple(attrs["translate"]),
        units=str(attrs.get("units", UNITS)),
        classes=classes,
        channels=list(attrs.get("channels", [])),
    )
