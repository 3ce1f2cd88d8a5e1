"""The on-disk feature store written by :func:`~.run.compute_feature_map`.

A feature store is a zarr (v3) group on the local file system::

    STORE.zarr/
      features      (Z, 64, Y, X) float32   post-ReLU 64-d features   chunks (1, 64, T, T)
      features_pre  (Z, 64, Y, X) float32   pre-ReLU features (on request)
      probs         (Z, K, Y, X)  float32   class probabilities        chunks (1, K, T, T)
      areas         (Z, Y, X)     uint8/16  label id of the argmax class (0 = not computed)
      done          (Z, nY, nX)   uint8     1 once a tile's chunks are all written
      zarr.json     attrs["brainfeatures"]: provenance (model, stride, region, edge rule, ...)

Output ``(k, i, j)`` is the patch centred (64 px before, 63 after for a 128 patch) on
image pixel ``origin + (k, step*i, step*j)``; NaN / label 0 mark outputs that were
not computed (outside a region mask, or patches leaving the image under the
``"invalid"`` edge rule).  One tile = one chunk of every array, so each tile is
written atomically chunk by chunk (zarr writes each chunk file through a temporary
file), and its ``done`` marker is written only afterwards: an interrupted run
resumes tile by tile and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from napari_brainfeatures._util.leftovers import clean_leftovers, temp_path
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.features.inuse import check_replaceable, register

__all__ = [
    "FeatureStore",
    "FeatureStoreError",
    "IncompleteStoreError",
    "StoreMismatchError",
    "KIND",
]

KIND = "dense-feature-map"
ATTR = "brainfeatures"
# Provenance entries that must match for a run to resume into an existing store.
JOB_KEYS = (
    "model_id",
    "stride",
    "region",
    "edge",
    "precision",
    "method",
    "tile",
    "which",
    "image",
    "input_scale",
)


class StoreMismatchError(FileExistsError):
    """An existing store was made by another job (model, stride, region, ...)."""


class FeatureStoreError(ValueError):
    """A feature store whose description or array metadata is damaged (names what)."""


class IncompleteStoreError(FeatureStoreError):
    """A store with tiles not written: ``done`` of ``total`` (the message: where, how to resume)."""

    def __init__(self, message: str, done: int = 0, total: int = 0) -> None:
        super().__init__(message)
        self.done, self.total = done, total


# array -> (dtype kinds allowed, number of axes)
_ARRAYS = {
    "features": ("f", 4),
    "features_pre": ("f", 4),
    "probs": ("f", 4),
    "areas": ("u", 3),
    "done": ("u", 3),
}
#: What zarr and json raise for damaged metadata (zarr.errors are ValueErrors).
METADATA_ERRORS = (TypeError, ValueError, KeyError, IndexError, AttributeError, RecursionError)
_DAMAGE = METADATA_ERRORS


def _ints(value: Any, n: tuple[int, ...], lo: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) in n
        and all(type(v) is int and lo <= v < 2**40 for v in value)
    )


def _numbers(value: Any, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(abs(v) < 1e15 for v in value)  # also refuses NaN (and inf)
    )


def _check_store(group: zarr.Group, attrs: dict[str, Any]) -> dict[str, zarr.Array]:
    """The store's arrays, opened; ValueError naming the first damaged part."""
    fields = {
        "grid": _ints(attrs.get("grid"), (3,), 0),
        "stride": type(attrs.get("stride")) is int and 1 <= attrs["stride"] < 2**31,
        "origin": _numbers(attrs.get("origin"), 3),
        "step": _numbers(attrs.get("step"), 3),
        "image": isinstance(attrs.get("image"), dict)
        and _ints(attrs["image"].get("shape"), (2, 3), 1),
        "which": isinstance(attrs.get("which"), list) and all(w in _ARRAYS for w in attrs["which"]),
        "classes": isinstance(attrs.get("classes"), list),
    }
    bad = [k for k, ok in fields.items() if not ok]
    if bad:
        raise ValueError(
            f"its description has an invalid {bad[0]!r}: {str(attrs.get(bad[0]))[:80]!r}"
        )
    grid = tuple(attrs["grid"])
    arrays = {}
    for name in dict.fromkeys(["done", *attrs["which"]]):
        try:
            arr = group[name]
        except KeyError:
            raise ValueError(f"its array {name!r} is missing") from None
        except _DAMAGE as err:
            raise ValueError(f"the metadata of its array {name!r} is damaged ({err})") from None
        kinds, ndim = _ARRAYS[name]
        if not isinstance(arr, zarr.Array) or arr.ndim != ndim or arr.dtype.kind not in kinds:
            what = f"{arr.ndim}-D {arr.dtype}" if isinstance(arr, zarr.Array) else "a group"
            raise ValueError(f"its array {name!r} is {what}, expected {ndim}-D ({kinds!r} dtype)")
        shape = tuple(arr.shape)
        if name != "done" and (shape[0], *shape[-2:]) != grid:
            raise ValueError(f"its array {name!r} has shape {shape}, the grid is {grid}")
        arrays[name] = arr
    return arrays


