"""The plan of a dense feature-map job: region, geometry, tiles, and the store it writes.

:func:`plan_job` turns :class:`~.options.DenseOptions` into a :class:`DenseJob` (every
automatic choice made) and creates (or reopens) the store.  The job is a small
picklable description shared by :mod:`napari_brainfeatures.features.run` (one
process) and :mod:`napari_brainfeatures.features.distributed` (dask workers); the
per-tile work lives in :mod:`.tile`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_brainfeatures import __version__
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.features.fcn import choose_tile, make_evaluator
from napari_brainfeatures.features.network import classes_of, load_model, model_id
from napari_brainfeatures.features.options import DenseOptions
from napari_brainfeatures.features.store import prepare
from napari_brainfeatures.models.cnn import BrainAreaCNN, check_image_dtype, input_scale_for

__all__ = ["DenseJob", "Region", "TileDone", "plan_job", "store_name"]


@dataclass(frozen=True)
class Region:
    """Where to compute: z/y/x as an index, slice or half-open ``(start, stop)``, and/or a mask.

    ``mask`` is ``(Y, X)`` (every z) or ``(Z, Y, X)`` over the whole image (numpy, zarr
    or dask; a 3-D mask is read for the region's z-slices only).
    """

    z: Any = None
    y: Any = None
    x: Any = None
    mask: Any = None


@dataclass(frozen=True)
class TileDone:
    """The part of the store a tile just wrote (a progress payload for live display).

    ``index`` is ``(kz, slice_y, slice_x)`` into the store's output grid; ``z`` the
    image slice; ``pixels`` the image box ``((y0, y1), (x0, x1))`` its outputs sit on;
    ``store`` the store written (a hidden sibling of the output while it replaces
    another job's store: show that one live).
    """

    tile: tuple[int, int, int]
    index: tuple[int, slice, slice]
    z: int
    pixels: tuple[tuple[int, int], tuple[int, int]]
    store: Path | None = None


def _range(v: Any, n: int, axis: str) -> tuple[int, int]:
    if v is None:
        return 0, n
    if isinstance(v, int | np.integer):
        v = (int(v), int(v) + 1)
    if isinstance(v, slice):
        if v.step not in (None, 1):
            raise ValueError(f"region {axis} slice must have step 1, got {v!r}")
        v = v.indices(n)[:2]
    try:
        a, b = (int(t) for t in v)
    except (TypeError, ValueError):
        raise ValueError(f"region {axis} must be (start, stop), got {v!r}") from None
    if not 0 <= a < b <= n:
        raise ValueError(f"region {axis} {(a, b)!r} is empty or outside the image (0..{n})")
    return a, b


def parse_region(region: Any, shape3: tuple[int, int, int]) -> tuple[list[tuple[int, int]], Any]:
    """Normalise ``region`` to ``[(z0, z1), (y0, y1), (x0, x1)]`` and a mask (or None)."""
    if isinstance(region, np.ndarray | list) or hasattr(region, "dask"):
        region = Region(mask=region)
    elif isinstance(region, dict):
        unknown = set(region) - {"z", "y", "x", "mask"}
        if unknown:
            raise ValueError(f"region keys must be z, y, x, mask; got {sorted(unknown)!r}")
        region = Region(**region)
    elif region is None or isinstance(region, int | np.integer | slice | tuple):
        region = Region(z=region)
    if not isinstance(region, Region):
        raise ValueError(
            f"region must be None, a z index/range, a dict, Region or mask, got {region!r}"
        )
    zr, yr, xr = (
        _range(v, n, a)
        for v, n, a in zip((region.z, region.y, region.x), shape3, "zyx", strict=True)
    )
    mask = region.mask
    if mask is not None:
        shape = tuple(getattr(mask, "shape", np.shape(mask)))
        if shape not in (shape3[1:], shape3):
            raise ValueError(f"region mask must have shape {shape3[1:]} or {shape3}, got {shape}")
        # A 3-D mask is read for the region's z-slices only (kept relative to z0).
        m = np.asarray(mask if len(shape) == 2 else mask[zr[0] : zr[1]]).astype(bool, copy=False)
        any_yx = np.asarray(m if m.ndim == 2 else m.any(axis=0))
        ys, xs = np.nonzero(any_yx[yr[0] : yr[1], xr[0] : xr[1]])
        if ys.size == 0:
            raise ValueError("region mask selects no pixel inside the region")
        yr = (yr[0] + int(ys.min()), yr[0] + int(ys.max()) + 1)
        xr = (xr[0] + int(xs.min()), xr[0] + int(xs.max()) + 1)
        mask = m
    return [zr, yr, xr], mask


@dataclass
class DenseJob:
    """A picklable plan: geometry, options and tiling of one feature-map job."""

    image_shape: tuple[int, ...]
    image_dtype: str
    bounds: list[tuple[int, int]]
    stride: int
    tile: int
    edge: str
    method: str
    which: tuple[str, ...]
    precision: str
    device: str
    input_scale: float
    batch: int
    classes: dict[str, Any]
    patch_size: int
    n_features: int
    before: int
    input_len: int
    mask: Any = None
    mask_sha256: str | None = None
    path: Path | None = None
    grid: tuple[int, int, int] = field(init=False)

    def __post_init__(self) -> None:
        (z0, z1), (y0, y1), (x0, x1) = self.bounds
        s = self.stride
        self.grid = (z1 - z0, -(-(y1 - y0) // s), -(-(x1 - x0) // s))

    @classmethod
    def build(
        cls, image: Any, model: BrainAreaCNN, options: DenseOptions, *, classes: ClassTable
    ) -> DenseJob:
        """Check ``options`` against the image, make the automatic choices, plan the tiles."""
        shape = tuple(int(n) for n in getattr(image, "shape", ()))
        if len(shape) not in (2, 3) or min(shape, default=0) < 1:
            raise ValueError(f"image must be a non-empty 2-D or 3-D array, got shape {shape!r}")
        shape3 = shape if len(shape) == 3 else (1, *shape)
        stride, device, method = options.stride, str(options.device), options.method
        if method == "auto":
            method = "patch" if model.config.is_padded else "dense"
        dtype = np.dtype(getattr(image, "dtype", np.float32))
        input_scale = options.input_scale
        if input_scale is None:
            input_scale = input_scale_for(dtype)[0]  # the training rule (uint8/255, ...)
        bounds, mask = parse_region(options.region, shape3)  # type: ignore[arg-type]
        batch = options.batch or (256 if method == "patch" else 65536 if "cuda" in device else 8192)
        ev = make_evaluator(model, method, stride, batch)
        budget = (options.memory_mb or (8192 if "cuda" in device else 1024)) * 2**20
        tile = options.tile or choose_tile(ev, model.config, budget, method)
        # No tile larger than the output grid (rounded up to whole fragments): small
        # images do not pay for a full-size tile.
        unit, longest = getattr(ev, "E", 1), max(-(-(b - a) // stride) for a, b in bounds[1:])
        tile = min(tile, -(-longest // unit) * unit)
        sha = None
        if mask is not None:
            sha = hashlib.sha256(np.packbits(mask).tobytes() + str(mask.shape).encode()).hexdigest()
        return cls(
            shape,
            str(dtype),
            bounds,
            stride,
            tile,
            options.edge,
            method,
            options.which,
            options.precision,
            device,
            float(input_scale),
            batch,
            classes.to_dict(),
            model.config.patch_size,
            model.config.n_features,
            ev.before,
            ev.input_length(tile),
            mask,
            sha,
        )

    # -- tiling -----------------------------------------------------------
    @property
    def n_tiles_yx(self) -> tuple[int, int]:
        """Tiles along y and x."""
        return -(-self.grid[1] // self.tile), -(-self.grid[2] // self.tile)

    @property
    def n_tiles(self) -> int:
        """Tiles in all."""
        ny, nx = self.n_tiles_yx
        return self.grid[0] * ny * nx

    def tiles(self) -> Iterator[tuple[int, int, int]]:
        """``(kz, ty, tx)`` in z, y, x order."""
        ny, nx = self.n_tiles_yx
        for kz in range(self.grid[0]):
            for ty in range(ny):
                for tx in range(nx):
                    yield kz, ty, tx

    def box(self, t: tuple[int, int, int]) -> tuple[slice, slice]:
        """Output-grid slices of tile ``t``."""
        _, ty, tx = t
        return (
            slice(ty * self.tile, min(self.grid[1], (ty + 1) * self.tile)),
            slice(tx * self.tile, min(self.grid[2], (tx + 1) * self.tile)),
        )

    def n_outputs(self, t: tuple[int, int, int]) -> int:
        """Outputs in tile ``t``."""
        sy, sx = self.box(t)
        return (sy.stop - sy.start) * (sx.stop - sx.start)

    def tile_done(self, t: tuple[int, int, int]) -> TileDone:
        """The progress payload of tile ``t``."""
        sy, sx = self.box(t)
        (z0, _), (y0, _), (x0, _) = self.bounds
        s = self.stride
        pix = (
            (y0 + s * sy.start, y0 + s * (sy.stop - 1) + 1),
            (x0 + s * sx.start, x0 + s * (sx.stop - 1) + 1),
        )
        return TileDone(t, (t[0], sy, sx), z0 + t[0], pix, self.path)

    @property
    def class_ids(self) -> np.ndarray:
        """Label id of each class index."""
        ids = [c["id"] for c in self.classes["classes"]]
        return np.asarray(ids, dtype=np.uint8 if max(ids) < 256 else np.uint16)

    def describe(self) -> dict[str, Any]:
        """JSON-ready provenance of the job's options and geometry."""
        (z0, z1), (y0, y1), (x0, x1) = self.bounds
        return {
            "stride": self.stride,
            "tile": self.tile,
            "edge": self.edge,
            "method": self.method,
            "which": list(self.which),
            "precision": self.precision,
            "device": self.device,
            "input_scale": self.input_scale,
            "batch": self.batch,
            "region": {
                "z": [z0, z1],
                "y": [y0, y1],
                "x": [x0, x1],
                "mask_sha256": self.mask_sha256,
            },
            "origin": [z0, y0, x0],
            "step": [1, self.stride, self.stride],
            "grid": list(self.grid),
            "patch_size": self.patch_size,
            "halo": [self.patch_size // 2, self.patch_size - 1 - self.patch_size // 2],
            "classes": self.classes["classes"],
        }

    def array_specs(self) -> dict[str, tuple[Any, ...]]:
        """Zarr arrays of the store: ``name -> (shape, chunks, dtype, fill, dims)``."""
        zo, yo, xo = self.grid
        t = self.tile
        ny, nx = self.n_tiles_yx
        specs: dict[str, tuple[Any, ...]] = {}
        n_cls = len(self.classes["classes"])
        for name in self.which:
            ch = n_cls if name == "probs" else self.n_features
            if name == "areas":
                specs[name] = (
                    (zo, yo, xo),
                    (1, t, t),
                    str(self.class_ids.dtype),
                    0,
                    ("z", "y", "x"),
                )
            else:
                specs[name] = (
                    (zo, ch, yo, xo),
                    (1, ch, t, t),
                    "float32",
                    float("nan"),
                    ("z", "c", "y", "x"),
                )
        specs["done"] = ((zo, ny, nx), (1, 1, 1), "uint8", 0, ("z", "ty", "tx"))
        return specs


def store_name(
    model: str | Path, *, stride: int, region: Any = None, shape: tuple[int, ...]
) -> str:
    """The default file name of a job's store: ``<model>-s<stride>[-z<lo>_<hi>][-r<hash>].zarr``.

    ``z<lo>_<hi>`` is the half-open z range (3-D images); ``r<hash>`` (8 hex digits)
    appears when the region is a y/x box or a mask, so jobs over other regions get
    other stores (none is refused as "made by another job").  ``region`` as in
    :class:`~.options.DenseOptions`; ``shape`` the image's.
    """
    shape3 = tuple(shape) if len(shape) == 3 else (1, *shape)
    ((z0, z1), (y0, y1), (x0, x1)), mask = parse_region(region, shape3)  # type: ignore[arg-type]
    name = f"{Path(model).stem or 'model'}-s{int(stride)}"
    if len(shape) == 3:
        name += f"-z{z0}_{z1}"
    if mask is not None or (y0, y1, x0, x1) != (0, shape3[1], 0, shape3[2]):
        key = f"{y0},{y1},{x0},{x1}".encode()
        if mask is not None:
            key += np.packbits(mask).tobytes() + str(mask.shape).encode()
        name += f"-r{hashlib.sha256(key).hexdigest()[:8]}"
    return name + ".zarr"


def plan_job(
    image: Any,
    model: BrainAreaCNN | str | Path,
    *,
    out: str | Path,
    options: DenseOptions | None = None,
    **kwargs: Any,
) -> tuple[DenseJob, BrainAreaCNN, dict[str, Any]]:
    """Plan the job and create (or reopen) its store; see :func:`~.run.compute_feature_map`.

    Parameters
    ----------
    image : array-like ``(Y, X)`` or ``(Z, Y, X)``
        The image (only its shape and dtype are read here).
    model : BrainAreaCNN or path
        The network, or a model file written by ``save_checkpoint``.
    out : path
        The ``.zarr`` store.
    options : DenseOptions, optional
        Default: ``DenseOptions()``.
    **kwargs
        Single options (``stride=4``, ...) applied over ``options`` (see :class:`DenseOptions`).

    Returns
    -------
    job, model, provenance
    """
    options = DenseOptions.of(options, **kwargs)
    model, header, file_sha = (
        load_model(model) if isinstance(model, str | Path) else (model, {}, None)
    )
    if not isinstance(model, BrainAreaCNN):
        raise TypeError(f"model must be a BrainAreaCNN or a model file, got {type(model).__name__}")
    if header and options.input_scale is None:
        check_image_dtype(header.get("meta", {}), getattr(image, "dtype", np.float32))
    job = DenseJob.build(
        image, model, options, classes=options.classes or classes_of(header, model)
    )
    provenance = {
        "model_id": model_id(model),
        "model": {
            "kind": "BrainAreaCNN",
            "config": model.config.to_dict(),
            "file": header.get("path"),
            "file_sha256": file_sha,
            "meta": header.get("meta", {}),
        },
        **job.describe(),
        "image": {"shape": list(job.image_shape), "dtype": str(job.image_dtype)},
        "image_name": options.image_name,
        "package_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    # Where the tiles go: ``out``, or a hidden sibling when replacing another job's store.
    job.path = prepare(
        out, provenance=provenance, arrays=job.array_specs(), overwrite=options.overwrite
    )
    return job, model, provenance
