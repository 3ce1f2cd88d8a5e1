"""Cell bodies: candidates per lattice block, precomputed kernels, splatting.

Candidates are drawn per fixed 32×64×64 block from a generator seeded by
(seed, block index) at the highest density any region needs, then thinned by
the density of the region at each candidate's centre.  Accepted cells are
rendered by adding small precomputed 3-D kernels (quantised radius and
orientation) at integer centres; contributions are summed in a fixed global
order, so any region renders to the same values as the whole volume.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures.synthetic._hash import block_rng

__all__ = ["GEN_BLOCK", "KIND_GLIA", "KIND_PYRAMID", "KIND_ROUND", "candidates", "kernel", "splat"]

GEN_BLOCK = (32, 64, 64)
KIND_ROUND, KIND_PYRAMID, KIND_GLIA = 0, 1, 2
R_STEP = 0.5  # radius quantisation (voxels)
ANGLE_STEP = np.deg2rad(6.0)  # apical orientation quantisation
REACH = (14, 44, 44)  # the largest kernel's half-extent (z, y, x), pyramids with dendrites


def candidates(
    lo: tuple[int, ...], hi: tuple[int, ...], *, density: float, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Candidate cells whose kernels may touch the box ``[lo, hi)``.

    Returns integer centres ``(n, 3)`` and uniforms ``(n, 6)`` for acceptance
    and shape, in a global order (block index, then draw order).
    """
    b0 = [(lo[i] - REACH[i]) // GEN_BLOCK[i] for i in range(3)]
    b1 = [(hi[i] - 1 + REACH[i]) // GEN_BLOCK[i] for i in range(3)]
    cents, unis = [], []
    vol = float(np.prod(GEN_BLOCK))
    for bz in range(b0[0], b1[0] + 1):
        for by in range(b0[1], b1[1] + 1):
            for bx in range(b0[2], b1[2] + 1):
                rng = block_rng(seed, 1, (bz, by, bx))
                n = int(rng.poisson(density * vol))
                u = rng.random((n, 9))
                origin = np.array([bz, by, bx]) * GEN_BLOCK
                cents.append(origin + np.floor(u[:, :3] * GEN_BLOCK).astype(np.int64))
                unis.append(u[:, 3:])
    if not cents:
        return np.zeros((0, 3), np.int64), np.zeros((0, 6))
    c, u = np.concatenate(cents).astype(np.int64), np.concatenate(unis)
    keep = np.all((c >= np.array(lo) - REACH) & (c < np.array(hi) + REACH), axis=1)
    return c[keep], u[keep]


def _soft(d: NDArray) -> NDArray:
    """Occupancy of a voxel whose centre is ``d`` voxels inside a surface (1-voxel ramp)."""
    return np.clip(d + 0.5, 0.0, 1.0)


@lru_cache(maxsize=512)
def kernel(kind: int, r_bin: int, a_bin: int = 0) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Offsets ``(m, 3)`` and weights ``(m,)`` of one cell kernel (dark = positive weight).

    ``r_bin`` is the radius in steps of 0.5 voxel; ``a_bin`` the apical angle
    in steps of 6° (pyramids only).  A nucleolus (negative weight: brighter than
    the soma) sits in round and pyramidal neurons.
    """
    r = r_bin * R_STEP
    if kind == KIND_PYRAMID:
        dend = 2.6 * r
        ext = int(np.ceil(r + dend + 2))
    else:
        ext = int(np.ceil(r + 2))
    ez = int(np.ceil(r * 0.9 + 2))
    dz, dy, dx = np.meshgrid(
        np.arange(-ez, ez + 1), np.arange(-ext, ext + 1), np.arange(-ext, ext + 1), indexing="ij"
    )
    if kind == KIND_GLIA:
        d = np.sqrt((dz / 0.85) ** 2 + dy**2 + dx**2)
        w = _soft(r - d)
    else:
        # a bright nucleolus in large neurons only
        nucleolus = np.exp(-(dz**2 + dy**2 + dx**2) / 2.0) * (0.9 if r >= 5.5 else 0.0)
        if kind == KIND_ROUND:
            d = np.sqrt((dz / 0.9) ** 2 + dy**2 + (dx / 1.08) ** 2)
            w = _soft(r - d) - nucleolus
        else:
            ang = a_bin * ANGLE_STEP
            # axial coordinate towards the pia (angle from -y towards +x), distance to the axis
            a = -dy * np.cos(ang) + dx * np.sin(ang)
            rho = np.sqrt(dz**2 + (dy * np.sin(ang) + dx * np.cos(ang)) ** 2)
            base = np.sqrt(np.clip(1 - (np.minimum(a, 0) / (0.8 * r)) ** 2, 0, None)) * r
            cone = r * (1 - np.maximum(a, 0) / (1.35 * r))
            soma = _soft(np.where(a < 0, base, cone) - rho) * (a > -0.8 * r - 0.5)
            t = (a - 0.9 * r) / dend
            dendrite = 0.75 * (1 - 0.6 * t) * _soft(1.3 - 0.5 * t - rho) * ((t >= 0) & (t <= 1))
            w = np.maximum(soma, dendrite) - nucleolus
    keep = np.abs(w) > 0.02
    offs = np.stack([dz[keep], dy[keep], dx[keep]], axis=1).astype(np.int64)
    return offs, w[keep].astype(np.float32)


def splat(
    shape: tuple[int, ...],
    origin: tuple[int, ...],
    centres: NDArray[np.int64],
    keys: NDArray[np.int64],
    amplitude: NDArray[np.float64],
) -> NDArray[np.float32]:
    """Sum of ``amplitude × kernel`` at ``centres`` over the box at ``origin`` of ``shape``.

    ``keys`` ``(n, 3)`` holds (kind, radius bin, angle bin) per cell.  Cells are
    grouped by kernel in sorted key order and keep their given order within a
    group, so every voxel adds its contributions in one global order.
    """
    size = int(np.prod(shape))
    if len(centres) == 0:
        return np.zeros(shape, np.float32)
    idx_parts, val_parts = [], []
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    lim = np.array(shape)
    for g, key in enumerate(uniq):
        sel = np.flatnonzero(inverse == g)
        offs, w = kernel(int(key[0]), int(key[1]), int(key[2]))
        pos = centres[sel, None, :] - np.asarray(origin) + offs[None, :, :]  # (n, m, 3)
        ok = np.all((pos >= 0) & (pos < lim), axis=2)  # (n, m)
        flat = (pos[..., 0] * lim[1] + pos[..., 1]) * lim[2] + pos[..., 2]
        vals = amplitude[sel, None] * w[None, :]
        idx_parts.append(flat[ok])
        val_parts.append(vals[ok])
    idx = np.concatenate(idx_parts)
    vals = np.concatenate(val_parts)
    return np.bincount(idx, weights=vals, minlength=size).astype(np.float32).reshape(shape)