def _provenance(group: zarr.Group) -> dict[str, Any]:
    raw: Any = group.attrs.get(ATTR)
    return dict(raw) if isinstance(raw, dict) else {}


def _is_feature_store(path: Path) -> bool:
    try:
        return _provenance(zarr.open_group(path, mode="r")).get("kind") == KIND
    except Exception:  # not zarr, or not a group
        return False


def check_writable(path: Path) -> None:
    """Raise a clear :class:`PermissionError` when ``path`` (or its parent) cannot be written."""
    target = path if path.exists() else path.parent
    while not target.exists():
        target = target.parent
    probe = target / f".brainfeatures-probe-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"cannot write the feature store {str(path)!r}: {target} is not writable "
            f"({err.strerror}); choose another output path"
        ) from None


def prepare(
    path: str | os.PathLike[str],
    *,
    provenance: dict[str, Any],
    arrays: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, Any, tuple[str, ...]]],
    overwrite: bool = False,
) -> Path:
    """Create a store for a job, or reopen the one it made earlier (to resume).

    Returns where the job writes: ``path``, or -- replacing a store made by another
    job -- a hidden sibling that :func:`~.inuse.finish` swaps in once every tile is
    written (the old store stays whole until then).

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder.
    provenance : dict
        JSON-ready job description; entries in ``JOB_KEYS`` must match to resume.
    arrays : dict
        ``name -> (shape, chunks, dtype, fill_value, dimension_names)``.
    overwrite : bool
        Replace an existing feature store made by another job (default False).

    Raises
    ------
    StoreMismatchError
        The store exists and was made by another job, and ``overwrite`` is False.
    StoreInUseError
        The store to replace is open in this process (:mod:`.inuse`).
    FileExistsError
        ``path`` exists and is not a feature store (never deleted).
    PermissionError
        ``path`` cannot be written.
    """
    path = Path(path)
    check_writable(path)
    clean_leftovers(path)  # what killed earlier writes of this store left beside it
    if path.exists():
        if _is_feature_store(path):
            old = _provenance(zarr.open_group(path, mode="r"))
            diff = [k for k in JOB_KEYS if old.get(k) != provenance.get(k)]
            if not diff:
                return path
            if not overwrite:
                details = "; ".join(
                    f"{k}: store {old.get(k)!r} vs now {provenance.get(k)!r}" for k in diff
                )
                raise StoreMismatchError(
                    f"the feature store {str(path)!r} was made by another job ({details:.600}); "
                    "choose a new output path, or pass overwrite=True (--overwrite) to replace it"
                )
            check_replaceable(path)
            return _create(temp_path(path, "partial"), provenance, arrays, shown=path)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        else:
            raise FileExistsError(
                f"{str(path)!r} exists and is not a feature store; choose another output "
                "path (it is never deleted, even with overwrite=True)"
            )
    return _create(path, provenance, arrays, shown=path)


