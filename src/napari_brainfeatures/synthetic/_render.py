"""Render any box of the synthetic micro-CT volume (the numeric kernel of ``microct.py``).

Each texture region (``_geometry.REGION_NAMES``: clear, L1..L6, WM, Str, VP,
ZI, HypoTh) has its own cells (density, radius, shape) and fibre families.
``BACKGROUND`` and ``TEX_GAIN`` were then calibrated (``python -m
napari_brainfeatures.synthetic._calibrate``) so that every region has a mean
grey value of 128 and a standard deviation of 24: regions differ by
microstructure, not by brightness.  Change a texture and re-run the
calibration (``tests/test_synthetic_microct.py`` checks the outcome).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures.synthetic import _cells as C
from napari_brainfeatures.synthetic._geometry import Geometry, region_index
from napari_brainfeatures.synthetic._geometry3 import Geometry3
from napari_brainfeatures.synthetic._hash import gauss_noise, uhash
from napari_brainfeatures.synthetic._textures import bundle, dense_fibres, fibres, vessels

__all__ = ["render_box", "render_labels"]

Box = tuple[int, ...]  # (z, y, x) corner of a box
# Per region:  clear   L1     L2     L3     L4     L5     L6     WM     Str    VP     ZI     HypoTh
# and (version 3 only) the unclassified territory; not calibrated (v3 is not level by design).
BACKGROUND = np.array(
    [30, 124.4, 131.4, 132.4, 131.1, 130.9, 131.9, 109.9, 130.4, 129.0, 124.4, 132.9, 131.0],
    np.float32,
)
TEX_GAIN = np.array(
    [0, 2.54, 1.017, 0.893, 1.043, 0.79, 0.851, 1.876, 0.906, 0.72, 1.459, 1.389, 1.0], np.float64
)
N_KIND = np.array([0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0])  # 0 round, 1 pyramidal
N_DENSITY = np.array([0, 0.2, 4.0, 3.2, 5.0, 0.9, 3.0, 0, 3.5, 1.3, 0.8, 9.0, 1.6]) * 1e-4  # /voxel
N_RADIUS = np.array([1, 4.5, 5.0, 5.5, 3.8, 9.0, 5.8, 1, 4.8, 7.5, 5.5, 3.2, 7.0])
N_CV = np.array([0, 0.15, 0.12, 0.12, 0.12, 0.15, 0.15, 0, 0.10, 0.15, 0.20, 0.12, 0.25])
G_DENSITY = np.array([0, 1.0, 0.4, 0.4, 0.4, 0.8, 0.6, 1.4, 0.6, 0.9, 0.8, 0.4, 1.2]) * 1e-4
N_CONTRAST, G_CONTRAST = 60.0, 70.0
RADIAL = np.array([0, 0, 0.8, 0.9, 0.6, 1.3, 1.1, 0, 0, 0, 0, 0, 0], np.float32)  # radial bundles
SPECKLE = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1.0, 0.7, 0.5, 0, 0.3], np.float32)  # myelin neuropil
BARREL_GAIN, SEPTUM_GAIN = 1.8, 0.3  # L4 cell density inside / between barrels
# Over v2's twelve regions (the candidate draw depends on it: v2 bytes must not change).
MAX_DENSITY = float(
    np.max(N_DENSITY[:12] * np.where(np.arange(12) == 4, BARREL_GAIN, 1) + G_DENSITY[:12])
)
CLEAR, LUMEN = 30.0, 25.0
NOISE = 38.0  # before the blur; about 9 grey levels after it
PYRAMID_JITTER = np.deg2rad(12.0)
# Fibre families: name -> (first region, last region, amplitude, options); coordinates in _coords.
FAMILIES: dict[str, tuple[int, int, float, dict[str, Any]]] = {
    "L1": (1, 1, 50.0, dict(spacing=(7.0, 3.0), presence=0.5, sigma=(0.6, 0.9), bead=0.6)),
    "radial": (2, 6, 70.0, dict(spacing=(8.0, 3.0), presence=0.6, sigma=(0.7, 1.1), bead=0.5)),
    "callosum": (7, 7, 90.0, dict(along=25.0, threshold=0.1)),
    "capsule": (7, 7, 90.0, dict(along=10.0, threshold=0.1)),
    "pencil": (8, 8, 90.0, dict(along=10.0, threshold=0.1)),
    "speckle": (8, 10, 50.0, dict(along=2.0, threshold=0.25)),
    "VP1": (9, 9, 70.0, dict(spacing=(9.0, 3.0), presence=0.55, sigma=(0.7, 1.1), bead=0.6)),
    "VP2": (9, 9, 70.0, dict(spacing=(9.0, 3.0), presence=0.55, sigma=(0.7, 1.1), bead=0.6)),
    "ZI": (10, 10, 60.0, dict(spacing=(9.0, 3.0), presence=0.55, sigma=(0.7, 1.0), bead=0.6)),
    "HypoTh": (11, 11, 40.0, dict(spacing=(40.0, 3.0), presence=0.3, sigma=(0.6, 1.0), bead=0.6)),
}
_FAMILY_ID = {name: 20 + i for i, name in enumerate(FAMILIES)}
_INPLANE_DEG = {"VP1": 40.0, "VP2": 130.0, "HypoTh": 165.0}
PENCIL: dict[str, Any] = dict(spacing=60.0, presence=0.85, radius=(6.0, 13.0))
PENCIL_BASE = 25.0  # extra myelin brightness inside a pencil
FASCICLE: dict[str, Any] = dict(spacing=64.0, presence=0.85, radius=(11.0, 21.0))
HYPO_NEST: dict[str, Any] = dict(
    spacing=44.0, presence=0.9, radius=(12.0, 19.0)
)  # nests of small cells
PENCIL_TILT, CAPSULE_TILT = (0.30, -0.20), (0.25, 0.12)


def _pencil(z: NDArray, y: NDArray, x: NDArray, seed: int) -> NDArray[np.float32]:
    return bundle(y - PENCIL_TILT[0] * z, x - PENCIL_TILT[1] * z, family=50, seed=seed, **PENCIL)


def _regions(lab: dict[str, NDArray]) -> NDArray[np.uint8]:
    """Texture region per voxel: the layout's own (v3) or from areas and layers (v2)."""
    return lab["region"] if "region" in lab else region_index(lab["areas"], lab["layers"])


