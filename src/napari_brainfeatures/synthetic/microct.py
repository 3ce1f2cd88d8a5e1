"""A deterministic micro-CT-like volume of a mouse thalamocortical slab (paper 000).

The six areas of :func:`~napari_brainfeatures.classes.default_table` (Ctx,
HypoTh, Str, VP, WM, ZI) and the six cortical layers are laid out as in a
coronal slice (see :mod:`._geometry`), and differ by microstructure, not by
brightness:

========  =====================================================================
Ctx       L1 sparse glia + tangential fibres; L2/L3 dense small pyramids; L4
          dense small round cells clustered in barrels; L5 large sparse
          pyramids with apical dendrites; L6 medium pyramids; radial bundles
WM        densely packed bright fibres: along the band (callosum) or crossing
          the section in fascicles (internal capsule); rows of glia
Str       medium round cells and round through-plane fibre bundles ("pencils")
VP        large round cells, two families of crossing fibres
ZI        sparse medium cells, fibres along the band
HypoTh    small dense cells, few fibres
========  =====================================================================

plus blood vessels crossing z, a slow intensity drift, ring artefacts, noise and
blur.  Per-area backgrounds are tuned so that the mean and standard deviation
of grey values are about the same in every area.

Every voxel is a pure function of (position, volume shape, seed): any box can
be rendered alone (:func:`make_microct_lazy`, :func:`write_microct`) and
matches :func:`make_microct` byte for byte.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures._util.overwrite import check_target
from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.progress import Progress, ProgressGen, blocking
from napari_brainfeatures.synthetic._geometry import Geometry
from napari_brainfeatures.synthetic._geometry3 import Geometry3
from napari_brainfeatures.synthetic._render import render_box, render_labels

__all__ = [
    "DEFAULT_SHAPE", "GENERATOR_VERSION", "LAYER_GROUPS", "LAYER_NAMES", "MicroCT", "TEST_SHAPE",
    "VERSIONS", "VOXEL_SIZE_UM", "iter_microct", "iter_write_microct", "make_microct",
    "make_microct_lazy", "render_microct_box", "write_microct",
]  # fmt: skip

GENERATOR_VERSION = "2"  # 2: cortex 0.40 of the slice height (was 0.255); the default
#: Layouts on offer: 2 (the clean slab), 3 (a section as a real scan shows it: ``_geometry3``).
VERSIONS = (2, 3)
VOXEL_SIZE_UM = (1.17, 1.17, 1.17)
DEFAULT_SHAPE = (128, 1536, 1024)
TEST_SHAPE = (8, 256, 256)
BLOCK = (16, 256, 256)
LAYER_NAMES = ("L1", "L2", "L3", "L4", "L5", "L6")
# The five groups the papers summarise cortex by, as layer ids.
LAYER_GROUPS = {"L1": (1,), "L2/3": (2, 3), "L4": (4,), "L5": (5,), "L6": (6,)}
_ARRAYS = ("image", "areas", "layers", "barrels")
_ARRAYS_V3 = (*_ARRAYS, "tissue")


def _arrays(version: int) -> tuple[str, ...]:
    return _ARRAYS_V3 if version == 3 else _ARRAYS


def _geometry(shape: tuple[int, int, int], seed: int, version: int) -> Geometry:
    return (Geometry3 if version == 3 else Geometry)(shape, seed)


@dataclass
class MicroCT:
    """A synthetic micro-CT volume with its ground truth.

    Attributes
    ----------
    image : uint8 array (Z, Y, X)
        The grey values (numpy, or dask from :func:`make_microct_lazy`).
    areas : uint8 array (Z, Y, X)
        Class ids of :attr:`classes` (1 Ctx, 2 HypoTh, 3 Str, 4 VP, 5 WM, 6 ZI);
        0 is the clear medium above the pia.
    layers : uint8 array (Z, Y, X)
        0 outside cortex, 1..6 = L1..L6 (:attr:`layer_names`); L2 and L3 form
        the papers' L2/3 (:data:`LAYER_GROUPS`).
    barrels : uint8 array (Z, Y, X)
        1 inside a barrel of layer 4, else 0.
    voxel_size_um : tuple of float
        (z, y, x) voxel size, 1.17 µm isotropic.
    classes : ClassTable
        The area table (:func:`~napari_brainfeatures.classes.default_table`).
    layer_names : tuple of str
    seed : int
    tissue : uint8 array (Z, Y, X) or None
        Version 3: 1 in tissue (inside the cut faces, below the pia), else 0.
        ``areas`` is 0 in tissue of no class (the unclassified territory).
    version : int
        The layout (:data:`VERSIONS`): 2 (default) or 3.
    """

    image: Any
    areas: Any
    layers: Any
    barrels: Any
    voxel_size_um: tuple[float, float, float] = VOXEL_SIZE_UM
    classes: ClassTable = field(default_factory=default_table)
    layer_names: tuple[str, ...] = LAYER_NAMES
    seed: int = 0
    tissue: Any = None
    version: int = 2

    def attrs(self) -> dict[str, Any]:
        """JSON-ready metadata (as stored in the zarr group's attributes)."""
        return _attrs(tuple(self.image.shape), self.seed, self.version)


def _attrs(shape: tuple[int, ...], seed: int, version: int = 2) -> dict[str, Any]:
    arrays = {
        "image": "grey values",
        "areas": "class ids (0 clear)",
        "layers": "0 outside cortex, 1..6 = L1..L6",
        "barrels": "1 inside an L4 barrel",
    }
    if version == 3:
        arrays |= {
            "areas": "class ids (0 background or tissue of no class)",
            "tissue": "1 in tissue (inside the cut faces, below the pia)",
        }
    return {
        "generator": "napari-brainfeatures synthetic micro-CT",
        "generator_version": str(version) if version != 2 else GENERATOR_VERSION,
        "shape": list(shape),
        "seed": int(seed),
        "voxel_size_um": list(VOXEL_SIZE_UM),
        "unit": "micrometer",
        "axes": ["z", "y", "x"],
        "classes": default_table().to_dict(),
        "layer_names": list(LAYER_NAMES),
        "arrays": arrays,
    }  # fmt: skip


#: Largest side and voxel count of a generated volume (2**40 voxels: 3 TB in three arrays).
MAX_SIDE, MAX_VOXELS = 65_536, 2**40


def _check_version(version: Any) -> int:
    if isinstance(version, bool) or version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS!r}, got {version!r}")
    return int(version)


