"""Non-negative matrix factorisation of dense feature maps (paper 001).

``X ≈ W H`` with ``X`` the ``(N, D)`` feature rows (one per pixel; post-ReLU, so
non-negative), ``W`` the ``(N, k)`` coefficients (one heatmap per factor) and
``H`` the ``(k, D)`` factors (``components_``).  The paper writes ``X ≈ U V``;
here, as in scikit-learn, the per-pixel coefficients are returned by
:meth:`FeatureNMF.transform`.

The default solver is block HALS (hierarchical alternating least squares, i.e.
coordinate descent on columns) in PyTorch.  ``X`` enters an iteration only through
``X Hᵀ`` (per row block, to update that block of ``W``) and ``Wᵀ X`` (accumulated
over blocks, to update ``H``), so one iteration is **one pass over X** in row
blocks: memory beyond ``X`` itself is ``W`` plus one block.  The loss is tracked
for free from ``WᵀX``, ``WᵀW`` and ``‖X‖²``.  Float32, all threads, CUDA when
present.  ``solver="sklearn"`` wraps :class:`sklearn.decomposition.NMF` (the
reference) and ``"sklearn-minibatch"`` :class:`~sklearn.decomposition.MiniBatchNMF`.

:func:`select_factors` implements the paper's greedy ROI-aligned factor selection;
:func:`factor_maps` and :func:`rgb_composite` turn coefficients into heatmaps.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_brainfeatures._util.device import resolve_device
from napari_brainfeatures.factors.nmf import (
    SOLVERS,
    NMFResult,
    _as_rows,
    _fit_sklearn,
    _fit_torch,
    _load_rows,
    _solve_w,
    check_features,
)
from napari_brainfeatures.progress import Progress, run

__all__ = [
    "FeatureNMF",
    "NMFResult",
    "fit_nmf",
    "check_features",
    "factor_maps",
    "finite_rows",
    "rgb_composite",
    "Selection",
    "select_factors",
]


def fit_nmf(
    X: Any,
    n_components: int = 15,
    *,
    solver: str = "auto",
    init: str = "nndsvda",
    max_iter: int = 200,
    tol: float | None = None,
    seed: int = 0,
    device: str | None = None,
    block_rows: int = 32_768,
    sweeps: tuple[int, int] = (3, 6),
) -> Generator[Progress, None, NMFResult]:
    """Factorise ``X ≈ W H`` (non-negative), yielding one :class:`Progress` per iteration.

    Parameters
    ----------
    X : array ``(N, D)`` or ``(H, W, D)``, numpy or dask
        Non-negative finite features (post-ReLU).  Loaded into memory as float32
        (no copy for a C-contiguous float32 numpy array).
    n_components : int
        Number of factors ``k``, 1..min(N, D); default 15 (the paper).
    solver : {'auto', 'torch', 'sklearn', 'sklearn-minibatch'}
        'auto' = 'torch' (block HALS in PyTorch).
    init : {'nndsvda', 'random'}
        Start, as in scikit-learn.
    max_iter : int
        At most this many iterations (passes over ``X``), default 200.
    tol : float, optional
        Torch: stop when the relative error falls by less than ``tol`` (relative) in
        one iteration; default 1e-5, which reaches the error scikit-learn's default
        (tol 1e-4 on its own, gradient-based measure) reaches.  scikit-learn solvers:
        their own criterion, default 1e-4.
    seed : int
        Seed for 'random' init and scikit-learn.
    device : str, optional
        'cpu', 'cuda' or None (CUDA when available).  Torch solver only.
    block_rows : int
        Rows per block (memory beyond ``X``: ``W`` plus one block).
    sweeps : (int, int)
        HALS sweeps over ``W`` per block and over ``H`` per iteration, default (3, 6):
        reusing each block's ``X Hᵀ`` for a few sweeps is nearly free and halves the
        iterations.

    Returns
    -------
    NMFResult
        ``W (N, k)`` in the row order of ``X`` (reshape with :func:`factor_maps`).
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS!r}, got {solver!r}")
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if tol is None:
        tol = 1e-4 if solver.startswith("sklearn") else 1e-5
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if not isinstance(block_rows, int) or block_rows < 1:
        raise ValueError(f"block_rows must be a positive integer, got {block_rows!r}")
    rows = _load_rows(_as_rows(X), block_rows)
    if solver.startswith("sklearn"):
        return (
            yield from _fit_sklearn(
                rows,
                n_components,
                max_iter=max_iter,
                tol=tol,
                seed=seed,
                minibatch=solver.endswith("minibatch"),
                init=init,
            )
        )
    return (
        yield from _fit_torch(
            rows,
            n_components,
            max_iter=max_iter,
            tol=tol,
            seed=seed,
            device=device,
            block=block_rows,
            inner=sweeps,
            init=init,
        )
    )


