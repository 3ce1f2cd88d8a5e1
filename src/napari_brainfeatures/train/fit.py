"""Train the brain-area CNN on sampled patches, keeping the best model on validation.

:func:`train_cnn` is a progress generator (see :mod:`napari_brainfeatures.progress`):
it yields a record after every batch and, at the end of every epoch, one whose
``values`` hold ``train_loss``, ``train_acc``, ``val_loss`` and ``val_acc``.
Whenever validation accuracy improves, the model is written atomically beside
``checkpoint_path`` (a hidden sibling), and the final model replaces
``checkpoint_path`` only when training ends: an earlier model there stays whole
until then, also when the run is killed.  A run that is cancelled (the
generator closed) or fails keeps the best model so far at ``checkpoint_path``
when nothing was there before, and otherwise leaves the earlier model in place.

The paper's recipe is Adam (lr 1e-4), cross-entropy and [0, 1] input.  On a
CPU budget the defaults add what makes the same network learn in a few epochs
(each can be switched off): He initialisation, training on standardised input
(folded into the first convolution afterwards, so model files still read
[0, 1] patches), lr 1e-3 with a cosine decay, and augmentation -- the 8
flips/rotations of the square, rotation by a random angle, mild
contrast/brightness jitter and noise, and
"border mixing" (another patch beyond a random straight line) so that interior
training patches prepare the network for the boundary patches of validation
and test.  Early stopping after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from napari_brainfeatures._util.device import training_autocast
from napari_brainfeatures._util.staged import Staged
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.checkpoint import device_of
from napari_brainfeatures.models.cnn import (
    BrainAreaCNN,
    CNNConfig,
    fold_batch_norm,
    fold_input_normalisation,
    input_scale_for,
    save_cnn,
)
from napari_brainfeatures.progress import Progress, ProgressGen
from napari_brainfeatures.train.augment import augment_batch, intensity_range, value_range
from napari_brainfeatures.train.bounds import THREADS, check_optional
from napari_brainfeatures.train.patches import PatchSet
from napari_brainfeatures.train.recipe import (
    DEFAULTS,
    Recipe,
    check_sets,
    init_weights,
    make_config,
    model_meta,
    training_record,
)

__all__ = ["TrainResult", "train_cnn"]


@dataclass
class TrainResult:
    """What :func:`train_cnn` returns.

    Attributes
    ----------
    model : BrainAreaCNN
        The best-on-validation model, in eval mode.
    history : list of dict
        One record per epoch (``epoch``, ``train_loss``, ``train_acc``, ``val_loss``,
        ``val_acc``, ``seconds``).
    best_epoch : int
    best_val_acc : float
    meta : dict
        The description stored in the model file.
    path : Path or None
        The model file, when ``checkpoint_path`` was given.
    stopped_early : bool
    """

    model: BrainAreaCNN
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_acc: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    stopped_early: bool = False

    @property
    def classes(self) -> ClassTable:
        """The model's classes in output order."""
        return ClassTable.from_dict(self.meta["classes"])


def _batches(n: int, batch_size: int) -> range:
    return range(0, n, batch_size)


def _prepare(raw: torch.Tensor, norm: tuple[float, ...], dev: torch.device) -> torch.Tensor:
    """Raw patches -> ``(x * scale - mean) / std`` as a new float32 tensor on ``dev``.

    ``raw`` is never written to: for float32 patches on the same device ``.to``
    and ``.float`` return ``raw`` itself, so the first step must not be in place.
    """
    scale, mean, std = norm
    x = raw.to(dev, non_blocking=True).float() * scale  # (B, 1, P, P), a new tensor
    return x.sub_(mean).div_(std) if (mean, std) != (0.0, 1.0) else x


def _input_stats(patches: np.ndarray, scale: float, seed: int) -> tuple[float, float]:
    """Mean and std of the scaled training patches (on up to 512 of them)."""
    pick = np.random.default_rng(seed).permutation(len(patches))[:512]
    sub = patches[np.sort(pick)].astype(np.float64) * scale
    return float(sub.mean()), float(max(sub.std(), 1e-6))


