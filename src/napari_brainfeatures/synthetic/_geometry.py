"""Where each brain area lies in the synthetic thalamocortical slab.

A coronal-ish layout in normalised slice coordinates ``u = x / W``, ``v = y / H``
(y grows downwards)::

    clear (thin, curved)
    cortex: L1, L2, L3, L4 (barrels), L5, L6          -- a curved band
    white matter (corpus callosum / external capsule) -- a band under cortex
    striatum | internal capsule (WM) | VP thalamus
             |                       | zona incerta (oblique band)
             |                       | hypothalamus

Every boundary is an analytic curve with seeded wiggles that drift slowly along
z (sections 50 µm apart differ by a few to a few tens of pixels), so labels at
any position are a pure function of (position, volume shape, seed).  Cell
sizes and textures are in voxels, the layout scales with the slice size: in the
default 1536 × 1024 section the cortex is about 614 px (720 µm) thick, so its
layers (55-190 px) are about as thick as the paper's 128 px patch, as in real
data at 1.17 µm, and every other area leaves room for 128 px patches inside it.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures.synthetic._hash import uhash

__all__ = ["Geometry", "REGION_NAMES", "region_index"]

# Regions that own a texture: the clear medium, six cortical layers, five areas.
REGION_NAMES = ("clear", "L1", "L2", "L3", "L4", "L5", "L6", "WM", "Str", "VP", "ZI", "HypoTh")
# area id (classes.default_table) -> region index for non-cortical areas
_AREA_REGION = np.array([0, 0, 11, 8, 9, 7, 10], dtype=np.uint8)  # 0, Ctx, HypoTh, Str, VP, WM, ZI
CTX, HYPO, STR, VP, WM, ZI = 1, 2, 3, 4, 5, 6
# Cortex thickness as a fraction of the slice height: 0.40 x 1536 px = 614 px (720 µm) in the
# default sample.  A real mouse S1 is 1.2-1.4 mm; the version-1 layout's 0.255 x 1024 px
# (305 µm) made every layer thinner than a 128 px patch, unlike real data.
CORTEX_FRACTION = 0.40
# Cortical depth (0 = pia, 1 = white matter) where L2..L6 start.
_LAYER_TOPS = (0.09, 0.20, 0.33, 0.50, 0.69)
_BARREL_PERIOD = (160.0, 170.0)  # (z, tangential x) voxels
_BARREL_HALF = ((56.0, 66.0), (56.0, 68.0))  # ranges of half-widths (z, x)
_BARREL_JITTER = 12.0  # alternate columns are staggered by half a period in z: every section
# crosses barrels in at least every other column


def region_index(areas: NDArray[np.uint8], layers: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Texture region of each voxel: layer 1..6 in cortex, 7..11 for WM, Str, VP, ZI, HypoTh."""
    return np.where(areas == CTX, layers, _AREA_REGION[areas]).astype(np.uint8)


