"""What one CNN training run is: its defaults, checked options and the record it leaves.

:data:`DEFAULTS` and :func:`make_config` pick the network and the CPU-sized
recipe; :func:`init_weights` is its He initialisation.  :class:`Recipe` holds the
options of one :func:`~napari_brainfeatures.train.fit.train_cnn` run and checks
them; :func:`model_meta` and :func:`training_record` write the description and
training record stored in the model file, and :func:`training_history` reads
the per-epoch curves back from it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_brainfeatures import __version__
from napari_brainfeatures._util.device import PRECISIONS
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig
from napari_brainfeatures.train.bounds import (
    BATCH_SIZE,
    EPOCHS,
    LR,
    PATIENCE,
    PROBABILITY,
    SEED,
    check_optional,
)
from napari_brainfeatures.train.patches import PatchSet

__all__ = [
    "DEFAULTS",
    "VARIANTS",
    "MIN_CONTRAST",
    "Recipe",
    "check_contrast",
    "check_sets",
    "init_weights",
    "overlapping_patches",
    "make_config",
    "model_meta",
    "training_history",
    "training_record",
]

VARIANTS = ("default", "authors")
# Defaults sized for a CPU (2 cores: ~5 min on the synthetic sample with AMX; without it about
# 12 min, estimated from float32's 154 samples/s;
# see benchmarks/bench_train_cnn.py); the paper used 2000 / 1000 patches per class.
DEFAULTS: dict[str, Any] = {
    # 1000: the train_cnn benchmark's 90.5 % median (seeds 0-2: 92.3 / 89.6 / 90.5 %, 258-303 s
    # each in bfloat16 on a 2-core CPU with AMX) where 600 gave 88.3 % (87.5-89.8 %)
    "per_class": 1000,
    "eval_per_class": 250,
    "epochs": 18,  # 14 before the v2 sample: 89.1 % there, 90.3 % with 18 (450 s)
    "batch_size": 32,
    "lr": 1e-3,
    "patience": 5,
}
#: Training patches whose std is at most this fraction of their span have no contrast.
MIN_CONTRAST = 1e-4
_HISTORY_KEYS = ("epoch", "train_loss", "val_loss", "train_acc", "val_acc")


def make_config(
    variant: str = "default", *, patch_size: int = 128, n_classes: int = 6, context: int = 1
) -> CNNConfig:
    """The paper's network: ``"default"`` (no internal padding) or ``"authors"`` (padded, RGB).

    ``context`` K > 1 (default variant only): the multi-scale input, a window of
    ``patch_size`` seen as its central ``patch_size / K`` px and as K x K averages.
    """
    if variant == "default":
        return CNNConfig(patch_size=patch_size, n_classes=n_classes, context=context)
    if variant == "authors":
        if context != 1:
            raise ValueError(
                f"the authors' padded variant has no multi-scale input (context {context!r}); "
                "use the default variant for context > 1"
            )
        return CNNConfig.authors(patch_size=patch_size, n_classes=n_classes)
    raise ValueError(f"variant must be one of {VARIANTS!r}, got {variant!r}")


def init_weights(model: BrainAreaCNN, *, seed: int = 0) -> BrainAreaCNN:
    """He (Kaiming-normal) initialisation for the ReLU layers, zero biases, a small head.

    PyTorch's default (uniform, variance 1 / (3 fan_in)) shrinks the signal at
    every ReLU layer of this BatchNorm-free network, so the first epochs learn
    little; He initialisation keeps activations at unit scale.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in [*model.convs, *model.fcs, *getattr(model, "ctx_convs", [])]:
            fan_in = layer.weight[0].numel()
            layer.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=g)
            layer.bias.zero_()
        model.head.weight.normal_(0.0, 0.01, generator=g)
        model.head.bias.zero_()
    return model


