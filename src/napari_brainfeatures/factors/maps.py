"""Factor heatmaps: feature rows of a map, coefficients back to maps, RGB composites.

:func:`finite_rows` reads the computed pixels of a ``(H, W, D)`` feature map as
rows for the NMF; :func:`factor_maps` puts the ``(N, k)`` coefficients back as
``(k, H, W)`` heatmaps; :func:`rgb_composite` shows three of them as one RGB image
and :func:`robust_max` gives a heatmap's display range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["factor_maps", "finite_rows", "rgb_composite", "robust_max"]


def finite_rows(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """The computed pixels of a feature map as rows, read in bands of rows.

    Parameters
    ----------
    features : array ``(H, W, D)``, numpy or dask
        NaN marks pixels that were not computed (outside a region, invalid edges).

    Returns
    -------
    rows : ndarray ``(n, D)`` float32
        Rows whose every value is finite, in raster order.
    valid : bool ndarray ``(H, W)``
        Where they come from (pass it to :func:`factor_maps`).
    """
    if features.ndim != 3:
        raise ValueError(f"features must have shape (H, W, D), got {features.shape!r}")
    h, w, d = features.shape
    valid = np.zeros((h, w), dtype=bool)
    rows = np.empty((h * w, d), dtype=np.float32)  # filled from the top: no second copy
    n = 0
    band = max(1, 1_000_000 // max(w, 1))
    for y in range(0, h, band):
        block = np.asarray(features[y : y + band], dtype=np.float32).reshape(-1, d)
        ok = np.isfinite(block).all(axis=1)
        valid[y : y + band] = ok.reshape(-1, w)
        rows[n : n + int(ok.sum())] = block[ok]
        n += int(ok.sum())
    if n == 0:
        raise ValueError("the feature map has no computed (finite) pixel")
    return rows[:n], valid


def factor_maps(
    U: Any, shape: tuple[int, ...], *, valid: np.ndarray | None = None, fill: float = np.nan
) -> np.ndarray:
    """Coefficients as one heatmap per factor.

    Parameters
    ----------
    U : array ``(N, k)`` or ``shape + (k,)``
        Coefficients, e.g. :meth:`~.nmf.FeatureNMF.fit_transform` output.
    shape : tuple of int
        Spatial shape of the map, e.g. ``(H, W)``.
    valid : bool array of ``shape``, optional
        Where the ``N`` rows of ``U`` belong when they cover only part of the map
        (e.g. the pixels with finite features); elsewhere ``fill``.
    fill : float
        Value outside ``valid``, default NaN.

    Returns
    -------
    ndarray ``(k,) + shape`` float32
    """
    U = np.asarray(U, dtype=np.float32)
    k = U.shape[-1]
    U = U.reshape(-1, k)
    shape = tuple(int(s) for s in shape)
    if valid is None:
        if U.shape[0] != int(np.prod(shape)):
            raise ValueError(
                f"{U.shape[0]} coefficient rows do not fill a map of shape {shape!r}; "
                "pass valid= (the mask of rows used) or the right shape"
            )
        return np.ascontiguousarray(U.T).reshape(k, *shape)  # free for fit_nmf's W
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != shape or int(valid.sum()) != U.shape[0]:
        raise ValueError(
            f"valid must have shape {shape!r} with {U.shape[0]} True entries, got shape "
            f"{valid.shape!r} with {int(valid.sum())}"
        )
    out = np.full((k, *shape), fill, dtype=np.float32)
    out[:, valid] = U.T
    return out


def rgb_composite(
    maps: np.ndarray,
    idx: tuple[int, int, int] = (0, 1, 2),
    *,
    percentiles: tuple[float, float] = (1.0, 99.5),
) -> np.ndarray:
    """Three factor heatmaps as one RGB image, each channel robustly scaled to [0, 1].

    Parameters
    ----------
    maps : array ``(k, H, W)``
        From :func:`factor_maps`; NaN (no data) becomes black.
    idx : three ints
        Factors shown as red, green and blue.
    percentiles : (low, high)
        Per channel, values at these percentiles (of the finite pixels) map to 0 and 1.

    Returns
    -------
    ndarray ``(H, W, 3)`` float32 in [0, 1]
    """
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (k, H, W), got {maps.shape!r}")
    chosen = [int(i) for i in idx]
    if len(chosen) != 3 or not all(0 <= i < maps.shape[0] for i in chosen):
        raise ValueError(f"idx must be three factor indices in 0..{maps.shape[0] - 1}, got {idx!r}")
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles!r}")
    out = np.zeros((*maps.shape[1:], 3), dtype=np.float32)
    for c, i in enumerate(chosen):
        ch = maps[i].astype(np.float32)
        finite = ch[np.isfinite(ch)]
        if finite.size == 0:
            continue
        sample = finite[:: max(1, finite.size // 1_000_000)]  # percentiles of ≤ 1 M values
        lo, hi = np.percentile(sample, [lo_p, hi_p])
        scaled = (ch - lo) / max(float(hi - lo), 1e-12)
        out[..., c] = np.clip(np.nan_to_num(scaled, nan=0.0), 0.0, 1.0)
    return out


def robust_max(m: Any, percentile: float = 99.5, *, floor: float = 1e-12) -> float:
    """Upper end of a heatmap's display range: a high percentile of its finite values.

    Parameters
    ----------
    m : array
        One heatmap (NaN: no data).
    percentile : float
        Default 99.5, so a few bright pixels do not wash the map out.
    floor : float
        Lower bound of the result (a map of zeros still gets a range).

    Returns
    -------
    float
        1.0 when ``m`` has no finite value.
    """
    m = np.asarray(m)
    finite = m[np.isfinite(m)]
    if finite.size == 0:
        return 1.0
    sample = finite[:: max(1, finite.size // 1_000_000)]  # ≤ 1 M values
    return max(float(np.percentile(sample, percentile)), floor)
