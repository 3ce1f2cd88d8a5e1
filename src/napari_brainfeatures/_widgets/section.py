"""One section of a ``(Z, Y, X)`` store as a writable ``(Y, X)`` array.

A single section added as a 2-D image still gets a workspace of a one-slice
volume (its ``labels.zarr`` is ``(1, Y, X)``).  Its labels layer must be 2-D, on
the image's grid, and still write every brush stroke into that store:
:class:`SectionArray` is what the layer holds.  Reads and writes go straight to
the store (napari paints with index arrays, which the store takes as a
point-wise selection), so nothing is held in memory and nothing is lost.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SectionArray"]


class SectionArray:
    """Section ``z`` of ``volume`` (``(Z, Y, X)``, e.g. a zarr array) as a ``(Y, X)`` array."""

    def __init__(self, volume: Any, z: int = 0) -> None:
        if len(volume.shape) != 3:
            raise ValueError(f"a section needs a (Z, Y, X) store, got shape {volume.shape!r}")
        self.volume, self.z = volume, int(z)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.volume.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.volume.dtype)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nchunks_initialized(self) -> int | None:
        """The store's written chunks (any slice): whether anything was painted."""
        return getattr(self.volume, "nchunks_initialized", None)

    def _key(self, key: Any) -> tuple[Any, ...]:
        key = key if isinstance(key, tuple) else (key,)
        if key and all(isinstance(k, np.ndarray | list) for k in key):  # point-wise
            rows = np.asarray(key[0])
            return (np.full(rows.shape, self.z, dtype=np.intp), *key)
        return (self.z, *key)

    def __getitem__(self, key: Any) -> Any:
        return self.volume[self._key(key)]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.volume[self._key(key)] = value

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.asarray(self.volume[self.z])
        return out.astype(dtype, copy=False) if dtype is not None else out

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return f"SectionArray(z={self.z}, shape={self.shape}, of {self.volume!r})"
