"""A standard disentanglement measure on known factors: the mutual information gap (MIG).

The population paper's score (:func:`~.explore.disentanglement_score`) rests on
the KL impact of ROI perturbations on every latent, so latents a model does
not use (their codes barely move) still add spurious impact and move the
score a lot between runs.  The mutual information gap of Chen et al. (2018)
asks instead how much each *known generative factor* is captured by one latent
more than by any other:

    MIG = 1/K Σ_k (I(z_(1); v_k) − I(z_(2); v_k)) / H(v_k)

where ``z_(1)`` and ``z_(2)`` are the two latents sharing most mutual
information with factor ``v_k``.  An unused latent shares none with any
factor, so it neither helps nor hurts.  1 means every factor is read off one
latent alone; a code whose latents mix the factors (e.g. a rotation of a
perfect code), or one that copies a factor into two latents, scores near 0.

Codes and factors are continuous here, so both are discretised into ``bins``
equal-frequency bins (by rank, so the measure ignores monotone rescaling of
either) and the plug-in estimate of mutual information is used, as in
disentanglement_lib (Locatello et al. 2019, 20 bins).  The plug-in estimate is
biased upwards by about ``(bins − 1)² / (2N)`` nats for independent
variables, so a perfect code on N = 1000 sections scores about 0.95, not 1.

References
----------
R. T. Q. Chen, X. Li, R. Grosse, D. Duvenaud.  Isolating Sources of
Disentanglement in Variational Autoencoders.  NeurIPS 2018 (MIG, §4.1).
F. Locatello et al.  Challenging Common Assumptions in the Unsupervised
Learning of Disentangled Representations.  ICML 2019 (disentanglement_lib).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata
from sklearn.metrics import mutual_info_score

__all__ = ["discretize", "mutual_information", "mutual_info_gap", "impact_scores"]


def discretize(x: ArrayLike, *, bins: int = 20) -> NDArray[np.intp]:
    """Each column of ``x`` (N, D) as equal-frequency bin ids 0..bins−1 (by rank).

    Tied values share a bin (a constant column is one bin; a factor with a few
    levels keeps them), so an unused latent gets no spurious structure.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"expected (N, D) values, got shape {a.shape!r}")
    if not np.isfinite(a).all():
        raise ValueError("values contain NaN or infinite entries; drop those sections first")
    if not isinstance(bins, int | np.integer) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    ranks = rankdata(a, axis=0, method="average")  # (N, D) in 1..N
    return np.minimum(((ranks - 1) * bins / len(a)).astype(np.intp), bins - 1)