def _coords(
    name: str,
    grid: dict,
    iz: NDArray,
    ix: NDArray,
    z: NDArray,
    y: NDArray,
    x: NDArray,
    geom: Geometry,
):  # type: ignore[no-untyped-def]  # noqa: E501
    """(p, q, a): across, across, along coordinates of family ``name`` at voxels (z, y, x)."""
    if name == "VP1" and isinstance(geom, Geometry3):  # v3: a fan radiating from below VP
        p, a = geom.fan_coords(y, x)
        return p, z, a
    if name in ("L1", "callosum", "ZI"):  # parallel to a boundary curve
        ref = {"L1": "pia", "callosum": "ctx", "ZI": "vz"}[name]
        return y - grid[ref][iz, 0, ix], z, x
    if name == "radial":  # along the local cortical normal
        s, c = grid["sin"][iz, 0, ix], grid["cos"][iz, 0, ix]
        return y * s + x * c, z, x * s - y * c
    if name in ("capsule", "pencil"):  # crossing the section, tilted
        ty, tx = CAPSULE_TILT if name == "capsule" else PENCIL_TILT
        return y - np.float32(ty) * z, x - np.float32(tx) * z, z
    if name == "speckle":
        return y, x, z
    t = np.deg2rad(_INPLANE_DEG[name])
    s, c = np.float32(np.sin(t)), np.float32(np.cos(t))
    return y * c - x * s, z, y * s + x * c


