"""The version-3 layout: the v2 slab as a real section shows it (cut faces, a pia, a gradient).

:class:`Geometry3` keeps the six areas and six layers of :class:`~._geometry.Geometry`
and adds what a real micro-CT section of the thalamocortical slab has and the
clean v2 sample lacks:

- **cut tissue faces**: the section ends at rough cut lines on the left, the right
  and the bottom, with background beyond them (``tissue`` is 0 there);
- **a pial surface**: a bright membrane of a few pixels along the pia;
- **a white-matter band narrower than a 128 px patch**: the callosal band is
  ``WM_BAND`` = 0.073 of the slice height (about 112 px, 100-125 px with its
  wiggles, in the default 1536 px high section), against 0.09 (138 px) in v2;
- **a fan of fibres**: the first VP fibre family radiates from a point below the
  thalamus, so its orientation turns by about 40 degrees across VP;
- **a region of no painted class** (``OTHER``): an elliptic territory in the
  lower-left corner of the striatum with a texture of its own (large round cells,
  no fibre bundles); ``areas`` is 0 there, ``tissue`` 1;
- **a brightness gradient**: the section is about 12 % brighter at its top and
  bottom than in its middle (:meth:`Geometry3.gradient`).

The striatum's fascicles cut across (the through-plane "pencils") and the dark
vessel lumens are v2's and stay.  Every value is still a pure function of
(position, shape, seed), so any box renders alone.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures.synthetic._geometry import STR, Geometry, region_index
from napari_brainfeatures.synthetic._hash import uhash

__all__ = ["OTHER", "Geometry3", "PIA_MEMBRANE"]

OTHER = 12  # texture region of the unclassified territory (after v2's 0..11)
WM_BAND_V3 = 0.073  # callosal band thickness / slice height (v2: 0.09)
# Cut faces (normalised): left / right columns, bottom row, and their roughness.
CUT_LEFT, CUT_RIGHT, CUT_BOTTOM, CUT_WIGGLE = 0.03, 0.97, 0.975, 0.006
CUT_ROUGH = 2.5  # px: small-scale roughness of a cut face
# The unclassified territory: an ellipse centred on the bottom-left corner (u, v, half-axes).
OTHER_ELLIPSE = (0.0, 1.0, 0.21, 0.15)
# VP fan: focus (u, v) of the radiating family and the radius (fraction of H) where its
# spacing is v2's.
FAN_FOCUS, FAN_RADIUS = (0.45, 1.0), 0.45
GRADIENT = 0.12  # brightness gain at the top and bottom over the middle
PIA_MEMBRANE = (55.0, 1.6, 2.5)  # brightness, half-width (px) and depth below the pia (px)


class Geometry3(Geometry):
    """The v3 section layout (module docstring); labels add ``tissue`` and ``other``."""

    version = 3
    WM_BAND = WM_BAND_V3

    def cut_faces(self, z: NDArray, y: NDArray, x: NDArray) -> NDArray[np.bool_]:
        """True inside the three cut faces (left, right, bottom) at broadcastable (z, y, x)."""
        v, u = y / self.H, x / self.W
        left = (CUT_LEFT + self._wiggle(12, v, z, CUT_WIGGLE)) * self.W + self._rough(y, 0)
        right = (CUT_RIGHT + self._wiggle(13, v, z, CUT_WIGGLE)) * self.W + self._rough(y, 1)
        bottom = (CUT_BOTTOM + self._wiggle(14, u, z, CUT_WIGGLE)) * self.H + self._rough(x, 2)
        return (x >= left) & (x < right) & (y < bottom)

    def _rough(self, t: NDArray, k: int) -> NDArray:
        """Small-scale roughness of cut face ``k`` along its own coordinate ``t`` (px)."""
        ph = uhash(np.arange(3), 60 + k, seed=self.seed) * 2 * np.pi
        return CUT_ROUGH * (
            np.sin(t * (2 * np.pi / 37.0) + ph[0]) + 0.6 * np.sin(t * (2 * np.pi / 11.0) + ph[1])
        )

    def in_other(self, y: NDArray, x: NDArray) -> NDArray[np.bool_]:
        """True in the unclassified territory's ellipse (only striatum gives way to it)."""
        cu, cv, au, av = OTHER_ELLIPSE
        du, dv = (x / self.W - cu) / au, (y / self.H - cv) / av
        return du * du + dv * dv < 1.0

    def labels(self, z: NDArray, y: NDArray, x: NDArray) -> dict[str, NDArray]:
        """v2's labels cut to the tissue: adds uint8 ``tissue`` and ``region``.

        ``areas``, ``layers`` and ``barrels`` are 0 outside the tissue and in the
        unclassified territory; ``region`` is the texture region (0 = background,
        :data:`OTHER` there).
        """
        lab = super().labels(z, y, x)
        z, y, x = np.asarray(z, float), np.asarray(y, float), np.asarray(x, float)
        areas = lab["areas"]
        tissue = (areas > 0) & self.cut_faces(z, y, x)
        other = tissue & (areas == STR) & self.in_other(y, x)
        region = region_index(areas, lab["layers"])
        region = np.where(other, np.uint8(OTHER), np.where(tissue, region, np.uint8(0)))
        keep = tissue & ~other
        for k in ("areas", "layers", "barrels"):
            lab[k] = (lab[k] * keep).astype(np.uint8)
        lab["tissue"] = tissue.view(np.uint8)
        lab["region"] = region.astype(np.uint8)
        return lab

    def fan_coords(self, y: NDArray, x: NDArray) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(across, along) coordinates of the VP fan: arc length at ``FAN_RADIUS``, radius."""
        fy, fx = FAN_FOCUS[1] * self.H, FAN_FOCUS[0] * self.W
        dy, dx = y.astype(np.float64) - fy, x.astype(np.float64) - fx
        r = np.sqrt(dy * dy + dx * dx)
        phi = np.arctan2(dx, -dy)  # 0 straight up from the focus
        return (phi * FAN_RADIUS * self.H).astype(np.float32), r.astype(np.float32)

    def gradient(self, y: NDArray) -> NDArray[np.float32]:
        """Gain across the section: 1 + ``GRADIENT`` at top and bottom, 1 in the middle."""
        v = 2.0 * y / self.H - 1.0
        return (1.0 + GRADIENT * v * v).astype(np.float32)

    def membrane(self, z: NDArray, y: NDArray, x: NDArray) -> NDArray[np.float32]:
        """Brightness added by the pial membrane (a Gaussian ridge just below the pia)."""
        amp, width, depth = PIA_MEMBRANE
        d = y - self.curves(z, x)["pia"] - depth
        return (amp * np.exp(-0.5 * (d / width) ** 2)).astype(np.float32)
