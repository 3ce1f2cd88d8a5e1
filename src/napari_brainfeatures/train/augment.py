"""Training augmentation: flips, rotation, border mixing, intensity jitter and noise.

:func:`augment_batch` is what :func:`~napari_brainfeatures.train.fit.train_cnn`
applies to every training batch: a random rotation (:func:`random_rotation`: any
angle, with the flips; fibre orientation varies continuously in real tissue),
"border mixing" (:func:`border_mix`: another patch beyond a random straight
line, so interior training patches prepare the network for the boundary
patches of validation and test), the 8 flips/rotations of the square, and
contrast/brightness jitter and noise scaled to the data's own intensity range
(:func:`intensity_range`; clipped to :func:`value_range`).  Two more are for
real scans, off by default: a smooth brightness gradient across the field
(:func:`intensity_gradient`: a scan brighter at its top and bottom) and local
contrast changes (:func:`local_contrast`: staining and density that vary
across a section).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "augment_batch", "border_mix", "intensity_gradient", "intensity_range", "local_contrast",
    "random_rotation", "value_range",
]  # fmt: skip

GRADIENT_SPAN = 0.08  # largest brightness change across a patch, a fraction of the range
CONTRAST_SPAN = 0.3  # local contrast gains lie in 1 -+ this
_CONTRAST_GRID = 3  # control points per side of the smooth contrast field


def border_mix(x: torch.Tensor, generator: torch.Generator, *, p: float = 0.5) -> torch.Tensor:
    """Replace the far side of a random straight boundary by the same pixels of another patch.

    Interior training patches never show an area boundary, but validation and
    test patches often do (their centre's class is the label).  With
    probability ``p`` a patch gets, beyond a line of random orientation at
    distance ``P // 16`` to ``P // 2 - 4`` px from its centre, the pixels of a
    random other patch of the batch, so its centre and the majority of its
    pixels keep its own class.  ``x``: ``(B, C, P, P)``.
    """
    b, pp = x.shape[0], x.shape[-1]
    if b < 2 or p <= 0 or pp < 32:
        return x
    partner = torch.randperm(b, generator=generator).to(x.device)  # (B,)
    use = (torch.rand(b, generator=generator) < p).to(x.device)  # (B,)
    theta = (2 * torch.pi * torch.rand(b, generator=generator)).to(x.device)  # (B,)
    lo, hi = max(2, pp // 16), pp // 2 - 4
    dist = (lo + (hi - lo) * torch.rand(b, generator=generator)).to(x.device)  # (B,)
    c = torch.arange(pp, device=x.device, dtype=x.dtype) - (pp - 1) / 2
    along = (
        theta.cos()[:, None, None] * c[None, :, None]
        + theta.sin()[:, None, None] * c[None, None, :]
    )  # (B, P, P)
    mask = (along > dist[:, None, None]) & use[:, None, None]  # (B, P, P)
    return torch.where(mask[:, None], x[partner], x)  # (B, C, P, P)


def random_rotation(x: torch.Tensor, generator: torch.Generator, *, p: float = 0.5) -> torch.Tensor:
    """Rotate some patches about their centre by a random angle in [-45°, 45°).

    With the dihedral flips of :func:`augment_batch` this covers every
    orientation, as tissue has (fibres and layers run at any angle).  Bilinear
    sampling; the corners that come from outside the patch are mirrored in
    from inside it.  ``x``: ``(B, C, P, P)``; probability ``p`` per patch.
    """
    b = x.shape[0]
    if p <= 0 or b == 0:
        return x
    use = torch.rand(b, generator=generator) < p  # (B,)
    if not bool(use.any()):
        return x
    theta = (torch.rand(b, generator=generator) - 0.5) * (torch.pi / 2)  # (B,)
    idx = use.nonzero()[:, 0]  # (R,): only these are resampled; the others stay exact
    cos, sin = theta[idx].cos(), theta[idx].sin()
    idx = idx.to(x.device)
    affine = torch.zeros(len(idx), 2, 3)
    affine[:, 0, 0], affine[:, 0, 1], affine[:, 1, 0], affine[:, 1, 1] = cos, -sin, sin, cos
    affine = affine.to(x.device, x.dtype)
    sub = x[idx]  # (R, C, P, P)
    grid = F.affine_grid(affine, list(sub.shape), align_corners=False)  # (R, P, P, 2)
    out = x.clone()
    out[idx] = F.grid_sample(
        sub, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return out


def _chosen(b: int, p: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(b, generator=generator) < p).to(device)  # (B,)


def intensity_gradient(
    x: torch.Tensor, generator: torch.Generator, *, p: float = 0.5, span: float = 1.0
) -> torch.Tensor:
    """Add a smooth brightness gradient across some patches (a scan's uneven illumination).

    A ramp along a random direction, linear or bent (brighter at both ends, as a
    section brighter at its top and bottom than in its middle), changing the
    brightness by up to :data:`GRADIENT_SPAN` of ``span`` across the patch.
    ``x``: ``(B, C, P, P)``; probability ``p`` per patch.
    """
    b, pp = x.shape[0], x.shape[-1]
    if p <= 0 or b == 0:
        return x
    r = torch.rand(b, 4, generator=generator).to(x.device, x.dtype)  # (B, 4)
    use = _chosen(b, p, generator, x.device)
    c = torch.linspace(-1.0, 1.0, pp, device=x.device, dtype=x.dtype)  # (P,)
    theta = 2 * torch.pi * r[:, 0]
    t = (
        theta.cos()[:, None, None] * c[None, :, None]
        + theta.sin()[:, None, None] * c[None, None, :]
    )
    t = t / np.sqrt(2.0)  # (B, P, P) in [-1, 1]
    bent = (r[:, 1] < 0.5)[:, None, None]
    ramp = torch.where(bent, 2 * t * t - 0.5, t)  # (B, P, P)
    amp = span * GRADIENT_SPAN * (2 * r[:, 2] - 1) * use  # (B,)
    return x + (amp[:, None, None] * ramp)[:, None]  # (B, C, P, P)


def local_contrast(x: torch.Tensor, generator: torch.Generator, *, p: float = 0.5) -> torch.Tensor:
    """Scale the contrast of some patches by a smooth field of gains in 1 -+ 0.3.

    The gains are bilinear between a 3 x 3 grid of random values, applied about
    each patch's mean, so the contrast changes gently across the patch.
    ``x``: ``(B, C, P, P)``; probability ``p`` per patch.
    """
    b, pp = x.shape[0], x.shape[-1]
    if p <= 0 or b == 0:
        return x
    g = _CONTRAST_GRID
    grid = torch.rand(b, 1, g, g, generator=generator).to(x.device, x.dtype)  # (B, 1, g, g)
    use = _chosen(b, p, generator, x.device)[:, None, None, None]
    gain = 1 + CONTRAST_SPAN * (2 * grid - 1)
    field = F.interpolate(gain, size=(pp, pp), mode="bilinear", align_corners=True)  # (B,1,P,P)
    mean = x.mean(dim=(-1, -2, -3), keepdim=True)  # (B, 1, 1, 1)
    return torch.where(use, mean + (x - mean) * field, x)


def intensity_range(patches: np.ndarray, scale: float) -> tuple[float, float]:
    """The intensity scale ``(lo, hi)`` of raw patches, in network units (after ``scale``).

    Brightness and noise jitter are fractions of this span.  uint8 (micro-CT
    bytes, the paper's data): ``(0, 1)``, the full byte range.  Anything else:
    the 0.1th and 99.9th percentiles of the patches' pixels, so neither an
    offset (a 12-bit signal at 30000-34000 in uint16), a narrow range inside a
    wide dtype, nor a few hot pixels sets the scale.
    """
    p = np.asarray(patches)
    if p.size == 0:
        raise ValueError("no patches to take an intensity range from")
    if p.dtype == np.uint8:
        return 0.0, 1.0
    if p.dtype.kind == "f" and not np.isfinite(p).all():
        raise ValueError("patches hold NaN or infinite values")
    sample = p[:: max(1, len(p) // 256)].reshape(-1)[::4].astype(np.float64)
    lo, hi = (float(v) * scale for v in np.percentile(sample, [0.1, 99.9]))
    return (lo, hi) if hi > lo else (lo, lo + max(abs(lo), 1.0) * 1e-3)


def value_range(patches: np.ndarray, scale: float) -> tuple[float, float]:
    """Where augmented or noisy patches are clipped, in network units.

    uint8: ``(0, 1)``; anything else: the patches' minimum and maximum.
    """
    p = np.asarray(patches)
    if p.dtype == np.uint8:
        return 0.0, 1.0
    lo, hi = float(p.min()) * scale, float(p.max()) * scale
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("patches hold NaN or infinite values")
    return lo, hi


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    mix: float = 0.5,
    rotate: float = 0.0,
    intensity: tuple[float, float] = (0.0, 1.0),
    clip: tuple[float, float] | None = None,
    gradient: float = 0.0,
    contrast: float = 0.0,
) -> torch.Tensor:
    """Rotation, border mixing, a random dihedral transform, contrast/brightness jitter, noise.

    ``x``: ``(B, C, P, P)`` with intensities in ``intensity = (lo, hi)``
    (:func:`intensity_range`; default [0, 1]); returns a new tensor of the same
    shape, clipped to ``clip`` (:func:`value_range`; default ``intensity``).
    Contrast ±10 % about the range's middle, brightness ±5 % and noise sd up
    to 3 % of its span.  Randomness comes from
    ``generator`` (a CPU generator).  ``mix`` is the probability of
    :func:`border_mix` per patch, ``rotate`` that of :func:`random_rotation`,
    ``gradient`` that of :func:`intensity_gradient` and ``contrast`` that of
    :func:`local_contrast` (both default 0: off; with them off the random draws,
    and so the patches, are those of earlier versions).
    """
    x = random_rotation(x, generator, p=rotate)
    x = border_mix(x, generator, p=mix)
    b = x.shape[0]
    r = torch.rand(b, 6, generator=generator).to(x.device)  # (B, 6)
    m = (r[:, :3] < 0.5)[:, :, None, None, None]  # (B, 3, 1, 1, 1)
    x = torch.where(m[:, 0], x.transpose(-1, -2), x)  # the three generate all 8 symmetries
    x = torch.where(m[:, 1], x.flip(-1), x)
    x = torch.where(m[:, 2], x.flip(-2), x)
    lo, hi = (float(v) for v in intensity)
    if not hi > lo:
        raise ValueError(f"intensity range must have lo < hi, got {intensity!r}")
    mid, span = (lo + hi) / 2, hi - lo  # 0.5 and 1 for [0, 1]: the same arithmetic as before
    gain = (0.9 + 0.2 * r[:, 3])[:, None, None, None]  # (B, 1, 1, 1): contrast +-10 %
    shift = span * (0.1 * r[:, 4] - 0.05)[:, None, None, None]  # brightness +-5 % of the span
    sigma = span * (0.03 * r[:, 5])[:, None, None, None]  # noise sd up to 3 % of the span
    noise = torch.randn(x.shape, generator=generator).to(x.device)  # (B, C, P, P)
    bottom, top = clip if clip is not None else (lo, hi)
    x = (x - mid) * gain + mid + shift + sigma * noise
    x = local_contrast(x, generator, p=contrast)
    x = intensity_gradient(x, generator, p=gradient, span=span)
    return x.clamp_(bottom, top)
