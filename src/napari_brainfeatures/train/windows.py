"""Square windows over a label image: counts, the "inside one class" rule, guard distances.

A patch of side ``P`` is indexed by its top-left corner, so a map over patch
positions has shape ``(H - P + 1, W - P + 1)`` (the convention of
:func:`~napari_brainfeatures.train.patches.sample_patches`).

The inside rule (:func:`inside_class`): a window is inside class ``c`` when its
centre pixel is ``c``, no pixel has another class, and at least
``min_painted`` (default :data:`MIN_PAINTED`, 99 %) of its pixels are painted
``c``; the rest may be unpainted.  Real paint leaves small holes (vessel
lumens, cell bodies left out): 0.4 % of pinholes in a filled area keep its
windows inside, while a stroke narrower than the window never reaches 99 %.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MIN_PAINTED", "box_sum", "enough_tissue", "inside_class", "integral_image", "near",
    "paint_report", "patch_centres", "within_mask",
]  # fmt: skip

MIN_PAINTED = 0.99  # share of a training window that must be painted with its class


def integral_image(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """``(H + 1, W + 1)`` int64: ``s[y, x]`` = True pixels in ``mask[:y, :x]``."""
    s = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=s[1:, 1:])
    return s


def box_sum(mask: NDArray[np.bool_], p: int) -> NDArray[np.int64]:
    """How many pixels of each ``p x p`` window are True: ``(H - p + 1, W - p + 1)`` int64."""
    s = integral_image(mask)
    return s[p:, p:] - s[:-p, p:] - s[p:, :-p] + s[:-p, :-p]


def within_mask(mask: NDArray[np.bool_], p: int) -> NDArray[np.bool_]:
    """Top-left corners ``(H - p + 1, W - p + 1)`` whose window lies entirely in ``mask``."""
    return box_sum(mask, p) == p * p


def enough_tissue(tissue: NDArray[np.bool_], p: int, min_tissue: float) -> NDArray[np.bool_]:
    """Top-left corners ``(H - p + 1, W - p + 1)`` of windows at least ``min_tissue`` tissue."""
    return box_sum(tissue, p) >= math.ceil(float(min_tissue) * p * p - 1e-9)


def patch_centres(
    shape: tuple[int, int], p: int, tissue: Any = None, min_tissue: float = 0.0
) -> NDArray[np.bool_]:
    """Pixels ``(H, W)`` that can centre a ``p x p`` window inside the image.

    With a ``tissue`` mask ``(H, W)`` (non-zero = tissue, not all zero), also at
    least ``min_tissue`` of the window in tissue, the rule of
    :func:`~.patches.sample_patches`.  The window centred on ``(y, x)`` has its
    top-left corner at ``(y - p // 2, x - p // 2)``.
    """
    h, w = shape
    out = np.zeros((h, w), dtype=bool)
    if h < p or w < p:
        return out
    corners = np.ones((h - p + 1, w - p + 1), dtype=bool)
    if tissue is not None:
        t = np.asarray(tissue) != 0
        if t.shape != (h, w):
            raise ValueError(f"tissue mask shape {t.shape!r} differs from the section's {shape!r}")
        if t.any():  # an all-zero mask was never computed: no restriction
            corners = enough_tissue(t, p, min_tissue)
    half = p // 2
    out[half : half + h - p + 1, half : half + w - p + 1] = corners
    return out


def inside_class(
    lab: NDArray[np.integer], c: int, p: int, min_painted: float = MIN_PAINTED
) -> NDArray[np.bool_]:
    """Top-left corners of the windows inside class ``c`` (the rule in the module docstring).

    ``min_painted=1.0`` is the strict rule: every pixel of the window is ``c``.
    """
    mine = box_sum(lab == c, p)
    painted = box_sum(lab != 0, p)
    need = math.ceil(float(min_painted) * p * p - 1e-9)
    half = p // 2
    centre = lab[half : half + mine.shape[0], half : half + mine.shape[1]] == c
    return (mine == painted) & (mine >= need) & centre


def paint_report(lab: NDArray[np.integer], c: int, p: int, min_painted: float = MIN_PAINTED) -> str:
    """Why no window is inside class ``c``: its best painted share and widest painted square."""
    mask = lab == c
    mine = box_sum(mask, p)
    alone = mine[mine == box_sum(lab != 0, p)]
    if alone.size and alone.max() > 0:
        best = f"at best {alone.max() / (p * p):.0%} of a {p}x{p} window is painted with it"
    else:
        best = f"every {p}x{p} window on its paint also holds another class"
    lo, hi = 0, min(mask.shape)  # the widest fully painted square: binary search on its side
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if within_mask(mask, mid).any() else (lo, mid - 1)
    return f"{best} ({min_painted:.0%} needed), its widest fully painted square is {lo} px"


def near(mask: NDArray[np.bool_], r: int) -> NDArray[np.bool_]:
    """Pixels ``(H, W)`` within Chebyshev distance ``r`` of a True pixel of ``mask``."""
    if r <= 0:
        return mask.copy()
    padded = np.pad(mask, r)
    return box_sum(padded, 2 * r + 1) > 0
