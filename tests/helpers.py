"""Small models shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import dataclasses

import torch

from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig

# D = 8 (three pools): the smallest CNN with the paper's layer types; 32 px patches.
TINY_CNN = CNNConfig(
    patch_size=32,
    channels=(4, 8, 8),
    kernels=(5, 3, 3),
    paddings=(0, 0, 0),
    fc=(16, 8),
    n_classes=3,
)


def tiny_cnn(n_classes: int = 3, *, seed: int = 0) -> BrainAreaCNN:
    """A seeded :data:`TINY_CNN` with ``n_classes`` outputs, in eval mode."""
    torch.manual_seed(seed)
    return BrainAreaCNN(dataclasses.replace(TINY_CNN, n_classes=n_classes)).eval()