@dataclass(frozen=True)
class Recipe:
    """The options of one training run, checked (see :func:`~.fit.train_cnn`'s parameters)."""

    epochs: int
    batch_size: int
    lr: float
    augment: bool = True
    standardise: bool = True
    mix: float = 0.8
    rotate: float = 0.5
    gradient: float = 0.0
    contrast: float = 0.0
    schedule: str = "cosine"
    init: str = "he"
    batch_norm: bool = False
    patience: int | None = DEFAULTS["patience"]
    seed: int = 0
    precision: str = "auto"

    def __post_init__(self) -> None:
        checks = {"epochs": EPOCHS, "batch_size": BATCH_SIZE, "lr": LR, "seed": SEED}
        checks |= {"mix": PROBABILITY, "rotate": PROBABILITY}
        checks |= {"gradient": PROBABILITY, "contrast": PROBABILITY}
        for name, bounds in checks.items():  # the command line's ranges (train.bounds)
            object.__setattr__(self, name, bounds.check(name, getattr(self, name)))
        patience = check_optional(PATIENCE, "patience", self.patience)
        object.__setattr__(self, "patience", patience or None)  # 0: never stop early
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")
        if self.init not in ("he", "torch"):
            raise ValueError(f"init must be 'he' or 'torch', got {self.init!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS!r}, got {self.precision!r}")

    def stops(self, epoch: int, best_epoch: int) -> bool:
        """Whether early stopping ends the run after ``epoch`` (not after the last one)."""
        waited = epoch - best_epoch
        return self.patience is not None and waited >= int(self.patience) and epoch < self.epochs


