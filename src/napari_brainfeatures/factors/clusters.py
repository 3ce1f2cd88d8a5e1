"""Cluster maps of feature or NMF-coefficient maps (papers 000 and 001).

:func:`cluster_map` fits k-means or a Gaussian mixture (optionally after PCA, and
optionally after smoothing the map inside the mask with :func:`smooth_within`) to the
pixels of a map inside a mask, on a random subsample when the mask is large, and
labels every pixel in row blocks: ``0`` outside the mask (or where features are
NaN), ``1..k`` inside.  :func:`erode_mask` gives the paper's "cortex eroded by a
disk of radius 64".  :func:`score_against` compares a cluster map with ground-truth
labels (V-measure, adjusted Rand index); :func:`layer_profile` and
:func:`match_profiles` (in :mod:`.scores`, importable from here) summarise clusters as
distributions over cortical layers and match them across slices by Jensen–Shannon
distance (paper 001).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from napari_brainfeatures.factors.scores import (
    LayerProfile,
    layer_profile,
    match_profiles,
    score_against,
)

__all__ = [
    "ClusterResult",
    "LayerProfile",
    "cluster_map",
    "erode_mask",
    "gmm_bic_curve",
    "layer_profile",
    "match_profiles",
    "on_grid",
    "score_against",
    "smooth_within",
]

METHODS = ("kmeans", "gmm")


@dataclass
class ClusterResult:
    """Output of :func:`cluster_map`.

    Attributes
    ----------
    labels : ndarray, the map's spatial shape, int32
        0 outside the mask or where features are not finite, 1..k inside; label 1
        is the largest cluster of the fit sample, then by decreasing size.
    k : int
    method : str
    bic : float or None
        Bayesian information criterion of the GMM on the fit sample.
    model : KMeans or GaussianMixture
        Fitted on the kept columns (then PCA-reduced) of the sample; predicts
        ``order[label - 1]``.
    pca : PCA or None
    n_fit, n_labelled : int
        Rows used to fit, rows labelled.
    columns : ndarray of int, or None
        The feature channels used: those not constant on the fit sample (dead
        channels carry no information and make Gaussian mixtures fail).
    """

    labels: np.ndarray
    k: int
    method: str
    bic: float | None
    model: Any
    pca: Any
    n_fit: int
    n_labelled: int
    columns: np.ndarray | None = None


def erode_mask(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erode a 2-D/3-D boolean mask by a disk (ball) of ``radius`` pixels.

    Equal to binary erosion with ``skimage.morphology.disk(radius)`` when the image
    border is not treated as background, but computed by one Euclidean distance
    transform, so large radii (the paper's 64 px) are cheap.
    """
    mask = np.asarray(mask, dtype=bool)
    if radius < 0:
        raise ValueError(f"erosion radius must be >= 0, got {radius!r}")
    if radius == 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(mask) > radius


def smooth_within(features: Any, sigma: Any, mask: Any = None) -> np.ndarray:
    """Gaussian smoothing of a feature map that averages only pixels inside ``mask``.

    Normalised convolution: every channel times the mask, and the mask itself, are
    blurred by a Gaussian of ``sigma`` pixels, and the first is divided by the
    second.  A pixel's smoothed features are thus a Gaussian-weighted mean over the
    mask's pixels near it: nothing leaks in from outside the mask (another area,
    the background), and pixels near the mask's edge are not dimmed.  Pixels with a
    non-finite feature count as outside.  Dense CNN features change with every cell
    body that enters or leaves the patch; smoothing at a fraction of the patch size
    leaves the slower changes from layer to layer.

    Parameters
    ----------
    features : array ``(*spatial, D)``, numpy or dask
    sigma : float or sequence of float (one per spatial axis)
        Gaussian standard deviation in map pixels (grid steps); 0 returns a copy.
    mask : bool array of the spatial shape, optional
        Default: every pixel with finite features.

    Returns
    -------
    ndarray ``(*spatial, D)`` float32
        NaN outside the mask.
    """
    f = np.asarray(features, dtype=np.float32)
    if f.ndim < 2:
        raise ValueError(f"features need shape (H, W, D), got {f.shape!r}")
    spatial = f.shape[:-1]
    sig = np.broadcast_to(np.asarray(sigma, dtype=float), (len(spatial),))
    if not np.all(np.isfinite(sig)) or (sig < 0).any():
        raise ValueError(f"smoothing sigma must be finite and >= 0, got {sigma!r}")
    keep = np.isfinite(f).all(axis=-1)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != spatial:
            raise ValueError(f"mask shape {mask.shape!r} must equal the map's shape {spatial!r}")
        keep &= mask
    out = np.full(f.shape, np.nan, dtype=np.float32)
    if not keep.any():
        return out
    if not sig.any():
        out[keep] = f[keep]
        return out
    # Only the mask's bounding box matters (pixels outside the mask weigh nothing).
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(keep))
    k = keep[box].astype(np.float32)
    weight = ndimage.gaussian_filter(k, sig, mode="constant")
    sub, res = f[box], out[box]  # res is a view: filling it fills out
    for c in range(f.shape[-1]):
        chan = np.where(k > 0, sub[..., c], np.float32(0))
        num = ndimage.gaussian_filter(chan, sig, mode="constant")
        res[..., c] = np.where(k > 0, num / np.maximum(weight, 1e-12), np.nan)
    return out


