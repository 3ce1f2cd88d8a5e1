"""Bi-directional latent analysis (paper 004, §2.2): traversal, projective and receptive fields.

Every function takes a *latent model* (see :mod:`napari_brainfeatures.latent.model`):
a VAE, the PCA baseline or a bare :class:`~napari_brainfeatures.models.vae.BetaVAE`,
on numpy arrays of pre-processed sections.  What the population's codes say
(slider ranges, active latents, alignment with known factors) is in
:mod:`napari_brainfeatures.latent.codes`.

Disentanglement score (our reading of the paper).  The paper computes "the
covariance between each latent factor's impact scores" and
``s = Tr(A) / (Σᵢⱼ Aᵢⱼ − Tr(A))``.  With the impact matrix M (ROIs × L) the
latent factors are M's columns, so A is L × L.  A *centred* covariance
(``np.cov(M, rowvar=False)``) has off-diagonal terms of either sign, so its
denominator can be ~0 or negative and s is unstable; impact scores are KL
divergences (≥ 0, 0 = no impact), so by default we take the covariance about
that natural origin, ``A = MᵀM / R``: non-negative, s ∈ (0, ∞], large when
latents respond to different ROIs.  ``centered=True`` gives the literal
``np.cov`` version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from napari_brainfeatures.latent.bounds import C_MAX, N_IMAGES, SEED, STEP
from napari_brainfeatures.latent.model import as_latent_model
from napari_brainfeatures.latent.population import as_stack, check_rois
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = [
    "traverse",
    "projective_field",
    "projective_fields",
    "projective_rgb",
    "default_step",
    "ReceptiveFields",
    "receptive_fields",
    "gaussian_kl",
    "impact_covariance",
    "disentanglement_score",
]


def _z0_and_k(model: Any, z0: ArrayLike, k: int) -> NDArray[np.float32]:
    z = np.asarray(z0, dtype=np.float32).reshape(-1)
    if z.size != model.latent_dim:
        raise ValueError(f"z0 must have {model.latent_dim} values, got shape {np.shape(z0)!r}")
    if not 0 <= int(k) < model.latent_dim:
        raise ValueError(f"latent index k must be in 0..{model.latent_dim - 1}, got {k!r}")
    return z


def traverse(model: Any, z0: ArrayLike, k: int, values: ArrayLike) -> NDArray[np.float32]:
    """Decode ``z0 + c·e_k`` for each ``c`` in ``values``.

    Parameters
    ----------
    model : latent model or BetaVAE
    z0 : array (L,)
        Starting point (e.g. a section's encoding or the population mean).
    k : int
        Latent to move, 0-based.
    values : array (C,)
        Offsets c added to latent k.

    Returns
    -------
    float32 array (C, H, W)
    """
    model = as_latent_model(model)
    z = _z0_and_k(model, z0, k)
    c = np.asarray(values, dtype=np.float32).reshape(-1)
    zs = np.repeat(z[None], len(c), axis=0)  # (C, L)
    zs[:, k] += c
    return np.asarray(model.decode(zs), dtype=np.float32)


def default_step(model: Any) -> float:
    """0.005 (the paper's) when the model runs on CUDA, else 0.05 (10× fewer decodes)."""
    dev = getattr(model, "device", None)
    return 0.005 if dev is not None and torch.device(dev).type == "cuda" else 0.05


def projective_field(
    model: Any,
    z0: ArrayLike,
    k: int,
    *,
    c_max: float = 7.0,
    step: float | None = None,
    small: float | None = None,
    large: float | None = None,
    batch_size: int = 64,
) -> NDArray[np.float32]:
    """Per-pixel variance of decoded sections as latent k sweeps ``[-c_max, c_max]``.

    Parameters
    ----------
    model : latent model or BetaVAE
    z0 : array (L,)
        Centre of the sweep (the paper uses the latent distribution's mean).
    k : int
        Latent index, 0-based.
    c_max : float
        Half-range of c; default 7 (the paper's).
    step : float, optional
        Spacing of c.  Default :func:`default_step`: 0.005 (paper, 2801
        decodes) on CUDA, 0.05 (281 decodes) on CPU.
    small : float, optional
        Channels 0 and 1 use ``-small <= c <= 0`` and ``0 <= c <= small``;
        default ``c_max / 2`` (the quartiles beside the mean, as in Fig. 3A).
    large : float, optional
        Channel 2 uses ``|c| >= large``; default ``c_max / 2``.
    batch_size : int
        Decodes per call; default 64.

    Returns
    -------
    float32 array (H, W, 3)
        Variances for small negative, small positive and large |c|
        (the paper shows them as magenta, cyan and yellow); see
        :func:`projective_rgb` for display.
    """
    model = as_latent_model(model)
    z = _z0_and_k(model, z0, k)
    c_max = C_MAX.check("c_max", c_max)
    step = default_step(model) if step is None else STEP.check("step (None: the default)", step)
    if not (c_max > 0 and 0 < step <= c_max):
        raise ValueError(f"need c_max > 0 and 0 < step <= c_max, got {c_max!r}, {step!r}")
    small = c_max / 2 if small is None else float(small)
    large = c_max / 2 if large is None else float(large)
    if not (0 < small <= c_max and 0 <= large < c_max):
        raise ValueError(
            f"small must be in (0, c_max] and large in [0, c_max), got {small}, {large}"
        )
    n = int(round(c_max / step))
    cs = np.linspace(-n * step, n * step, 2 * n + 1)  # (C,)
    masks = np.stack([(cs >= -small) & (cs <= 0), (cs >= 0) & (cs <= small), np.abs(cs) >= large])
    s1: Any = 0.0
    s2: Any = 0.0
    for i in range(0, len(cs), batch_size):
        imgs = traverse(model, z, k, cs[i : i + batch_size]).astype(np.float64)  # (B, H, W)
        m = masks[:, i : i + batch_size].astype(np.float64)  # (3, B)
        s1 = s1 + np.einsum("cb,bhw->hwc", m, imgs)  # (H, W, 3)
        s2 = s2 + np.einsum("cb,bhw->hwc", m, imgs**2)
    counts = masks.sum(axis=1)  # (3,)
    mean = s1 / counts
    return np.maximum(s2 / counts - mean**2, 0).astype(np.float32)


def projective_fields(
    model: Any, z0: ArrayLike, *, c_max: float = 7.0, step: float | None = None, **options: Any
) -> ProgressGen[NDArray[np.float32]]:
    """Projective fields of every latent around ``z0`` (a progress generator).

    Parameters
    ----------
    model : latent model or BetaVAE
    z0 : array (L,)
        Centre of the sweeps (e.g. the population's mean code).
    c_max, step : float
        As in :func:`projective_field` (default 7 and :func:`default_step`).
    **options
        ``small``, ``large``, ``batch_size`` of :func:`projective_field`.

    Yields
    ------
    Progress
        One per latent.

    Returns
    -------
    float32 array (L, H, W, 3)
        ``projective_field(model, z0, k)`` for k = 0 … L−1; :func:`projective_rgb`
        scales the stack for display.
    """
    model = as_latent_model(model)
    z = _z0_and_k(model, z0, 0)
    n = model.latent_dim
    fields = []
    for k in range(n):
        fields.append(projective_field(model, z, k, c_max=c_max, step=step, **options))
        yield Progress(k + 1, n, f"projective field of z{k} ({k + 1}/{n})")
    return np.stack(fields)


def projective_rgb(field: ArrayLike, *, shared: bool = False) -> NDArray[np.float32]:
    """Scale projective fields to [0, 1] for display, each field on its own.

    Parameters
    ----------
    field : array (H, W, 3) or (L, H, W, 3)
        One field, or a stack (as :func:`projective_fields` gives).
    shared : bool
        Divide a field's three channels by one maximum (default False: each
        channel by its own).

    Returns
    -------
    float32 array, the shape of ``field``
    """
    f = np.asarray(field, dtype=np.float32)
    axes = (-3, -2, -1) if shared else (-3, -2)
    top = f.max(axis=axes, keepdims=True)
    return (f / np.maximum(top, np.finfo(np.float32).tiny)).astype(np.float32)


@dataclass
class ReceptiveFields:
    """Result of :func:`receptive_fields`.

    Attributes
    ----------
    impact : array (R, L)
        KL divergence between the latent Gaussians at the two extreme weights.
    roi_ids : list of int
    roi_names : list of str
    weights : array (W,)
    means, variances : array (R, W, L)
        Gaussian fits of the latent codes per ROI and weight.
    n_images : int
    """

    impact: NDArray[np.float64]
    roi_ids: list[int]
    roi_names: list[str]
    weights: NDArray[np.float64]
    means: NDArray[np.float64]
    variances: NDArray[np.float64]
    n_images: int
    extra: dict[str, Any] = field(default_factory=dict)


def gaussian_kl(m1: ArrayLike, v1: ArrayLike, m2: ArrayLike, v2: ArrayLike) -> NDArray[np.float64]:
    """KL(N(m1, v1) || N(m2, v2)) of 1-D Gaussians, elementwise (variances > 0)."""
    m1, v1, m2, v2 = (np.asarray(a, dtype=np.float64) for a in (m1, v1, m2, v2))
    return 0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def receptive_fields(
    model: Any,
    clean_images: ArrayLike,
    rois: ArrayLike,
    *,
    weights: ArrayLike = (-1.0, 1.0),
    roi_ids: list[int] | None = None,
    roi_names: list[str] | None = None,
    n_images: int | None = 832,
    seed: int = 0,
    var_floor: float = 1e-3,
) -> ProgressGen[ReceptiveFields]:
    """ROI × latent impact matrix from structured input perturbations (a progress generator).

    Each clean section x₀ is perturbed as ``x̃ = x₀ + w·p`` with ``p = −x₀``
    inside the ROI (removing its content; w = 1 blanks the ROI, w = −1
    doubles it), clipped to [0, 1], and encoded.  A Gaussian is fitted per
    latent to the codes of all sections; the impact of the ROI on a latent
    is ``KL(fit at min(weights) || fit at max(weights))``.

    Parameters
    ----------
    model : latent model or BetaVAE
    clean_images : array (N, H, W)
        Pre-processed sections without artifacts.
    rois : int array (H, W)
        ROI ids, 0 = background.
    weights : array (W,)
        Perturbation weights, at least two; default (−1, 1).
    roi_ids, roi_names : list, optional
        Which ids (default: every non-zero id present) and their names
        (default ``"ROI <id>"``).
    n_images : int or None
        Sections used (random subset, ``seed``); default 832 (the paper's) or
        all when fewer; None uses all.
    seed : int
    var_floor : float
        Variances are floored at ``var_floor`` × their mean over all fits, so
        inactive (collapsed) latents get ~0 impact instead of a ratio of
        numerical noise; default 1e-3.

    Yields
    ------
    Progress
        One per ROI and chunk of 64 sections.

    Returns
    -------
    ReceptiveFields
    """
    model = as_latent_model(model)
    imgs = as_stack(clean_images, name="clean_images").astype(np.float32, copy=False)
    labels = check_rois(rois, imgs.shape[1:])
    w = np.unique(np.asarray(weights, dtype=np.float64))
    if w.size < 2:
        raise ValueError(f"weights needs at least two different values, got {weights!r}")
    ids = sorted(int(i) for i in np.unique(labels) if i != 0) if roi_ids is None else list(roi_ids)
    if not ids:
        raise ValueError("the ROI map has no labelled region (all 0); paint or load ROIs first")
    names = list(roi_names) if roi_names is not None else [f"ROI {i}" for i in ids]
    if len(names) != len(ids):
        raise ValueError(f"{len(names)} roi_names for {len(ids)} ROIs {ids!r}")
    n_images = None if n_images is None else N_IMAGES.check("n_images (None: all)", n_images)
    seed = SEED.check("seed", seed)
    if n_images is not None and n_images < len(imgs):
        pick = np.random.default_rng(seed).choice(len(imgs), n_images, replace=False)
        imgs = imgs[np.sort(pick)]
    if len(imgs) < 2:
        raise ValueError(f"need at least 2 clean sections to fit Gaussians, got {len(imgs)}")
    masks = [labels == rid for rid in ids]  # (H, W) each
    for rid, mask in zip(ids, masks, strict=True):
        if not mask.any():
            raise ValueError(f"ROI id {rid} does not occur in the ROI map")
    codes = np.zeros((len(ids), w.size, len(imgs), model.latent_dim))  # (R, W, N, L)
    chunk = 64  # sections per perturbed copy: bounded memory at 320x448
    steps = len(ids) * -(-len(imgs) // chunk)
    for r, mask in enumerate(masks):
        for c0 in range(0, len(imgs), chunk):
            part = imgs[c0 : c0 + chunk]  # (B, H, W)
            for j, wj in enumerate(w):
                pert = part.copy()
                pert[:, mask] *= np.float32(1.0 - wj)  # x0 + w * (-x0) inside the ROI
                np.clip(pert, 0.0, 1.0, out=pert)
                codes[r, j, c0 : c0 + len(part)] = model.encode(pert)  # (B, L)
            done = r * -(-len(imgs) // chunk) + c0 // chunk + 1
            yield Progress(done, steps, f"receptive field of {names[r]} ({r + 1}/{len(ids)} ROIs)")
    means, variances = codes.mean(axis=2), codes.var(axis=2, ddof=1)  # (R, W, L)
    floor = max(var_floor * float(variances.mean()), 1e-12)
    v = np.maximum(variances, floor)
    impact = gaussian_kl(means[:, 0], v[:, 0], means[:, -1], v[:, -1])  # (R, L)
    return ReceptiveFields(impact, ids, names, w, means, variances, len(imgs))


def impact_covariance(impact: ArrayLike, *, centered: bool = False) -> NDArray[np.float64]:
    """L × L covariance A of the latents' impact profiles (columns of ``impact`` (R, L)).

    ``centered=False`` (default): ``MᵀM / R``, about the no-impact origin.
    ``centered=True``: ``np.cov(M, rowvar=False)``.
    """
    m = np.asarray(impact, dtype=np.float64)
    if m.ndim != 2 or min(m.shape) < 1:
        raise ValueError(f"impact must be a (ROIs, latents) matrix, got shape {m.shape!r}")
    if centered:
        if m.shape[0] < 2:
            raise ValueError("a centred covariance needs at least 2 ROIs")
        return np.atleast_2d(np.cov(m, rowvar=False))
    return m.T @ m / m.shape[0]


def disentanglement_score(impact: ArrayLike, *, centered: bool = False) -> float:
    """``s = Tr(A) / (Σᵢⱼ Aᵢⱼ − Tr(A))`` with A from :func:`impact_covariance`.

    Higher is more disentangled (latents respond to different ROIs); ``inf``
    when A is diagonal.  With ``centered=True`` the denominator may be
    negative (then so is s).
    """
    a = impact_covariance(impact, centered=centered)
    tr = float(np.trace(a))
    off = float(a.sum()) - tr
    if off == 0:
        return float("inf") if tr > 0 else float("nan")
    return tr / off