def _cells(geom: Geometry, lo: Box, hi: Box) -> NDArray[np.float32]:
    """Dark cell bodies (positive = darker) over the box [lo, hi)."""
    seed = geom.seed
    c, u = C.candidates(lo, hi, density=MAX_DENSITY, seed=seed)
    shape = tuple(b - a for a, b in zip(lo, hi, strict=True))
    if len(c) == 0:
        return np.zeros(shape, np.float32)
    z, y, x = (c[:, i].astype(float) for i in range(3))
    lab = geom.labels(z, y, x)
    reg = _regions(lab)
    dn = N_DENSITY[reg] * np.where(
        reg == 4, np.where(lab["barrels"] > 0, BARREL_GAIN, SEPTUM_GAIN), 1
    )
    dn = dn * ~((reg == 8) & (_pencil(z, y, x, seed) > 0.05))  # no cells inside pencils
    nest = bundle(y - 0.2 * z, x, family=52, seed=seed, **HYPO_NEST) > 0.3
    dn = np.where(reg == 11, dn * (0.45 + 1.3 * nest), dn)
    is_n = u[:, 0] < dn / MAX_DENSITY
    is_g = ~is_n & (u[:, 0] < (dn + G_DENSITY[reg]) / MAX_DENSITY)
    r = np.where(is_n, N_RADIUS[reg] * (1 + N_CV[reg] * 3.4 * (u[:, 1] - 0.5)), 2.2 + 1.0 * u[:, 1])
    kind = np.where(is_n, N_KIND[reg], C.KIND_GLIA)
    ang = geom.pia_angle(z, x) + (u[:, 2] - 0.5) * 2 * PYRAMID_JITTER
    a_bin = np.where(kind == C.KIND_PYRAMID, np.round(ang / C.ANGLE_STEP), 0).astype(np.int64)
    amp = np.where(is_n, N_CONTRAST, G_CONTRAST) * (0.8 + 0.4 * u[:, 3]) * TEX_GAIN[reg]
    keep = is_n | is_g
    keys = np.stack([kind, np.round(r / C.R_STEP).astype(np.int64), a_bin], axis=1)[keep]
    return C.splat(shape, lo, c[keep], keys, amp[keep])


def _axes(lo: Box, hi: Box) -> list[NDArray[np.float64]]:
    return [
        np.arange(lo[i], hi[i], dtype=np.float64).reshape([-1 if j == i else 1 for j in range(3)])
        for i in range(3)
    ]


def render_labels(geom: Geometry, lo: Box, hi: Box) -> dict[str, NDArray[np.uint8]]:
    """uint8 ``areas``, ``layers``, ``barrels`` (and v3's ``tissue``) of the box [lo, hi)."""
    lab = geom.labels(*_axes(lo, hi))
    return {k: lab[k] for k in ("areas", "layers", "barrels", "tissue") if k in lab}


def _add_fibres(
    sig: NDArray[np.float32], region: NDArray[np.uint8], geom: Geometry, lo: Box
) -> None:
    """Add every fibre family to the flat signal ``sig`` of the box at ``lo`` (in place)."""
    shape = region.shape
    zz, _, xx = _axes(lo, tuple(a + n for a, n in zip(lo, shape, strict=True)))
    grid = {k: v.astype(np.float32) for k, v in geom.curves(zz, xx).items()}  # (Z, 1, X)
    ang = geom.pia_angle(zz, xx)
    grid["sin"], grid["cos"] = np.sin(ang).astype(np.float32), np.cos(ang).astype(np.float32)
    flat_reg = region.ravel()
    order = np.argsort(flat_reg, kind="stable")  # voxels grouped by region, in raster order
    bounds = np.searchsorted(flat_reg[order], np.arange(14))
    gain = TEX_GAIN.astype(np.float32)
    for name, (r0, r1, amp, kw) in FAMILIES.items():
        flat = order[bounds[r0] : bounds[r1 + 1]]
        iz, rest = np.divmod(flat, shape[1] * shape[2])
        iy, ix = np.divmod(rest, shape[2])
        z = (iz + lo[0]).astype(np.float32)
        y = (iy + lo[1]).astype(np.float32)
        x = (ix + lo[2]).astype(np.float32)
        if name in ("callosum", "capsule"):  # WM above / below the callosal band's lower edge
            below = y >= grid["wm"][iz, 0, ix]
            sel = below if name == "capsule" else ~below
            flat, iz, ix, z, y, x = flat[sel], iz[sel], ix[sel], z[sel], y[sel], x[sel]
        p, q, a = _coords(name, grid, iz, ix, z, y, x, geom)
        fam: Any = dense_fibres if "along" in kw else fibres
        val: NDArray[Any] = fam(p, q, a, family=_FAMILY_ID[name], seed=geom.seed, **kw)
        reg = flat_reg[flat]
        if name == "capsule":  # fibres gathered in fascicles
            val *= 0.2 + 1.2 * bundle(p, q, family=51, seed=geom.seed, **FASCICLE)
        elif name == "pencil":  # round bundles of fibres through the striatum
            val = _pencil(z, y, x, geom.seed) * (np.float32(PENCIL_BASE / amp) + val) * 1.5
        elif name == "speckle":
            val *= SPECKLE[reg]
        elif name == "radial":
            val *= RADIAL[reg]
        sig[flat] += (np.float32(amp) * gain[reg]) * val


