"""Greedy ROI-aligned factor selection (paper 001).

For factor i and ROI a (point set A): coverage ``s_c = #{x ∈ A : v_i(x) > t_i}``,
leakage ``s_l = λ · #{x ∉ A : v_i(x) > t_i}``, score ``s_t = s_c − s_l``; from the
``(k, r)`` score matrix, :func:`select_factors` repeatedly picks the highest score
whose factor and ROI are both not yet picked.  Its options are
:class:`~.options.SelectOptions`.

The NMF itself lives in :mod:`.nmf` and the heatmaps in :mod:`.maps`; their names
are importable from here as well (``from napari_brainfeatures.factors.select import
fit_nmf, select_factors``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_brainfeatures.factors.maps import factor_maps, finite_rows, rgb_composite
from napari_brainfeatures.factors.nmf import FeatureNMF, NMFResult, check_features, fit_nmf
from napari_brainfeatures.factors.options import SelectOptions

__all__ = [
    "FeatureNMF",
    "NMFResult",
    "fit_nmf",
    "check_features",
    "factor_maps",
    "finite_rows",
    "rgb_composite",
    "Selection",
    "WEAK_COVERAGE",
    "check_rois",
    "select_factors",
]


#: A pick active on less than this share of its ROI is flagged as weak.
WEAK_COVERAGE = 0.25
#: ... and one active outside its ROI on more than this many times the ROI's size: with
#: ROIs painted as strokes, every factor leaks tens of times the strokes' area.
WEAK_LEAKAGE = 3.0


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

    def fractions(self) -> tuple[np.ndarray, np.ndarray]:
        """Coverage and leakage ``(k, r)`` as fractions of each ROI's size.

        Coverage: the share of the ROI where the factor is active (0–1).
        Leakage: active points outside the ROI per point of the ROI (before λ;
        above 1 when the factor is active on more tissue outside than the ROI has).
        """
        sizes = np.maximum(np.asarray(self.roi_sizes, np.float64), 1.0)[None, :]  # (1, r)
        return self.coverage / sizes, self.leakage / sizes

    def weak_picks(
        self, *, min_coverage: float = WEAK_COVERAGE, max_leakage: float = WEAK_LEAKAGE
    ) -> list[tuple[int, int, str]]:
        """Picks not to trust as an area's factor: ``(factor, roi id, why)``.

        A pick is weak when its score is not positive (it leaks more than λ
        allows for what it covers), when it is active on less than
        ``min_coverage`` of its ROI (default a quarter), or when it is active
        outside the ROI on more than ``max_leakage`` times the ROI's size
        (default 3: ROIs painted as strokes rather than whole areas).
        """
        cover, leak = self.fractions()
        out = []
        for f, a, score in self.pairs:
            j = self.roi_ids.index(a)
            frac, out_frac = float(cover[f, j]), float(leak[f, j])
            if score <= 0:
                out.append((f, a, f"score {score:.4g} <= 0: leaks more than it covers"))
            elif frac < min_coverage:
                out.append((f, a, f"active on {frac:.0%} of the ROI only"))
            elif out_frac > max_leakage:
                out.append((f, a, (
                    f"active outside the ROI on {out_frac:.0f}x its size: if the ROIs are "
                    "strokes, select against whole areas (e.g. the predicted areas)"
                )))  # fmt: skip
        return out

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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        """The inverse of :meth:`to_dict` (e.g. a selection saved with the factors)."""
        pairs = d.get("pairs", [])
        return cls(
            scores=np.asarray(d["scores"], dtype=np.float64),
            coverage=np.asarray(d["coverage"], dtype=np.int64),
            leakage=np.asarray(d["leakage"], dtype=np.int64),
            roi_ids=[int(a) for a in d["roi_ids"]],
            roi_sizes=[int(n) for n in d["roi_sizes"]],
            pairs=[(int(q["factor"]), int(q["roi"]), float(q["score"])) for q in pairs],
            coverage_fraction=[float(q["coverage_fraction"]) for q in pairs],
            thresholds=[float(t) for t in d.get("thresholds", [])],
            params=dict(d.get("params", {})),
        )


def check_rois(rois: Any, *, what: str = "rois") -> list[int]:
    """Validate ROI label ids; return the non-zero ids present, ascending.

    Parameters
    ----------
    rois : int array, any shape
        Label ids, 0 = no ROI.
    what : str
        How errors name the ROIs (a file, a layer).

    Raises
    ------
    ValueError
        Not integer ids (an image passed as labels), negative ids, or no ROI at all.
    """
    rois = np.asarray(rois)
    if rois.dtype.kind not in "uib":
        raise ValueError(
            f"{what} must be integer label ids, got dtype {rois.dtype} (an image rather than "
            "labels?); pass the painted labels"
        )
    if rois.size and rois.min() < 0:
        raise ValueError(f"{what} must be non-negative label ids, got minimum {rois.min()!r}")
    present = [int(i) for i in np.unique(rois) if i != 0]
    if not present:
        raise ValueError(
            f"no ROI labels found in {what} (all 0 at the features' pixels); paint at least one ROI"
        )
    return present


def _row_blocks(a: Any, n: int, block: int = 1_048_576) -> Any:
    for s in range(0, n, block):
        yield s, np.asarray(a[s : s + block])


def select_factors(
    U: Any,
    rois: Any,
    *,
    options: SelectOptions | None = None,
    roi_ids: list[int] | None = None,
    mask: Any = None,
    **overrides: Any,
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
    options : SelectOptions, optional
        The options below as one object; default :class:`SelectOptions()`.
    roi_ids : list of int, optional
        ROIs to use (default: every non-zero id present).
    mask : bool array ``(N,)`` or ``(H, W)``, optional
        Points that count (e.g. in tissue, patch inside tissue); the others are
        ignored like NaN rows: neither coverage nor leakage.
    **overrides
        Any option, set on top of ``options``:
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

    Returns
    -------
    Selection

    Raises
    ------
    OptionError
        An option out of range (e.g. ``lam < 0``), the value quoted.
    """
    opts = dataclasses.replace(options or SelectOptions(), **overrides)
    lam, normalise, eps, outside = opts.lam, opts.normalise, opts.eps, opts.outside
    k = U.shape[-1]
    U = U.reshape(-1, k)
    n = U.shape[0]
    rois = np.asarray(rois).reshape(-1)
    if rois.shape[0] != n:
        raise ValueError(f"rois have {rois.shape[0]} points but U has {n} rows; they must match")
    counted = None if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if counted is not None and counted.shape[0] != n:
        raise ValueError(f"mask has {counted.shape[0]} points but U has {n} rows; they must match")
    present = check_rois(rois if counted is None else rois[counted])
    ids = present if roi_ids is None else [int(i) for i in roi_ids]
    if not ids:
        raise ValueError("roi_ids is empty; give at least one ROI id (or None: every id present)")
    r = len(ids)
    p = opts.check_p(k, r)
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
        if counted is not None:
            ok &= counted[s : s + len(Ub)]
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
