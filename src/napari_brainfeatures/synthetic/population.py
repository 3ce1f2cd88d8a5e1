"""A population of synthetic coronal sections for the β-VAE (paper 004).

Stand-in for the 1,723 Allen auto-fluorescence sections (slice 286 of 528,
25 µm, cropped to 320×448).  One fixed template section — brain outline with
a dorsal midline fissure, a layered cortex ring, corpus callosum and internal
capsule (bright fibre tracts), hippocampus with its bright cell layers,
striatum with dark fibre bundles, thalamus, hypothalamus, dark ventricles —
is deformed and re-lit per individual by eight known, independent factors
(``FACTOR_NAMES``; standard normal, decorrelated over the sample, clipped to
±2.5):

==================  =========================================================
scale               size of the whole brain (×e^(±0.04) per unit)
tilt                in-plane (left/right) rotation (±3° per unit)
cortex_thickness    cortex thickness, pial surface fixed (±8 % per unit)
hpf_size            local swelling/shrinking of the hippocampus (±10 %)
str_size            local swelling/shrinking of the striatum (±10 %)
th_brightness       thalamic auto-fluorescence (±12 %)
vl_size             size of the ventricles (±12 % per unit)
brightness          overall raw brightness (×e^(±0.25)); pre-processing removes it
==================  =========================================================

Every deformation is a fixed smooth displacement field times a per-individual
coefficient, so a population is one small matrix product plus a bilinear
lookup (256 sections at 320×448 in a few seconds).  Raw-like intensities:
tissue ≈ 100·e^(0.25·brightness), background ≈ 3, plus noise.  A fraction of
the sections carry one of the paper's artefacts (``ARTIFACT_NAMES``); their
``clean`` counterparts are the same sections (same noise) without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage as ndi

__all__ = [
    "ARTIFACT_NAMES", "FACTOR_NAMES", "ROI_NAMES", "Population", "make_population",
    "render_sections",
]  # fmt: skip

ROI_NAMES = ("background", "CTX", "HPF", "STR", "TH", "VL", "HY")
FACTOR_NAMES = (
    "scale", "tilt", "cortex_thickness", "hpf_size", "str_size", "th_brightness", "vl_size",
    "brightness",
)  # fmt: skip
ARTIFACT_NAMES = ("none", "leakage", "missing stripe", "grid")
_TISSUE = 100.0  # raw tissue level at brightness 0
_CY, _T, _CC = 0.02, 0.26, 0.06  # brain centre (v), cortex and callosum thickness (units)
_HPF = ((0.36, -0.34), (0.32, 0.14))  # (|u|, v) centre, (ru, rv) radii
_STR = ((0.64, 0.08), (0.14, 0.22))
_LV = ((0.6, -0.14), (0.13, 0.025))  # lateral ventricle; the third is at u = 0
_UNLABELLED = 255  # internal id of brain tissue outside every ROI


@dataclass
class Population:
    """Synthetic sections with their ground truth.

    Attributes
    ----------
    images : float32 array (N, H, W)
        Raw-like non-negative sections, artefacts included.
    clean : float32 array (N, H, W)
        The same sections without artefacts (``images == clean`` where ``artifact == 0``).
    rois : uint8 array (H, W)
        ROI annotation of the template; ids index ``roi_names`` (0 = background
        or unlabelled tissue).
    roi_names : tuple of str
        ``("background", "CTX", "HPF", "STR", "TH", "VL", "HY")``: cortex (incl.
        SSp), hippocampal formation, striatum, thalamus, ventricles, hypothalamus.
    factors : float32 array (N, F)
        Generative factors of each individual (``factor_names``), in units of
        their population standard deviation.
    factor_names : tuple of str
    artifact : int8 array (N,)
        0 none, 1 bright leakage, 2 missing stripe(s), 3 scanning grid.
    artifact_names : tuple of str
    rois_individual : uint8 array (N, H, W)
        Each individual's own ROI map (the template's, deformed with it).
    seed : int
    """

    images: NDArray[np.float32]
    clean: NDArray[np.float32]
    rois: NDArray[np.uint8]
    factors: NDArray[np.float32]
    artifact: NDArray[np.int8]
    rois_individual: NDArray[np.uint8]
    roi_names: tuple[str, ...] = ROI_NAMES
    factor_names: tuple[str, ...] = FACTOR_NAMES
    artifact_names: tuple[str, ...] = ARTIFACT_NAMES
    seed: int = 0

    def __len__(self) -> int:
        return len(self.images)


def _ell(u: Any, v: Any, c: tuple[float, float], r: tuple[float, float], ang: float = 0.0) -> Any:
    """Elliptic radius (1 on the boundary) around ``c`` with radii ``r``, rotated by ``ang``."""
    du, dv = u - c[0], v - c[1]
    co, si = np.cos(ang), np.sin(ang)
    return np.sqrt(((du * co + dv * si) / r[0]) ** 2 + ((-du * si + dv * co) / r[1]) ** 2)


@lru_cache(maxsize=4)
def _template(h: int, w: int) -> dict[str, NDArray[Any]]:
    """Template intensity, thalamus part, labels and displacement fields for one shape."""
    sy, sx = h / 2.0, w / 2.8  # pixels per unit
    v = (((np.arange(h) + 0.5) / h - 0.5) * 2.0)[:, None]  # (H, 1), dorsal < 0
    u = (((np.arange(w) + 0.5) / w - 0.5) * 2.8)[None, :]  # (1, W)
    au = np.abs(u)

    def soft(d: Any) -> Any:  # occupancy of a signed distance d (units, > 0 inside)
        return np.clip(0.5 + d * sy, 0.0, 1.0)

    ay = np.where(v < _CY, 0.80, 0.72)
    lev = ((au / 1.2) ** 2.3 + (np.abs(v - _CY) / ay) ** 2.3) ** (1 / 2.3)  # (H, W), 1 = pia
    brain = soft((1 - lev) * 0.75)
    hy = soft((1 - _ell(au, v, (0.0, 0.52), (0.36, 0.26))) * 0.26) * brain
    below_ctx = soft((lev - (1 - _T)) * 0.75)
    cortex = brain * below_ctx * (1 - hy)
    under_cc = 1 - soft((lev - (1 - _T - _CC)) * 0.75)
    cc = brain * (1 - under_cc) * (1 - below_ctx) * soft(0.3 - v) * (1 - hy)
    ic = soft(0.03 - np.abs(au - 0.5 - 0.3 * v)) * soft(v + 0.05) * soft(0.45 - v) * brain
    rho_h = _ell(au, v, *_HPF, 0.2)
    hpf = soft((1 - rho_h) * _HPF[1][1]) * under_cc
    ca = np.exp(-(((rho_h - 0.72) / 0.06) ** 2)) * (v < _HPF[0][1] + 0.03)
    dg = np.exp(-(((_ell(au, v, (0.36, -0.31), (0.17, 0.06), 0.2) - 1) / 0.15) ** 2))
    stri = soft((1 - _ell(au, v, *_STR, -0.3)) * _STR[1][0]) * brain
    th = soft((1 - _ell(au, v, (0.0, 0.03), (0.44, 0.27))) * 0.27) * under_cc
    rlv = (_LV[1][0], max(_LV[1][1], 1.6 / sy))
    r3 = (max(0.014, 1.6 / sx), 0.2)
    vl = np.maximum(soft((1 - _ell(au, v, _LV[0], rlv, 0.6)) * rlv[1]),
                    soft((1 - _ell(u, v, (0.0, 0.3), r3)) * r3[0])) * brain  # fmt: skip

    rng = np.random.default_rng(2004)  # the template (the "atlas") is the same for every seed
    tex = ndi.gaussian_filter(rng.standard_normal((h, w)), 1.2 * sy / 160)
    tex = 0.05 * tex / tex.std() + 0.04 * _smooth(rng, (h, w), 6.0 * sy / 160)
    dots = np.clip(ndi.gaussian_filter((rng.random((h, w)) < 0.015) * 1.0, 1.0) * 10, 0, 1)
    depth = np.clip((1 - lev) / _T, 0, 1)
    layers = (0.95 - 0.2 * np.exp(-((depth / 0.07) ** 2))  # dim layer 1, bright 4 and 6
              + 0.3 * np.exp(-(((depth - 0.42) / 0.09) ** 2))
              + 0.15 * np.exp(-(((depth - 0.75) / 0.1) ** 2)))  # fmt: skip
    img = np.full((h, w), 0.9)
    for mask, val in ((cortex, layers), (hy, 0.85), (th, 1.12), (stri, 0.98 - 0.4 * dots),
                      (ic * (1 - stri), 1.2), (cc, 1.4), (hpf, 0.72 + 0.75 * ca + 0.6 * dg),
                      (vl, 0.12)):  # fmt: skip
        img = img + mask * (val - img)
    fissure = np.exp(-((u * sx / 1.2) ** 2)) * soft(-0.5 - v)
    img = img * (1 + tex) * (1 - 0.7 * fissure)
    t_img = brain * img + (1 - brain) * 0.03

    labels = np.where(brain > 0.5, _UNLABELLED, 0).astype(np.uint8)
    for rid, mask in ((1, cortex), (6, hy), (4, th), (3, stri), (2, hpf), (5, vl)):
        labels[mask > 0.5] = rid

    # displacement fields (units): sample position = pixel + Σ coefficient · field
    du, dv = u + 0 * v, v - _CY + 0 * u
    wl = np.where(lev > 1 - _T, 0.5 * (1 - np.cos(np.pi * np.clip((1 - lev) / _T, 0, 1))),
                  0.5 * (1 + np.cos(np.pi * np.clip((1 - _T - lev) / 0.12, 0, 1))))  # fmt: skip
    wl = wl * (1 - soft(0.3 - au) * soft(v - 0.3)) * _T / np.maximum(lev, 1e-3)

    def bumps(centres: list[tuple[float, float]], r: tuple[float, float]) -> tuple[Any, Any]:
        """Scaling about each centre: uniform inside radii ``r``, fading out by 2× ``r``."""
        fu, fv = 0 * au, 0 * au
        for cu, cv in centres:
            x = np.clip(2 - np.sqrt(((u - cu) / r[0]) ** 2 + ((v - cv) / r[1]) ** 2), 0, 1)
            g = x * x * (3 - 2 * x)  # 1 inside, smoothstep to 0 at twice the radii
            fu, fv = fu - g * (u - cu), fv - g * (v - cv)
        return fu, fv

    (hu, hv), _ = _HPF
    fields = [
        (du, dv), (-dv, du), (wl * du, wl * dv),
        bumps([(hu, hv), (-hu, hv)], (0.3, 0.15)),
        bumps([_STR[0], (-_STR[0][0], _STR[0][1])], (0.15, 0.22)),
        _add(bumps([_LV[0], (-_LV[0][0], _LV[0][1])], (0.13, 0.05)),
             bumps([(0.0, 0.3)], (0.03, 0.2))),
    ]  # fmt: skip
    f = np.stack([np.stack([fu * sx, fv * sy]) for fu, fv in fields]).astype(
        np.float32
    )  # (J, 2, H, W)
    out = {"image": t_img, "thalamus": th * (1 - hpf) * (1 - vl) * t_img, "labels": labels,
           "fields": f.reshape(len(fields), -1)}  # fmt: skip
    for key, arr in out.items():
        out[key] = np.ascontiguousarray(arr, dtype=np.uint8 if key == "labels" else np.float32)
        out[key].flags.writeable = False
    return out


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> NDArray[Any]:
    g = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return g / max(float(g.std()), 1e-12)


def _add(a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
    return a[0] + b[0], a[1] + b[1]


def _check_shape(shape: Any) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be two integers (H, W), got {shape!r}") from None
    if h < 32 or w < 32:
        raise ValueError(f"shape must be at least (32, 32), got {shape!r}")
    return h, w


def _coefficients(f: NDArray[np.float64]) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Displacement coefficients (N, 6) and thalamus gains (N,) of factor rows (N, 8)."""
    s, t = np.exp(0.04 * f[:, 0]), np.deg2rad(3.0) * f[:, 1]
    coef = np.stack([np.cos(t) / s - 1, np.sin(t) / s, 0.08 * f[:, 2], 0.1 * f[:, 3],
                     0.1 * f[:, 4], 0.12 * f[:, 6]], axis=1)  # fmt: skip
    return coef.astype(np.float32), 1 + 0.12 * f[:, 5]