class Geometry:
    """The slab layout for one volume shape and seed (see the module docstring)."""

    version = 2
    WM_BAND = 0.09  # callosal white-matter band thickness / slice height

    def __init__(self, shape: tuple[int, int, int], seed: int) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.seed = int(seed)
        _, self.H, self.W = (float(s) for s in self.shape)
        r = uhash(np.arange(64), 1, seed=seed).reshape(16, 4)
        # Per boundary: slow z drift (own) and two travelling wiggles along the curve.
        self._phase = r * 2 * np.pi
        self._freq = 1.3 + 1.7 * uhash(np.arange(32), 2, seed=seed).reshape(16, 2)
        self._common = 2 * np.pi * uhash(0, 3, seed=seed)

    # -- curves -----------------------------------------------------------------
    def _wiggle(self, k: int, s: NDArray, z: NDArray, amp: float) -> NDArray:
        """Boundary k's offset (normalised) at curve coordinate s in [0, 1] and depth z."""
        p, f = self._phase[k], self._freq[k]
        return (
            amp * np.sin(2 * np.pi * f[0] * s + p[0] + z * (2 * np.pi / 310.0))
            + 0.6 * amp * np.sin(2 * np.pi * f[1] * s + p[1] - z * (2 * np.pi / 260.0))
            + 0.004 * np.sin(z * (2 * np.pi / 290.0) + p[2])
        )

    def _shift(self, z: NDArray) -> NDArray:
        """Drift shared by all horizontal boundaries (the slab tilts along z)."""
        return 0.015 * np.sin(z * (2 * np.pi / 420.0) + self._common)

    def curves(self, z: NDArray, x: NDArray) -> dict[str, NDArray]:
        """Rows (pixels) of the horizontal boundaries at (z, x): pia, ctx, wm, vz, zh."""
        u = x / self.W
        c = self._shift(z)
        pia = 0.015 + 0.06 * (1 - u) ** 2 + c + self._wiggle(0, u, z, 0.006)
        ctx = pia + CORTEX_FRACTION + self._wiggle(1, u, z, 0.006)
        wm = ctx + self.WM_BAND + self._wiggle(2, u, z, 0.005)
        vz = wm + 0.15 + 0.03 * (u - 0.7) + self._wiggle(3, u, z, 0.006)
        zh = vz + 0.17 + self._wiggle(4, u, z, 0.005)
        return {
            k: v * self.H
            for k, v in (("pia", pia), ("ctx", ctx), ("wm", wm), ("vz", vz), ("zh", zh))
        }

    def ic_edges(self, z: NDArray, y: NDArray) -> tuple[NDArray, NDArray]:
        """Columns (pixels) of the internal capsule's left and right edges at (z, y)."""
        v = y / self.H
        centre = 0.335 + 0.06 * (v - 0.45) + self._wiggle(5, v, z, 0.006)
        centre = centre + 0.012 * np.sin(z * (2 * np.pi / 450.0) + self._phase[6, 0])
        return (centre - 0.085) * self.W, (centre + 0.085) * self.W

    def layer_tops(self, z: NDArray, x: NDArray) -> list[NDArray]:
        """Cortical depth (0..1) at which L2, L3, L4, L5, L6 begin at (z, x)."""
        u = x / self.W
        return [t + self._wiggle(7 + i, u, z, 0.012) for i, t in enumerate(_LAYER_TOPS)]

    def pia_angle(self, z: NDArray, x: NDArray) -> NDArray:
        """Angle (radians) of the outward cortical normal from 'up' (−y), positive towards +x."""
        d = (self.curves(z, x + 1.0)["pia"] - self.curves(z, x - 1.0)["pia"]) / 2.0
        return np.arctan(d)

    # -- labels -----------------------------------------------------------------
    def labels(self, z: NDArray, y: NDArray, x: NDArray) -> dict[str, NDArray]:
        """Areas, layers, barrels and cortical depth at broadcastable positions.

        ``z``, ``y``, ``x`` are float arrays that broadcast (e.g. ``(Z,1,1)``,
        ``(1,Y,1)``, ``(1,1,X)`` for a block, or equal 1-D arrays for points).
        Returns uint8 ``areas`` (class ids, 0 = clear), ``layers`` (0 outside
        cortex, 1..6), ``barrels`` (1 inside a barrel of L4) and float32 ``depth``.
        """
        z, y, x = np.asarray(z, float), np.asarray(y, float), np.asarray(x, float)
        cz = {k: v.astype(np.float32) for k, v in self.curves(z, x).items()}  # shapes of (z, x)
        left, right = (e.astype(np.float32) for e in self.ic_edges(z, y))  # shapes of (z, y)
        y32, x32 = y.astype(np.float32), x.astype(np.float32)
        u8 = [np.uint8(i) for i in range(7)]
        right_col = np.where(y32 < cz["vz"], u8[VP], np.where(y32 < cz["zh"], u8[ZI], u8[HYPO]))
        deep = np.where(x32 < left, u8[STR], np.where(x32 < right, u8[WM], right_col))
        areas = np.where(
            y32 < cz["pia"],
            u8[0],
            np.where(y32 < cz["ctx"], u8[CTX], np.where(y32 >= cz["wm"], deep, u8[WM])),
        )
        depth = (y32 - cz["pia"]) / (cz["ctx"] - cz["pia"])
        layers = np.ones(areas.shape, dtype=np.uint8)
        for top in self.layer_tops(z, x):
            layers += depth >= top.astype(np.float32)
        layers *= areas == CTX
        barrels = (layers == 4) & self.in_barrel(z, x)
        return {"areas": areas, "layers": layers, "barrels": barrels.view(np.uint8), "depth": depth}

    def in_barrel(self, z: NDArray, x: NDArray) -> NDArray:
        """Whether the column at (z, x) runs through a barrel (an elliptic cylinder)."""
        pz, px = _BARREL_PERIOD
        ix = np.floor(x / px)
        z = z - (ix % 2) * (pz / 2)
        iz = np.floor(z / pz)
        key = (iz.astype(np.int64), ix.astype(np.int64))
        jz = (uhash(*key, 11, seed=self.seed) - 0.5) * 2 * _BARREL_JITTER
        jx = (uhash(*key, 12, seed=self.seed) - 0.5) * 2 * _BARREL_JITTER
        (hz0, hz1), (hx0, hx1) = _BARREL_HALF
        hz = hz0 + (hz1 - hz0) * uhash(*key, 13, seed=self.seed)
        hx = hx0 + (hx1 - hx0) * uhash(*key, 14, seed=self.seed)
        dz = (z - (iz + 0.5) * pz - jz) / hz
        dx = (x - (ix + 0.5) * px - jx) / hx
        return dz * dz + dx * dx < 1.0
