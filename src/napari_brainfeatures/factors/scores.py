"""Scores of a cluster map against labels: V-measure / ARI, layer profiles and their matching.

:func:`score_against` compares a cluster map with ground-truth labels;
:func:`layer_profile` summarises clusters as distributions over cortical layers and
:func:`match_profiles` matches the clusters of two slices by the Jensen–Shannon
distance of their profiles (paper 001).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon

__all__ = ["LayerProfile", "layer_profile", "match_profiles", "score_against"]


def _both_labelled(
    a: Any, b: Any, mask: Any, *, mismatch: str, empty: str
) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of two label maps where both are > 0 (and inside ``mask``), flattened."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(mismatch.format(a=a.size, b=b.size))
    keep = (a > 0) & (b > 0)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool).reshape(-1)
    if not keep.any():
        raise ValueError(empty)
    return a[keep], b[keep]


def score_against(truth: Any, pred: Any, mask: Any = None) -> dict[str, float]:
    """V-measure and adjusted Rand index of a cluster map against ground truth.

    Only pixels with ``truth > 0`` and ``pred > 0`` (and inside ``mask``) count.

    Returns
    -------
    dict
        ``v_measure``, ``homogeneity``, ``completeness``, ``ari``, ``n``.
    """
    from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure

    t, p = _both_labelled(
        truth,
        pred,
        mask,
        mismatch="truth has {a} pixels but pred {b}; shapes must match",
        empty="no pixel is labelled in both truth and prediction (inside the mask)",
    )
    h, c, v = homogeneity_completeness_v_measure(t, p)
    ari = adjusted_rand_score(t, p)
    return {"v_measure": v, "homogeneity": h, "completeness": c, "ari": ari, "n": int(t.size)}


@dataclass
class LayerProfile:
    """Clusters as distributions over layers: ``matrix[i, j] = P(layer j | cluster i)``."""

    matrix: np.ndarray
    counts: np.ndarray
    cluster_ids: list[int]
    layer_ids: list[int]


def layer_profile(clusters: Any, layers: Any, *, mask: Any = None) -> LayerProfile:
    """Distribution of each cluster over layers (e.g. L1, L2/3, L4, L5, L6).

    Parameters
    ----------
    clusters, layers : int arrays of one shape
        Cluster map (0 = none) and layer labels (0 = none).
    mask : bool array, optional
    """
    c, lay = _both_labelled(
        clusters,
        layers,
        mask,
        mismatch="clusters ({a} px) and layers ({b} px) must match",
        empty="no pixel has both a cluster and a layer label",
    )
    cids, ci = np.unique(c, return_inverse=True)
    lids, li = np.unique(lay, return_inverse=True)
    counts = np.zeros((cids.size, lids.size), dtype=np.int64)
    np.add.at(counts, (ci, li), 1)
    matrix = counts / counts.sum(axis=1, keepdims=True)
    return LayerProfile(matrix, counts, [int(i) for i in cids], [int(i) for i in lids])


def match_profiles(a: LayerProfile, b: LayerProfile) -> dict[str, Any]:
    """Match the clusters of two slices by Jensen–Shannon distance of their layer profiles.

    Returns
    -------
    dict
        ``distance``: ``(n_a, n_b)`` JS distances (base 2, in [0, 1]);
        ``pairs``: list of (cluster in a, cluster in b, distance) minimising the total.
    """
    layers = sorted(set(a.layer_ids) | set(b.layer_ids))

    def _on(p: LayerProfile) -> np.ndarray:
        m = np.zeros((len(p.cluster_ids), len(layers)))
        m[:, [layers.index(j) for j in p.layer_ids]] = p.matrix
        return m

    pa, pb = _on(a), _on(b)
    dist = np.array([[jensenshannon(x, y, base=2) for y in pb] for x in pa])
    rows, cols = linear_sum_assignment(dist)
    pairs = [
        (a.cluster_ids[i], b.cluster_ids[j], float(dist[i, j]))
        for i, j in zip(rows, cols, strict=True)
    ]
    return {"distance": dist, "pairs": pairs, "layer_ids": layers}