@torch.inference_mode()
def _score(
    model: BrainAreaCNN,
    data: torch.Tensor,
    y: torch.Tensor,
    norm: tuple[float, ...],
    batch_size: int,
    dev: torch.device,
    weight: torch.Tensor,
) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    c = model.config.in_channels
    for i in _batches(len(y), batch_size):
        x = _prepare(data[i : i + batch_size], norm, dev)  # (B, 1, P, P)
        t = y[i : i + batch_size].to(dev)  # (B,)
        x = x.expand(-1, c, -1, -1).contiguous(memory_format=torch.channels_last)
        logits = model(x)  # (B, K)
        loss += F.cross_entropy(logits, t, weight=weight, reduction="sum").item()
        correct += int((logits.argmax(1) == t).sum())
    return loss / len(y), correct / len(y)


def train_cnn(
    train: PatchSet,
    val: PatchSet,
    *,
    config: CNNConfig | None = None,
    epochs: int = DEFAULTS["epochs"],
    batch_size: int = DEFAULTS["batch_size"],
    lr: float = DEFAULTS["lr"],
    augment: bool = True,
    standardise: bool | None = None,
    mix: float = 0.8,
    rotate: float = 0.5,
    gradient: float = 0.0,
    contrast: float = 0.0,
    schedule: str = "cosine",
    init: str = "he",
    batch_norm: bool = False,
    precision: str = "auto",
    patience: int | None = DEFAULTS["patience"],
    device: str | torch.device | None = None,
    seed: int = 0,
    checkpoint_path: str | os.PathLike[str] | None = None,
    classes: ClassTable | None = None,
    voxel_size: Sequence[float] | float | None = None,
    num_threads: int | None = None,
    split: dict[str, Any] | None = None,
) -> ProgressGen[TrainResult]:
    """Train a :class:`BrainAreaCNN` on ``train``, selecting the best epoch on ``val``.

    Parameters
    ----------
    train, val : PatchSet
        Same classes and patch size, disjoint slices (see :func:`~.patches.sample_splits`).
    config : CNNConfig, optional
        Default ``make_config("default", patch_size=P, n_classes=K)``.
    epochs : int
        Maximum passes over ``train``; default 18 (``DEFAULTS``).
    batch_size : int
        Default 32.
    lr : float
        Adam learning rate; default 1e-3 (the paper's 1e-4 with its constant
        rate learns far slower; see ``DEFAULTS``).
    augment : bool
        Random flips/90° rotations, ±10 % contrast, ±0.05 brightness, noise; default True.
    mix : float
        With ``augment``, the probability that a training patch gets another
        patch beyond a straight boundary (:func:`border_mix`), so that the
        network sees boundary patches like those of validation and test;
        default 0.8 (0.5: 86.3 %, 0.8: 87.1 % held-out accuracy on the sample), 0 off.
    rotate : float
        With ``augment``, the probability that a training patch is rotated by
        a random angle (:func:`random_rotation`); default 0.5, 0 off.
    gradient, contrast : float
        With ``augment``, the probabilities of a smooth brightness gradient
        (:func:`~.augment.intensity_gradient`) and of local contrast changes
        (:func:`~.augment.local_contrast`) per patch; default 0 (off).
    standardise : bool, optional
        Train on ``(x - mean) / std`` of the training patches (much faster
        learning on low-contrast micro-CT), then fold it into the first
        convolution so the saved model reads plain [0, 1] input.  Default: on
        when the first convolution does not pad (the default variant), off for
        the authors' padded variant (their recipe: [0, 1] input, no normalisation).
    schedule : str
        ``"cosine"`` (default: lr decays to 0 along a half cosine over ``epochs``,
        batch by batch) or ``"constant"`` (the paper's).
    init : str
        ``"he"`` (default: :func:`init_weights`) or ``"torch"`` (PyTorch's default).
    batch_norm : bool
        Train with batch normalisation after every convolution (much faster
        learning when the augmentation is strong), folded into the convolutions
        at the end (:func:`~napari_brainfeatures.models.cnn.fold_batch_norm`):
        the model file is the same plain network.  Default False.
    precision : str
        Arithmetic of the training steps: ``"auto"`` (default: bfloat16 autocast
        on a CPU with AMX, about 1.8x faster steps; float32 elsewhere, CUDA
        included), ``"float32"`` or ``"bfloat16"``.  Weights, optimiser, loss,
        validation and the saved model are float32 in every case; the choice made
        is recorded in the model (``training_precision``).
    patience : int or None
        Stop after this many epochs without a better validation accuracy; None never stops.
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    seed : int
        Seeds weights, shuffling, dropout and augmentation.
    checkpoint_path : path-like, optional
        The best model so far is written here (atomically) after each improvement.
    classes : ClassTable, optional
        Names and colours stored with the model; default ``train.classes``.
    voxel_size : float or (z, y, x), optional
        µm, stored with the model.
    num_threads : int, optional
        CPU threads for torch during training (restored after); default torch's own.
    split : dict, optional
        How the data was split (:meth:`~.splits.Splits.record`), stored as the
        model file's ``split``.

    Yields
    ------
    Progress
        One per batch (``step`` counts batches); at each epoch's end ``values``
        holds ``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``.

    Returns
    -------
    TrainResult
    """
    config = config or make_config(patch_size=train.patch_size, n_classes=len(train.class_ids))
    classes = classes or train.classes
    check_sets(train, val, config, classes)
    recipe = Recipe(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        augment=bool(augment),
        standardise=config.paddings[0] == 0 if standardise is None else bool(standardise),
        mix=mix,
        rotate=rotate,
        gradient=gradient,
        contrast=contrast,
        schedule=schedule,
        init=init,
        batch_norm=bool(batch_norm),
        precision=precision,
        patience=patience,
        seed=seed,
    )
    num_threads = check_optional(THREADS, "num_threads", num_threads)
    dev = device_of(str(device) if device else None)
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        target = (checkpoint_path, classes, voxel_size, split)
        return (yield from _fit(train, val, config, recipe, dev, target))
    finally:
        torch.set_num_threads(old_threads)


