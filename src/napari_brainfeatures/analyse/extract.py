"""Feature extractors: patches ``(N, P, P)`` -> features ``(N, D)`` (paper 000).

A trained :class:`BrainAreaCNN`, the same architecture with random weights (the
baseline that needs no download, standardised like the trained network), or a
torchvision ImageNet network from a weights file the user provides
(:func:`feature_extractor`).  Patches are uint8, other integers (divided by
their dtype's maximum) or float in [0, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from napari_brainfeatures._util.device import resolve_device
from napari_brainfeatures.models.cnn import (
    BrainAreaCNN,
    CNNConfig,
    fold_input_normalisation,
    load_cnn,
    to_input,
)

__all__ = ["FeatureFn", "feature_extractor", "training_input_stats"]

FeatureFn = Callable[[np.ndarray], np.ndarray]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _batched(
    net: Callable[[torch.Tensor], torch.Tensor],
    prep: Callable[[Any], torch.Tensor],
    batch_size: int,
    dev: torch.device,
) -> FeatureFn:
    @torch.no_grad()
    def extract(patches: np.ndarray) -> np.ndarray:
        patches = np.asarray(patches)
        if patches.ndim != 3:
            raise ValueError(f"patches must have shape (N, P, P), got {patches.shape!r}")
        out = [
            net(prep(patches[i : i + batch_size]).to(dev)).float().cpu()
            for i in range(0, len(patches), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    return extract


def _cnn_fn(model: BrainAreaCNN, relu: bool, batch_size: int, dev: torch.device) -> FeatureFn:
    model = model.to(dev).eval()
    cfg = model.config

    def prep(p: np.ndarray) -> torch.Tensor:
        if p.shape[-1] != cfg.patch_size or p.shape[-2] != cfg.patch_size:
            raise ValueError(
                f"the network takes {cfg.patch_size}x{cfg.patch_size} patches, got "
                f"{p.shape[-2]}x{p.shape[-1]}; sample patches of the model's size"
            )
        return to_input(p, in_channels=cfg.in_channels)  # (B, C, P, P)

    return _batched(lambda x: model.features(x, relu=relu), prep, batch_size, dev)


def _torchvision_fn(
    arch: str,
    weights: str | os.PathLike[str],
    input_size: int,
    batch_size: int,
    dev: torch.device,
    arch_kwargs: dict[str, Any] | None,
) -> FeatureFn:
    try:
        import torchvision
    except ImportError:
        raise ImportError(
            "the 'torchvision' baseline needs torchvision, which is not installed; install the "
            "build matching your torch (pip install torchvision) or use kind='random'"
        ) from None
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} not found; nothing is downloaded here")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    try:
        net = torchvision.models.get_model(arch, weights=None, **(arch_kwargs or {}))
    except ValueError as err:
        raise ValueError(f"unknown torchvision architecture {arch!r}: {err}") from None
    net.load_state_dict(state)
    for head in ("fc", "classifier", "heads"):
        if hasattr(net, head):
            setattr(net, head, torch.nn.Identity())  # penultimate features
            break
    net = net.to(dev).eval()
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    def prep(p: np.ndarray) -> torch.Tensor:
        x = to_input(p, in_channels=3)  # (B, 3, P, P) in [0, 1]
        x = torch.nn.functional.interpolate(x, size=(input_size, input_size), mode="bilinear")
        return (x - mean) / std  # (B, 3, S, S)

    return _batched(net, prep, batch_size, dev)


def training_input_stats(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The (mean, std) a model's training standardised its input by, if it did."""
    rec = meta.get("training_standardisation") or {}
    if rec.get("applied") and "mean" in rec and "std" in rec:
        return float(rec["mean"]), float(rec["std"])
    return None


def feature_extractor(
    kind: str,
    *,
    model: BrainAreaCNN | str | os.PathLike[str] | None = None,
    config: CNNConfig | None = None,
    seed: int = 0,
    relu: bool = False,
    arch: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    input_size: int = 224,
    arch_kwargs: dict[str, Any] | None = None,
    batch_size: int = 256,
    device: str | None = None,
    input_stats: tuple[float, float] | None = None,
) -> FeatureFn:
    """A function ``patches (N, P, P) -> features (N, D) float32``.

    Parameters
    ----------
    kind : {'cnn', 'random', 'torchvision'}
        'cnn': a trained network (``model``: a :class:`BrainAreaCNN` or a model file);
        'random': the same architecture (``config``, or ``model``'s) with random
        weights drawn from ``seed``; 'torchvision': ``arch`` (e.g. 'resnet18',
        'inception_v3') with the weights in ``weights`` (.safetensors, or a
        state-dict .pth loaded with ``weights_only``); its classifier is removed.
    relu : bool
        CNN kinds: post-ReLU features (True) or the FC2 output before its ReLU as in
        the authors' analyses (False, default).
    input_size : int
        torchvision: grey patches are repeated to 3 channels, resized to this side
        (224; 299 for Inception v3) and ImageNet-normalised.
    arch_kwargs : dict, optional
        torchvision: extra ``get_model`` arguments (e.g. ``{"aux_logits": True,
        "init_weights": False}`` for inception_v3).
    batch_size : int
    device : str, optional
        Default CUDA when available.
    input_stats : (mean, std), optional
        'random': standardise the input by these, as the trained network does
        (its training folds the training patches' mean and std into its first
        convolution); default: the ones recorded in ``model``'s training
        (:func:`training_input_stats`), none without a record.  Without them a
        random network fed a 12-bit scan scaled by 1/65535 sees nearly constant
        patches, and the baseline measures the intensity scale, not the features.
    """
    dev = resolve_device(device)
    if kind in ("cnn", "random"):
        if isinstance(model, str | os.PathLike):
            model, meta = load_cnn(model)
            input_stats = input_stats or training_input_stats(meta)
        if kind == "cnn":
            if not isinstance(model, BrainAreaCNN):
                raise ValueError(f"kind='cnn' needs a BrainAreaCNN or model file, got {model!r}")
            return _cnn_fn(model, relu, batch_size, dev)
        cfg = config or (model.config if isinstance(model, BrainAreaCNN) else CNNConfig())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rand = BrainAreaCNN(cfg)
        if input_stats is not None:
            rand = fold_input_normalisation(rand, *input_stats)
        return _cnn_fn(rand, relu, batch_size, dev)
    if kind == "torchvision":
        if not arch or weights is None:
            raise ValueError(
                "kind='torchvision' needs arch= (e.g. 'resnet18') and weights= (a file)"
            )
        return _torchvision_fn(arch, weights, input_size, batch_size, dev, arch_kwargs)
    raise ValueError(f"kind must be 'cnn', 'random' or 'torchvision', got {kind!r}")
