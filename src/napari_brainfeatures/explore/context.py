"""Context features: what the surroundings of each pixel look like, from the stored features.

A 128 px patch's features describe its patch; a cortical layer or a barrel is told
apart by its neighbourhood as much.  :func:`coarse_context` averages the features
over blocks of ``block × block`` grid points (NaN left out) and smooths the block
map with a Gaussian of one block: one pass over the slice, a map ``block²`` times
smaller.  :func:`context_at` reads it at grid points (their block).  Because a
linear classifier's context weights commute with this averaging, a whole view's
context logits are computed on the small map and then looked up per pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["block_of", "coarse_context", "context_at"]

_BAND_POINTS = 1 << 18  # grid points read at a time


def block_of(context_px: float, step: tuple[int, int]) -> int:
    """Grid points per block for a context of ``context_px`` image pixels (0: none)."""
    if not context_px >= 0:
        raise ValueError(f"context must be >= 0 image pixels, got {context_px!r}")
    return 0 if context_px == 0 else max(1, round(float(context_px) / min(step)))


def coarse_context(features: Any, block: int) -> np.ndarray:
    """Smoothed block means of ``features`` ``(H', W', D)`` (numpy or dask).

    Returns
    -------
    ndarray ``(ceil(H'/block), ceil(W'/block), D)`` float32
        NaN where no feature was computed within about two blocks.
    """
    from scipy.ndimage import gaussian_filter

    h, w, d = (int(s) for s in features.shape)
    b = int(block)
    hc, wc = -(-h // b), -(-w // b)
    sums = np.zeros((hc, wc, d), np.float64)
    counts = np.zeros((hc, wc), np.float64)
    band = b * max(1, _BAND_POINTS // (w * b))
    for r0 in range(0, h, band):
        part = np.asarray(features[r0 : r0 + band], dtype=np.float32)  # (hb, W', D)
        ok = np.isfinite(part).all(axis=-1)
        part = np.where(ok[..., None], part, 0.0)
        hb = part.shape[0]
        pad = ((0, -hb % b), (0, -w % b))
        part = np.pad(part, (*pad, (0, 0)))
        okp = np.pad(ok, pad).astype(np.float64)
        rows = slice(r0 // b, r0 // b + part.shape[0] // b)
        sums[rows] = part.reshape(-1, b, wc, b, d).sum(axis=(1, 3))
        counts[rows] = okp.reshape(-1, b, wc, b).sum(axis=(1, 3))
    sums = gaussian_filter(sums, (1.0, 1.0, 0.0), mode="constant")
    counts = gaussian_filter(counts, 1.0, mode="constant")[..., None]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(counts > 1e-3, sums / counts, np.nan)
    return out.astype(np.float32)


def context_at(coarse: np.ndarray, i: np.ndarray, j: np.ndarray, block: int) -> np.ndarray:
    """The context ``(n, D)`` of grid points ``(i, j)``: their block's row of ``coarse``."""
    return coarse[np.asarray(i) // block, np.asarray(j) // block]