def _create(path: Path, provenance: dict[str, Any], arrays: dict[str, Any], *, shown: Path) -> Path:
    try:
        group = zarr.open_group(path, mode="w-")
        for name, (shape, chunks, dtype, fill, dims) in arrays.items():
            group.create_array(
                name,
                shape=shape,
                chunks=chunks,
                dtype=dtype,
                fill_value=fill,
                dimension_names=dims,
            )
        group.attrs[ATTR] = {**provenance, "kind": KIND, "complete": False}
    except OSError as err:
        raise OSError(
            err.errno, f"could not create the feature store {str(shown)!r}: {err.strerror}"
        ) from None
    return path


def done_tiles(path: str | os.PathLike[str]) -> set[tuple[int, int, int]]:
    """Tiles ``(kz, ty, tx)`` whose ``done`` marker exists (listing only, no chunk reads)."""
    root = Path(path) / "done" / "c"
    found: set[tuple[int, int, int]] = set()
    for dirpath, _, files in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        if len(rel) == 2:
            found.update((int(rel[0]), int(rel[1]), int(f)) for f in files if f.isdigit())
    return found


def write_tile(
    path: Path,
    arrays: dict[str, zarr.Array],
    tile: tuple[int, int, int],
    box: tuple[slice, slice],
    data: dict[str, np.ndarray],
) -> None:
    """Write one tile's chunks, then its ``done`` marker; a failure leaves it not done."""
    kz, ty, tx = tile
    try:
        for name, arr in data.items():
            target = arrays[name]
            if target.ndim == 4:
                target[kz : kz + 1, :, box[0], box[1]] = arr[None]  # (1, C, ty, tx)
            else:
                target[kz : kz + 1, box[0], box[1]] = arr[None]  # (1, ty, tx)
        arrays["done"][kz, ty, tx] = 1
    except OSError as err:
        hint = (
            "the disk is full: free some space or choose another output path"
            if err.errno in (errno.ENOSPC, errno.EDQUOT)
            else "check the output path"
        )
        raise OSError(
            err.errno,
            f"could not write tile {tile} to the feature store {str(path)!r}: "
            f"{err.strerror or err}; {hint}. Finished tiles are kept: rerun to resume.",
        ) from None


def mark_complete(group: zarr.Group) -> None:
    """Record in the provenance that every tile is done."""
    attrs = _provenance(group)
    attrs["complete"] = True
    group.attrs[ATTR] = attrs


