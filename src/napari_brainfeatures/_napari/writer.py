"""npe2 writer: save a labels layer to zarr or TIFF, atomically.

The new file is written beside the target under a temporary name and moved
into place only when complete, so a failed save never destroys the old file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write labels ``data`` (Z, Y, X) or (Y, X) to ``path`` (.zarr, .tif, .tiff)."""
    target = Path(path)
    arr = np.asarray(data)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
    dtype = np.uint8 if arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0 else np.uint16
    if arr.min(initial=0) < 0 or arr.max(initial=0) > np.iinfo(np.uint16).max:
        raise ValueError("label ids must lie in 0..65535")
    arr = arr.astype(dtype, copy=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        suffix = target.suffix.lower()
        if suffix == ".zarr":
            out = tmp / target.name
            chunks = (1, *[min(512, s) for s in arr.shape[1:]]) if arr.ndim == 3 else None
            z = zarr.create_array(
                str(out), shape=arr.shape, dtype=arr.dtype, chunks=chunks or "auto"
            )
            z[...] = arr
            z.attrs.update({"name": meta.get("name", ""), "scale": list(meta.get("scale", []))})
        elif suffix in (".tif", ".tiff"):
            out = tmp / target.name
            tifffile.imwrite(out, arr, compression="zlib")
        else:
            raise ValueError(f"save labels as .zarr, .tif or .tiff, got {target.name!r}")
        _replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [str(target)]


def _replace(new: Path, target: Path) -> None:
    """Move ``new`` onto ``target``; an old target is removed only after the move."""
    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.old")
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    os.replace(target, old)
    os.replace(new, target)
    shutil.rmtree(old) if old.is_dir() else old.unlink()
