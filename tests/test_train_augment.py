"""Augmentation for real scans: smooth brightness gradients and local contrast changes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_brainfeatures.models.cnn import CNNConfig
from napari_brainfeatures.train.augment import (
    CONTRAST_SPAN,
    GRADIENT_SPAN,
    augment_batch,
    intensity_gradient,
    local_contrast,
    random_rotation,
)
from napari_brainfeatures.train.recipe import Recipe, model_meta


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_off_means_untouched_and_the_old_random_draws():
    x = torch.rand(6, 1, 32, 32, generator=_gen(1))
    assert intensity_gradient(x, _gen(), p=0.0) is x
    assert local_contrast(x, _gen(), p=0.0) is x
    g1, g2 = _gen(3), _gen(3)
    a = augment_batch(x, g1, mix=0.5, rotate=0.5)
    b = augment_batch(x, g2, mix=0.5, rotate=0.5, gradient=0.0, contrast=0.0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))  # same draws
    c = augment_batch(x, _gen(3), mix=0.5, rotate=0.5, gradient=1.0, contrast=1.0)
    assert not torch.equal(a, c)


def test_intensity_gradient_is_a_smooth_ramp_of_bounded_size():
    x = torch.full((64, 1, 48, 48), 0.5)
    out = intensity_gradient(x, _gen(2), p=1.0, span=1.0)
    d = out - x  # (B, 1, P, P): the added field
    spread = d.amax(dim=(1, 2, 3)) - d.amin(dim=(1, 2, 3))
    assert (spread > 0).float().mean() > 0.9  # nearly every patch got one
    assert spread.max() <= 2 * 1.5 * GRADIENT_SPAN + 1e-6
    assert spread.max() > 0.5 * GRADIENT_SPAN
    # smooth: neighbouring pixels differ by a tiny fraction of the whole change
    step = (d[..., 1:, :] - d[..., :-1, :]).abs().amax()
    assert step < 4 * spread.max() / 48  # at most ~4x the mean slope of a linear ramp
    half = intensity_gradient(x, _gen(2), p=0.5)
    changed = (half != x).flatten(1).any(1).float().mean()
    assert 0.25 < changed < 0.75


def test_local_contrast_changes_contrast_gently_and_keeps_the_mean():
    g = _gen(4)
    x = 0.5 + 0.1 * torch.randn(32, 1, 64, 64, generator=g)
    out = local_contrast(x, _gen(5), p=1.0)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=0.01, rtol=0)
    ratio = (out - x.mean(dim=(1, 2, 3), keepdim=True)) / (x - x.mean(dim=(1, 2, 3), keepdim=True))
    corners = torch.stack([ratio[:, 0, :4, :4].median(), ratio[:, 0, -4:, -4:].median()])
    assert ratio.min() >= 1 - CONTRAST_SPAN - 1e-4 and ratio.max() <= 1 + CONTRAST_SPAN + 1e-4
    per_patch = ratio.flatten(1)
    assert (per_patch.amax(1) - per_patch.amin(1)).mean() > 0.1  # it varies across a patch
    assert torch.isfinite(corners).all()


def test_rotation_is_continuous():
    """Any angle: a bar rotated by a random angle is no longer axis-aligned."""
    x = torch.zeros(16, 1, 33, 33)
    x[:, :, 16, 4:29] = 1.0
    out = random_rotation(x, _gen(6), p=1.0)
    angles = []
    for img in out[:, 0]:
        ys, xs = np.nonzero(img.numpy() > 0.3)
        angles.append(np.degrees(np.arctan2(np.polyfit(xs, ys, 1)[0], 1)))
    assert len({round(a) for a in angles}) > 8 and max(abs(a) for a in angles) > 20


def test_recipe_checks_and_the_model_records_the_options():
    r = Recipe(epochs=1, batch_size=8, lr=1e-3, gradient=0.5, contrast=0.25)
    meta = model_meta(r, CNNConfig(), input_scale=(1 / 255, "uint8/255"), intensity=(0, 1),
                      stats=(0.0, 1.0), voxel_size=None)  # fmt: skip
    assert meta["intensity_gradient"] == 0.5 and meta["local_contrast"] == 0.25
    assert meta["rotate"] == 0.5
    off = Recipe(epochs=1, batch_size=8, lr=1e-3, augment=False, gradient=0.5)
    meta = model_meta(off, CNNConfig(), input_scale=(1 / 255, "uint8/255"), intensity=(0, 1),
                      stats=(0.0, 1.0), voxel_size=None)  # fmt: skip
    assert meta["intensity_gradient"] == 0.0
    with pytest.raises(ValueError, match="gradient"):
        Recipe(epochs=1, batch_size=8, lr=1e-3, gradient=1.5)
