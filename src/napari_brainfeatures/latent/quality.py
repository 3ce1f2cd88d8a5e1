"""A latent model's quality: its reconstructions and samples scored, and shown.

:func:`model_quality` scores a model with the population paper's metrics
(:mod:`napari_brainfeatures.latent.metrics`): CW-SSIM of its reconstructions,
artifact rejection (how close the reconstructions of corrupted sections come
to their clean versions) and the PCA-based Fréchet distance of its
reconstructions and of sections decoded from the prior.
:func:`reconstruction_picture` shows sections beside their reconstructions;
:func:`quality_report` gives both, as the dock widget and
``brainfeatures latent`` show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from napari_brainfeatures.latent.metrics import cw_ssim, pca_frechet_distance
from napari_brainfeatures.latent.model import as_latent_model
from napari_brainfeatures.latent.population import as_stack, center_crop
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = [
    "model_quality",
    "reconstruction_picture",
    "QualityReport",
    "quality_report",
    "tile",
]


def _sections(
    model: Any, images: ArrayLike, clean: ArrayLike | None, artifact: ArrayLike | None
) -> tuple[Any, NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
    """The latent model; sections (N, h, w) and their reference, cut to its input; corrupted ones.

    Larger sections are scored on the centre the model sees (320×456 -> 320×448).
    Without ``clean`` no section counts as corrupted: there is no reference to
    reject artifacts towards.
    """
    model = as_latent_model(model)
    imgs = as_stack(images).astype(np.float32, copy=False)
    ref = imgs if clean is None else as_stack(clean, name="clean").astype(np.float32, copy=False)
    if ref.shape != imgs.shape:
        raise ValueError(f"clean sections {ref.shape!r} do not match the sections {imgs.shape!r}")
    imgs, ref = (center_crop(a, model.image_shape) for a in (imgs, ref))
    bad = np.zeros(len(imgs), bool)
    if artifact is not None:
        art = np.asarray(artifact)
        if art.shape != (len(imgs),):
            raise ValueError(
                f"artifact must have one entry per section ({len(imgs)}), got shape {art.shape!r}"
            )
        bad = (art > 0) & (clean is not None)
    return model, imgs, ref, bad


def model_quality(
    model: Any,
    images: ArrayLike,
    *,
    clean: ArrayLike | None = None,
    artifact: ArrayLike | None = None,
    max_sections: int = 64,
    n_samples: int = 256,
    seed: int = 0,
    chunk: int = 8,
) -> ProgressGen[dict[str, Any]]:
    """CW-SSIM and PCA-Fréchet distance of a latent model's reconstructions and samples.

    A progress generator (CW-SSIM costs about 0.25 s per 320×448 section).

    Parameters
    ----------
    model : latent model (``encode``/``decode``, e.g. a β-VAE, VAE or PCA baseline)
    images : array (N, H, W)
        Pre-processed sections in [0, 1], as the model was trained on.
    clean : array (N, H, W), optional
        The same sections without artifacts: the reference the reconstructions
        are compared with.  Default: ``images`` themselves.
    artifact : int array (N,), optional
        Artifact kind per section, 0 = none.  With ``clean``, the corrupted
        sections' reconstructions are scored against their clean versions
        (artifact rejection).
    max_sections : int
        CW-SSIM is averaged over at most this many sections of each group
        (a seeded random subset); default 64.
    n_samples : int
        Sections decoded from N(0, I) latents for the samples' distance.
    seed : int
    chunk : int
        Sections per progress step.

    Returns
    -------
    dict
        ``n_sections``; ``cwssim_recon`` (mean CW-SSIM of reconstructions of
        artifact-free sections against the reference), ``pca_fd_recon``
        (reconstructions of all sections against the reference) and
        ``pca_fd_samples``; with ``clean`` and corrupted sections also
        ``cwssim_artifact`` (their reconstructions against the clean
        sections), ``cwssim_artifact_input`` (the corrupted input itself
        against the clean sections: what a model that copied its input would
        get) and ``artifact_penalty`` (``cwssim_recon − cwssim_artifact``).
    """
    model, imgs, ref, bad = _sections(model, images, clean, artifact)
    if len(imgs) < 2:
        raise ValueError(f"quality needs at least 2 sections, got {len(imgs)}")
    if bad.all():
        raise ValueError("every section has an artifact: no artifact-free section to score")
    rng = np.random.default_rng(seed)

    def pick(idx: NDArray[np.intp]) -> NDArray[np.intp]:
        if len(idx) <= max_sections:
            return idx
        return np.sort(rng.choice(idx, max_sections, replace=False))

    good_idx, bad_idx = pick(np.flatnonzero(~bad)), pick(np.flatnonzero(bad))
    steps = -(-len(imgs) // 32) + -(-len(good_idx) // chunk) + 2 * -(-len(bad_idx) // chunk) + 1
    done = 0
    recon = np.empty_like(imgs)
    for i in range(0, len(imgs), 32):
        recon[i : i + 32] = np.clip(model.decode(model.encode(imgs[i : i + 32])), 0, 1)
        done += 1
        yield Progress(done, steps, f"reconstructing sections {i + 1}–{min(i + 32, len(imgs))}")

    def mean_cwssim(x: NDArray[Any], y: NDArray[Any], what: str) -> Any:
        nonlocal done
        out = []
        for i in range(0, len(x), chunk):
            out.append(cw_ssim(x[i : i + chunk], y[i : i + chunk]))
            done += 1
            yield Progress(done, steps, f"CW-SSIM of {what} ({min(i + chunk, len(x))}/{len(x)})")
        return float(np.mean(np.concatenate(out)))

    res: dict[str, Any] = {"n_sections": len(imgs)}
    res["cwssim_recon"] = yield from mean_cwssim(recon[good_idx], ref[good_idx], "reconstructions")
    if len(bad_idx):
        res["cwssim_artifact"] = yield from mean_cwssim(
            recon[bad_idx], ref[bad_idx], "corrupted sections' reconstructions"
        )
        res["cwssim_artifact_input"] = yield from mean_cwssim(
            imgs[bad_idx], ref[bad_idx], "corrupted sections themselves"
        )
        res["artifact_penalty"] = res["cwssim_recon"] - res["cwssim_artifact"]
    res["pca_fd_recon"] = pca_frechet_distance(ref, recon, seed=seed)
    z = rng.normal(size=(max(int(n_samples), 2), model.latent_dim)).astype(np.float32)
    res["pca_fd_samples"] = pca_frechet_distance(ref, np.clip(model.decode(z), 0, 1), seed=seed)
    yield Progress(steps, steps, "Fréchet distances")
    return res


def tile(fields: np.ndarray, cols: int = 4, gap: int = 4) -> np.ndarray:
    """``(n, H, W[, 3])`` pictures as one ``(rows·(H+gap), cols·(W+gap)[, 3])`` grid, row by row."""
    n, h, w = fields.shape[:3]
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.zeros((rows * (h + gap) - gap, cols * (w + gap) - gap, *fields.shape[3:]),
                   fields.dtype)  # fmt: skip
    for k in range(n):
        r, q = divmod(k, cols)
        out[r * (h + gap) : r * (h + gap) + h, q * (w + gap) : q * (w + gap) + w] = fields[k]
    return out


def reconstruction_picture(
    model: Any,
    images: ArrayLike,
    *,
    n: int = 4,
    clean: ArrayLike | None = None,
    artifact: ArrayLike | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.intp], list[str]]:
    """Sections beside their reconstructions (and clean versions): one row per section.

    With ``clean`` and ``artifact``, the first ``n`` corrupted sections as
    input | reconstruction | clean; otherwise the first ``n`` sections as
    input | reconstruction.  Returns ``(picture, section indices, column names)``.
    """
    model, imgs, ref, bad = _sections(model, images, clean, artifact)
    corrupted = np.flatnonzero(bad)
    idx = corrupted[:n] if len(corrupted) else np.arange(min(n, len(imgs)))
    recon = np.clip(model.decode(model.encode(imgs[idx])), 0, 1)  # (n, h, w)
    columns, names = [imgs[idx], recon], ["input", "reconstruction"]
    if len(corrupted):
        columns.append(ref[idx])
        names.append("clean")
    tiles = np.stack(columns, axis=1).reshape(-1, *imgs.shape[1:])  # row by row
    return tile(tiles, cols=len(columns), gap=max(2, imgs.shape[2] // 50)), idx, names


@dataclass(frozen=True, eq=False)
class QualityReport:
    """What :func:`quality_report` returns.

    Attributes
    ----------
    scores : dict
        :func:`model_quality`'s scores (``cwssim_recon``, ``pca_fd_recon``, …).
    picture : float32 array (rows, cols)
        :func:`reconstruction_picture`'s: one row per section, input |
        reconstruction (| clean).
    sections : int array (n,)
        The sections in the picture, top to bottom.
    columns : list of str
        The picture's columns, left to right.
    """

    scores: dict[str, Any]
    picture: NDArray[np.float32]
    sections: NDArray[np.intp]
    columns: list[str]

    @property
    def caption(self) -> str:
        """What the picture shows: ``"input | reconstruction | clean of sections 10, 11"``."""
        return " | ".join(self.columns) + f" of sections {', '.join(map(str, self.sections))}"


def quality_report(
    model: Any, images: ArrayLike, *, pictures: int = 4, **options: Any
) -> ProgressGen[QualityReport]:
    """A latent model's quality scores and a picture of its reconstructions (a progress generator).

    Parameters
    ----------
    model, images
        As in :func:`model_quality`.
    pictures : int
        Sections in the picture (:func:`reconstruction_picture`'s ``n``: the
        first corrupted ones when ``clean`` and ``artifact`` say which);
        default 4.
    **options
        :func:`model_quality`'s options: ``clean``, ``artifact`` (the picture
        uses them too), ``max_sections``, ``n_samples``, ``seed``, ``chunk``.

    Yields
    ------
    Progress
        :func:`model_quality`'s records.

    Returns
    -------
    QualityReport
    """
    scores = yield from model_quality(model, images, **options)
    clean, artifact = options.get("clean"), options.get("artifact")
    picture, idx, columns = reconstruction_picture(
        model, images, n=pictures, clean=clean, artifact=artifact
    )
    return QualityReport(scores, picture, idx, columns)
