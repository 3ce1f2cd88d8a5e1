"""Profiles the papers used: factor activity per area or layer, and clusters across slices.

:func:`factor_profile` is the factor × area (or × layer) table: the mean NMF
coefficient of each factor over each labelled region (paper 001 correlated a factor
with annotated layers).  Clusters as distributions over layers or areas are
:func:`~..factors.scores.layer_profile`; :func:`match_slices` profiles the clusters
of two slices and matches them by Jensen–Shannon distance
(:func:`~..factors.scores.match_profiles`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.factors.scores import layer_profile, match_profiles

__all__ = ["FactorProfile", "factor_profile", "match_slices"]


@dataclass(frozen=True, eq=False)
class FactorProfile:
    """Mean activity of each factor in each labelled region.

    Attributes
    ----------
    mean : ndarray ``(k, L)`` float64
        Mean coefficient of factor ``f`` over the pixels of label ``label_ids[l]``.
    share : ndarray ``(k, L)`` float64
        ``mean`` divided by each factor's largest mean (1: the label where it is most active).
    counts : ndarray ``(L,)`` int64
        Pixels per label.
    label_ids : list of int
    """

    mean: np.ndarray
    share: np.ndarray
    counts: np.ndarray
    label_ids: list[int]

    def top_label(self) -> list[int]:
        """For each factor, the label where it is most active."""
        return [self.label_ids[i] for i in np.argmax(self.mean, axis=1)]


def factor_profile(maps: Any, labels: Any, *, mask: Any = None) -> FactorProfile:
    """The factor × label activity table.

    Parameters
    ----------
    maps : float array ``(k, H', W')``
        NMF coefficients (NaN where none).
    labels : int array ``(H', W')``
        Areas or layers on the same grid (0: none; read with :meth:`FeatureGrid.labels_on`).
    mask : bool array ``(H', W')``, optional
        Only these pixels count.

    Raises
    ------
    ValueError
        Shapes differ, or no pixel has both coefficients and a label.
    """
    maps, labels = np.asarray(maps, dtype=np.float64), np.asarray(labels)
    if maps.ndim != 3 or labels.shape != maps.shape[1:]:
        raise ValueError(
            f"maps (k, H, W) and labels (H, W) must share a grid, got {maps.shape!r} and "
            f"{labels.shape!r}"
        )
    keep = (labels > 0) & np.isfinite(maps).all(axis=0)
    if mask is not None:
        keep &= np.asarray(mask, dtype=bool)
    if not keep.any():
        raise ValueError("no pixel has both factor coefficients and a label")
    ids, inverse = np.unique(labels[keep], return_inverse=True)
    counts = np.bincount(inverse, minlength=ids.size)
    values = maps[:, keep]  # (k, n)
    sums = np.stack([np.bincount(inverse, weights=row, minlength=ids.size) for row in values])
    mean = sums / counts  # (k, L)
    top = mean.max(axis=1, keepdims=True)
    share = np.divide(mean, top, out=np.zeros_like(mean), where=top > 0)
    return FactorProfile(mean, share, counts, [int(i) for i in ids])


def match_slices(
    clusters_a: Any, labels_a: Any, clusters_b: Any, labels_b: Any, *, masks: Any = (None, None)
) -> dict[str, Any]:
    """Profile each slice's clusters over its labels and match them by Jensen–Shannon distance.

    Parameters
    ----------
    clusters_a, labels_a : int arrays of one shape
        Slice a's cluster map and layer (or area) labels on its grid (0: none).
    clusters_b, labels_b : int arrays of one shape
        The same for slice b (its grid may differ from a's).
    masks : (bool array or None, bool array or None)
        Pixels that count in each slice.

    Returns
    -------
    dict
        ``profile_a``, ``profile_b`` (:class:`~..factors.scores.LayerProfile`) and what
        :func:`~..factors.scores.match_profiles` returns: ``distance``, ``pairs``, ``layer_ids``.
    """
    a = layer_profile(clusters_a, labels_a, mask=masks[0])
    b = layer_profile(clusters_b, labels_b, mask=masks[1])
    return {"profile_a": a, "profile_b": b, **match_profiles(a, b)}
