"""npe2 writer: save a labels layer to zarr or TIFF, atomically, chunk by chunk.

The new file is written beside the target under a temporary name and moved
into place only when complete, so a failed save never destroys the old file.
The labels are read and written one chunk (zarr) or one slice (TIFF) at a time,
so a lazy layer larger than memory can be saved.

The stored dtype never narrows: it is at least the old target's (the
workspace's ``labels.zarr`` stays uint16 even when every id is <= 255, so a
later id 300 is not wrapped to 44), uint16 for a layer with a class table
(ids up to 65535), and an id that does not fit is refused, never wrapped.
Saving the workspace's labels layer onto its own store writes nothing: it is
saved stroke by stroke already.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

from napari_brainfeatures._util.leftovers import clean_leftovers, temp_path
from napari_brainfeatures.workspace import Workspace

SUFFIXES = (".zarr", ".tif", ".tiff")
MAX_DTYPE = np.dtype(np.uint16)  # class ids are 1..65535


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write labels ``data`` (Z, Y, X) or (Y, X) to ``path`` (.zarr, .tif, .tiff).

    ``data`` may be a numpy, dask or zarr array (or a list of levels, of
    which the first is written); it is never loaded whole.

    Raises
    ------
    ValueError
        Not integers, an unsupported suffix, an id that does not fit the
        stored dtype, or a workspace ``labels.zarr`` of another shape.
    WorkspaceBusyError
        The target is a workspace's ``labels.zarr`` that another process writes.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"save labels as .zarr, .tif or .tiff, got {target.name!r}")
    if isinstance(data, list | tuple):  # multiscale: the full-resolution level
        data = data[0]
    if getattr(data, "dtype", None) is None or getattr(data, "shape", None) is None:
        data = np.asarray(data)  # a nested list, say: small by nature
    src_dtype = np.dtype(data.dtype)
    if src_dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {src_dtype}")
    if suffix == ".zarr" and _is_store_of(data, target):
        return [str(target)]  # the workspace's own store: written as painted
    shape = tuple(int(s) for s in data.shape)
    ws = _workspace_of(target, shape)
    try:
        old_dtype, old_chunks = _existing(target, shape)
        dtype = _dtype(src_dtype, old_dtype, meta)
        chunks = old_chunks or _chunks(shape)
        lazy = data.rechunk(chunks) if isinstance(data, da.Array) else None
        if lazy is None:
            lazy = da.from_array(data, chunks=chunks, asarray=False, fancy=False)
        checked = lazy.map_blocks(_fit, dtype=dtype, target=dtype, where=target.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_leftovers(target)  # what a killed save left beside it (an old one put back)
        tmp = temp_path(target)
        tmp.mkdir()
        try:
            out = tmp / target.name
            if suffix == ".zarr":
                z = zarr.create_array(
                    str(out), shape=shape, dtype=dtype, chunks=chunks, fill_value=0
                )
                da.store(checked, z, lock=False, scheduler="synchronous")
                z.attrs.update({"name": meta.get("name", ""), "scale": list(meta.get("scale", []))})
            else:
                tifffile.imwrite(
                    out,
                    _pages(checked),
                    shape=shape,
                    dtype=dtype,
                    compression="zlib",
                    photometric="minisblack",
                )
            _replace(out, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if ws is not None:
            ws.close()
    return [str(target)]


def _fit(block: np.ndarray, target: np.dtype, where: str) -> np.ndarray:
    """``block`` as ``target``, or a ValueError naming the id that does not fit."""
    block = np.asarray(block)
    if block.size:
        lo, hi = block.min(), block.max()
        info = np.iinfo(target)
        if lo < 0 or hi > info.max:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"label id {int(bad)} does not fit {target} (0..{info.max}), the type of "
                f"{where!r}; label ids must lie in 0..65535: relabel those pixels first"
            )
    return block.astype(target, copy=False)


def _pages(arr: da.Array) -> Iterator[np.ndarray]:
    """The 2-D pages of ``arr`` one at a time (a 2-D array is one page)."""
    if arr.ndim <= 2:
        yield np.asarray(arr.compute(scheduler="synchronous"))
        return
    for index in np.ndindex(*arr.shape[:-2]):
        yield np.asarray(arr[index].compute(scheduler="synchronous"))


def _dtype(src: np.dtype, old: np.dtype | None, meta: dict[str, Any]) -> np.dtype:
    """Never narrower than the source (up to uint16), the old target, or the class table."""
    want = src if src.kind == "u" and src.itemsize <= MAX_DTYPE.itemsize else MAX_DTYPE
    extra = meta.get("metadata") or {}
    if "classes" in extra or "brainfeatures_workspace" in extra:
        want = np.promote_types(want, MAX_DTYPE)  # a class table holds ids up to 65535
    if old is not None and old.kind == "u":
        want = np.promote_types(want, old)
    return np.dtype(want)


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) < 2:
        return tuple(min(1 << 20, s) for s in shape)
    return (1,) * (len(shape) - 2) + tuple(min(512, s) for s in shape[-2:])


def _existing(target: Path, shape: tuple[int, ...]) -> tuple[np.dtype | None, Any]:
    """The dtype (and, for zarr of the same shape, chunks) of the file being replaced."""
    if not target.exists():
        return None, None
    try:
        if target.suffix.lower() == ".zarr":
            old = zarr.open_array(str(target), mode="r")
            same = tuple(old.shape) == shape
            return np.dtype(old.dtype), tuple(old.chunks) if same else None
        with tifffile.TiffFile(target) as tif:
            return np.dtype(tif.series[0].dtype), None
    except Exception:  # not a labels array (a group, a broken file): replaced as before
        return None, None


def _is_store_of(data: Any, target: Path) -> bool:
    """Whether ``data`` is the zarr array stored at ``target`` itself."""
    if not isinstance(data, zarr.Array) or data.path not in ("", "/"):
        return False
    root = getattr(data.store, "root", None)
    return root is not None and Path(root).resolve() == target.resolve()


def _workspace_of(target: Path, shape: tuple[int, ...]) -> Workspace | None:
    """The workspace whose ``labels.zarr`` is ``target``, with its write lease taken."""
    root = target.parent
    if target.name != "labels.zarr" or not (root / "workspace.json").exists():
        return None
    ws = Workspace.open(root, mode="r+")
    if ws.shape != shape:
        ws.close()
        raise ValueError(
            f"labels of shape {shape} cannot replace the labels of workspace {str(root)!r}, "
            f"shape {ws.shape}; save them under another name"
        )
    return ws


def _replace(new: Path, target: Path) -> None:
    """Move ``new`` onto ``target``; an old target is removed only after the move."""
    if not target.exists():
        os.replace(new, target)
        return
    old = temp_path(target, "old")  # put back by clean_leftovers if killed in between
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old) if old.is_dir() else old.unlink()
