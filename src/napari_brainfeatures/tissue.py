"""The tissue mask of a section, and how much of each patch window lies in tissue.

A real micro-CT section does not fill its image: there is background around the
cut faces and the pial surface, and vessel lumens are dark holes inside it.
Features of patches that see background describe the edge, not the tissue, so
the NMF, the factor selection, the clustering and the scores count only pixels
in tissue whose patch window lies (mostly) in tissue.

:func:`tissue_mask` computes the mask by a fixed, documented rule
(:class:`TissueOptions`), per 2-D section (a volume slice by slice):

1. **Smooth** the image with a Gaussian of ``sigma`` px (default 4), and measure
   texture (cells, fibres): the root mean square, over the same Gaussian, of the
   image minus its 1 px Gaussian blur.
2. **Threshold** the smoothed intensity by Otsu's method (``method="intensity"``,
   the default) or the log texture (``method="texture"``: a brightness gradient
   across the section does not move it; the result is eroded by a disk of
   ``sigma``, as texture spreads that far past a cut face).  For intensity, the
   tissue is the side whose texture is clearly richer (its 90th percentile more
   than 15 % above the other's; else the brighter side, as tissue absorbs more
   X-rays than the medium around it) with ``polarity="auto"``, or the brighter /
   darker side.
3. **Refuse a split of tissue**: the intensity split is kept only when the
   background side is flat, its median texture below ``flat_ratio`` (0.5) times
   the tissue side's, or when the two sides differ by a step: their median
   smoothed intensities ``step_ratio`` (3) times the tissue's median texture apart
   (background as noisy as tissue at the pixel scale, as in a real scan);
   otherwise the whole section is tissue (a section that fills its image has two
   textured sides of about the same brightness).
4. **Largest components**: keep the connected pieces of at least
   ``min_component`` (0.1) of the largest one's area (specks of debris go).
5. **Fill small holes**: background pieces enclosed by tissue of at most
   ``max_hole`` px (4096, a disk ~72 px across: vessels) become tissue; larger
   ones (ventricles, tears) stay background.

:func:`window_fraction` is the edge-aware part: for every dense output pixel the
fraction of its patch window inside tissue (a box filter of the patch size,
read at the output pixels).  :meth:`~napari_brainfeatures.features.grid.FeatureGrid.context_inside`
applies it on a feature grid.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = [
    "MIN_CONTEXT", "TissueOptions", "check_min_context", "edited_slices", "tissue_mask",
    "window_fraction", "write_tissue_slice",
]  # fmt: skip

METHODS = ("intensity", "texture")
POLARITIES = ("auto", "bright", "dark")
# A pixel counts for NMF, selection and clustering when at least this fraction of its
# patch window lies in tissue.  1.0: the whole patch (64 px inside a straight edge for a
# 128 px patch).  Measured on features that average the window (tests/test_tissue.py):
# with 0.9 the band where 5-10 % of the window is background still formed a cluster
# and an NMF factor of its own; with >= 0.95 (on a 12 px patch: the whole patch) none.
MIN_CONTEXT = 1.0


def _real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def check_min_context(value: Any, *, name: str = "min_context") -> float:
    """``value`` as a fraction in [0, 1] (0 switches the edge handling off).

    Raises
    ------
    ValueError
        Not a number in [0, 1], quoting it.
    """
    if not (_real(value) and 0 <= value <= 1):
        raise ValueError(
            f"{name} must be a fraction of the patch window in [0, 1] (0: off), got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class TissueOptions:
    """The tissue-mask rule's settings (see the module docstring).

    Parameters
    ----------
    sigma : float
        Smoothing and texture scale in pixels, > 0; default 4.
    method : {'intensity', 'texture'}
        What is thresholded by Otsu's method.
    polarity : {'auto', 'bright', 'dark'}
        Which side of an intensity split is tissue; 'auto': the more textured.
    flat_ratio : float in (0, 1]
        An intensity split is kept when the background's median texture is below
        this times the tissue's; default 0.5.
    step_ratio : float > 0
        ... or when the sides' median smoothed intensities differ by more than this
        times the tissue's median texture; default 3.
    min_component : float in [0, 1]
        Keep tissue pieces of at least this fraction of the largest; default 0.1.
    max_hole : int >= 0
        Fill enclosed background pieces of at most this many pixels; default 4096.
    threshold : float, optional
        Use this threshold instead of Otsu's (intensity, or texture for 'texture').
    """

    sigma: float = 4.0
    method: str = "intensity"
    polarity: str = "auto"
    flat_ratio: float = 0.5
    step_ratio: float = 3.0
    min_component: float = 0.1
    max_hole: int = 4096
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not (_real(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be a number of pixels > 0, got {self.sigma!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS!r}, got {self.method!r}")
        if self.polarity not in POLARITIES:
            raise ValueError(f"polarity must be one of {POLARITIES!r}, got {self.polarity!r}")
        if not (_real(self.flat_ratio) and 0 < self.flat_ratio <= 1):
            raise ValueError(f"flat_ratio must be in (0, 1], got {self.flat_ratio!r}")
        if not (_real(self.step_ratio) and self.step_ratio > 0):
            raise ValueError(f"step_ratio must be a number > 0, got {self.step_ratio!r}")
        if not (_real(self.min_component) and 0 <= self.min_component <= 1):
            raise ValueError(f"min_component must be in [0, 1], got {self.min_component!r}")
        if isinstance(self.max_hole, bool) or not isinstance(self.max_hole, numbers.Integral):
            raise ValueError(f"max_hole must be an integer >= 0 (pixels), got {self.max_hole!r}")
        if self.max_hole < 0:
            raise ValueError(f"max_hole must be an integer >= 0 (pixels), got {self.max_hole!r}")
        if self.threshold is not None and not _real(self.threshold):
            raise ValueError(f"threshold must be a number or None, got {self.threshold!r}")


def _otsu(values: np.ndarray) -> float:
    from skimage.filters import threshold_otsu

    sample = values.reshape(-1)[:: max(1, values.size // 2_000_000)]  # ≤ 2 M values
    return float(threshold_otsu(sample))


def _disk(r: float) -> np.ndarray:
    n = int(math.ceil(r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    return yy * yy + xx * xx <= r * r


def _core(side: np.ndarray, r: float) -> np.ndarray:
    """``side`` eroded by a disk of ``r`` px, or ``side`` itself when nothing would be left."""
    inner = ndimage.binary_erosion(side, _disk(r), border_value=1)
    return inner if inner.any() else side


def _split(image: np.ndarray, opts: TissueOptions) -> np.ndarray:
    """Steps 1–3: the raw tissue side of one 2-D section."""
    img = image.astype(np.float32)
    s = ndimage.gaussian_filter(img, opts.sigma)
    fine = img - ndimage.gaussian_filter(img, 1.0)  # cell-scale detail: a cut face adds ~2 px
    tex = np.sqrt(ndimage.gaussian_filter(fine * fine, opts.sigma))  # local texture
    if opts.method == "texture":
        logt = np.log(tex + 1e-6 * (float(tex.max()) + 1e-12))
        t = opts.threshold if opts.threshold is not None else _otsu(logt)
        # texture spreads ~sigma px past a cut face (the Gaussian's tail): take it back
        return ndimage.binary_erosion(logt > t, _disk(opts.sigma), border_value=1)
    if float(s.max()) <= float(s.min()):
        return np.ones(img.shape, dtype=bool)  # a flat image: nothing to split
    t = opts.threshold if opts.threshold is not None else _otsu(s)
    bright = s > t
    if not bright.any() or bright.all():
        return np.ones(img.shape, dtype=bool)
    # each side's texture away from the split line (an edge's step shows up as texture there)
    core = [_core(side, 2 * opts.sigma) for side in (bright, ~bright)]
    tex_bright, tex_dark = (float(np.median(tex[c])) for c in core)
    # which side is tissue: the one whose textured tail (cells, fibres) is clearly richer;
    # where pixel noise makes the two alike (within 15 %), the brighter (X-ray absorbing) one
    tail_bright, tail_dark = (float(np.percentile(tex[c], 90)) for c in core)
    brighter_is_tissue = tail_dark < 1.15 * tail_bright
    if opts.polarity == "bright" or (opts.polarity == "auto" and brighter_is_tissue):
        tissue, tissue_tex, back_tex = bright, tex_bright, tex_dark
    else:
        tissue, tissue_tex, back_tex = ~bright, tex_dark, tex_bright
    step = abs(float(np.median(s[tissue])) - float(np.median(s[~tissue])))
    flat = back_tex < opts.flat_ratio * tissue_tex
    if opts.polarity == "auto" and not (flat or step > opts.step_ratio * tissue_tex):
        return np.ones(img.shape, dtype=bool)  # both sides textured alike: all of it is tissue
    return tissue


def _clean(mask: np.ndarray, opts: TissueOptions) -> np.ndarray:
    """Steps 4–5: largest components, small enclosed holes filled."""
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    keep = np.concatenate([[False], sizes >= opts.min_component * sizes.max()])
    mask = keep[lab]
    holes, n = ndimage.label(~mask)
    if n == 0 or opts.max_hole == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    small = sizes <= opts.max_hole
    small[0] = False
    border = np.unique(
        np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])
    )  # background reaching the image edge is not a hole
    small[border] = False
    return mask | small[holes]


def tissue_mask(image: Any, options: TissueOptions | None = None, **overrides: Any) -> np.ndarray:
    """Which pixels of a section are tissue (the rule in the module docstring).

    Parameters
    ----------
    image : array ``(Y, X)`` or ``(Z, Y, X)``, numpy, dask or zarr
        Grey values; a volume is done slice by slice.
    options : TissueOptions, optional
        Default :class:`TissueOptions()`.
    **overrides
        Any :class:`TissueOptions` field, set on top of ``options``.

    Returns
    -------
    ndarray of bool, the image's shape
        True in tissue; never where the image is NaN or infinite (not measured).
    """
    import dataclasses

    opts = dataclasses.replace(options or TissueOptions(), **overrides)
    ndim = getattr(image, "ndim", np.ndim(image))
    if ndim not in (2, 3):
        shape = getattr(image, "shape", np.shape(image))
        raise ValueError(f"image must be 2-D (Y, X) or 3-D (Z, Y, X), got shape {shape!r}")
    if ndim == 3:
        return np.stack([tissue_mask(image[z], opts) for z in range(image.shape[0])])
    img = np.asarray(image)
    if img.dtype.kind not in "uif" or img.dtype == bool:
        raise ValueError(f"image must hold grey values (numbers), got dtype {img.dtype}")
    if min(img.shape) < 2:
        raise ValueError(f"image must be at least 2x2 pixels, got {img.shape!r}")
    bad = ~np.isfinite(img) if img.dtype.kind == "f" else None
    if bad is None or not bad.any():
        if img.size and img.min() == img.max():  # nothing to tell tissue from background by
            import warnings

            warnings.warn(
                f"the section holds one grey value ({img.flat[0]}) only: its mask is all "
                "tissue; check that this is the image you meant",
                stacklevel=2,
            )
        return _clean(_split(img, opts), opts)
    if bad.all():  # nothing measured (NaN or infinite everywhere): no tissue
        return np.zeros(img.shape, dtype=bool)
    filled = np.where(bad, np.min(img[~bad]), img)  # unmeasured pixels: as dark as any
    return _clean(_split(filled, opts) & ~bad, opts) & ~bad


def window_fraction(mask: Any, rows: Any, cols: Any, patch: int | tuple[int, int]) -> np.ndarray:
    """Fraction of each patch window inside ``mask``: a box filter read at some pixels.

    The window of pixel ``(y, x)`` is the patch centred on it as the dense feature
    store centres patches: rows ``y - P//2 .. y - P//2 + P - 1`` (64 before and 63
    after for P = 128), the same for columns.  Pixels of the window outside the
    image count as outside the mask.

    Parameters
    ----------
    mask : bool array ``(Y, X)``
        Tissue (True) and background.
    rows, cols : int arrays ``(h,)``, ``(w,)``
        The image rows and columns of the output pixels (e.g. a feature grid's).
    patch : int or (int, int)
        Patch size ``P`` (or ``(Py, Px)``) in image pixels, >= 1.

    Returns
    -------
    ndarray ``(h, w)`` float32 in [0, 1]
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (Y, X), got shape {m.shape!r}")
    py, px = (patch, patch) if isinstance(patch, numbers.Integral) else tuple(patch)
    if any(isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 1 for p in (py, px)):
        raise ValueError(f"patch must be a size in pixels >= 1 (or two), got {patch!r}")
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    (h, w), (py, px) = m.shape, (int(py), int(px))
    # Sums over [start, start + P) from cumulative sums (index 0 = nothing), clipped to the image.
    c0 = np.clip(cols - px // 2, 0, w)
    c1 = np.clip(cols - px // 2 + px, 0, w)
    csum = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(m.astype(bool), axis=1, dtype=np.int32, out=csum[:, 1:])
    across = csum[:, c1] - csum[:, c0]  # (Y, w): window sums along x
    del csum
    r0 = np.clip(rows - py // 2, 0, h)
    r1 = np.clip(rows - py // 2 + py, 0, h)
    rsum = np.zeros((h + 1, across.shape[1]), dtype=np.int64)
    np.cumsum(across, axis=0, out=rsum[1:])
    return ((rsum[r1] - rsum[r0]) / float(py * px)).astype(np.float32)


# -- the workspace's tissue store: computed slices are recorded, edits are kept -------
_RECORD = "computed_slices"  # store attribute: z -> {"crc32": ..., "options": ...}


def _crc(mask: Any) -> int:
    import zlib

    return zlib.crc32(np.ascontiguousarray(np.asarray(mask) > 0).tobytes())


def edited_slices(store: Any, slices: Any) -> list[int]:
    """Which of ``slices`` of a tissue store hold a mask the rule did not write as it is.

    A slice is *edited* when it has tissue pixels and either no record of a computed
    mask (painted by hand, or computed before records were kept) or different bytes
    from the recorded one (painted over); all-zero slices were never computed.
    ``store``: a ``(Z, Y, X)`` zarr array (``Workspace.tissue()``).
    """
    record = dict(store.attrs.get(_RECORD, {}))
    out = []
    for z in slices:
        mask = np.asarray(store[int(z)])
        if not mask.any():
            continue
        rec = record.get(str(int(z)))
        if rec is None or int(rec.get("crc32", -1)) != _crc(mask):
            out.append(int(z))
    return out


def write_tissue_slice(store: Any, z: int, mask: Any, options: TissueOptions | None = None) -> None:
    """Write slice ``z`` of a tissue store (uint8, 1 = tissue) and record it as computed.

    The record (the mask's CRC-32 and the rule's options) is how
    :func:`edited_slices` later tells a computed slice from one a user corrected.
    """
    import dataclasses

    m = (np.asarray(mask) > 0).astype(np.uint8)
    store[int(z)] = m
    record = dict(store.attrs.get(_RECORD, {}))
    opts = dataclasses.asdict(options) if options is not None else None
    record[str(int(z))] = {"crc32": _crc(m), "options": opts}
    store.attrs[_RECORD] = record
