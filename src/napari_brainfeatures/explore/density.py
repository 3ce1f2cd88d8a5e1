"""Feature space as a density: one point per pixel, binned, so millions of points plot at once.

:func:`factor_points` takes two NMF factors of a :class:`~..factors.results.Factors`
as the plot's axes; :func:`pca_points` fits a PCA on a sample of a slice's features
(a :class:`~..features.grid.FeatureGrid`) and applies it to every pixel, block by
block.  Either gives :class:`FeaturePoints`: the plot coordinates ``(N, 2)`` and the
grid pixel of each point.  :func:`density` bins them into a 2-D histogram
(:class:`Density`) that remembers each point's bin, so a selection in the plot is a
lookup per point (:mod:`.selection`), not a point-in-polygon test on millions.

A UMAP embedding is :func:`~.embed.umap_points` (the optional ``umap-learn``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.features.grid import FeatureGrid

__all__ = ["Density", "FeaturePoints", "PCAProjection", "density", "factor_points", "pca_points"]

METHODS = ("nmf", "pca")
_BLOCK_ROWS = 262_144  # feature rows read and projected at a time (64 MiB of 64-d float32)


@dataclass(frozen=True, eq=False)
class FeaturePoints:
    """One point per grid pixel that has features.

    Attributes
    ----------
    xy : ndarray ``(N, 2)`` float32
        Plot coordinates (x, y).
    pixels : ndarray ``(N,)`` int64
        Raster index of each point on the grid (``i * W' + j``).
    shape : (int, int)
        The grid ``(H', W')``.
    axes : (str, str)
        Names of the plot's axes ("factor 3", "PC1").
    """

    xy: np.ndarray
    pixels: np.ndarray
    shape: tuple[int, int]
    axes: tuple[str, str]

    def __len__(self) -> int:
        return int(self.pixels.size)

    def on_grid(self, values: np.ndarray, fill: Any = 0) -> np.ndarray:
        """Per-point ``values`` ``(N,)`` put on the grid ``(H', W')``; ``fill`` elsewhere."""
        out = np.full(self.shape[0] * self.shape[1], fill, dtype=np.asarray(values).dtype)
        out[self.pixels] = values
        return out.reshape(self.shape)

    def of_grid(self, image: Any) -> np.ndarray:
        """A grid map ``(H', W')`` read at the points: ``(N,)``."""
        image = np.asarray(image)
        if image.shape != self.shape:
            raise ValueError(f"a map on the grid {self.shape!r} is needed, got {image.shape!r}")
        return image.reshape(-1)[self.pixels]


def _pair_index(pair: Any, k: int, what: str) -> tuple[int, int]:
    flat = list(np.ravel(np.asarray(pair, dtype=object)))
    ok = len(flat) == 2 and all(isinstance(a, int | np.integer) and 0 <= a < k for a in flat)
    if not ok:
        raise ValueError(f"{what} must be two indices in 0..{k - 1}, got {pair!r}")
    return int(flat[0]), int(flat[1])


def factor_points(factors: Any, pair: tuple[int, int] = (0, 1)) -> FeaturePoints:
    """Two NMF factors as the plot's axes: the coefficients of every usable pixel.

    Parameters
    ----------
    factors : Factors
        From :func:`~..factors.results.factorise` or :func:`~..factors.results.open_factors`.
    pair : (int, int)
        The factors on x and y, default ``(0, 1)``.
    """
    a, b = _pair_index(pair, factors.k, "factors")
    used = np.asarray(factors.used)
    pixels = np.flatnonzero(used)
    maps = factors.maps
    xy = np.stack(
        [np.asarray(maps[a]).reshape(-1)[pixels], np.asarray(maps[b]).reshape(-1)[pixels]], 1
    )
    return FeaturePoints(xy.astype(np.float32), pixels, used.shape, (f"factor {a}", f"factor {b}"))


def row_blocks(grid: FeatureGrid) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The grid's valid feature rows, block by block: ``(pixels (n,), rows (n, D))``."""
    h, w = grid.shape
    per = max(1, _BLOCK_ROWS // w)
    for r0 in range(0, h, per):
        block = np.asarray(grid.features[r0 : r0 + per], dtype=np.float32)  # (h', W', D)
        rows = block.reshape(-1, block.shape[-1])
        ok = np.isfinite(rows).all(axis=1)
        yield r0 * w + np.flatnonzero(ok), rows[ok]


@dataclass(frozen=True, eq=False)
class PCAProjection:
    """A PCA fitted on a sample of feature rows: ``(rows - mean) @ components.T``.

    Attributes
    ----------
    mean : ndarray ``(D,)`` float32
    components : ndarray ``(c, D)`` float32
    explained : ndarray ``(c,)`` float64
        Fraction of the sample's variance each component explains.
    """

    mean: np.ndarray
    components: np.ndarray
    explained: np.ndarray

    def transform(self, rows: np.ndarray) -> np.ndarray:
        """``(n, D)`` rows -> ``(n, c)`` float32 scores."""
        return (np.asarray(rows, np.float32) - self.mean) @ self.components.T


def sample_rows(
    grid: FeatureGrid, sample: int, seed: int, *, at_least: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]] | None]:
    """About ``sample`` of the grid's valid feature rows, chosen at random (``seed``).

    Returns the rows ``(n, D)`` and, for a slice small enough, its blocks (as
    :func:`row_blocks` gives them) so that a second pass need not read them again.

    Raises
    ------
    ValueError
        Fewer than ``at_least`` rows have features.
    """
    if grid.features is None:
        raise ValueError("the grid holds no features; open it with FeatureGrid.open(store)")
    d = int(grid.features.shape[-1])
    rng = np.random.default_rng(seed)
    h, w = grid.shape
    keep = sample / float(h * w)
    blocks = list(row_blocks(grid)) if h * w <= _BLOCK_ROWS else None
    fit_rows = [rows[rng.random(pix.size) < keep] for pix, rows in blocks or row_blocks(grid)]
    fit = np.concatenate(fit_rows) if fit_rows else np.zeros((0, d), np.float32)
    if fit.shape[0] < at_least:
        raise ValueError(
            f"only {fit.shape[0]} pixels of {grid.source!r} have features; compute the "
            "feature store over more of the image (or wait until it is written)"
        )
    return fit, blocks