def _rows(features: Any) -> tuple[Any, tuple[int, ...]]:
    if features.ndim < 2:
        raise ValueError(f"features need shape (N, D) or (H, W, D), got {features.shape!r}")
    return features.reshape(-1, features.shape[-1]), tuple(features.shape[:-1])


def _candidates(shape: tuple[int, ...], mask: Any) -> np.ndarray:
    if mask is None:
        return np.ones(int(np.prod(shape)), dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape!r} must equal the map's shape {shape!r}")
    flat = mask.reshape(-1).astype(bool)
    if not flat.any():
        raise ValueError("the mask (ROI) has no pixels; paint the ROI or choose another id")
    return flat


def _gather(
    rows: Any, cand: np.ndarray, max_fit: int | None, seed: int, block: int
) -> tuple[np.ndarray, np.ndarray]:
    """Finite candidate rows: a random subsample ``(n, D)`` and the validity mask ``(N,)``."""
    n = rows.shape[0]
    idx = np.flatnonzero(cand)
    rng = np.random.default_rng(seed)
    pick = (
        idx if max_fit is None or idx.size <= max_fit else np.sort(rng.choice(idx, max_fit, False))
    )
    valid = cand.copy()
    sample = []
    for s in range(0, n, block):
        if not cand[s : s + block].any():
            continue
        xb = np.asarray(rows[s : s + block], dtype=np.float32)
        valid[s : s + block] &= np.isfinite(xb).all(axis=1)
        sel = pick[(pick >= s) & (pick < s + block)] - s
        sample.append(xb[sel][np.isfinite(xb[sel]).all(axis=1)])
    return np.concatenate(sample) if sample else np.empty((0, rows.shape[1]), np.float32), valid


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"the number of clusters k must be an integer >= 1, got {k!r}")
    return int(k)


def _informative(sample: np.ndarray) -> np.ndarray:
    """Indices of the columns of ``sample`` ``(n, D)`` that are not constant."""
    cols = np.flatnonzero(sample.max(axis=0) > sample.min(axis=0))
    if cols.size == 0:
        raise ValueError(
            f"every one of the {sample.shape[1]} feature channels is constant on the "
            f"{sample.shape[0]} pixels sampled in the mask, so there is nothing to cluster; "
            "check the mask (ROI) and that the map holds features"
        )
    return cols


def _reduce(sample: np.ndarray, pca_components: int | None, seed: int) -> tuple[Any, np.ndarray]:
    if pca_components is None:
        return None, sample
    from sklearn.decomposition import PCA

    if not 1 <= pca_components <= min(sample.shape):
        raise ValueError(
            f"pca_components must be in 1..{min(sample.shape)} here, got {pca_components!r}"
        )
    pca = PCA(n_components=int(pca_components), random_state=seed).fit(sample)
    return pca, pca.transform(sample)


def _model(method: str, k: int, seed: int) -> Any:
    if method == "kmeans":
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=3, random_state=seed)
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(n_components=k, covariance_type="full", random_state=seed)


def _fit(method: str, k: int, seed: int, z: np.ndarray) -> Any:
    """Fit :func:`_model` to ``z`` ``(n, d)``; a collapsed mixture says what to try.

    Give a Gaussian mixture float64 ``z``: sklearn keeps float32 input in float32,
    where the rounding of nearly collinear CNN channels (covariances of rank < d)
    dwarfs reg_covar = 1e-6.
    """
    try:
        return _model(method, k, seed).fit(z)
    except ValueError as err:
        if "ill-defined empirical covariance" not in str(err):
            raise
        raise ValueError(
            f"the Gaussian mixture with k = {k} components collapsed on {z.shape[0]} pixels "
            f"with {z.shape[1]} dimensions (a component has too few distinct pixels); reduce "
            "the features first with pca_components (--pca N, e.g. 10), or use method "
            "'kmeans' (--method kmeans), or fewer clusters"
        ) from err


