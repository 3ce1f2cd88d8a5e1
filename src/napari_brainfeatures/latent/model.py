"""Latent models: the numpy interface, fitting any kind by name, loading any model file.

Every latent analysis takes a *latent model*: anything with ``latent_dim``,
``image_shape``, ``encode(images (N, H, W)) -> (N, L)`` and
``decode(z (N, L)) -> (N, H, W)`` on numpy arrays of pre-processed sections
(:class:`~napari_brainfeatures.latent.train.VAELatentModel`,
:class:`~napari_brainfeatures.latent.pca.PCABaseline`); a bare
:class:`~napari_brainfeatures.models.vae.BetaVAE` is wrapped automatically
(:func:`as_latent_model`).

:func:`fit_latent_model` fits a β-VAE, a vanilla VAE or the PCA baseline by
name, as the dock widget and ``brainfeatures train-vae`` offer them;
:func:`load_latent_model` opens a file of any of the three.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from napari_brainfeatures.latent import bounds as B
from napari_brainfeatures.latent.pca import PCA_KIND, PCABaseline
from napari_brainfeatures.latent.train import TrainResult, VAELatentModel, fit_pca, train_vae
from napari_brainfeatures.models.checkpoint import ModelFileError, read_header
from napari_brainfeatures.models.vae import KIND, BetaVAE, VAEConfig, load_vae
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = [
    "LatentModel",
    "as_latent_model",
    "MODEL_NAMES",
    "model_label",
    "FittedModel",
    "fit_latent_model",
    "load_latent_model",
]

MODEL_NAMES = {"beta-vae": "β-VAE", "vae": "VAE", "pca": "PCA"}  # meta["model_type"] -> name


@runtime_checkable
class LatentModel(Protocol):
    """The numpy interface shared by the VAEs and the PCA baseline."""

    latent_dim: int

    def encode(self, images: ArrayLike) -> NDArray[np.float32]: ...  # noqa: D102

    def decode(self, z: ArrayLike) -> NDArray[np.float32]: ...  # noqa: D102


def as_latent_model(model: Any) -> Any:
    """Wrap a :class:`BetaVAE` for numpy use; pass latent models through; else TypeError."""
    if isinstance(model, BetaVAE):
        return VAELatentModel(model)
    if callable(getattr(model, "encode", None)) and callable(getattr(model, "decode", None)):
        return model
    raise TypeError(
        f"expected a BetaVAE or a latent model with encode/decode, got {type(model).__name__}"
    )


def model_label(model: Any, meta: dict[str, Any]) -> str:
    """A latent model's short name for tables: ``"β-VAE L=8 β=3"``, ``"VAE L=8"``, ``"PCA L=8"``."""
    kind = str(meta.get("model_type", "beta-vae"))
    label = f"{MODEL_NAMES.get(kind, kind)} L={model.latent_dim}"
    net = getattr(model, "model", None)
    beta = getattr(getattr(net, "config", None), "beta", None)
    if kind == "beta-vae" and beta is not None:
        label += f" β={beta:g}"
    return label


@dataclass(frozen=True, eq=False)
class FittedModel:
    """What :func:`fit_latent_model` returns.

    Attributes
    ----------
    model : VAELatentModel or PCABaseline
        The fitted model behind the numpy latent interface (a VAE: its best
        epoch on validation, in eval mode).
    meta : dict
        Its metadata, as saved with it: ``model_type``, ``preprocessing``,
        ``image_shape``, ``roi_names``; a VAE's ``training`` record (with the
        per-epoch ``history``), a PCA's ``explained_variance_ratio``.
    path : Path or None
        The model file written, when a ``checkpoint_path`` was given.
    """

    model: VAELatentModel | PCABaseline
    meta: dict[str, Any]
    path: Path | None = None


