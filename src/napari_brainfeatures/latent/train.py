"""Train a β-VAE (or vanilla VAE) on a population of sections; fit the PCA baseline.

:func:`train_vae` is a progress generator (see :mod:`napari_brainfeatures.progress`):
it yields a record per batch and, at the end of every epoch, one with the
epoch's ``recon``, ``kl``, ``loss`` and their ``val_*`` counterparts.  After
each epoch whose validation loss is the best so far the model is kept in a
hidden file beside ``checkpoint_path`` (:class:`~.._util.staged.Staged`), which
replaces the target only when training ends: a killed run never leaves a model
of its first epochs where the previous one was, and a cancelled run keeps its
best model where there was none.

:class:`VAELatentModel` wraps a :class:`~napari_brainfeatures.models.vae.BetaVAE`
with the numpy interface shared with :class:`~napari_brainfeatures.latent.pca.PCABaseline`:
``encode(images (N, H, W)) -> (N, L)`` and ``decode(z (N, L)) -> (N, H, W)``.
Loading a model file of any kind, and fitting any kind by name, is
:mod:`napari_brainfeatures.latent.model`'s.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from napari_brainfeatures._util.staged import Staged
from napari_brainfeatures.latent.bounds import CLIP, SEED, check_training
from napari_brainfeatures.latent.pca import PCABaseline
from napari_brainfeatures.latent.population import as_stack, center_crop, preprocess
from napari_brainfeatures.models.checkpoint import device_of
from napari_brainfeatures.models.vae import BetaVAE, VAEConfig, save_vae, vae_loss
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = [
    "VAELatentModel", "TrainResult", "train_vae", "fit_pca", "torch_threads", "area_weight",
]  # fmt: skip

#: The paper's section (its centre crop of the Allen atlas's 320×456), rows × columns.
PAPER_SHAPE = (320, 448)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads (None: unchanged), then restore.

    One decode of one latent vector is a small job: with the cores busy (a
    training worker, napari, other processes) a single thread is several times
    faster than a contended pool (measured: 76 ms against 440 ms at load 5 on
    2 cores; 17 against 10 ms on an idle machine), so the slider path uses 1.
    """
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


