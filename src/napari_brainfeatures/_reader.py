"""npe2 reader: zarr / OME-Zarr / TIFF / TIFF folders as lazy image layers.

Returns napari LayerData tuples; imports no napari.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_brainfeatures.io import (
    TIFF_SUFFIXES,
    Volume,
    is_zarr_store,
    open_volume,
    sample_contrast_limits,
)

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | list[str]) -> Callable[[Any], list[LayerData]] | None:
    """Return a reader function when ``path`` looks like a volume we open, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES:
        return read_volume
    if p.is_dir() and (
        is_zarr_store(p) or any(c.suffix.lower() in TIFF_SUFFIXES for c in p.iterdir())
    ):
        return read_volume
    return None


def layer_data(vol: Volume) -> LayerData:
    """The image LayerData tuple of an opened volume (multiscale when it has levels)."""
    kwargs: dict[str, Any] = {
        "name": vol.name,
        "contrast_limits": sample_contrast_limits(vol),
        "metadata": {"brainfeatures": vol.describe()},
    }
    if vol.voxel_size:
        kwargs["scale"] = vol.voxel_size
    data = vol.levels if vol.multiscale else vol.data
    if vol.multiscale:
        kwargs["multiscale"] = True
    return (data, kwargs, "image")


def read_volume(path: str | list[str]) -> list[LayerData]:
    """Open ``path`` lazily as one image layer (raises a clear error otherwise)."""
    if isinstance(path, list):
        path = path[0]
    return [layer_data(open_volume(path))]