class FeatureNMF:
    """Estimator-style NMF of feature maps: ``X ≈ transform(X) @ components_``.

    Parameters
    ----------
    n_components : int
        Number of factors ``k``, default 15.
    solver, init, max_iter, tol, seed, device, block_rows
        As in :func:`fit_nmf`.

    Attributes
    ----------
    components_ : ndarray ``(k, D)`` float32
    reconstruction_err_ : float
        ``‖X − WH‖_F`` on the training data.
    rel_error_ : float
        ``‖X − WH‖_F / ‖X‖_F``.
    n_iter_ : int
    history_ : list of float
    """

    def __init__(
        self,
        n_components: int = 15,
        *,
        solver: str = "auto",
        init: str = "nndsvda",
        max_iter: int = 200,
        tol: float | None = None,
        seed: int = 0,
        device: str | None = None,
        block_rows: int = 32_768,
    ) -> None:
        self.n_components, self.solver, self.init = n_components, solver, init
        self.max_iter, self.tol, self.seed = max_iter, tol, seed
        self.device, self.block_rows = device, block_rows

    def _gen(self, X: Any) -> Generator[Progress, None, NMFResult]:
        return fit_nmf(
            X,
            self.n_components,
            solver=self.solver,
            init=self.init,
            max_iter=self.max_iter,
            tol=self.tol,
            seed=self.seed,
            device=self.device,
            block_rows=self.block_rows,
        )

    def _keep(self, res: NMFResult) -> None:
        self.components_, self.n_iter_, self.history_ = res.H, res.n_iter, res.history
        self.reconstruction_err_, self.rel_error_ = res.reconstruction_err, res.rel_error

    def fit(self, X: Any) -> FeatureNMF:
        """Fit on ``X (N, D)`` or ``(H, W, D)``; returns self."""
        self._keep(run(self._gen(X)))
        return self

    def fit_transform(self, X: Any) -> np.ndarray:
        """Fit and return the coefficients, shape ``X.shape[:-1] + (k,)``, float32."""
        res = run(self._gen(X))
        self._keep(res)
        return res.W.reshape(*X.shape[:-1], -1)

    def transform(self, X: Any, *, sweeps: int = 50) -> np.ndarray:
        """Coefficients of new rows for the fitted factors, shape ``X.shape[:-1] + (k,)``.

        Solved by clipped least squares then ``sweeps`` HALS sweeps (NNLS).
        """
        if not hasattr(self, "components_"):
            raise RuntimeError("FeatureNMF is not fitted yet; call fit(X) first")
        rows = _load_rows(_as_rows(X), self.block_rows)
        if rows.shape[1] != self.components_.shape[1]:
            raise ValueError(
                f"X has {rows.shape[1]} features but the factors have "
                f"{self.components_.shape[1]}; use features from the same model"
            )
        check_features(rows, block=self.block_rows)
        dev = resolve_device(self.device)
        H = torch.from_numpy(self.components_).to(dev)
        Wt, _ = _solve_w(rows, H, None, block=self.block_rows, sweeps=sweeps, dev=dev)
        return Wt.cpu().numpy().T.reshape(*X.shape[:-1], -1)


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