def pca_points(
    grid: FeatureGrid,
    pair: tuple[int, int] = (0, 1),
    *,
    n_components: int = 8,
    sample: int = 50_000,
    seed: int = 0,
) -> tuple[FeaturePoints, PCAProjection]:
    """Principal components of a slice's features: fitted on a sample, applied to all pixels.

    Parameters
    ----------
    grid : FeatureGrid
        The slice (its ``features`` ``(H', W', D)``, NaN where not computed).
    pair : (int, int)
        The components on x and y (0 = PC1), default ``(0, 1)``.
    n_components : int
        Components fitted, default 8.
    sample : int
        Rows the PCA is fitted on (chosen at random, ``seed``), default 50 000.

    Returns
    -------
    (FeaturePoints, PCAProjection)
    """
    from sklearn.decomposition import PCA

    if grid.features is None:
        raise ValueError("the grid holds no features; open it with FeatureGrid.open(store)")
    d = int(grid.features.shape[-1])
    n_components = max(2, min(int(n_components), d))
    a, b = _pair_index(pair, n_components, "components")
    pixels, scores = [], []
    fit, blocks = sample_rows(grid, sample, seed, at_least=n_components)
    pca = PCA(n_components=n_components, random_state=seed).fit(fit)
    proj = PCAProjection(
        pca.mean_.astype(np.float32),
        pca.components_.astype(np.float32),
        np.asarray(pca.explained_variance_ratio_),
    )
    for pix, rows in blocks or row_blocks(grid):  # second pass: every pixel
        pixels.append(pix)
        scores.append(proj.transform(rows)[:, [a, b]])
    axes = tuple(f"PC{i + 1} ({proj.explained[i]:.0%})" for i in (a, b))
    pts = FeaturePoints(np.concatenate(scores), np.concatenate(pixels), grid.shape, axes)  # type: ignore[arg-type]
    return pts, proj