def mutual_information(
    codes: ArrayLike, factors: ArrayLike, *, bins: int = 20
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Plug-in mutual information of each latent with each factor, and the factors' entropies.

    Parameters
    ----------
    codes : array (N, L)
    factors : array (N, F)
    bins : int
        Equal-frequency bins per variable; default 20.

    Returns
    -------
    mi : float64 array (L, F)
        ``I(z_j; v_k)`` in nats.
    entropy : float64 array (F,)
        ``H(v_k)`` in nats (0 for a constant factor).
    """
    z, v = _check(codes, factors)
    dz, dv = discretize(z, bins=bins), discretize(v, bins=bins)  # (N, L), (N, F)
    mi = np.array([[mutual_info_score(dv[:, k], dz[:, j]) for k in range(dv.shape[1])]
                   for j in range(dz.shape[1])])  # fmt: skip
    entropy = np.array([mutual_info_score(dv[:, k], dv[:, k]) for k in range(dv.shape[1])])
    return mi, entropy


def mutual_info_gap(
    codes: ArrayLike,
    factors: ArrayLike,
    *,
    bins: int = 20,
    factor_names: list[str] | None = None,
) -> dict[str, Any]:
    """The mutual information gap (Chen et al. 2018) of latent codes on known factors.

    Parameters
    ----------
    codes : array (N, L)
        Latent codes of the sections (e.g. ``model.encode(clean)``); L >= 1.
    factors : array (N, F)
        The known generative factors of the same sections (the synthetic
        population's ``factors``); constant factors are left out.
    bins : int
        Equal-frequency bins per variable; default 20 (disentanglement_lib's).
    factor_names : list of str, optional
        Names of the F factors (default ``"factor <k>"``).

    Returns
    -------
    dict
        ``mig`` (float in [0, 1]: the mean of the per-factor gaps), ``gaps``
        (factor name -> normalised gap), ``best_latent`` (factor name -> the
        latent with most information), ``mi`` (L, F) nats, ``entropy`` (F,)
        nats, ``n_factors`` (factors scored) and ``bins``.

    Raises
    ------
    ValueError
        Mismatched or too few sections, non-finite values, or no factor that varies.
    """
    z, v = _check(codes, factors)
    names = list(factor_names) if factor_names is not None else None
    if names is not None and len(names) != v.shape[1]:
        raise ValueError(f"{len(names)} factor_names for {v.shape[1]} factors")
    names = names or [f"factor {k}" for k in range(v.shape[1])]
    mi, entropy = mutual_information(z, v, bins=bins)
    scored = np.flatnonzero(entropy > 0)
    if not scored.size:
        raise ValueError("no factor varies over these sections: MIG needs at least one")
    top = np.sort(mi, axis=0)[::-1]  # (L, F), most informative latent first
    second = top[1] if len(top) > 1 else np.zeros(mi.shape[1])
    gap = (top[0] - second)[scored] / entropy[scored]  # (K,)
    return {
        "mig": float(np.clip(gap.mean(), 0.0, 1.0)),
        "gaps": {names[k]: float(g) for k, g in zip(scored, gap, strict=True)},
        "best_latent": {names[k]: int(np.argmax(mi[:, k])) for k in scored},
        "mi": mi,
        "entropy": entropy,
        "n_factors": int(scored.size),
        "bins": int(bins),
    }


def impact_scores(impact: ArrayLike, active: ArrayLike | None = None) -> dict[str, Any]:
    """The paper's score over all latents and over the active ones, side by side.

    Parameters
    ----------
    impact : array (R, L)
        A receptive-field impact matrix (:func:`~.explore.receptive_fields`).
    active : bool array (L,), optional
        Which latents vary over the population (:func:`~.codes.active_units`).

    Returns
    -------
    dict
        ``disentanglement`` (:func:`~.explore.disentanglement_score` over all
        L latents) and, with ``active``, ``disentanglement_active`` (over the
        active latents only; None with fewer than two: one latent alone has no
        off-diagonal covariance, and the score would be a meaningless ``inf``)
        and ``active`` (their count).
    """
    from napari_brainfeatures.latent.explore import disentanglement_score

    m = np.asarray(impact, dtype=np.float64)
    out: dict[str, Any] = {"disentanglement": disentanglement_score(m)}
    if active is not None:
        a = np.asarray(active, dtype=bool)
        if a.shape != (m.shape[1],):
            raise ValueError(f"active must have one entry per latent ({m.shape[1]}), got {a.shape}")
        out["disentanglement_active"] = disentanglement_score(m[:, a]) if a.sum() > 1 else None
        out["active"] = int(a.sum())
    return out


def _check(codes: ArrayLike, factors: ArrayLike) -> tuple[NDArray[Any], NDArray[Any]]:
    z = np.asarray(codes, dtype=np.float64)
    v = np.asarray(factors, dtype=np.float64)
    z = z[:, None] if z.ndim == 1 else z
    v = v[:, None] if v.ndim == 1 else v
    if z.ndim != 2 or v.ndim != 2 or len(z) != len(v) or len(z) < 3:
        raise ValueError(
            f"codes (N, L) and factors (N, F) must share N >= 3 sections, got shapes "
            f"{z.shape!r} and {v.shape!r}"
        )
    return z, v
