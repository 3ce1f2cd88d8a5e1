"""What a population's latent codes say: slider ranges, active latents, known factors.

:func:`population_codes` encodes a population once, as a latent model sees it
(pre-processed with the model's constants, centre-cropped to its input), and
returns what latent sliders need: the codes, their mean and spread, which
latents the model uses, where its input sits in the sections and a display
range.  :func:`active_units` and :func:`factor_alignment` read the codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import rankdata

from napari_brainfeatures.latent.model import as_latent_model
from napari_brainfeatures.latent.population import center_crop, crop_offset, preprocess_for
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = [
    "PopulationCodes",
    "population_codes",
    "display_range",
    "active_units",
    "factor_alignment",
]

NEUTRAL_STD = 7 / 3  # no population: sliders span ±7, the paper's traversal range


@dataclass(frozen=True, eq=False)
class PopulationCodes:
    """A population's latent codes, as :func:`population_codes` returns them.

    Attributes
    ----------
    codes : float32 array (N, L) or None
        The sections' codes; None without a population that fits the model.
    mean, std : float32 array (L,)
        Mean and standard deviation of each latent's code over the
        population (without one: 0 and 7/3, so ±3 std is the paper's ±7).
    active : bool array (L,) or None
        Which latents vary over the population (:func:`active_units`); None
        with fewer than two sections.
    offset : (int, int) or None
        ``(top, left)`` of the model's input in the sections ((0, 0) when
        they have its size, more for larger sections, whose centre it sees).
    section_shape : (int, int) or None
        (H, W) of the sections.
    clim : (float, float)
        Contrast limits for decoded sections (:func:`display_range` of the
        pre-processed population, or of the decoded origin without one).
    """

    codes: NDArray[np.float32] | None
    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    active: NDArray[np.bool_] | None
    offset: tuple[int, int] | None
    section_shape: tuple[int, int] | None
    clim: tuple[float, float]

    def bounds(self, spread: float = 3.0) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Slider ranges ``mean ± spread·std`` per latent, ``(low (L,), high (L,))``.

        The spread is floored at 1e-3, so an unused latent still gets a range.
        """
        half = np.float32(spread) * np.maximum(self.std, np.float32(1e-3))
        return self.mean - half, self.mean + half


def display_range(images: ArrayLike) -> tuple[float, float]:
    """Contrast limits for sections: 0 to the 99.5th percentile of a sample of ≤ ~10⁶ pixels.

    Pre-processed sections sit around 1/clip (the dataset's mean brightness)
    in [0, 1]; limits (0, 1) would show them as a dim, nearly flat image.
    Kept fixed while latent sliders move, so brightness changes stay visible.
    Non-finite pixels are ignored; (0, 1) when there are no finite ones.
    """
    flat = np.asarray(images, dtype=np.float32).reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    top = float(np.nanpercentile(sample, 99.5)) if np.isfinite(sample).any() else 1.0
    return 0.0, max(top, 1e-6)


def population_codes(
    model: Any,
    images: ArrayLike | None,
    *,
    meta: Mapping[str, Any] | None = None,
    chunk: int = 256,
) -> ProgressGen[PopulationCodes]:
    """Encode a population for latent sliders (a progress generator).

    Parameters
    ----------
    model : latent model or BetaVAE
    images : array (N, H, W) or None
        Raw sections, pre-processed here as the model's training sections were
        (:func:`~.population.preprocess_for` with ``meta``).  Sections larger
        than the model's input are encoded by their centre.  None, or sections
        smaller than the input: a neutral result (no codes, see
        :class:`PopulationCodes`).
    meta : mapping, optional
        The model file's metadata (its ``"preprocessing"`` constants).
    chunk : int
        Sections per ``encode`` call and progress record; default 256.

    Yields
    ------
    Progress
        One per chunk of sections.

    Returns
    -------
    PopulationCodes
    """
    model = as_latent_model(model)
    scaled, offset = None, None
    if images is not None:
        scaled = preprocess_for(images, meta)  # (N, H, W) in [0, 1]
        try:
            offset = crop_offset(scaled.shape, model.image_shape)
        except ValueError:
            offset = None  # smaller than the model's input: nothing to encode
    if scaled is None or offset is None:
        mean = np.zeros(model.latent_dim, np.float32)
        std = np.full(model.latent_dim, NEUTRAL_STD, np.float32)
        clim = display_range(model.decode(mean[None]))  # of the decoded origin
        yield Progress(1, 1, "no population for this model: sliders around 0")
        return PopulationCodes(None, mean, std, None, None, None, clim)
    centre = center_crop(scaled, model.image_shape)  # (N, h, w), a view
    parts, n = [], len(scaled)
    for i in range(0, n, chunk):
        parts.append(model.encode(centre[i : i + chunk]))  # (B, L)
        yield Progress(min(i + chunk, n), n, f"encoding sections {i + 1}–{min(i + chunk, n)}")
    codes = np.concatenate(parts).astype(np.float32, copy=False)  # (N, L)
    active = active_units(codes) if n >= 2 else None
    h, w = scaled.shape[1:]
    return PopulationCodes(
        codes, codes.mean(0), codes.std(0), active, offset, (h, w), display_range(scaled)
    )