class FeatureStore:
    """Read access to a feature store; arrays come back as lazy dask arrays.

    For a 2-D input image the leading z axis (of length 1) is dropped.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not _is_feature_store(self.path):
            raise FileNotFoundError(f"{str(self.path)!r} is not a dense feature store")
        self.group = zarr.open_group(self.path, mode="r")
        register(self)  # in use while this object lives (never replaced meanwhile)
        self.attrs: dict[str, Any] = _provenance(self.group)
        try:
            self._arrays = _check_store(self.group, self.attrs)
        except _DAMAGE as err:
            raise FeatureStoreError(
                f"the feature store {str(self.path)!r} is damaged: {err}; compute it again "
                "(brainfeatures features ... --overwrite, or the Features dock)"
            ) from None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FeatureStore:
        """Open an existing store."""
        return cls(path)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, stride={self.stride}, shape={self.shape})"

    @property
    def is_2d(self) -> bool:
        """True when the input image was 2-D."""
        return len(self.attrs["image"]["shape"]) == 2

    @property
    def stride(self) -> int:
        """Pixels between neighbouring outputs."""
        return int(self.attrs["stride"])

    @property
    def shape(self) -> tuple[int, ...]:
        """Output grid ``(Z, Y, X)`` (``(Y, X)`` for 2-D input)."""
        shape = tuple(self.attrs["grid"])
        return shape[1:] if self.is_2d else shape

    @property
    def complete(self) -> bool:
        """True once every tile was written."""
        return bool(_provenance(zarr.open_group(self.path, mode="r")).get("complete"))

    @property
    def classes(self) -> ClassTable:
        """The model's class table (``areas`` holds these ids)."""
        return ClassTable.from_dict({"classes": self.attrs["classes"]})

    def layer_kwargs(self) -> dict[str, tuple[float, ...]]:
        """``scale`` and ``translate`` that place outputs on the image's pixels in napari."""
        origin, step = self.attrs["origin"], self.attrs["step"]
        if self.is_2d:
            origin, step = origin[1:], step[1:]
        return {
            "scale": tuple(float(s) for s in step),
            "translate": tuple(float(o) for o in origin),
        }

    def progress(self) -> tuple[int, int]:
        """``(tiles done, tiles in all)``."""
        return len(done_tiles(self.path)), int(np.prod(self._arrays["done"].shape))

    def require_complete(self, index: int | None = None) -> None:
        """Raise :class:`IncompleteStoreError` when tiles are missing (of z index ``index``).

        The message says how many tiles of how many are written, the region, and how
        to resume: the same job run again writes only the missing tiles.
        """
        done = done_tiles(self.path)
        total = int(np.prod(self._arrays["done"].shape))
        per_z = total // max(int(self._arrays["done"].shape[0]), 1)
        have = len(done) if index is None else sum(1 for t in done if t[0] == index)
        need = total if index is None else per_z
        if have >= need:
            return
        region = self.attrs.get("region") or {}
        where = ", ".join(
            f"{a} {region[a][0]}..{region[a][1] - 1}"
            for a in "zyx"
            if _ints(region.get(a), (2,), 0)
        )
        part = "" if index is None else f" in z index {index} ({len(done)} of {total} in all)"
        model = (self.attrs.get("model") or {}).get("file") or "MODEL"
        z = region.get("z") if _ints(region.get("z"), (2,), 0) else None
        cmd = (
            f"brainfeatures features {model} {self.attrs.get('image_name') or 'IMAGE'} "
            f"--out {self.path} --stride {self.stride}" + (f" --z-range {z[0]} {z[1]}" if z else "")
        )
        raise IncompleteStoreError(
            f"the feature store {str(self.path)!r} is incomplete: {have} of {need} tiles "
            f"written{part}, region {where or 'unknown'}; resume it by running the same job "
            f"again (finished tiles are kept): `{cmd}` with its other options as before, or "
            "Run in the Feature maps dock with the same settings; or, knowingly, use it as it "
            "is (--allow-incomplete: missing tiles are NaN and left out)",
            have,
            need,
        )

    def _lazy(self, name: str) -> da.Array:
        if name not in self._arrays:
            raise KeyError(
                f"{name!r} was not computed in {str(self.path)!r}; rerun with it in which="
            )
        # A fresh dask name per call: a viewer refreshing during a run never gets
        # chunks cached from before they were written.
        arr = da.from_zarr(self._arrays[name], name=f"brainfeatures-{name}-{uuid.uuid4().hex}")
        return arr[0] if self.is_2d else arr

    def features(self, *, pre_relu: bool = False) -> da.Array:
        """Features ``(Z, C, Y, X)`` float32 (post-ReLU; pre-ReLU if ``pre_relu``)."""
        return self._lazy("features_pre" if pre_relu else "features")

    @property
    def probs(self) -> da.Array:
        """Class probabilities ``(Z, K, Y, X)`` float32."""
        return self._lazy("probs")

    @property
    def areas(self) -> da.Array:
        """Label id of the most probable class ``(Z, Y, X)``; 0 where not computed."""
        return self._lazy("areas")

    def confidence(self) -> da.Array:
        """Probability of the most probable class ``(Z, Y, X)``."""
        return self.probs.max(axis=-3)

    def valid(self) -> da.Array:
        """Bool ``(Z, Y, X)``: outputs that were computed (not NaN / label 0)."""
        for name in ("features", "features_pre", "probs"):
            if name in self.attrs["which"]:
                return ~da.isnan(self._lazy(name)[..., 0, :, :])
        return self.areas > 0

    def feature_rows(self, *, pre_relu: bool = False) -> da.Array:
        """Features as rows ``(N, C)``, raster order of the output grid (NaN: not computed)."""
        f = self.features(pre_relu=pre_relu)
        return da.moveaxis(f, -3, -1).reshape(-1, f.shape[-3])