def check_sets(train: PatchSet, val: PatchSet, config: CNNConfig, classes: ClassTable) -> None:
    """Refuse training and validation patches that do not fit each other or the network.

    Also refuses training patches without contrast (:func:`check_contrast`).
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"need training and validation patches, got {len(train)} and {len(val)}")
    check_contrast(train.patches)
    if train.class_ids != val.class_ids:
        raise ValueError(
            f"training classes {train.class_ids!r} differ from validation classes "
            f"{val.class_ids!r}; sample both with the same classes"
        )
    if train.patch_size != val.patch_size or train.patch_size != config.patch_size:
        raise ValueError(
            f"patch sizes differ: training {train.patch_size}, validation {val.patch_size}, "
            f"network {config.patch_size}"
        )
    if config.n_classes != len(train.class_ids):
        raise ValueError(
            f"the network has {config.n_classes} outputs but the patches {len(train.class_ids)} "
            "classes; build the config with n_classes=len(classes)"
        )
    shared = sorted(set(train.slices) & set(val.slices))
    n_over = overlapping_patches(train, val) if shared else 0
    if n_over:
        raise ValueError(
            f"training and validation share slices {shared!r} and {n_over} validation patches "
            "overlap training patches; split the slices by region (spatial_split, "
            "sample_splits(split_map=...)) or take validation patches from other slices"
        )
    if len(classes) != config.n_classes:
        raise ValueError(f"classes has {len(classes)} entries for {config.n_classes} outputs")


def check_contrast(patches: np.ndarray, what: str = "training patches") -> None:
    """Refuse patches whose intensities hardly vary: a blank or constant image.

    Their standard deviation (on up to 512 patches) must exceed :data:`MIN_CONTRAST`
    of the span of their integer dtype, or of their largest magnitude for floats; a
    constant volume would otherwise train on noise divided by a tiny std (huge weights).
    """
    p = np.asarray(patches)
    sample = p[:: max(1, len(p) // 512)].astype(np.float64)
    if p.dtype.kind in "ui":
        info = np.iinfo(p.dtype)
        span, of = float(info.max) - float(info.min), f"the {p.dtype.name} range"
    else:
        span, of = float(np.nanmax(np.abs(sample), initial=0.0)), "their largest value"
    std = float(np.nanstd(sample)) if sample.size else 0.0
    if not std > MIN_CONTRAST * span:
        raise ValueError(
            f"the {what} have no contrast: a standard deviation of {std:.3g} for {of} "
            f"{span:.3g} (at most {MIN_CONTRAST:g} of it); the image is blank or constant "
            "where the labels are painted (an all-zero volume, an empty channel or region); "
            "check the image, or paint the labels on tissue"
        )


def overlapping_patches(a: PatchSet, b: PatchSet) -> int:
    """How many patches of ``b`` overlap (share a pixel with) some patch of ``a``."""
    from scipy.spatial import cKDTree

    n, p = 0, a.patch_size
    for z in set(a.slices) & set(b.slices):
        ca, cb = a.centres[a.centres[:, 0] == z, 1:], b.centres[b.centres[:, 0] == z, 1:]
        dist, _ = cKDTree(ca).query(cb, p=np.inf)  # Chebyshev: windows overlap below p
        n += int((dist < p).sum())
    return n


def model_meta(
    recipe: Recipe,
    config: CNNConfig,
    *,
    input_scale: tuple[float, str],
    intensity: tuple[float, float],
    stats: tuple[float, float],
    voxel_size: Sequence[float] | float | None,
) -> dict[str, Any]:
    """The description a trained model file carries (its ``training`` record comes later).

    ``input_scale``: ``(scale, normalisation)`` of the raw patches;
    ``intensity``: the augmentation's intensity range; ``stats``: the training
    standardisation's ``(mean, std)``.
    """
    r = recipe
    mean, std = stats
    return {
        "normalisation": input_scale[1],
        "input_scale": input_scale[0],
        "voxel_size_um": _voxel(voxel_size),
        "variant": "authors" if config.is_padded else "default",
        "init": r.init,
        "border_mix": r.mix if r.augment else 0.0,
        "rotate": r.rotate if r.augment else 0.0,
        # augmentation for real scans (train.augment): probabilities per patch, 0 = off
        "intensity_gradient": r.gradient if r.augment else 0.0,
        "local_contrast": r.contrast if r.augment else 0.0,
        "augment_intensity_range": list(intensity) if r.augment else None,
        "lr_schedule": r.schedule,
        # trained with batch normalisation, folded into the convolutions (a plain network)
        "batch_norm_folded": r.batch_norm,
        "training_standardisation": {
            "applied": r.standardise,
            "mean": mean,
            "std": std,
            "folded_into_first_conv": r.standardise,
        },
    }


def training_record(
    recipe: Recipe,
    train: PatchSet,
    val: PatchSet,
    history: list[dict[str, float]],
    *,
    best: dict[str, float],
    device: torch.device,
    started: float,
) -> dict[str, Any]:
    """The ``training`` record of a model file: options, data, best epoch, curves, provenance.

    ``best``: ``epoch``, ``val_acc`` and ``val_loss`` of the best epoch so far;
    ``started``: the run's :func:`time.perf_counter` at its start.
    """
    r = recipe
    return {
        "epochs": int(r.epochs),
        "epochs_run": len(history),
        "best_epoch": int(best["epoch"]),
        "best_val_acc": float(best["val_acc"]),
        "best_val_loss": float(best["val_loss"]),
        "lr": float(r.lr),
        "batch_size": int(r.batch_size),
        "augment": bool(r.augment),
        "seed": int(r.seed),
        "slices": {"train": train.slices, "val": val.slices},
        "counts": {
            "train": {str(k): v for k, v in train.counts.items()},
            "val": {str(k): v for k, v in val.counts.items()},
        },
        # classes painted as strokes: training patches centred on the paint, not inside it
        "centred_classes": [int(c) for c in train.centred],
        # the least share of a patch in tissue (None: no tissue mask restricted the patches)
        "min_tissue": train.min_tissue,
        "device": str(device),
        "wall_s": round(time.perf_counter() - started, 3),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "history": list(history),
    }


def training_history(meta: dict[str, Any]) -> list[dict[str, float]]:
    """Per-epoch records from a model file's training record (empty if absent or odd)."""
    training = meta.get("training")
    rows = training.get("history") if isinstance(training, dict) else None
    if not isinstance(rows, list):
        return []
    return [dict(r) for r in rows if isinstance(r, dict) and all(k in r for k in _HISTORY_KEYS)]


def _voxel(voxel_size: Sequence[float] | float | None) -> list[float] | None:
    if voxel_size is None:
        return None
    if np.isscalar(voxel_size):
        return [float(voxel_size)] * 3  # type: ignore[arg-type]
    return [float(v) for v in voxel_size]  # type: ignore[union-attr]