def _check(shape: Any, seed: Any, chunks: Any = None) -> tuple[tuple[int, int, int], int]:
    try:
        shp = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be three integers (Z, Y, X), got {shape!r}") from None
    if len(shp) != 3 or shp[0] < 1 or min(shp[1:]) < 64:
        raise ValueError(f"shape must be (Z, Y, X) with Z >= 1 and Y, X >= 64, got {shape!r}")
    if max(shp) > MAX_SIDE or shp[0] * shp[1] * shp[2] > MAX_VOXELS:
        raise ValueError(
            f"shape must have sides of at most {MAX_SIDE} and at most {MAX_VOXELS:,} voxels "
            f"(a uint8 image, labels and barrels of that size), got {shape!r}"
        )
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if chunks is not None:
        ch = tuple(int(c) for c in chunks) if np.iterable(chunks) else ()
        if len(ch) != 3 or min(ch) < 1:
            raise ValueError(f"chunks must be three positive integers (Z, Y, X), got {chunks!r}")
    return shp, int(seed)  # type: ignore[return-value]


def _boxes(
    shape: tuple[int, ...], chunks: tuple[int, ...]
) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    starts = [range(0, s, c) for s, c in zip(shape, chunks, strict=True)]
    return [
        (lo, tuple(min(v + c, s) for v, c, s in zip(lo, chunks, shape, strict=True)))
        for lo in product(*starts)
    ]


def _render_all(
    geom: Geometry, lo: tuple[int, ...], hi: tuple[int, ...]
) -> dict[str, NDArray[np.uint8]]:
    out = render_labels(geom, lo, hi)
    out["image"] = render_box(geom, lo, hi)
    return out


def _workers(workers: int | None) -> int:
    return max(1, int(workers) if workers else min(4, os.cpu_count() or 1))


def render_microct_box(
    shape: tuple[int, int, int],
    lo: tuple[int, int, int],
    hi: tuple[int, int, int],
    *,
    seed: int = 0,
    version: int = 2,
) -> dict[str, NDArray[np.uint8]]:
    """The arrays (``image``, ``areas``, ``layers``, ``barrels``; v3 ``tissue``) of a box.

    The box is ``[lo, hi)``; equals the same box cut out of
    ``make_microct(shape, seed=seed, version=version)``.
    """
    shp, seed = _check(shape, seed)
    version = _check_version(version)
    if any(not 0 <= a < b <= s for a, b, s in zip(lo, hi, shp, strict=True)):
        raise ValueError(f"box [{lo!r}, {hi!r}) is not a non-empty box inside shape {shp!r}")
    return _render_all(_geometry(shp, seed, version), tuple(lo), tuple(hi))