def fit_latent_model(
    images: ArrayLike,
    *,
    kind: str = "beta-vae",
    latent_dim: int = 8,
    beta: float = 3.0,
    seed: int = 0,
    clip: float = 3.8,
    checkpoint_path: str | os.PathLike[str] | None = None,
    roi_names: list[str] | None = None,
    n_down: int | None = None,
    channels: int = 32,
    **training: Any,
) -> ProgressGen[FittedModel]:
    """Fit a β-VAE, a vanilla VAE or the PCA baseline on raw sections (a progress generator).

    The options are checked when this is called, before any work: an unknown
    ``kind`` or sections no VAE fits raise here, not on the first ``next``.

    Parameters
    ----------
    images : array (N, H, W)
        Raw sections (pre-processed as in :func:`~.train.train_vae`).
    kind : {"beta-vae", "vae", "pca"}
        Default ``"beta-vae"``.  ``"vae"`` is a β-VAE with β = 1.
    latent_dim : int
        Latents L; default 8.
    beta : float
        KL weight of the β-VAE; default 3 (ignored by the VAE and PCA).
    seed : int
        Seeds the split, the weights and the sampling (PCA: its solver).
    clip : float
        Pre-processing clip factor; default 3.8.
    checkpoint_path : path-like, optional
        Where the model is written: a VAE's best epoch after every
        improvement (so a cancelled run keeps it), the PCA once fitted.
    roi_names : list of str, optional
        Stored in the model's metadata.
    n_down, channels : int, optional
        The VAE's stride-2 layers, 1..12 (default None: :meth:`VAEConfig.for_shape`'s
        choice for the section size) and convolution channels (default 32).
        Every number has the range of the ``train-vae`` option (:mod:`.bounds`).
    **training
        Passed to :func:`~.train.train_vae` (``epochs``, ``batch_size``,
        ``lr``, ``device``, ``val_fraction``, ``kl_warmup``, ``recon_weight``); PCA has no
        training loop and ignores them.

    Yields
    ------
    Progress
        A VAE's records (per batch, and per epoch with the losses in
        ``values``); one record for the PCA.

    Returns
    -------
    FittedModel

    Raises
    ------
    ValueError
        An unknown ``kind``, or a VAE for sections too small or odd in shape.
    """
    if kind not in MODEL_NAMES:
        raise ValueError(f"kind must be one of {list(MODEL_NAMES)!r}, got {kind!r}")
    latent_dim, seed = B.LATENT.check("latent_dim", latent_dim), B.SEED.check("seed", seed)
    clip = B.CLIP.check("clip", clip)
    if kind == "pca":
        return _fit_pca(images, latent_dim, seed, clip, checkpoint_path, roi_names)
    beta = B.BETA.check("beta", beta)
    channels, training = B.CHANNELS.check("channels", channels), B.check_training(**training)
    arch = {} if n_down is None else {"n_down": B.N_DOWN.check("n_down (None: automatic)", n_down)}
    config = VAEConfig.for_shape(
        np.shape(images)[-2:], latent_dim=latent_dim, beta=1.0 if kind == "vae" else beta,
        channels=channels, **arch,
    )  # fmt: skip
    return _train(
        train_vae(images, config=config, seed=seed, clip=clip, checkpoint_path=checkpoint_path,
                  roi_names=roi_names, **training)
    )  # fmt: skip


def _train(gen: ProgressGen[TrainResult]) -> ProgressGen[FittedModel]:
    result = yield from gen
    return FittedModel(result.latent_model(), result.meta, result.path)


def _fit_pca(
    images: ArrayLike,
    latent_dim: int,
    seed: int,
    clip: float,
    path: str | os.PathLike[str] | None,
    roi_names: list[str] | None,
) -> ProgressGen[FittedModel]:
    yield Progress(0, 1, "fitting PCA")
    pca, meta = fit_pca(images, latent_dim=latent_dim, seed=seed, clip=clip, roi_names=roi_names)
    saved = None if path is None else pca.save(path, meta=meta)
    yield Progress(1, 1, f"PCA with {latent_dim} components")
    return FittedModel(pca, meta, saved)


def load_latent_model(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[VAELatentModel | PCABaseline, dict[str, Any]]:
    """Open a β-VAE / VAE / PCA model file as a numpy latent model; ``(model, meta)``.

    Raises
    ------
    ModelFileError
        If the file holds another kind of model (e.g. the patch CNN) or is corrupt.
    """
    kind = read_header(path)["kind"]
    if kind == KIND:
        model, meta = load_vae(path, device=device)
        return VAELatentModel(model), meta
    if kind == PCA_KIND:
        return PCABaseline.load(path)
    raise ModelFileError(
        f"{str(path)!r} holds a {kind!r}; expected a {KIND!r} or {PCA_KIND!r} latent model"
    )