class VAELatentModel:
    """Numpy ``encode``/``decode`` of a :class:`BetaVAE` (posterior means, sigmoid images).

    Parameters
    ----------
    model : BetaVAE
    device : str or torch.device, optional
        Default: the model's device.
    batch_size : int
        Sections per forward pass in :meth:`encode` / :meth:`decode`; default 32.
    """

    def __init__(
        self, model: BetaVAE, *, device: str | torch.device | None = None, batch_size: int = 32
    ) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)
        self.batch_size = int(batch_size)

    @property
    def latent_dim(self) -> int:
        """Latent size L."""
        return self.model.config.latent_dim

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the sections."""
        return self.model.config.image_shape

    @torch.inference_mode()
    def encode(self, images: ArrayLike) -> NDArray[np.float32]:
        """Posterior means ``(N, L)`` of pre-processed sections ``(N, H, W)`` in [0, 1].

        Larger sections are centre-cropped to the model's input, as in training.
        """
        arr = np.asarray(images, dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[None]
        arr = center_crop(arr, self.image_shape)  # a view: copied batch by batch below
        out = []
        for i in range(0, len(arr), self.batch_size):
            batch = np.ascontiguousarray(arr[i : i + self.batch_size])  # (B, H, W)
            x = torch.from_numpy(batch).to(self.device)[:, None]  # (B, 1, H, W)
            out.append(self.model.encode(x)[0].float().cpu().numpy())  # (B, L)
        return np.concatenate(out) if out else np.zeros((0, self.latent_dim), np.float32)

    @torch.inference_mode()
    def decode(self, z: ArrayLike) -> NDArray[np.float32]:
        """Sections ``(N, H, W)`` in (0, 1) decoded from latents ``z`` ``(N, L)``."""
        zz = np.atleast_2d(np.asarray(z, dtype=np.float32))
        if zz.shape[1] != self.latent_dim:
            raise ValueError(f"z must have {self.latent_dim} columns, got shape {zz.shape!r}")
        out = []
        for i in range(0, len(zz), self.batch_size):
            t = torch.from_numpy(zz[i : i + self.batch_size]).to(self.device)  # (B, L)
            out.append(self.model.decode(t)[:, 0].float().cpu().numpy())  # (B, H, W)
        return np.concatenate(out)


@dataclass
class TrainResult:
    """What :func:`train_vae` returns: the best model, its description and the history."""

    model: BetaVAE
    meta: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    path: Path | None = None

    def latent_model(self) -> VAELatentModel:
        """The model behind the numpy latent interface."""
        return VAELatentModel(self.model)


def _split(n: int, val_fraction: float, rng: np.random.Generator) -> tuple[NDArray, NDArray]:
    if n < 2:
        raise ValueError(f"training needs at least 2 sections (train + validation), got {n}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    order = rng.permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def area_weight(image_shape: tuple[int, int], reference: tuple[int, int] = PAPER_SHAPE) -> float:
    """``recon_weight`` that gives sections of ``image_shape`` the paper's balance of the loss.

    The binary cross-entropy is linear in its target, so on a section of the
    paper's size (``reference``, default 320×448) whose reconstruction is
    constant over blocks of k pixels it equals k times the cross-entropy of
    the block means: training sections downsampled k-fold with
    ``recon_weight = k`` (the ratio of the areas) weighs reconstruction
    against β·KL as the paper's loss does.  With the plain loss (weight 1), β
    weighs k times more heavily on small sections (measured in the ``vae``
    benchmark's notes: the latents collapse).
    """
    (h, w), (rh, rw) = image_shape, reference
    if min(h, w, rh, rw) < 1:
        raise ValueError(f"shapes must be positive, got {image_shape!r} and {reference!r}")
    return float(rh * rw) / float(h * w)


def _batch_loss(model: BetaVAE, x: torch.Tensor, beta: float, *, sample: bool, weight: float):
    logits, mu, logvar = model(x, sample=sample)  # (B,1,H,W), (B,L), (B,L)
    return vae_loss(x, logits, mu, logvar, beta, from_logits=True, recon_weight=weight)


def train_vae(
    images: ArrayLike,
    *,
    config: VAEConfig | None = None,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-4,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    clip: float = 3.8,
    roi_names: list[str] | None = None,
    kl_warmup: float = 0.0,
    recon_weight: float = 1.0,
) -> ProgressGen[TrainResult]:
    """Train a β-VAE on raw sections (pre-processed here, constants kept in the model).

    Parameters
    ----------
    images : array (N, H, W)
        Raw sections (pre-processed with :func:`~.population.preprocess`).
    config : VAEConfig, optional
        Default ``VAEConfig.for_shape((H, W))`` (L = 8, β = 3).  β = 1 gives a vanilla VAE.
    epochs : int
        Passes over the training sections; default 10.
    batch_size : int
        Default 64 (the paper's).  A population smaller than that trains with
        all its training sections in one batch, with a warning.
    lr : float
        Adam learning rate; default 2e-4 (the paper's).
    seed : int
        Seeds the split, the weights, the shuffling and the sampling.
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    checkpoint_path : path-like, optional
        Where the best-on-validation model is written when training ends (kept
        beside it until then; on Cancel it is written there only if no file was).
    val_fraction : float
        Share of sections held out for validation (at least one); default 0.1.
    clip : float
        Pre-processing clip factor; default 3.8.
    roi_names : list of str, optional
        Stored in the model's metadata.
    kl_warmup : float
        Epochs over which the KL weight ramps linearly from 0 to β (default
        0: none, as in the paper).  A short warm-up keeps the latents from
        collapsing early when only a few hundred steps fit (CPU).  The
        validation loss always uses the full β.
    recon_weight : float
        Weight of the reconstruction term against β·KL (default 1: the
        paper's loss).  :func:`area_weight` gives the weight that keeps the
        paper's balance on sections smaller than its 320×448.

    Yields
    ------
    Progress
        One per batch; at each epoch end ``values`` holds ``recon``, ``kl``,
        ``loss``, ``val_recon``, ``val_kl``, ``val_loss`` (per section;
        ``loss = recon_weight·recon + β·kl``).

    Returns
    -------
    TrainResult
        The best model (eval mode, on ``device``), its metadata and the history.

    Notes
    -----
    The defaults are the paper's (batch 64, lr 2e-4: ~4 h on a GPU).  On a CPU
    far fewer steps fit in minutes, so the CLI and the widget default to
    batch 16 and lr 1e-3: measured on 192 synthetic 64×96 sections, 8 epochs,
    CW-SSIM of clean reconstructions 0.87 against 0.64 with the paper's
    values (a 320×448 training step costs ~0.13 s per section on 2 cores).
    """
    checked = check_training(epochs=epochs, batch_size=batch_size, lr=lr, kl_warmup=kl_warmup,
                             recon_weight=recon_weight)  # fmt: skip
    epochs, batch_size, lr, kl_warmup, weight = checked.values()  # the ranges of latent.bounds
    seed, clip = SEED.check("seed", seed), CLIP.check("clip", clip)
    arr = as_stack(images)
    config = config or VAEConfig.for_shape(arr.shape[1:])
    raw_shape = arr.shape[1:]
    try:
        arr = center_crop(arr, config.image_shape)  # 320x456 -> 320x448, as the paper
    except ValueError:
        raise ValueError(
            f"config.image_shape {config.image_shape!r} does not fit the sections {raw_shape!r}"
        ) from None
    scaled, info = preprocess(arr, clip=clip)
    rng = np.random.default_rng(seed)
    train_idx, val_idx = _split(len(scaled), val_fraction, rng)
    if batch_size > len(train_idx):
        warnings.warn(
            f"batch_size {batch_size} is larger than the {len(train_idx)} training sections; "
            f"using {len(train_idx)}",
            stacklevel=2,
        )
        batch_size = len(train_idx)
    dev = device_of(str(device) if device else None)
    torch.manual_seed(seed)
    # channels-last weights and batches: oneDNN trains the network about 25 % faster on a
    # CPU (320x448, batch 16: 76 -> 56 ms per section); put back to the plain layout at the end
    fmt = torch.channels_last if dev.type == "cpu" else torch.contiguous_format
    model = BetaVAE(config).to(dev, memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.from_numpy(scaled)[:, None]  # (N, 1, H, W), kept on CPU
    n_batches = -(-len(train_idx) // batch_size)
    total = int(epochs) * n_batches
    best, best_state, best_epoch = np.inf, None, 0
    history: list[dict[str, float]] = []
    meta: dict[str, Any] = {
        "model_type": "vae" if config.beta == 1 else "beta-vae",
        "preprocessing": info,
        "image_shape": list(arr.shape[1:]),
        "roi_names": list(roi_names or []),
    }
    if arr.shape[1:] != raw_shape:
        meta["cropped_from"] = list(raw_shape)  # centre crop of sections of this size
    t0 = time.perf_counter()

    def record() -> dict[str, Any]:  # what meta["training"] says of the run so far
        return {
            "kl_warmup": kl_warmup,
            "recon_weight": weight,
            "epochs_run": len(history),
            "best_epoch": best_epoch,
            "best_val_loss": best,
            "lr": lr,
            "batch_size": int(batch_size),
            "seed": int(seed),
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "device": str(dev),
            "wall_s": round(time.perf_counter() - t0, 3),
            "history": list(history),
        }

    staged = Staged(checkpoint_path)  # the best so far, beside the target until the end
    try:
        for epoch in range(1, int(epochs) + 1):
            model.train()
            sums = np.zeros(3)
            order = train_idx[rng.permutation(len(train_idx))]
            for b in range(n_batches):
                idx = order[b * batch_size : (b + 1) * batch_size]
                x = data[idx].to(dev, non_blocking=True).contiguous(memory_format=fmt)  # (B,1,H,W)
                ramp = min(1.0, (epoch - 1 + b / n_batches) / kl_warmup) if kl_warmup > 0 else 1.0
                loss, recon, kl = _batch_loss(model, x, config.beta * ramp, sample=True,
                                              weight=weight)  # fmt: skip
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                parts = [(weight * recon + config.beta * kl).item(), recon.item(), kl.item()]
                sums += np.array(parts) * len(idx)
                step = (epoch - 1) * n_batches + b + 1
                yield Progress(step, total, f"epoch {epoch}/{epochs}, batch {b + 1}/{n_batches}")
            model.eval()
            vsums = np.zeros(3)
            with torch.inference_mode():
                for i in range(0, len(val_idx), batch_size):
                    x = data[val_idx[i : i + batch_size]].to(dev).contiguous(memory_format=fmt)
                    vals = _batch_loss(model, x, config.beta, sample=False, weight=weight)
                    vsums += np.array([v.item() for v in vals]) * len(x)
            tr, va = sums / len(train_idx), vsums / len(val_idx)
            if not np.isfinite(np.r_[tr, va]).all():
                raise FloatingPointError(
                    f"training diverged in epoch {epoch} (loss {tr[0]!r}); lower lr (got {lr!r})"
                )
            rec = {"epoch": epoch, "loss": tr[0], "recon": tr[1], "kl": tr[2]}
            rec |= {"val_loss": va[0], "val_recon": va[1], "val_kl": va[2]}
            history.append({k: float(v) for k, v in rec.items()})
            improved = va[0] < best
            if improved:
                best, best_epoch = float(va[0]), epoch
                best_state = copy.deepcopy(model.state_dict())
                meta["training"] = record()
                staged.save(lambda p: save_vae(p, model, meta=meta))  # noqa: B023
            values = {k: float(v) for k, v in rec.items() if k != "epoch"}
            msg = f"epoch {epoch}/{epochs}: val_loss {va[0]:.1f}" + (" (best)" if improved else "")
            yield Progress(epoch * n_batches, total, msg, values)
    except BaseException:  # Cancel (GeneratorExit) or an error: an earlier model stays
        staged.stop()
        raise
    if best_state is not None:  # set in epoch 1: finite losses always improve on inf
        model.load_state_dict(best_state)
    model.to(memory_format=torch.contiguous_format)  # one decode is fastest this way
    meta["training"] = record()
    path = None
    if checkpoint_path is not None:
        path = save_vae(checkpoint_path, model, meta=meta)
        staged.drop()
    return TrainResult(model.eval(), meta, history, path)


def fit_pca(
    images: ArrayLike,
    *,
    latent_dim: int = 8,
    seed: int = 0,
    clip: float = 3.8,
    roi_names: list[str] | None = None,
) -> tuple[PCABaseline, dict[str, Any]]:
    """Fit the PCA baseline on raw sections pre-processed like the VAEs; ``(model, meta)``."""
    arr = as_stack(images)
    scaled, info = preprocess(arr, clip=clip)
    pca = PCABaseline(latent_dim, seed=seed).fit(scaled)
    meta = {
        "model_type": "pca",
        "preprocessing": info,
        "image_shape": list(arr.shape[1:]),
        "roi_names": list(roi_names or []),
        "explained_variance_ratio": [float(v) for v in pca.explained_variance_ratio_],
    }
    return pca, meta