def _render(f: NDArray[np.float64], shape: tuple[int, int], noise: np.random.Generator | None):  # type: ignore[no-untyped-def]
    """Clean raw sections (N, H, W) float32 and internal labels (N, H, W) uint8."""
    h, w = shape
    tpl = _template(h, w)
    coef, gain_th = _coefficients(f)
    gain = (_TISSUE * np.exp(0.25 * f[:, 7])).astype(np.float32)
    images, labels = np.empty((len(f), h, w), np.float32), np.empty((len(f), h, w), np.uint8)
    col = np.arange(w, dtype=np.float32)[None, :]
    row = np.arange(h, dtype=np.float32)[:, None]
    if noise is not None:  # a noise tile; each section reads its own random window of it
        bank = noise.standard_normal((2 * h, 2 * w), dtype=np.float32)
        offsets = noise.integers(0, [h, w], size=(len(f), 2))
    for a in range(0, len(f), 16):
        b = min(a + 16, len(f))
        disp = (coef[a:b] @ tpl["fields"]).reshape(b - a, 2, h, w)  # (B, 2, H, W) pixels
        xs, ys = disp[:, 0], disp[:, 1]  # (B, H, W) source positions, template pixels
        np.clip(np.add(xs, col, out=xs), 0, w - 1.001, out=xs)
        np.clip(np.add(ys, row, out=ys), 0, h - 1.001, out=ys)
        x0, y0 = np.floor(xs), np.floor(ys)
        idx = (y0 * w + x0).astype(np.int32)  # (B, H, W) flat index of the top-left neighbour
        fx, fy = np.subtract(xs, x0, out=xs), np.subtract(ys, y0, out=ys)
        near = idx + (fx >= 0.5) + w * (fy >= 0.5).astype(np.int32)
        labels[a:b] = tpl["labels"].ravel()[near]
        idx += (np.arange(b - a, dtype=np.int32) * (h * w))[:, None, None]
        src = (
            tpl["image"] + (gain_th[a:b, None, None] - 1).astype(np.float32) * tpl["thalamus"]
        ).ravel()
        top = src[idx]
        top += fx * (src[idx + 1] - top)
        idx += w
        bot = src[idx]
        bot += fx * (src[idx + 1] - bot)
        img = np.add(top, fy * (bot - top), out=top)  # (B, H, W), tissue ~ 1
        if noise is not None:
            sd = np.sqrt(img)
            sd *= 0.03
            sd += 0.015
            for k, (oy, ox) in enumerate(offsets[a:b]):
                img[k] += sd[k] * bank[oy : oy + h, ox : ox + w]
        np.maximum(img, 0, out=img)
        images[a:b] = img * gain[a:b, None, None]
    return images, labels