def iter_microct(
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    *,
    seed: int = 0,
    workers: int | None = None,
    version: int = 2,
) -> ProgressGen[MicroCT]:
    """Render the synthetic thalamocortical micro-CT volume in memory.

    A progress generator (one record per 16×256×256 block); :func:`make_microct` blocks.

    Parameters
    ----------
    shape : (Z, Y, X) ints
        Volume shape; default (128, 1536, 1024) (about 1.5 minutes on 2 cores,
        4 × 201 MB).  The layout scales with (Y, X); cells, fibres and vessels
        keep their size in voxels (1.17 µm).  Y and X must be >= 64; every
        area is present from 256 × 256 on (:data:`TEST_SHAPE` is (8, 256, 256)).
    seed : int
        Everything random (cells, fibres, vessels, noise, boundary wiggles)
        follows from it; the layout's broad shape does not change.
    workers : int, optional
        Threads (default: up to 4, one per core).
    version : int
        2 (default: the clean slab) or 3 (cut faces, pia, gradient, a thin white
        matter band, a fibre fan, tissue of no class; see ``_geometry3``).

    Returns
    -------
    MicroCT
        uint8 ``image``, ``areas``, ``layers`` and ``barrels`` (v3: and ``tissue``),
        all (Z, Y, X).
    """
    shp, seed = _check(shape, seed)
    version = _check_version(version)
    geom = _geometry(shp, seed, version)
    names = _arrays(version)
    out = {k: np.empty(shp, np.uint8) for k in names}
    boxes = _boxes(shp, BLOCK)
    with ThreadPoolExecutor(_workers(workers)) as pool:
        for i, ((lo, hi), arrs) in enumerate(
            zip(boxes, pool.map(lambda b: _render_all(geom, *b), boxes), strict=True)
        ):
            sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
            for k in names:
                out[k][sl] = arrs[k]
            yield Progress(i + 1, len(boxes), f"micro-CT block {i + 1}/{len(boxes)}")
    return _result(out, seed, version)


def _result(out: dict[str, Any], seed: int, version: int) -> MicroCT:
    arrs = (out["image"], out["areas"], out["layers"], out["barrels"])
    return MicroCT(*arrs, seed=seed, tissue=out.get("tissue"), version=version)


make_microct = blocking(iter_microct)


def make_microct_lazy(
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    *,
    seed: int = 0,
    chunks: tuple[int, int, int] = BLOCK,
    version: int = 2,
) -> MicroCT:
    """The same volume as dask arrays rendered chunk by chunk on demand.

    Labels are cheap (analytic); each image chunk costs about as much as the
    same box of :func:`make_microct`.  Values equal :func:`make_microct`'s.
    """
    import dask.array as da

    shp, seed = _check(shape, seed, chunks)
    version = _check_version(version)
    geom = _geometry(shp, seed, version)

    def block(name: str, block_info: dict | None = None) -> NDArray[np.uint8]:
        loc = block_info[None]["array-location"]  # type: ignore[index]
        lo, hi = tuple(a for a, _ in loc), tuple(b for _, b in loc)
        return render_box(geom, lo, hi) if name == "image" else render_labels(geom, lo, hi)[name]

    arrays = {
        k: da.map_blocks(
            block,
            k,
            dtype=np.uint8,
            chunks=da.core.normalize_chunks(chunks, shp),
            meta=np.empty((0, 0, 0), np.uint8),
        )
        for k in _arrays(version)
    }
    return _result(arrays, seed, version)


def iter_write_microct(
    path: str | Path,
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    seed: int = 0,
    chunks: tuple[int, int, int] = BLOCK,
    overwrite: bool = False,
    workers: int | None = None,
    version: int = 2,
) -> ProgressGen[Path]:
    """Write the volume into a zarr group, chunk by chunk (memory: a few chunks).

    A progress generator (one record per chunk); :func:`write_microct` blocks.

    The group holds uint8 arrays ``image``, ``areas``, ``layers`` and
    ``barrels`` of ``shape`` with ``chunks``, and attributes: generator and
    version, seed, shape, ``voxel_size_um``, the class table (``classes``, as
    :meth:`ClassTable.to_dict`) and ``layer_names``.  Bytes equal
    :func:`make_microct`'s for the same shape and seed, whatever ``chunks``.
    :func:`napari_brainfeatures.io.volume.open_volume` opens it (array ``image``).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False, or it is a file or a folder
        that is not a zarr store (never deleted, even with ``overwrite``).
    """
    import zarr

    shp, seed = _check(shape, seed, chunks)
    version = _check_version(version)
    chunks = tuple(int(c) for c in chunks)  # type: ignore[assignment]
    path = Path(path)
    check_target(path, overwrite=overwrite)
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update(_attrs(shp, seed, version))
    arrays = {
        k: group.create_array(k, shape=shp, chunks=chunks, dtype=np.uint8) for k in _arrays(version)
    }
    arrays["image"].attrs["voxel_size_um"] = list(VOXEL_SIZE_UM)
    geom = _geometry(shp, seed, version)
    boxes = _boxes(shp, chunks)

    def work(box: tuple[tuple[int, ...], tuple[int, ...]]) -> None:
        lo, hi = box
        sl = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        for k, v in _render_all(geom, lo, hi).items():
            arrays[k][sl] = v

    with ThreadPoolExecutor(_workers(workers)) as pool:
        for i, _ in enumerate(pool.map(work, boxes)):
            yield Progress(i + 1, len(boxes), f"micro-CT chunk {i + 1}/{len(boxes)}")
    return path


write_microct = blocking(iter_write_microct)
