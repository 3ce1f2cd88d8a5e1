"""Small models shared by the tests (import as ``from helpers import ...``)."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
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


_HOLDER = (
    "import sys; from napari_brainfeatures.workspace import Workspace; "
    "ws = Workspace.open(sys.argv[1], mode='r+'); print('ready', flush=True); "
    "sys.stdin.read()"  # hold the write lease until the test closes stdin (or kills us)
)


def start_holder(root) -> subprocess.Popen:
    """Another process that holds ``root``'s write lease until its stdin is closed."""
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


@contextlib.contextmanager
def workspace_held_elsewhere(root) -> Iterator[subprocess.Popen]:
    """:func:`start_holder` for the ``with`` block; the holder exits at its end."""
    p = start_holder(root)
    try:
        yield p
    finally:
        p.communicate(input="", timeout=30)


def two_areas(side: int = 80, n: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` square sections of two areas side by side: (uint8 image, areas).

    Area 1 (left half) is dark noise in 0..99, area 2 (right half) the same plus 150.
    """
    rng = np.random.default_rng(seed)
    image = (rng.random((n, side, side)) * 100).astype(np.uint8)
    image[:, :, side // 2 :] += 150
    areas = np.ones((n, side, side), np.uint8)
    areas[:, :, side // 2 :] = 2
    return image, areas


def two_area_store(folder, name: str = "feat.zarr"):
    """A 40x44 two-area image (bright right half) and its tiny-CNN feature store (stride 2)."""
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.progress import run

    rng = np.random.default_rng(0)
    image = (rng.random((40, 44)) * 120).astype(np.uint8)
    image[:, 22:] += 120
    path = folder / name
    run(compute_feature_map(image, tiny_cnn(), out=path, stride=2, tile=8))
    return path, image


def band_labels(shape: tuple[int, int, int], ids: tuple[int, ...], top: int = 0) -> np.ndarray:
    """uint8 labels ``(Z, H, W)``: vertical bands of equal width, ``ids`` left to right.

    The first ``top`` rows are left unpainted (0).
    """
    lab = np.zeros(shape, np.uint8)
    w, n = shape[2], len(ids)
    for i, area in enumerate(ids):
        lab[:, top:, w * i // n : w * (i + 1) // n] = area
    return lab


def textures(
    shape: tuple[int, int, int] = (5, 80, 96), ids: tuple[int, int] = (1, 2), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two bands of the same mean grey, smooth (``ids[0]``) and grainy: (uint8 image, labels).

    Only texture tells them apart, so a CNN that learns them learned more than brightness.
    """
    rng = np.random.default_rng(seed)
    lab = band_labels(shape, ids)
    img = np.where(lab == ids[0], rng.normal(110, 8, shape), rng.normal(110, 40, shape))
    return np.clip(img, 0, 255).astype(np.uint8), lab


def one_section_split_model(folder, n_classes: int = 2):
    """A tiny CNN saved with a spatial split of one section: (model file, image, areas, split).

    The section (1, 8P, 10P) holds two areas side by side of different brightness.
    """
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import save_cnn
    from napari_brainfeatures.train.regions import spatial_split

    net = tiny_cnn(n_classes)
    p = net.config.patch_size
    areas = np.ones((1, 8 * p, 10 * p), np.uint8)
    areas[:, :, 5 * p :] = 2
    image = (np.random.default_rng(0).random(areas.shape) * 60 + 60 * areas).astype(np.uint8)
    sm = spatial_split(areas[0], patch_size=p, seed=0)
    names = [chr(ord("a") + i) for i in range(n_classes)]
    meta = {"split": sm.to_dict()}
    model = save_cnn(folder / "split", net, classes=ClassTable.from_names(names), meta=meta)
    return model, image, areas, sm
