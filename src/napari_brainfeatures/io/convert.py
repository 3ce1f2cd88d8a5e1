"""Convert a volume (TIFF stack, TIFF folder, zarr) to chunked multiscale OME-Zarr.

The output follows OME-NGFF 0.4 (zarr v2 layout, read by napari, ome-zarr-py,
Fiji/MoBIE and this package): levels ``0, 1, ...`` each halving Y and X, scales in
micrometres (unit ``"micrometer"``) and each downsampled level translated by half
its pixel minus half the original's, so that every level lies over the same
space.  The metadata is built and validated with ``ome_zarr_models``.  It is
written into a temporary folder beside the target and renamed at the end, so
an interrupted conversion never leaves a half-written store under the name and
a failed one keeps the store it was to replace.  The temporary folder is removed
on any error, Ctrl-C included, and a later conversion to the same target removes
those that a killed run left behind.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_brainfeatures import __version__
from napari_brainfeatures._util.leftovers import temp_path
from napari_brainfeatures._util.overwrite import check_target, swap_in
from napari_brainfeatures._util.ranges import Bounded
from napari_brainfeatures.io.base import check_voxel_size
from napari_brainfeatures.io.volume import Volume, open_volume
from napari_brainfeatures.progress import Progress

__all__ = ["convert_to_ome_zarr", "max_levels", "n_levels_for"]

CHUNK = Bounded("int", 1, 65536, hint="px")
LEVELS = Bounded("int", 1, 32)
VOXEL = Bounded("float", 0, 1e6, open_lo=True, hint="micrometres")


def n_levels_for(shape: tuple[int, ...], *, min_size: int = 256) -> int:
    """Number of 2x (Y, X) levels: halving while the smaller side stays >= ``min_size``."""
    side, n = min(shape[-2:]), 1
    while side // 2 >= min_size:
        side //= 2
        n += 1
    return n


def max_levels(shape: tuple[int, ...]) -> int:
    """The most 2x (Y, X) levels of ``shape``: until the smaller side is down to 1 px."""
    return max(1, int(min(shape[-2:])).bit_length())


def convert_to_ome_zarr(
    source: str | Path | Volume,
    target: str | Path,
    *,
    chunks: tuple[int, int, int] = (4, 512, 512),
    levels: int | None = None,
    voxel_size: tuple[float, float, float] | None = None,
    overwrite: bool = False,
) -> Generator[Progress, None, Path]:
    """Write ``source`` as multiscale OME-Zarr at ``target`` (a generator).

    Parameters
    ----------
    source : path or Volume
        Anything :func:`napari_brainfeatures.io.volume.open_volume` opens.
    target : path
        The ``.ome.zarr`` folder to create.
    chunks : (int, int, int)
        Chunk shape (Z, Y, X), default (4, 512, 512): thin in Z so that
        showing one slice decodes little more than that slice.
    levels : int, optional
        Resolution levels, 1 to :func:`max_levels`; default: halving while the
        smaller side stays at least 256 px (:func:`n_levels_for`).
    voxel_size : (float, float, float), optional
        Micrometres (Z, Y, X); default from the source, else 1.0 (the source's
        voxel size is unknown: pass it).  The source's translation is kept.
    overwrite : bool
        Replace an existing ``target``; default False (refuse).  Only a zarr
        store (or an empty folder) that is not the source and does not hold
        it is ever replaced.

    Yields
    ------
    Progress
        One record per written slab of Z chunks per level.

    Returns
    -------
    Path
        The written store.

    Raises
    ------
    FileExistsError
        ``target`` exists and ``overwrite`` is False, or ``target`` is a file,
        a folder that is not a zarr store, or is, holds or lies in the source
        store (never deleted).
    VolumeError
        ``source`` cannot be opened (nothing is written).
    ValueError
        ``chunks``, ``levels`` or ``voxel_size`` are not valid (nothing is written).
    """
    vol = source if isinstance(source, Volume) else open_volume(source)
    target = Path(target)
    inputs = [vol.path] if isinstance(source, Volume) else [source, vol.path]
    check_target(target, overwrite=overwrite, inputs=inputs)
    if not isinstance(chunks, list | tuple) or len(chunks) != 3:
        raise ValueError(f"chunks must be three positive integers (Z, Y, X), got {chunks!r}")
    chunks = tuple(CHUNK.check("chunks", c) for c in chunks)  # type: ignore[assignment]
    top = max_levels(vol.shape)
    n_levels = n_levels_for(vol.shape)
    if levels is not None:
        yx = tuple(int(s) for s in vol.shape[-2:])
        hint = f"for this volume of Y, X {yx}: each level halves them, level {top + 1} is empty"
        n_levels = Bounded("int", 1, min(top, LEVELS.hi), hint=hint).check("levels", levels)
    voxel = check_voxel_size(voxel_size or vol.voxel_size or (1.0, 1.0, 1.0))
    for v in voxel if voxel_size else ():
        VOXEL.check("voxel_size", v)
    final = target.expanduser().resolve()
    tmp = temp_path(final, "partial")  # check_target removed those of killed runs
    try:
        yield from _write(vol, tmp, chunks=chunks, n_levels=n_levels, voxel=voxel)
        swap_in(tmp, final)
    except BaseException:  # KeyboardInterrupt and GeneratorExit (a cancelled worker) too
        _remove(tmp)
        raise
    return target


def _remove(path: Path) -> None:
    """Delete a temporary store; retried, as zarr may still be finishing chunk writes."""
    for _ in range(3):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            return
        time.sleep(0.2)


def _write(
    vol: Volume,
    tmp: Path,
    *,
    chunks: tuple[int, int, int],
    n_levels: int,
    voxel: tuple[float, float, float],
) -> Generator[Progress, None, None]:
    """Write every level and the OME metadata of ``vol`` into the new store ``tmp``."""
    root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    data = vol.data
    zchunk = min(chunks[0], data.shape[0])
    n_slabs = -(-data.shape[0] // zchunk)
    total, step = n_slabs * n_levels, 0
    scales: list[list[float]] = []
    translations: list[list[float]] = []
    origin = vol.translation  # the source's offset (µm) stays
    for level in range(n_levels):
        shape = data.shape
        lv_chunks = (zchunk, min(chunks[1], shape[1]), min(chunks[2], shape[2]))
        arr = root.create_array(str(level), shape=shape, chunks=lv_chunks, dtype=data.dtype)
        for z0 in range(0, shape[0], zchunk):
            # One slab of Z chunks at a time keeps memory at one slab.
            arr[z0 : z0 + zchunk] = np.asarray(data[z0 : z0 + zchunk])
            step += 1
            yield Progress(step, total, f"level {level}: z {z0}/{shape[0]}")
        factor = 2**level
        scales.append([voxel[0], voxel[1] * factor, voxel[2] * factor])
        half = (0.0, (factor - 1) / 2 * voxel[1], (factor - 1) / 2 * voxel[2])
        translations.append([t + h for t, h in zip(origin, half, strict=True)])
        data = _downsample_yx(da.from_zarr(arr), data.dtype)
    root.attrs.update(
        {
            **_ome_attrs(vol.name, scales, translations),
            "napari_brainfeatures": {"source": str(vol.path), "version": __version__},
        }
    )


def _ome_attrs(
    name: str, scales: list[list[float]], translations: list[list[float]]
) -> dict[str, Any]:
    """NGFF 0.4 ``multiscales`` attributes (micrometres), validated by ome_zarr_models."""
    from ome_zarr_models.v04.axes import Axis
    from ome_zarr_models.v04.image import ImageAttrs
    from ome_zarr_models.v04.multiscales import Dataset, Multiscale

    ms = Multiscale(
        axes=[Axis(name=ax, type="space", unit="micrometer") for ax in ("z", "y", "x")],
        datasets=tuple(
            Dataset.build(path=str(i), scale=s, translation=t)
            for i, (s, t) in enumerate(zip(scales, translations, strict=True))
        ),
        name=name,
        type="mean",
        version="0.4",
    )
    return ImageAttrs(multiscales=[ms]).model_dump(mode="json", exclude_none=True)


def _downsample_yx(arr: da.Array, dtype: np.dtype) -> da.Array:
    """2x mean-downsample of Y and X (odd edges trimmed), keeping the dtype."""
    y, x = (arr.shape[1] // 2) * 2, (arr.shape[2] // 2) * 2
    arr = arr[:, :y, :x].astype(np.float32)
    small = da.coarsen(np.mean, arr, {1: 2, 2: 2}, trim_excess=True)
    if np.issubdtype(dtype, np.integer):
        small = da.round(small)
    return small.astype(dtype)