@dataclass(frozen=True, eq=False)
class Density:
    """A 2-D histogram of :class:`FeaturePoints` that knows each point's bin.

    Attributes
    ----------
    points : FeaturePoints
    bins : int
        Bins per axis.
    extent : (float, float, float, float)
        ``(x0, x1, y0, y1)`` of the histogram (points outside are clipped into the edge bins).
    bin_of : ndarray ``(N,)`` int32
        Flat bin of each point: ``row * bins + column`` (row: y, column: x).
    counts : ndarray ``(bins, bins)`` int64
        Points per bin, ``[y, x]`` (origin at the lower left when shown with ``origin="lower"``).
    grid_bins : ndarray ``(H', W')`` int32
        The bin of each grid pixel's point, ``bins * bins`` where a pixel has none: a
        selection of bins becomes a mask on the grid with one lookup per pixel.
    """

    points: FeaturePoints
    bins: int
    extent: tuple[float, float, float, float]
    bin_of: np.ndarray
    counts: np.ndarray
    grid_bins: np.ndarray

    def histogram(self, selected: np.ndarray | None = None) -> np.ndarray:
        """Counts ``(bins, bins)`` of the ``selected`` points (bool ``(N,)``; None: all)."""
        bins = self.bin_of if selected is None else self.bin_of[selected]
        return np.bincount(bins, minlength=self.bins * self.bins).reshape(self.bins, self.bins)

    def mean_of(self, values: np.ndarray) -> np.ndarray:
        """Mean of per-point ``values`` ``(N,)`` in each bin ``(bins, bins)``; NaN in empty bins."""
        n = self.bins * self.bins
        total = np.bincount(self.bin_of, weights=np.asarray(values, np.float64), minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            return (total / self.counts.reshape(-1)).reshape(self.bins, self.bins)

    def majority_of(self, labels: np.ndarray) -> np.ndarray:
        """The most frequent of per-point int ``labels`` ``(N,)`` in each bin; 0 in empty bins."""
        labels = np.asarray(labels)
        ids, inverse = np.unique(labels, return_inverse=True)
        n = self.bins * self.bins
        votes = np.zeros((ids.size, n), np.int64)
        for i in range(ids.size):  # a handful of classes: one bincount each
            votes[i] = np.bincount(self.bin_of[inverse == i], minlength=n)
        out = ids[np.argmax(votes, axis=0)]
        out[self.counts.reshape(-1) == 0] = 0
        return out.reshape(self.bins, self.bins)

    def to_plot(self, col: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bin coordinates (column, row; may be fractional) -> plot coordinates (x, y)."""
        x0, x1, y0, y1 = self.extent
        return x0 + col * (x1 - x0) / self.bins, y0 + row * (y1 - y0) / self.bins

    def to_bins(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plot coordinates (x, y) -> fractional bin coordinates (column, row)."""
        x0, x1, y0, y1 = self.extent
        return (np.asarray(x) - x0) * self.bins / (x1 - x0), (np.asarray(y) - y0) * self.bins / (
            y1 - y0
        )


def density(
    points: FeaturePoints,
    *,
    bins: int = 256,
    extent: tuple[float, float, float, float] | None = None,
    clip: float = 0.1,
) -> Density:
    """Bin the points into a ``bins`` × ``bins`` histogram.

    Parameters
    ----------
    points : FeaturePoints
    bins : int
        Bins per axis, 8..4096, default 256.
    extent : (x0, x1, y0, y1), optional
        Default: the ``clip`` and ``100 - clip`` percentiles of each axis (outliers
        land in the edge bins instead of squeezing the rest into a few).
    clip : float
        Percent clipped on each side for the default extent, default 0.1.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or not 8 <= bins <= 4096:
        raise ValueError(f"bins must be an integer in 8..4096, got {bins!r}")
    if len(points) == 0:
        raise ValueError("no points to plot: no pixel of the slice has features")
    xy = points.xy
    if extent is None:
        lo = np.percentile(xy, clip, axis=0) if len(points) > 1000 else xy.min(axis=0)
        hi = np.percentile(xy, 100 - clip, axis=0) if len(points) > 1000 else xy.max(axis=0)
        hi = np.where(hi > lo, hi, lo + 1e-6)
        extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    x0, x1, y0, y1 = extent
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"extent must be (x0, x1, y0, y1) with x1 > x0, y1 > y0, got {extent!r}")
    col = ((xy[:, 0] - x0) * (bins / (x1 - x0))).astype(np.int32)
    row = ((xy[:, 1] - y0) * (bins / (y1 - y0))).astype(np.int32)
    np.clip(col, 0, bins - 1, out=col)
    np.clip(row, 0, bins - 1, out=row)
    bin_of = row * np.int32(bins) + col
    counts = np.bincount(bin_of, minlength=bins * bins).reshape(bins, bins)
    grid_bins = points.on_grid(bin_of, fill=np.int32(bins * bins))
    return Density(points, int(bins), (x0, x1, y0, y1), bin_of, counts, grid_bins)