def cluster_map(
    features: Any,
    *,
    method: str = "kmeans",
    k: int = 4,
    pca_components: int | None = None,
    mask: np.ndarray | None = None,
    max_fit: int | None = 200_000,
    seed: int = 0,
    block_rows: int = 262_144,
    smooth: Any = 0.0,
) -> ClusterResult:
    """Cluster the pixels of a feature map and label every pixel in the mask.

    Parameters
    ----------
    features : array ``(H, W, D)`` or ``(N, D)`` (any spatial shape), numpy or dask
        Features or NMF coefficients; rows with NaN are left unlabelled (0).
    method : {'kmeans', 'gmm'}
        k-means (paper 000, on PCA of CNN features) or a full-covariance Gaussian
        mixture (paper 001, on the 15-d NMF coefficients of cortex).
    k : int
        Number of clusters, default 4.
    pca_components : int, optional
        Reduce to this many principal components first (fitted on the sample).
    mask : bool array of the spatial shape, optional
        Pixels to cluster (e.g. ``erode_mask(labels == cortex_id, 64)``).
    max_fit : int or None
        Fit on at most this many random rows (default 200 000); all are labelled.
    seed : int
    block_rows : int
        Rows per block when labelling.
    smooth : float or sequence of float
        Before clustering, smooth the map inside ``mask`` with a Gaussian of this
        many map pixels (:func:`smooth_within`; 0, the default, is the papers'
        recipe).  Needs the map in memory.

    Returns
    -------
    ClusterResult
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS!r}, got {method!r}")
    k = _check_k(k)
    rows, shape = _rows(features)
    cand = _candidates(shape, mask)
    if np.any(np.asarray(smooth, dtype=float) != 0):
        rows = smooth_within(features, smooth, mask).reshape(rows.shape)
    sample, valid = _gather(rows, cand, max_fit, seed, block_rows)
    if sample.shape[0] < k:
        raise ValueError(
            f"only {sample.shape[0]} pixels with finite features in the mask, fewer than "
            f"k = {k} clusters; enlarge the ROI (or erode less) or lower k"
        )
    cols = _informative(sample)
    pca, z = _reduce(sample[:, cols], pca_components, seed)
    if method == "gmm":
        z = z.astype(np.float64)  # see _fit
    model = _fit(method, k, seed, z)
    sizes = np.bincount(model.predict(z), minlength=k)
    rank = np.empty(k, dtype=np.int32)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(1, k + 1)  # 1 = largest cluster
    labels = np.zeros(rows.shape[0], dtype=np.int32)
    for s in range(0, rows.shape[0], block_rows):
        v = valid[s : s + block_rows]
        if v.any():
            xb = np.asarray(rows[s : s + block_rows], dtype=np.float32)[v][:, cols]
            labels[s : s + block_rows][v] = rank[
                model.predict(xb if pca is None else pca.transform(xb))
            ]
    bic = float(model.bic(z)) if method == "gmm" else None
    return ClusterResult(
        labels.reshape(shape), k, method, bic, model, pca, int(z.shape[0]), int(valid.sum()), cols
    )


def gmm_bic_curve(
    features: Any,
    ks: Any = range(2, 11),
    *,
    mask: np.ndarray | None = None,
    pca_components: int | None = None,
    max_fit: int | None = 200_000,
    seed: int = 0,
) -> dict[int, float]:
    """BIC of a Gaussian mixture for each number of components ``k`` (lower is better).

    All fits use the same random subsample of the masked, finite pixels, without
    the feature channels that are constant on it.

    Returns
    -------
    dict of int to float
    """
    ks = [_check_k(k) for k in ks]
    rows, shape = _rows(features)
    sample, _ = _gather(rows, _candidates(shape, mask), max_fit, seed, 262_144)
    if sample.shape[0] < max(ks):
        raise ValueError(f"only {sample.shape[0]} pixels for up to {max(ks)} components")
    _, z = _reduce(sample[:, _informative(sample)], pca_components, seed)
    z = z.astype(np.float64)
    return {k: float(_fit("gmm", k, seed, z).bic(z)) for k in ks}


def on_grid(
    labels: Any,
    shape: tuple[int, int],
    *,
    origin: tuple[int, int] = (0, 0),
    step: tuple[int, int] = (1, 1),
) -> np.ndarray:
    """Labels of an image read at the pixels of a (strided) feature grid.

    Grid output ``(i, j)`` sits on image pixel ``origin + step * (i, j)`` (the dense
    feature store's convention).  Kept for scripts; the grid's own
    :meth:`~napari_brainfeatures.features.grid.FeatureGrid.labels_on` does the work.

    Returns
    -------
    ndarray ``shape``, the labels' dtype
    """
    from napari_brainfeatures.features.grid import FeatureGrid

    return FeatureGrid(shape, origin=origin, step=step).labels_on(labels)
