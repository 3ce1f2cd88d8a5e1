"""Gram matrices of L2-normalised features: their distance from the ideal block matrix.

The paper's measure of how well features separate the areas: ``(1/N)‖G − D‖_F``
(:func:`gram_block_distance`, exact without any ``N × N`` matrix) and the
class-sorted matrix itself for display (:func:`gram_matrix`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_brainfeatures.analyse.probes import _xy

__all__ = ["gram_block_distance", "gram_matrix"]


def _normalised(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def gram_block_distance(X: Any, y: Any) -> float:
    """``(1/N)‖G − D‖_F``: Gram matrix of L2-normalised features vs the ideal block one.

    ``G = X̂X̂ᵀ`` (``X̂``: rows scaled to unit norm; zero rows stay zero) and
    ``D_ij = 1`` when ``y_i = y_j`` else 0.  Computed without any ``N × N`` matrix from
    ``‖G − D‖² = ‖X̂ᵀX̂‖² − 2 Σ_c ‖Σ_{i∈c} x̂_i‖² + Σ_c n_c²`` (exact, O(N D²)).
    """
    X, y = _xy(X, y, "gram_block_distance")
    Xn = _normalised(X)
    gg = float(np.square(Xn.T @ Xn).sum())  # ‖G‖² = ‖X̂ᵀX̂‖²
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    sums = np.zeros((classes.size, X.shape[1]))
    np.add.at(sums, inv, Xn)
    gd = float(np.square(sums).sum())  # ⟨G, D⟩ = Σ_c ‖Σ_{i∈c} x̂_i‖²
    dd = float(np.square(counts.astype(np.float64)).sum())
    return max(gg - 2 * gd + dd, 0.0) ** 0.5 / X.shape[0]


def gram_matrix(
    X: Any, y: Any, *, max_n: int = 1500, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix of L2-normalised features, rows sorted by class (for display).

    At most ``max_n`` random rows are used.  Returns ``(G (n, n), y (n,))``.
    """
    X, y = _xy(X, y, "gram_matrix")
    idx = np.arange(len(y))
    if len(y) > max_n:
        idx = np.random.default_rng(seed).choice(idx, max_n, replace=False)
    idx = idx[np.argsort(y[idx], kind="stable")]
    Xn = _normalised(X[idx])
    return Xn @ Xn.T, y[idx]
