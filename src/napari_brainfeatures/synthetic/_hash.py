"""Counter-based randomness: values that are pure functions of (seed, position).

Everything the micro-CT generator draws comes from here, so any region of the
volume can be rendered on its own and still match the whole volume byte for
byte: integer hashes of lattice indices for object parameters, a hashed
Gaussian for voxel noise, and one :class:`numpy.random.Generator` per fixed
lattice block for object lists.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["block_rng", "gauss_noise", "hash3", "uhash"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_OFFSET = 1 << 20  # keeps block indices of margins (which may be negative) non-negative


def _mix64(h: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser (wrapping uint64 arithmetic)."""
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    return h ^ (h >> np.uint64(31))


def uhash(*keys: ArrayLike, seed: int) -> NDArray[np.float64]:
    """Uniform numbers in [0, 1) that depend only on the integer ``keys`` and ``seed``.

    The keys broadcast against each other; the result has their broadcast shape.
    """
    arrays = [np.asarray(k, dtype=np.int64) for k in keys]
    shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
    h = np.full(shape, int(seed) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix64(h + _GOLD)
        for a in arrays:
            h = _mix64((h ^ a.astype(np.uint64)) + _GOLD)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def block_rng(seed: int, stream: int, index: tuple[int, ...]) -> np.random.Generator:
    """The generator of one lattice block (``index`` may hold negative integers)."""
    return np.random.default_rng([int(seed), int(stream), *(int(i) + _OFFSET for i in index)])


def _fmix32(h: NDArray[np.uint32]) -> NDArray[np.uint32]:
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def hash3(
    i: NDArray[np.int64], j: NDArray[np.int64], k: NDArray[np.int64], *, salt: int, seed: int
) -> NDArray[np.uint32]:
    """A 32-bit hash of integer lattice coordinates given as three 1-D ranges.

    Returns shape ``(len(i), len(j), len(k))``; cheap because the first two
    rounds run on the smaller broadcast shapes.
    """
    s = np.uint32(int(uhash(seed, salt, 78, seed=seed) * 2**32))
    ii = (np.asarray(i, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)[:, None, None]
    jj = (np.asarray(j, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)[None, :, None]
    kk = (np.asarray(k, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)[None, None, :]
    with np.errstate(over="ignore"):
        h = _fmix32(ii * np.uint32(0x9E3779B1) + s)
        h = _fmix32(h + jj * np.uint32(0x85EBCA77))
        return _fmix32(h + kk * np.uint32(0xC2B2AE3D))


def gauss_noise(
    z: NDArray[np.int64], y: NDArray[np.int64], x: NDArray[np.int64], *, seed: int
) -> NDArray[np.float32]:
    """Standard normal noise at global voxel positions (z, y, x) as float32.

    ``z``, ``y`` and ``x`` are 1-D integer coordinate ranges; the result has
    shape ``(len(z), len(y), len(x))``.  Each value depends only on its voxel's
    coordinates and ``seed`` (a 32-bit hash, then Box-Muller).
    """
    s = np.uint32(int(uhash(seed, 77, seed=seed) * 2**32))
    zz = (np.asarray(z, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)[:, None]
    yy = (np.asarray(y, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)[None, :]
    xx = (np.asarray(x, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)
    with np.errstate(over="ignore"):
        base = _fmix32(zz * np.uint32(0x9E3779B1) ^ (yy * np.uint32(0x85EBCA77) + s))  # (Z, Y)
        h = _fmix32(base[:, :, None] + xx * np.uint32(0xC2B2AE3D))  # (Z, Y, X)
    u1 = (h >> np.uint32(16)).astype(np.float32)
    u1 += np.float32(0.5)
    u1 *= np.float32(1.0 / 65536.0)
    u2 = (h & np.uint32(0xFFFF)).astype(np.float32)
    u2 *= np.float32(2.0 * np.pi / 65536.0)
    np.log(u1, out=u1)
    u1 *= np.float32(-2.0)
    np.sqrt(u1, out=u1)
    np.cos(u2, out=u2)
    u1 *= u2
    return u1