def active_units(codes: ArrayLike, *, threshold: float = 0.01) -> NDArray[np.bool_]:
    """Which latents a model uses: the variance of each latent's code over the population.

    Burda et al.'s activity rule (Importance Weighted Autoencoders, 2016): a
    latent is *active* when its encoding (the posterior mean, what
    ``encode`` returns) varies over the sections by more than ``threshold``.
    A β-VAE switches latents off (posterior = prior for every section): their
    codes barely move, their sliders change nothing, and their impact scores
    are responses of an unused unit.

    Parameters
    ----------
    codes : array (N, L)
        Latent codes of the population (N ≥ 2).
    threshold : float
        Variance threshold in latent units; default 0.01 (the paper's prior has
        variance 1).

    Returns
    -------
    bool array (L,)
    """
    z = np.asarray(codes, dtype=np.float64)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"codes must be (N, L) with N >= 2, got shape {z.shape!r}")
    return z.var(axis=0, ddof=1) > threshold


def factor_alignment(
    codes: ArrayLike, factors: ArrayLike, *, factor_names: list[str] | None = None
) -> dict[str, Any]:
    """How well single latents track known generative factors (Spearman correlations).

    Parameters
    ----------
    codes : array (N, L)
        Latent codes of the sections.
    factors : array (N, F)
        Known factors of the same sections (e.g. the synthetic population's).

    Returns
    -------
    dict
        ``corr`` (L, F) absolute Spearman correlations; ``score`` = mean over
        factors of the best latent's |ρ| (1 = every factor read off one
        latent); ``gap`` = mean over factors of best minus second-best |ρ|
        (a MIG-like disentanglement measure); ``best_latent`` per factor.
    """
    z = np.asarray(codes, dtype=np.float64)
    f = np.asarray(factors, dtype=np.float64)
    if f.ndim == 1:
        f = f[:, None]
    if z.ndim != 2 or len(z) != len(f) or len(z) < 3:
        raise ValueError(
            f"codes (N, L) and factors (N, F) must share N >= 3, got {z.shape}, {f.shape}"
        )
    rz = (rankdata(z, axis=0) - (len(z) + 1) / 2).T  # (L, N)
    rf = (rankdata(f, axis=0) - (len(f) + 1) / 2).T  # (F, N)
    nz = np.linalg.norm(rz, axis=1, keepdims=True)
    nf = np.linalg.norm(rf, axis=1, keepdims=True)
    corr = np.abs((rz / np.where(nz > 0, nz, 1)) @ (rf / np.where(nf > 0, nf, 1)).T)  # (L, F)
    top = np.sort(corr, axis=0)[::-1]  # (L, F), best first
    second = top[1] if len(top) > 1 else np.zeros(corr.shape[1])
    names = factor_names or [f"factor {i}" for i in range(corr.shape[1])]
    return {
        "corr": corr,
        "score": float(top[0].mean()),
        "gap": float((top[0] - second).mean()),
        "best_latent": {n: int(i) for n, i in zip(names, corr.argmax(axis=0), strict=True)},
    }