# -- heatmaps ---------------------------------------------------------------------------------
def factor_maps(
    U: Any, shape: tuple[int, ...], *, valid: np.ndarray | None = None, fill: float = np.nan
) -> np.ndarray:
    """Coefficients as one heatmap per factor.

    Parameters
    ----------
    U : array ``(N, k)`` or ``shape + (k,)``
        Coefficients, e.g. :meth:`FeatureNMF.fit_transform` output.
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


# -- greedy ROI-aligned selection (paper 001) -------------------------------------------------
@dataclass
class Selection:
    """Result of :func:`select_factors`.

    Attributes
    ----------
    scores : ndarray ``(k, r)`` float
        Total score ``s_t = s_c − s_l`` of factor i for ROI a.
    coverage, leakage : ndarray ``(k, r)`` int
        Active points inside the ROI, and outside it (before λ).
    roi_ids : list of int
        Label id of each ROI column.
    roi_sizes : list of int
        Points in each ROI.
    pairs : list of (factor, roi id, score)
        The picks, in the order they were picked.
    coverage_fraction : list of float
        Per pick, the fraction of the ROI's points where the factor is active.
    thresholds : list of float
        Per factor, the value a coefficient must exceed to count as active.
    params : dict
        ``lam``, ``normalise``, ``eps``, ``outside``, ``p``.
    """

    scores: np.ndarray
    coverage: np.ndarray
    leakage: np.ndarray
    roi_ids: list[int]
    roi_sizes: list[int]
    pairs: list[tuple[int, int, float]]
    coverage_fraction: list[float]
    thresholds: list[float]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def factors(self) -> list[int]:
        """The selected factors, in pick order."""
        return [f for f, _, _ in self.pairs]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "scores": self.scores.tolist(),
            "coverage": self.coverage.tolist(),
            "leakage": self.leakage.tolist(),
            "roi_ids": self.roi_ids,
            "roi_sizes": self.roi_sizes,
            "pairs": [
                {"factor": f, "roi": a, "score": s, "coverage_fraction": c}
                for (f, a, s), c in zip(self.pairs, self.coverage_fraction, strict=True)
            ],
            "thresholds": self.thresholds,
            "params": self.params,
        }


def _row_blocks(a: Any, n: int, block: int = 1_048_576) -> Any:
    for s in range(0, n, block):
        yield s, np.asarray(a[s : s + block])


def select_factors(
    U: Any,
    rois: Any,
    *,
    lam: float = 0.5,
    p: int | None = None,
    normalise: str = "none",
    eps: float = 0.0,
    outside: str = "all",
    roi_ids: list[int] | None = None,
) -> Selection:
    """Greedy selection of factors aligned with ROIs (paper 001).

    For factor i and ROI a (point set A): coverage ``s_c = #{x ∈ A : v_i(x) > t_i}``,
    leakage ``s_l = λ · #{x ∉ A : v_i(x) > t_i}``, score ``s_t = s_c − s_l``.  From the
    ``(k, r)`` score matrix, repeatedly pick the highest score whose factor and ROI
    are both not yet picked.  One guard beyond the paper: a factor that is not
    active anywhere in an ROI (``s_c = 0``) is never picked for it, otherwise a
    dead factor (all zero, score 0) "wins" every ROI whose live factors all leak
    more than they cover; such an ROI stays unpicked.

    Parameters
    ----------
    U : array ``(N, k)`` or ``(H, W, k)``, numpy or dask
        Non-negative coefficients; NaN rows (no data) are ignored.
    rois : int array ``(N,)`` or ``(H, W)``
        ROI label ids; 0 = no ROI.
    lam : float
        Leakage weight λ >= 0, default 0.5 (the paper's whole-slice value; 0.3 for
        cortical layers).  Larger favours localised factors.
    p : int, optional
        Number of picks, default ``min(k, r)`` (fewer when the guard above leaves
        ROIs without a candidate).
    normalise : {'none', 'area'}
        'none' (the paper): raw counts, so large ROIs dominate.  'area': coverage
        divided by ``|A|`` and leakage by the number of points outside ``A``, so
        every ROI counts alike.
    eps : float in [0, 1)
        Relative activity threshold: ``t_i = eps × (99.9th percentile of v_i)``.
        0 (default, the paper's ``v_i > 0``) suits coefficients from HALS / coordinate
        descent, which are exactly 0 where a factor is absent (about half of them on
        the synthetic slab's dense CNN features).  Coefficients from multiplicative
        updates or any smoothing are rarely exactly 0, so every factor then "covers"
        everything; use eps ≈ 0.05–0.1 there.  Measured on those features (k = 15,
        six areas, λ = 0.5): with this solver every eps in 0–0.1 gave each area a
        factor active on ≥ 50 % of it; with scikit-learn's factors raw counts needed
        eps = 0.1 for the sixth area, while ``normalise='area'`` needed no threshold.
    outside : {'all', 'labelled'}
        Which points outside ``A`` count as leakage: all (the paper, for a fully
        annotated slice) or only those in other ROIs (for sparsely painted labels).
    roi_ids : list of int, optional
        ROIs to use (default: every non-zero id present).

    Returns
    -------
    Selection
    """
    if normalise not in ("none", "area"):
        raise ValueError(f"normalise must be 'none' or 'area', got {normalise!r}")
    if outside not in ("all", "labelled"):
        raise ValueError(f"outside must be 'all' or 'labelled', got {outside!r}")
    if not lam >= 0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")
    if not 0 <= eps < 1:
        raise ValueError(f"eps must be in [0, 1), got {eps!r}")
    k = U.shape[-1]
    U = U.reshape(-1, k)
    n = U.shape[0]
    rois = np.asarray(rois).reshape(-1)
    if rois.dtype.kind not in "uib":
        raise ValueError(
            f"rois must be integer label ids, got dtype {rois.dtype} (an image rather than "
            "labels?); pass the painted labels"
        )
    if rois.shape[0] != n:
        raise ValueError(f"rois have {rois.shape[0]} points but U has {n} rows; they must match")
    if rois.size and rois.min() < 0:
        raise ValueError(f"rois must be non-negative label ids, got minimum {rois.min()!r}")
    present = [int(i) for i in np.unique(rois) if i != 0]
    ids = present if roi_ids is None else [int(i) for i in roi_ids]
    if not ids:
        raise ValueError("no ROI labels found (rois are all 0); paint at least one ROI")
    r = len(ids)
    p = min(k, r) if p is None else int(p)
    if not 1 <= p <= min(k, r):
        raise ValueError(f"p must be in 1..min(k, r) = 1..{min(k, r)}, got {p!r}")
    lut = np.zeros(int(max(rois.max(), max(ids))) + 1, dtype=np.int64)  # id -> column + 1
    lut[ids] = np.arange(1, r + 1)

    thr = np.zeros(k)
    if eps > 0:
        step = max(1, n // 1_000_000)
        sample = np.asarray(U[::step], dtype=np.float64)
        thr = eps * np.nanpercentile(sample, 99.9, axis=0)
    cov = np.zeros((k, r + 1), dtype=np.int64)  # column 0: active outside every ROI
    sizes = np.zeros(r + 1, dtype=np.int64)
    for s, Ub in _row_blocks(U, n):
        col = lut[rois[s : s + len(Ub)]]
        ok = np.isfinite(Ub).all(axis=1)
        sizes += np.bincount(col[ok], minlength=r + 1)
        for i in range(k):
            cov[i] += np.bincount(col[ok & (Ub[:, i] > thr[i])], minlength=r + 1)
    total = cov.sum(axis=1, keepdims=True) if outside == "all" else cov[:, 1:].sum(1, keepdims=True)
    base = sizes.sum() if outside == "all" else sizes[1:].sum()
    coverage, leakage = cov[:, 1:], total - cov[:, 1:]
    if normalise == "area":
        out_sizes = np.maximum(base - sizes[1:], 1)
        scores = coverage / np.maximum(sizes[1:], 1) - lam * leakage / out_sizes
    else:
        scores = coverage - lam * leakage.astype(np.float64)

    pairs: list[tuple[int, int, float]] = []
    used_f: set[int] = set()
    used_a: set[int] = set()
    for flat in np.argsort(-scores, axis=None, kind="stable"):
        i, a = divmod(int(flat), r)
        if i in used_f or a in used_a or coverage[i, a] == 0:
            continue
        pairs.append((i, ids[a], float(scores[i, a])))
        used_f.add(i)
        used_a.add(a)
        if len(pairs) == p:
            break
    frac = [float(coverage[i, ids.index(a)] / max(sizes[1 + ids.index(a)], 1)) for i, a, _ in pairs]
    return Selection(
        scores=np.asarray(scores, dtype=np.float64),
        coverage=coverage,
        leakage=leakage,
        roi_ids=ids,
        roi_sizes=[int(x) for x in sizes[1:]],
        pairs=pairs,
        coverage_fraction=frac,
        thresholds=[float(t) for t in thr],
        params={"lam": lam, "normalise": normalise, "eps": eps, "outside": outside, "p": p},
    )
