"""The population paper's linear baseline: PCA with the VAEs' latent-model interface.

:class:`PCABaseline` has the same ``encode``/``decode`` interface as the VAEs
(:class:`~napari_brainfeatures.latent.train.VAELatentModel`), so every latent
analysis applies to it unchanged; it is saved like any model (safetensors +
JSON config, no pickle).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from sklearn.decomposition import PCA
from torch import nn

from napari_brainfeatures.latent.population import as_stack, center_crop
from napari_brainfeatures.models.checkpoint import (
    ModelFileError,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from napari_brainfeatures.models.schema import PCA_FIELDS, check_fields, count_on_meta

__all__ = ["PCABaseline", "PCA_KIND"]

PCA_KIND = "PCABaseline"


class _PCAWeights(nn.Module):
    """Tensor container so a PCA baseline is saved like any model (no pickle)."""

    mean: torch.Tensor
    components: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_features: int, n_components: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("components", torch.zeros(n_components, n_features))
        self.register_buffer("scale", torch.ones(n_components))


class PCABaseline:
    """PCA with the latent-model interface of the VAEs (``encode`` / ``decode``).

    Parameters
    ----------
    latent_dim : int
        Number of components L (1..64), default 8.
    whiten : bool
        Divide projections by each component's standard deviation (default),
        so latents have unit variance like a VAE's prior and traversals over
        c ∈ [−7, 7] are comparable.
    seed : int
        Seed of the randomized solver.

    Attributes
    ----------
    mean_ : array (H·W,), components_ : array (L, H·W), scale_ : array (L,)
        Fitted state.
    image_shape_ : tuple of int
    """

    def __init__(self, latent_dim: int = 8, *, whiten: bool = True, seed: int = 0) -> None:
        if not 1 <= int(latent_dim) <= 64:
            raise ValueError(f"latent_dim must be in 1..64, got {latent_dim!r}")
        self.latent_dim = int(latent_dim)
        self.whiten = bool(whiten)
        self.seed = int(seed)

    def fit(self, images: ArrayLike) -> PCABaseline:
        """Fit on pre-processed sections ``(N, H, W)`` (N > latent_dim)."""
        arr = as_stack(images).astype(np.float32, copy=False)
        n = len(arr)
        if n <= self.latent_dim:
            raise ValueError(
                f"PCA with latent_dim={self.latent_dim} needs more than {self.latent_dim} "
                f"sections, got {n}"
            )
        pca = PCA(self.latent_dim, svd_solver="randomized", random_state=self.seed)
        pca.fit(arr.reshape(n, -1))
        self.image_shape_ = tuple(int(s) for s in arr.shape[1:])
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        std = np.sqrt(np.maximum(pca.explained_variance_, 1e-12))
        self.scale_ = (std if self.whiten else np.ones_like(std)).astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "components_"):
            raise RuntimeError("PCABaseline is not fitted: call fit(images) or load() first")

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the sections it was fitted on."""
        self._check_fitted()
        return self.image_shape_  # type: ignore[return-value]

    def encode(self, images: ArrayLike) -> NDArray[np.float32]:
        """Latent codes ``(N, L)`` of pre-processed sections ``(N, H, W)``.

        Larger sections are centre-cropped to the fitted shape, as the VAEs do.
        """
        self._check_fitted()
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim == 3:
            arr = center_crop(arr, self.image_shape_)
        flat = arr.reshape(len(arr), -1) - self.mean_  # (N, H·W)
        if flat.shape[1] != self.mean_.size:
            raise ValueError(
                f"sections of shape {arr.shape[1:]!r} do not match the fitted {self.image_shape_!r}"
            )
        return (flat @ self.components_.T) / self.scale_  # (N, L)

    def decode(self, z: ArrayLike) -> NDArray[np.float32]:
        """Sections ``(N, H, W)`` of latent codes ``z`` ``(N, L)`` (not clipped)."""
        self._check_fitted()
        z = np.atleast_2d(np.asarray(z, dtype=np.float32))
        flat = (z * self.scale_) @ self.components_ + self.mean_  # (N, H·W)
        return flat.reshape(len(z), *self.image_shape_)

    def save(self, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> Any:
        """Write the fitted baseline as a safetensors model file (kind ``"PCABaseline"``)."""
        self._check_fitted()
        w = _PCAWeights(self.mean_.size, self.latent_dim)
        w.mean.copy_(torch.from_numpy(self.mean_))
        w.components.copy_(torch.from_numpy(self.components_))
        w.scale.copy_(torch.from_numpy(self.scale_))
        config = {
            "latent_dim": self.latent_dim,
            "whiten": self.whiten,
            "seed": self.seed,
            "image_shape": list(self.image_shape_),
        }
        return save_checkpoint(path, w, kind=PCA_KIND, config=config, meta=meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> tuple[PCABaseline, dict[str, Any]]:
        """Read a baseline written by :meth:`save`; returns ``(baseline, meta)``."""
        header = read_header(path)
        if header["kind"] != PCA_KIND:
            raise ModelFileError(
                f"{str(path)!r} holds a {header['kind']!r}, expected a {PCA_KIND!r}"
            )
        cfg = header["config"]
        try:
            # JSON types and bounds, naming the field, then the buffers counted without memory
            check_fields(cfg, PCA_FIELDS, "PCA")
            missing = sorted(set(PCA_FIELDS) - set(cfg))
            if missing:
                raise ValueError(f"missing config keys {missing!r}")
            shape = tuple(cfg["image_shape"])
            self = cls(cfg["latent_dim"], whiten=cfg["whiten"], seed=cfg["seed"])
            n_features = math.prod(shape)
            count_on_meta(lambda _: _PCAWeights(n_features, self.latent_dim), None, "PCA")
        except (KeyError, TypeError, ValueError, OverflowError, RuntimeError) as err:
            raise ModelFileError(f"{str(path)!r} has an invalid PCA config: {err}") from None
        w = _PCAWeights(n_features, self.latent_dim)
        load_checkpoint(path, w, kind=PCA_KIND)
        self.image_shape_ = shape
        self.mean_ = w.mean.numpy().copy()
        self.components_ = w.components.numpy().copy()
        self.scale_ = w.scale.numpy().copy()
        return self, header["meta"]