def render_sections(
    factors: ArrayLike,
    *,
    shape: tuple[int, int] = (320, 448),
    noise_seed: int | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Render clean sections for given factor rows (no artefacts).

    Parameters
    ----------
    factors : array (N, 8)
        Rows of ``FACTOR_NAMES`` values (0 = the template, ±1 = one standard deviation).
    shape : (H, W)
        Section size, default (320, 448); at least (32, 32).
    noise_seed : int, optional
        Seed of the pixel noise; default None renders without noise.

    Returns
    -------
    images : float32 (N, H, W)
        Raw-like non-negative sections.
    rois : uint8 (N, H, W)
        Each section's ROI map (ids index ``ROI_NAMES``).
    """
    f = np.atleast_2d(np.asarray(factors, dtype=np.float64))
    if f.ndim != 2 or f.shape[1] != len(FACTOR_NAMES) or not np.isfinite(f).all():
        raise ValueError(
            f"factors must be finite rows of {len(FACTOR_NAMES)} values {FACTOR_NAMES!r}, "
            f"got shape {f.shape!r}"
        )
    noise = None if noise_seed is None else np.random.default_rng([int(noise_seed), 4002])
    images, labels = _render(f, _check_shape(shape), noise)
    labels[labels == _UNLABELLED] = 0
    return images, labels


def _draw_factors(n: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Independent standard normals, decorrelated over the sample (ZCA) when n allows."""
    f = rng.standard_normal((n, len(FACTOR_NAMES)))
    if n >= 4 * len(FACTOR_NAMES):
        f -= f.mean(0)
        vals, vecs = np.linalg.eigh(np.cov(f, rowvar=False))
        f = f @ (vecs / np.sqrt(vals)) @ vecs.T
    return np.clip(f, -2.5, 2.5)


def make_population(
    n: int = 256,
    *,
    shape: tuple[int, int] = (320, 448),
    seed: int = 0,
    artifact_fraction: float = 0.1,
) -> Population:
    """A deterministic population of ``n`` synthetic coronal sections.

    Parameters
    ----------
    n : int
        Number of individuals (>= 1); default 256 (a few seconds at 320×448).
    shape : (H, W)
        Section size, default (320, 448) (the paper's crop); at least (32, 32).
    seed : int
        Seed of the factors, noise and artefacts (the template is fixed).
    artifact_fraction : float
        Fraction of sections (rounded) with an artefact, in [0, 1]; the three
        kinds take turns, so each occurs once at least 3 sections carry one.

    Returns
    -------
    Population
    """
    if not isinstance(n, int | np.integer) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= float(artifact_fraction) <= 1.0:
        raise ValueError(f"artifact_fraction must be in [0, 1], got {artifact_fraction!r}")
    h, w = _check_shape(shape)
    seed = int(seed)
    factors = _draw_factors(int(n), np.random.default_rng([seed, 4001]))
    clean, labels = _render(factors, (h, w), np.random.default_rng([seed, 4002]))
    rng = np.random.default_rng([seed, 4003])
    n_bad = int(round(float(artifact_fraction) * n))
    bad = np.sort(rng.choice(n, n_bad, replace=False))
    artifact = np.zeros(n, np.int8)
    artifact[bad] = 1 + rng.permutation(np.arange(n_bad) % 3)
    images = clean.copy()
    for i in bad:
        images[i] = _ARTIFACTS[int(artifact[i])](clean[i], labels[i] > 0, rng)
    labels[labels == _UNLABELLED] = 0
    rois = _template(h, w)["labels"].copy()
    rois[rois == _UNLABELLED] = 0
    return Population(
        images=images, clean=clean, rois=rois, factors=factors.astype(np.float32),
        artifact=artifact, rois_individual=labels, seed=seed,
    )  # fmt: skip


# -- artefacts (each returns a new float32 section) -----------------------------------------
def _leakage(img: NDArray[np.float32], brain: NDArray[np.bool_], rng: np.random.Generator) -> Any:
    """Bright leakage from the green channel: 1-3 elongated blobs, 5-12× the tissue level."""
    h, w = img.shape
    level = float(img[brain].mean()) if brain.any() else float(img.mean())
    ys, xs = np.nonzero(brain) if brain.any() else (np.array([h // 2]), np.array([w // 2]))
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    add = np.zeros_like(img)
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(len(ys)))
        sa, sb = rng.uniform(2, 8, 2) * (h / 160) * np.array([1.0, rng.uniform(1, 3)])
        ang = rng.uniform(0, np.pi)
        dy, dx = yy - ys[k], xx - xs[k]
        a, b = dy * np.cos(ang) + dx * np.sin(ang), -dy * np.sin(ang) + dx * np.cos(ang)
        add += rng.uniform(5, 12) * level * np.exp(-0.5 * ((a / sa) ** 2 + (b / sb) ** 2))
    return (img + add * brain).astype(np.float32)


def _stripe(img: NDArray[np.float32], brain: NDArray[np.bool_], rng: np.random.Generator) -> Any:
    """Missing data from sectioning: 1-2 straight bands (3-10 % of the height) set to 0."""
    h, w = img.shape
    out = img.copy()
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    ys, xs = np.nonzero(brain) if brain.any() else (np.array([h // 2]), np.array([w // 2]))
    for _ in range(int(rng.integers(1, 3))):
        k = int(rng.integers(len(ys)))
        ang = rng.uniform(-0.3, 0.3) + (np.pi / 2 if rng.random() < 0.3 else 0.0)
        d = np.abs((yy - ys[k]) * np.cos(ang) - (xx - xs[k]) * np.sin(ang))
        out[d < rng.uniform(0.015, 0.05) * h] = 0.0
    return out


def _grid(img: NDArray[np.float32], brain: NDArray[np.bool_], rng: np.random.Generator) -> Any:
    """Scanning tiles: vignetting per tile and dark or bright seams on a regular grid."""
    h, w = img.shape
    period = rng.uniform(0.09, 0.14) * h

    def axis(n: int) -> tuple[Any, Any]:
        ph = ((np.arange(n) - rng.uniform(0, period)) % period) / period  # (n,) in [0, 1)
        seam = np.exp(-((np.minimum(ph, 1 - ph) * period / 1.2) ** 2))
        return 1 - rng.uniform(0.15, 0.35) * (2 * ph - 1) ** 2, seam

    vy, sy = axis(h)
    vx, sx = axis(w)
    seam = sy[:, None] + sx[None, :] - sy[:, None] * sx[None, :]
    depth = rng.uniform(0.3, 0.6) * (1 if rng.random() < 0.7 else -1)
    return (img * vy[:, None] * vx[None, :] * (1 - depth * seam)).astype(np.float32)


_ARTIFACTS = {1: _leakage, 2: _stripe, 3: _grid}
