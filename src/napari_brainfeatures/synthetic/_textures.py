"""Myelinated fibres, fibre bundles and blood vessels as pure functions of position.

A *fibre family* is a set of parallel tubes: the two coordinates across the
fibres are cut into a lattice, each lattice cell holds at most one fibre whose
offset, width, brightness and beading are hashed from (cell index, family,
seed).  Only the voxel's own cell is looked at, so a family costs a few array
passes over the voxels it covers, whatever the region.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures.synthetic._hash import block_rng, hash3, uhash

__all__ = ["VESSEL_CELL", "bundle", "dense_fibres", "fibres", "vessels"]

VESSEL_CELL = (64, 80, 80)
_VESSEL_EXTRA = 24  # a vessel runs this far beyond its cell's z range
_VESSEL_TILT = 0.7


def _cell_table(
    ip: NDArray, iq: NDArray, family: int, seed: int, n: int
) -> tuple[NDArray, int, int, int]:
    """Hashed uniforms ``(cells, n)`` over the (ip, iq) range, with its origin and row length."""
    p0, q0 = int(ip.min()), int(iq.min()) - 1
    np_, nq = int(ip.max()) - p0 + 1, int(iq.max()) - q0 + 2
    gp, gq = np.meshgrid(np.arange(p0, p0 + np_), np.arange(q0, q0 + nq), indexing="ij")
    table = np.stack([uhash(gp, gq, family, k, seed=seed) for k in range(n)], axis=-1)
    return table.reshape(-1, n).astype(np.float32), p0, q0, nq


def fibres(
    p: NDArray,
    q: NDArray,
    a: NDArray,
    *,
    spacing: tuple[float, float],
    presence: float,
    sigma: tuple[float, float],
    bead: float,
    family: int,
    seed: int,
) -> NDArray[np.float32]:
    """Brightness (0..1) of a family of thin parallel fibres at cross coordinates (p, q).

    ``a`` is the coordinate along the fibres (beading: brightness varies along
    each fibre by ``±bead/2`` with a hashed period of 40-160 voxels).
    ``sigma`` is the range of fibre profile widths (voxels).  Fibre centres are
    uniform across q (the two nearest lattice rows are looked at), so a plane
    of constant q (e.g. a z-section) sees the same density everywhere; across
    p they keep inside their lattice column.
    """
    if p.size == 0:
        return np.zeros(p.shape, np.float32)
    sp, sq = spacing
    fp, fq = (p / np.float32(sp)).astype(np.float32), (q / np.float32(sq)).astype(np.float32)
    ip = np.floor(fp).astype(np.int64)
    iq0 = np.floor(fq).astype(np.int64)
    table, p0, q0, nq = _cell_table(ip, iq0, family, seed, 6)
    out = np.zeros(p.shape, np.float32)
    cp = (fp - ip - np.float32(0.5)) * np.float32(sp)
    a32 = a.astype(np.float32)
    for iq in (iq0, iq0 + np.where(fq - iq0 < 0.5, -1, 1)):
        h = table[(ip - p0) * nq + (iq - q0)]  # (N, 6)
        s = sigma[0] + (sigma[1] - sigma[0]) * h[:, 2]
        room_p = np.maximum(np.float32(0.5 * sp) - 2 * s, 0)  # the profile stays in its column
        dp = cp - (h[:, 0] - np.float32(0.5)) * 2 * room_p
        dq = (fq - iq - h[:, 1]) * np.float32(sq)
        val = np.exp(-(dp * dp + dq * dq) / (2 * s * s))
        period = np.float32(40.0) + np.float32(120.0) * h[:, 4]
        val *= np.float32(1.0 - bead / 2) + np.float32(bead / 2) * np.cos(
            a32 * np.float32(2 * np.pi) / period + np.float32(2 * np.pi) * h[:, 5]
        )
        val *= (h[:, 3] < presence) * (np.float32(0.55) + np.float32(0.45 / presence) * h[:, 3])
        np.maximum(out, val, out=out)
    return out


def dense_fibres(
    p: NDArray, q: NDArray, a: NDArray, *, along: float, threshold: float, family: int, seed: int
) -> NDArray[np.float32]:
    """Brightness (0..1) of densely packed thin fibres running along ``a``.

    Value noise: hashed values on an integer lattice in (p, q) and a lattice of
    step ``along`` in ``a``, interpolated trilinearly (variance-normalised);
    values above ``threshold`` become fibres about a voxel wide that persist
    for ~``along`` voxels.  No lattice pattern shows, unlike :func:`fibres`.
    """
    if p.size == 0:
        return np.zeros(p.shape, np.float32)
    coords = (p, q, a / np.float32(along))
    idx = [np.floor(c).astype(np.int64) for c in coords]
    frac = [(c - i).astype(np.float32) for c, i in zip(coords, idx, strict=True)]
    lo = [int(i.min()) for i in idx]
    n = [int(i.max()) - a + 2 for i, a in zip(idx, lo, strict=True)]
    h = hash3(*(np.arange(a, a + k) for a, k in zip(lo, n, strict=True)), salt=family, seed=seed)
    # triangular values on (-1, 1) from two 16-bit halves
    table = (h >> np.uint32(16)).astype(np.float32) + (h & np.uint32(0xFFFF)).astype(np.float32)
    table = (table * np.float32(1 / 65536.0) - np.float32(1.0)).ravel()
    base = ((idx[0] - lo[0]) * n[1] + (idx[1] - lo[1])) * n[2] + (idx[2] - lo[2])
    val = np.zeros(p.shape, np.float32)
    for dp in (0, 1):
        wp = frac[0] if dp else 1 - frac[0]
        for dq in (0, 1):
            wq = wp * (frac[1] if dq else 1 - frac[1])
            for da in (0, 1):
                val += (wq * (frac[2] if da else 1 - frac[2])) * table[
                    base + ((dp * n[1] + dq) * n[2] + da)
                ]
    # interpolation lowers the variance between lattice points: normalise it back
    norm = np.ones(p.shape, np.float32)
    for f in frac:
        norm *= f * f + (1 - f) * (1 - f)
    val /= np.sqrt(norm) * np.float32(1.6)
    val -= np.float32(threshold)
    val *= np.float32(2.5)
    return np.clip(val, 0.0, 1.0, out=val)


def bundle(
    p: NDArray,
    q: NDArray,
    *,
    spacing: float,
    presence: float,
    radius: tuple[float, float],
    family: int,
    seed: int,
) -> NDArray[np.float32]:
    """Occupancy (0..2/3) of round bundles (at most one per lattice cell) in the (p, q) plane."""
    if p.size == 0:
        return np.zeros(p.shape, np.float32)
    fp, fq = p / spacing, q / spacing
    ip, iq = np.floor(fp).astype(np.int64), np.floor(fq).astype(np.int64)
    table, p0, q0, nq = _cell_table(ip, iq, family, seed, 4)
    h = table[(ip - p0) * nq + (iq - q0)]
    r = radius[0] + (radius[1] - radius[0]) * h[:, 2]
    room = np.maximum(0.5 * spacing - r - 2.0, 0.0)
    dp = (fp - ip - 0.5) * spacing - (h[:, 0] - 0.5) * 2 * room
    dq = (fq - iq - 0.5) * spacing - (h[:, 1] - 0.5) * 2 * room
    occ = np.clip(r - np.sqrt(dp * dp + dq * dq) + 0.5, 0.0, 1.0) / 1.5
    return (occ * (h[:, 3] < presence)).astype(np.float32)


def _disc(r: float) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    e = int(np.ceil(r + 1))
    dy, dx = np.meshgrid(np.arange(-e, e + 1), np.arange(-e, e + 1), indexing="ij")
    w = np.clip(r - np.sqrt(dy**2 + dx**2) + 0.5, 0.0, 1.0)
    keep = w > 0.01
    return np.stack([dy[keep], dx[keep]], axis=1), w[keep].astype(np.float32)


def vessels(lo: tuple[int, ...], hi: tuple[int, ...], *, seed: int) -> NDArray[np.float32]:
    """Vessel lumen occupancy (0..1) over the box ``[lo, hi)``.

    Vessels are tilted tubes, mostly crossing z: one per 64×80×80 cell with
    probability 0.9, radius 1.5-2.5 (capillaries, 75 %), 2.5-4.5 (20 %) or
    4.5-8 voxels (arterioles and venules), running 24 voxels past their cell.
    """
    shape = tuple(b - a for a, b in zip(lo, hi, strict=True))
    cz, cy, cx = VESSEL_CELL
    reach_xy = _VESSEL_TILT * (cz + 2 * _VESSEL_EXTRA) + 10
    ranges = [
        range((lo[0] - _VESSEL_EXTRA) // cz, (hi[0] - 1 + _VESSEL_EXTRA) // cz + 1),
        range(int((lo[1] - reach_xy) // cy), int((hi[1] - 1 + reach_xy) // cy) + 1),
        range(int((lo[2] - reach_xy) // cx), int((hi[2] - 1 + reach_xy) // cx) + 1),
    ]
    rows = []  # (slice z, centre y, centre x, radius bin)
    for bz in ranges[0]:
        for by in ranges[1]:
            for bx in ranges[2]:
                u = block_rng(seed, 2, (bz, by, bx)).random(8)
                if u[0] > 0.9:
                    continue
                z0 = bz * cz + u[1] * cz
                y0, x0 = (by + u[2]) * cy, (bx + u[3]) * cx
                ty, tx = (u[4] - 0.5) * 2 * _VESSEL_TILT, (u[5] - 0.5) * 2 * _VESSEL_TILT
                r = (
                    1.5 + u[7]
                    if u[6] < 0.75
                    else (2.5 + 2 * u[7] if u[6] < 0.95 else 4.5 + 3.5 * u[7])
                )
                zs = np.arange(
                    max(lo[0], bz * cz - _VESSEL_EXTRA), min(hi[0], (bz + 1) * cz + _VESSEL_EXTRA)
                )
                if zs.size == 0:
                    continue
                ys, xs = y0 + ty * (zs - z0), x0 + tx * (zs - z0)
                near = (ys > lo[1] - 12) & (ys < hi[1] + 12) & (xs > lo[2] - 12) & (xs < hi[2] + 12)
                rb = int(round(r * 2 * np.sqrt(1 + 0.5 * (ty * ty + tx * tx))))
                rows += [
                    (z, yy, xx, rb) for z, yy, xx in zip(zs[near], ys[near], xs[near], strict=True)
                ]
    occ = np.zeros(shape, np.float32)
    if not rows:
        return occ
    arr = np.array(rows, dtype=np.float64)
    for rb in np.unique(arr[:, 3]):
        sel = arr[arr[:, 3] == rb]
        offs, w = _disc(rb / 2.0)
        zi = sel[:, 0].astype(np.int64) - lo[0]
        yi = np.floor(sel[:, 1]).astype(np.int64)[:, None] + offs[None, :, 0] - lo[1]
        xi = np.floor(sel[:, 2]).astype(np.int64)[:, None] + offs[None, :, 1] - lo[2]
        zi = np.broadcast_to(zi[:, None], yi.shape)
        ok = (yi >= 0) & (yi < shape[1]) & (xi >= 0) & (xi < shape[2])
        ww = np.broadcast_to(w[None, :], yi.shape)
        np.maximum.at(occ, (zi[ok], yi[ok], xi[ok]), ww[ok])
    return occ