def render_box(geom: Geometry, lo: Box, hi: Box) -> NDArray[np.uint8]:
    """uint8 image of the box ``[lo, hi)`` in global voxel coordinates (any box)."""
    seed = geom.seed
    elo = tuple(int(v) - 1 for v in lo)  # one voxel of margin for the blur
    ehi = tuple(int(v) + 1 for v in hi)
    zz, yy, xx = _axes(elo, ehi)  # type: ignore[arg-type]
    lab = geom.labels(zz, yy, xx)
    region = _regions(lab)
    sig = BACKGROUND[region]
    sig -= _cells(geom, elo, ehi)  # type: ignore[arg-type]
    _add_fibres(sig.reshape(-1), region, geom, elo)  # type: ignore[arg-type]
    ves = vessels(elo, ehi, seed=seed)  # type: ignore[arg-type]
    ves *= region > 0
    sig += ves * (np.float32(LUMEN) - sig)
    if isinstance(geom, Geometry3):
        sig += geom.membrane(zz, yy, xx)
    sig[region == 0] = CLEAR
    sig *= _gain(geom, zz, yy, xx)
    if isinstance(geom, Geometry3):
        sig *= geom.gradient(yy)
    sig += _rings(geom, yy, xx)
    noise = gauss_noise(*(np.arange(a, b) for a, b in zip(elo, ehi, strict=True)), seed=seed)
    noise *= np.float32(NOISE)
    sig += noise
    for axis in range(3):  # binomial [1, 2, 1] / 4 blur (sigma 0.71); crops the margin
        n = sig.shape[axis]
        a0, a1, a2 = ([slice(None)] * 3 for _ in range(3))
        a0[axis], a1[axis], a2[axis] = slice(0, n - 2), slice(1, n - 1), slice(2, n)
        sig = (sig[tuple(a0)] + sig[tuple(a2)]) * np.float32(0.25) + sig[tuple(a1)] * np.float32(
            0.5
        )
    sig += np.float32(0.5)
    return np.clip(sig, 0, 255, out=sig).astype(np.uint8)


def _gain(geom: Geometry, z: NDArray, y: NDArray, x: NDArray) -> NDArray[np.float32]:
    """Slow intensity drift: along z (beam decay) and a weak in-plane ramp."""
    ph = uhash(np.arange(3), 90, seed=geom.seed) * 2 * np.pi
    slab = 1 + 0.035 * np.sin(z * (2 * np.pi / 350.0) + ph[0])
    ramp = 0.02 * np.cos(
        (y * np.cos(ph[1]) + x * np.sin(ph[1])) * (2 * np.pi / (1.5 * geom.W)) + ph[2]
    )
    return (slab + ramp).astype(np.float32)


def _rings(geom: Geometry, y: NDArray, x: NDArray) -> NDArray[np.float32]:
    """Ring artefacts around the rotation axis (the slice centre): a few faulty detector radii."""
    r = np.sqrt((y - geom.H / 2) ** 2 + (x - geom.W / 2) ** 2)
    k = np.floor(r).astype(np.int64)
    kk = np.arange(int(k.min()), int(k.max()) + 2)
    amp = (uhash(kk, 91, seed=geom.seed) < 0.06) * (uhash(kk, 92, seed=geom.seed) - 0.5) * 10.0
    f = r - k
    return ((1 - f) * amp[k - kk[0]] + f * amp[k + 1 - kk[0]]).astype(np.float32)
