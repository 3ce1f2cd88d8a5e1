"""The β-VAE of the population paper (paper 004), DC-GAN-like.

Following the authors' ``BetaVAE_Brain`` (nerdslab/brainsynth ``model.py``):
the encoder has ``n_down`` (default 6) 4×4 stride-2 convolutions and one 4×4
stride-1 convolution, all with 32 channels, padding 1 and ReLU, then fully
connected layers ``flat -> 256 -> 256 -> 2L`` (mean and log-variance).  The
decoder mirrors it with transposed convolutions and ends in a sigmoid.  For a
320×448 section the last feature map is 4×6, so ``flat = 32·4·6 = 768`` as in
the authors' code (their 448×320 input is our section transposed; the network
is the same up to that transpose).

A vanilla VAE is the same network trained with ``beta = 1``.  The likelihood
is Bernoulli (binary cross-entropy on images scaled to [0, 1]) summed over
pixels, the KL term summed over latents, both averaged over the batch, as in
the authors' training code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from napari_brainfeatures.models.checkpoint import load_model, save_checkpoint
from napari_brainfeatures.models.schema import VAE_FIELDS, JSONConfig, as_int, check_fields

__all__ = ["VAEConfig", "BetaVAE", "vae_loss", "save_vae", "load_vae", "KIND"]

KIND = "BetaVAE"


@dataclass
class VAEConfig(JSONConfig):
    """Architecture (and β) of :class:`BetaVAE`.

    Parameters
    ----------
    latent_dim : int
        Latent size L, 1..64; default 8 (the paper's choice).
    beta : float
        Weight of the KL term, > 0; default 3.0.  1.0 gives a vanilla VAE.
    image_shape : tuple of int
        Section shape (H, W); default (320, 448).  Both sides must be
        divisible by ``2**n_down``.
    channels : int
        Channels of every convolution; default 32.
    n_down : int
        Number of stride-2 convolutions; default 6 (the authors').  Tests use
        fewer on small images.
    fc : tuple of int
        Hidden fully connected sizes; default (256, 256).
    """

    FIELDS: ClassVar = VAE_FIELDS
    WHAT: ClassVar = "VAE"

    latent_dim: int = 8
    beta: float = 3.0
    image_shape: tuple[int, int] = (320, 448)
    channels: int = 32
    n_down: int = 6
    fc: tuple[int, ...] = (256, 256)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_shape = tuple(as_int(s) for s in self.image_shape)  # type: ignore[assignment]
        self.fc = tuple(as_int(f) for f in self.fc)
        self.latent_dim, self.channels = as_int(self.latent_dim), as_int(self.channels)
        self.n_down = as_int(self.n_down)
        if isinstance(self.beta, np.floating | np.integer):
            self.beta = float(self.beta)
        check_fields(self.to_dict(), VAE_FIELDS, "VAE")  # types and bounds, naming the field
        self.beta = float(self.beta)
        step = 2**self.n_down
        if any(s % step or s // step < 2 for s in self.image_shape):
            raise ValueError(
                f"image_shape {self.image_shape!r} does not fit {self.n_down} stride-2 layers: "
                f"both sides must be multiples of {step} and at least {2 * step} "
                "(crop or pad the sections, or lower n_down)"
            )

    @classmethod
    def for_shape(cls, image_shape: tuple[int, int], **kwargs: Any) -> VAEConfig:
        """A config for sections of ``image_shape``: the paper's network where it fits.

        Sections of at least 128 px a side get the authors' six stride-2 layers
        on their centre cropped to multiples of 64 (320×456 Allen sections ->
        320×448, as in the paper; ``image_shape`` of the config is the crop,
        and :class:`~napari_brainfeatures.latent.train.VAELatentModel` cuts
        larger sections the same way).  Smaller sections keep their shape with
        the most stride-2 layers that divide it; ``n_down`` in ``kwargs``
        keeps the shape and uses that many.
        """
        shape = (int(image_shape[0]), int(image_shape[1]))
        if "n_down" in kwargs:
            return cls(image_shape=shape, **kwargs)
        if min(shape) >= 128:
            return cls(image_shape=(shape[0] // 64 * 64, shape[1] // 64 * 64), n_down=6, **kwargs)
        n = 6
        while n > 1 and any(s % 2**n or s // 2**n < 2 for s in shape):
            n -= 1
        return cls(image_shape=shape, n_down=n, **kwargs)

    @property
    def final_shape(self) -> tuple[int, int]:
        """(h, w) of the last feature map: after the stride-2 layers, minus 1 (stride-1 conv)."""
        h, w = (s // 2**self.n_down for s in self.image_shape)
        return h - 1, w - 1

    @property
    def flat_size(self) -> int:
        """Inputs of the first FC layer: 768 = 32·4·6 for the default 320×448 network."""
        h, w = self.final_shape
        return self.channels * h * w


class BetaVAE(nn.Module):
    """Convolutional β-VAE for single-channel sections.

    Input of :meth:`encode` / :meth:`forward`: float tensor ``(B, 1, H, W)`` in
    [0, 1].  :meth:`decode` returns the same shape, in (0, 1).
    """

    def __init__(self, config: VAEConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or VAEConfig()
        c = cfg.channels
        enc: list[nn.Module] = []
        c_in = 1
        for _ in range(cfg.n_down):
            enc += [nn.Conv2d(c_in, c, 4, 2, 1), nn.ReLU()]
            c_in = c
        enc += [nn.Conv2d(c, c, 4, 1, 1), nn.ReLU()]
        self.encoder_convs = nn.Sequential(*enc)
        sizes = (cfg.flat_size, *cfg.fc)
        self.encoder_fc = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.to_stats = nn.Linear(cfg.fc[-1], 2 * cfg.latent_dim)
        rev = (cfg.latent_dim, *cfg.fc[::-1], cfg.flat_size)
        self.decoder_fc = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(rev))
        dec: list[nn.Module] = [nn.ConvTranspose2d(c, c, 4, 1, 1)]
        for i in range(cfg.n_down):
            dec += [nn.ReLU(), nn.ConvTranspose2d(c, 1 if i == cfg.n_down - 1 else c, 4, 2, 1)]
        self.decoder_convs = nn.Sequential(*dec)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal weights and zero biases, as in the authors' code."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def latent_dim(self) -> int:
        """Latent size L."""
        return self.config.latent_dim

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, each ``(B, L)``, of ``x`` ``(B, 1, H, W)``."""
        h = self.encoder_convs(x).flatten(1)  # (B, flat_size)
        for fc in self.encoder_fc:
            h = F.relu(fc(h))  # (B, fc_i)
        stats = self.to_stats(h)  # (B, 2L)
        mu, logvar = stats.chunk(2, dim=1)  # (B, L), (B, L)
        return mu, logvar

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid decoder output ``(B, 1, H, W)`` of latents ``z`` ``(B, L)``."""
        h = z
        for fc in self.decoder_fc:
            h = F.relu(fc(h))  # (B, fc_i) ... (B, flat_size)
        fh, fw = self.config.final_shape
        # channels-last lets oneDNN run the transposed convolutions about 2.5x faster on
        # a CPU (one 320x448 decode on one thread: 35 -> 13 ms, the slider's latency);
        # the weights keep their layout, and the values are the same to float rounding
        h = h.view(-1, self.config.channels, fh, fw).contiguous(
            memory_format=torch.channels_last
        )  # (B, C, h, w)
        if torch.is_grad_enabled():  # training: the plain layers
            return self.decoder_convs(h)  # (B, 1, H, W)
        *body, last = self.decoder_convs  # inference: in place, one allocation less per ReLU
        for layer in body:
            h = F.relu(h, inplace=True) if isinstance(layer, nn.ReLU) else layer(h)
        return _one_channel_transposed(h, last)  # (B, 1, H, W)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded sections ``(B, 1, H, W)`` in (0, 1) of latents ``z`` ``(B, L)``."""
        return torch.sigmoid(self.decode_logits(z))

    def forward(
        self, x: torch.Tensor, *, sample: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction **logits** ``(B, 1, H, W)``, ``mu`` and ``logvar`` ``(B, L)``.

        With ``sample`` (training), z is drawn by the reparametrisation trick;
        otherwise z = mu.  Logits keep the loss numerically stable; apply
        ``torch.sigmoid`` (or use :meth:`decode`) for images.
        """
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu  # (B, L)
        return self.decode_logits(z), mu, logvar


def _one_channel_transposed(h: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """``conv(h)`` for the last layer (C -> 1 channel, 4×4, stride 2, padding 1) as a fold.

    oneDNN runs a one-channel transposed convolution far below its usual speed;
    one matrix product (each input pixel's 4×4 contribution) and an
    overlap-add (``F.fold``) give the same values (to float rounding) faster:
    measured on one 320×448 decode on one thread, with the in-place ReLUs,
    12.6 -> 9.9 ms median (2-core x86_64 CPU, 2026-12-06, load 3.5).
    """
    b, c, hh, ww = h.shape  # (B, C, h, w)
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    if conv.out_channels != 1 or conv.kernel_size != (k, k) or conv.output_padding != (0, 0):
        return conv(h)
    cols = h.permute(0, 2, 3, 1).reshape(b, hh * ww, c) @ conv.weight.reshape(c, k * k)
    size = ((hh - 1) * s - 2 * p + k, (ww - 1) * s - 2 * p + k)
    out = F.fold(cols.transpose(1, 2), size, k, stride=s, padding=p)  # (B, 1, H, W)
    return out + conv.bias.view(1, 1, 1, 1) if conv.bias is not None else out


def vae_loss(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    beta: float,
    *,
    from_logits: bool = False,
    recon_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """β-VAE loss: ``(total, recon, kl)``, each a scalar averaged over the batch.

    Parameters
    ----------
    x : tensor (B, 1, H, W)
        Targets in [0, 1].
    x_hat : tensor (B, 1, H, W)
        Reconstructions in (0, 1), or logits when ``from_logits``.
    mu, logvar : tensor (B, L)
        Posterior parameters.
    beta : float
        KL weight.
    from_logits : bool
        Whether ``x_hat`` holds logits (numerically safer); default False.
    recon_weight : float
        Weight w of the reconstruction term; default 1 (the paper's loss).

    Returns
    -------
    total, recon, kl : tensor
        ``recon`` = binary cross-entropy summed over pixels; ``kl`` =
        KL(q(z|x) || N(0, I)) summed over latents; ``total = w·recon + beta·kl``.
    """
    b = x.shape[0]
    if from_logits:
        recon = F.binary_cross_entropy_with_logits(x_hat, x, reduction="sum") / b
    else:
        recon = F.binary_cross_entropy(x_hat, x, reduction="sum") / b
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / b
    return recon_weight * recon + beta * kl, recon, kl


def save_vae(
    path: str | os.PathLike[str], model: BetaVAE, *, meta: dict[str, Any] | None = None
) -> Any:
    """Write ``model`` (kind ``"BetaVAE"``) with ``meta`` (preprocessing, ROI names, record)."""
    return save_checkpoint(path, model, kind=KIND, config=model.config.to_dict(), meta=meta)


def load_vae(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu"
) -> tuple[BetaVAE, dict[str, Any]]:
    """Rebuild a :class:`BetaVAE` from its file; returns ``(model in eval mode, meta)``.

    Raises
    ------
    ModelFileError
        When the file is missing, corrupt, or holds another architecture.
    """
    return load_model(path, kind=KIND, config_cls=VAEConfig, build=BetaVAE, device=device)
