"""A UMAP embedding of a slice's features: fitted on a sample, applied to every pixel.

UMAP (McInnes, Healy & Melville 2018; the ``umap-learn`` package, an optional
dependency: ``pip install napari-brainfeatures[umap]``) is fitted on a random sample
of the slice's feature rows, reduced first to :data:`PCS` principal components
(neighbours are found in a denoised space, and fast).  Every pixel is then placed
where umap-learn's own ``transform`` starts a new point: at the mean of the
embeddings of its ``k`` nearest sample rows, weighted by inverse distance (found
with the nearest-neighbour-descent index UMAP built while fitting: about 4 s per
million rows on two cores).
``transform`` goes on to refine each point by gradient steps, which for millions
of pixels would take tens of minutes; the first step keeps a pixel beside the
sample rows it resembles, which is what a density plot of the slice needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.explore.density import FeaturePoints, row_blocks, sample_rows
from napari_brainfeatures.features.grid import FeatureGrid

__all__ = ["PCS", "UMAPProjection", "umap_points"]

PCS = 8  # principal components UMAP and the neighbour search work in


@dataclass(frozen=True, eq=False)
class UMAPProjection:
    """What places a feature row in the embedding.

    Attributes
    ----------
    mean, components : ndarray ``(D,)``, ``(PCS, D)`` float32
        The PCA the rows are reduced with.
    sample : ndarray ``(n, PCS)`` float32
        The fitted rows, reduced.
    embedding : ndarray ``(n, 2)`` float32
        Their UMAP coordinates.
    k : int
        Neighbours averaged per new row.
    """

    mean: np.ndarray
    components: np.ndarray
    sample: np.ndarray
    embedding: np.ndarray
    k: int
    _index: Any  # a pynndescent index of ``sample``

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """``(m, D)`` rows -> ``(m, 2)`` float32: inverse-distance mean of the k nearest."""
        reduced = (np.asarray(rows, np.float32) - self.mean) @ self.components.T
        idx, dist = self._index.query(reduced, k=self.k)
        idx, dist = np.reshape(idx, (len(reduced), -1)), np.reshape(dist, (len(reduced), -1))
        weight = 1.0 / np.maximum(dist, 1e-6)
        xy = np.einsum("mk,mkc->mc", weight, self.embedding[idx]) / weight.sum(1, keepdims=True)
        return xy.astype(np.float32)


def umap_points(
    grid: FeatureGrid,
    *,
    sample: int = 10_000,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    k: int = 5,
    seed: int = 0,
) -> tuple[FeaturePoints, UMAPProjection]:
    """A 2-D UMAP of a slice's features: fitted on ``sample`` rows, applied to all pixels.

    Parameters
    ----------
    grid : FeatureGrid
        The slice (its ``features`` ``(H', W', D)``, NaN where not computed).
    sample : int
        Rows UMAP is fitted on (chosen at random, ``seed``), default 10 000.
    n_neighbors, min_dist : int, float
        UMAP's own (defaults 15 and 0.1, umap-learn's).
    k : int
        Sample rows averaged to place each pixel, default 5.
    seed : int
        For the sample and UMAP (a seeded UMAP runs on one thread, and repeats).

    Returns
    -------
    (FeaturePoints, UMAPProjection)

    Raises
    ------
    ValueError
        umap-learn is not installed, or too few pixels have features.
    """
    try:
        import umap
    except ImportError as err:
        raise ValueError(
            "UMAP axes need the umap-learn package: pip install 'napari-brainfeatures[umap]' "
            "(or choose NMF factors or PCA)"
        ) from err
    from sklearn.decomposition import PCA

    if int(k) < 1:
        raise ValueError(f"k must be at least 1 (sample rows averaged per pixel), got {k!r}")
    need = max(int(n_neighbors) + 1, int(k), PCS)
    fit, blocks = sample_rows(grid, sample, seed, at_least=need)
    pca = PCA(n_components=min(PCS, fit.shape[1]), random_state=seed).fit(fit)
    mean, comps = pca.mean_.astype(np.float32), pca.components_.astype(np.float32)
    reduced = (fit - mean) @ comps.T
    model = umap.UMAP(
        n_components=2,
        n_neighbors=int(n_neighbors),
        min_dist=float(min_dist),
        random_state=seed,
        n_jobs=1,  # seeded: umap-learn runs on one thread anyway
    )
    embedding = np.asarray(model.fit_transform(reduced), np.float32)
    # umap-learn keeps the NN-descent index it built for a large sample (for its own
    # transform); a small sample was searched exactly, and so is it here
    index = getattr(model, "_knn_search_index", None)
    if not callable(getattr(index, "query", None)):
        index = _Exact(reduced)
    proj = UMAPProjection(mean, comps, reduced, embedding, int(k), index)
    pixels, xy = [], []
    for pix, rows in blocks or row_blocks(grid):
        pixels.append(pix)
        xy.append(proj.transform(rows))
    axes = ("UMAP 1", "UMAP 2")
    return FeaturePoints(np.concatenate(xy), np.concatenate(pixels), grid.shape, axes), proj


class _Exact:
    """Exact nearest neighbours (a k-d tree) with pynndescent's ``query`` signature."""

    def __init__(self, data: np.ndarray) -> None:
        from scipy.spatial import cKDTree

        self._tree = cKDTree(data)

    def query(self, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        dist, idx = self._tree.query(rows, k=k)
        return idx, dist