def _fit(
    train: PatchSet,
    val: PatchSet,
    config: CNNConfig,
    r: Recipe,
    dev: torch.device,
    target: tuple[str | os.PathLike[str] | None, ClassTable, Any, Any],
) -> ProgressGen[TrainResult]:
    """The training loop; ``target``: ``(checkpoint_path, classes, voxel_size, split)``."""
    checkpoint_path, classes, voxel_size, split = target
    scale, norm = input_scale_for(train.patches.dtype)
    mean, std = _input_stats(train.patches, scale, r.seed) if r.standardise else (0.0, 1.0)
    intensity = intensity_range(train.patches, scale)
    clip = value_range(train.patches, scale)
    meta = model_meta(
        r,
        config,
        input_scale=(scale, norm),
        intensity=intensity,
        stats=(mean, std),
        voxel_size=voxel_size,
    )
    if split:
        meta["split"] = dict(split)
    amp = training_autocast(r.precision, dev)  # None: plain float32
    meta["training_precision"] = "bfloat16" if amp is not None else "float32"
    rng = np.random.default_rng(r.seed)
    gen = torch.Generator().manual_seed(r.seed)
    torch.manual_seed(r.seed)
    model = BrainAreaCNN(config, batch_norm=r.batch_norm)
    if r.init == "he":
        init_weights(model, seed=r.seed)
    # channels-last activations: about 1.3x faster training steps on a CPU (oneDNN)
    model = model.to(dev, memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=r.lr)
    xs = torch.from_numpy(np.ascontiguousarray(train.patches))[:, None]  # (N, 1, P, P)
    ys = torch.from_numpy(train.targets)  # (N,)
    xv = torch.from_numpy(np.ascontiguousarray(val.patches))[:, None]  # (M, 1, P, P)
    yv = torch.from_numpy(val.targets)  # (M,)
    if dev.type == "cuda":  # small enough to live on the GPU
        xs, ys, xv, yv = (t.to(dev) for t in (xs, ys, xv, yv))
    counts = np.bincount(train.targets, minlength=config.n_classes).astype(np.float64)
    weight = torch.tensor(
        counts.sum() / (config.n_classes * np.maximum(counts, 1)), dtype=torch.float32, device=dev
    )  # (K,): 1 when balanced
    n_batches = -(-len(ys) // r.batch_size)
    total = r.epochs * n_batches
    sched = None
    if r.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)

    def deployable(m: BrainAreaCNN) -> BrainAreaCNN:
        m = fold_batch_norm(m) if r.batch_norm else m
        return fold_input_normalisation(m, mean, std) if r.standardise else m

    def batch(idx: torch.Tensor) -> torch.Tensor:
        """The raw training patches ``idx`` as the network trains on them."""
        x = xs[idx].to(dev, non_blocking=True).float().mul_(scale)  # (B, 1, P, P)
        if r.augment:
            x = augment_batch(x, gen, mix=r.mix, rotate=r.rotate, intensity=intensity, clip=clip,
                              gradient=r.gradient, contrast=r.contrast)  # fmt: skip
        if r.standardise:
            x = x.sub_(mean).div_(std)
        c = config.in_channels
        return x.expand(-1, c, -1, -1).contiguous(memory_format=torch.channels_last)

    history: list[dict[str, float]] = []
    best = {"epoch": 0, "val_acc": -1.0, "val_loss": np.inf}
    best_state, path, stopped, t0 = None, None, False, time.perf_counter()
    staged = Staged(checkpoint_path)
    try:
        for epoch in range(1, r.epochs + 1):
            model.train()
            te = time.perf_counter()
            order = torch.from_numpy(rng.permutation(len(ys))).to(ys.device)
            loss_sum, correct = 0.0, 0
            for b in range(n_batches):
                idx = order[b * r.batch_size : (b + 1) * r.batch_size]
                t = ys[idx].to(dev)  # (B,)
                x = batch(idx)
                with torch.autocast(dev.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
                    logits = model(x).float()  # (B, K)
                loss = F.cross_entropy(logits, t, weight=weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if sched is not None:
                    sched.step()
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == t).sum())
                step = (epoch - 1) * n_batches + b + 1
                yield Progress(step, total, f"epoch {epoch}/{r.epochs}, batch {b + 1}/{n_batches}")
            tr_loss, tr_acc = loss_sum / len(ys), correct / len(ys)
            if not np.isfinite(tr_loss):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch} (loss {tr_loss!r}); "
                    f"lower lr (got {r.lr!r})"
                )
            va_loss, va_acc = _score(model, xv, yv, (scale, mean, std), 64, dev, weight)
            rec = {
                "epoch": epoch,
                "train_loss": tr_loss,
                "train_acc": tr_acc,
                "val_loss": va_loss,
                "val_acc": va_acc,
                "seconds": time.perf_counter() - te,
            }
            history.append({k: float(v) for k, v in rec.items()})
            improved = va_acc > best["val_acc"] or (
                va_acc == best["val_acc"] and va_loss < best["val_loss"]
            )
            if improved:
                best = {"epoch": epoch, "val_acc": va_acc, "val_loss": va_loss}
                best_state = copy.deepcopy(model.state_dict())
                meta["training"] = training_record(
                    r, train, val, history, best=best, device=dev, started=t0
                )
                best_model = deployable(model)
                staged.save(lambda p: save_cnn(p, best_model, classes=classes, meta=meta))  # noqa: B023
            msg = f"epoch {epoch}/{r.epochs}: val_acc {va_acc:.3f}" + (
                " (best)" if improved else ""
            )
            yield Progress(epoch * n_batches, total, msg, {k: float(v) for k, v in rec.items()})
            if r.stops(epoch, int(best["epoch"])):
                stopped = True
                break
    except BaseException:  # Cancel (GeneratorExit) or an error: an earlier model stays
        staged.stop()
        raise
    model.load_state_dict(best_state)  # set in epoch 1: any accuracy beats -1
    model = deployable(model.to(memory_format=torch.contiguous_format))
    meta["training"] = training_record(r, train, val, history, best=best, device=dev, started=t0)
    meta["training"]["stopped_early"] = stopped
    if checkpoint_path is not None:
        path = save_cnn(checkpoint_path, model, classes=classes, meta=meta)
        staged.drop()
    best_epoch, best_acc = int(best["epoch"]), float(best["val_acc"])
    return TrainResult(model.eval(), history, best_epoch, best_acc, meta, path, stopped)
