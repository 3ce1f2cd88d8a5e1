"""Sample square patches of labelled brain areas from a volume, slice by slice.

:func:`sample_patches` draws a class-balanced, seeded set of ``P x P`` patches
from chosen z-slices of an image volume and its label volume (numpy, zarr or
dask ``(Z, Y, X)``; only the listed slices are read).  The patch of centre
``(y, x)`` covers rows ``y - P//2 .. y - P//2 + P - 1`` (the convention of the
dense feature maps).  Training patches lie inside one class: the centre and at
least 99 % of the window painted with it, no pixel of another class (small
unpainted holes, e.g. vessel lumens, are tolerated; see
:mod:`~napari_brainfeatures.train.windows`); validation and test patches need
only their centre labelled.  A class painted only as thin strokes (scribbles),
where no patch fits inside the paint, gets training patches centred on its
painted pixels instead, with a warning that says what the paint offers
(``interior="auto"``).  Every patch lies fully inside the image, and inside
``within`` (a split's region of one section) when given.  With a tissue mask
(``tissue``, e.g. the workspace's ``tissue.zarr``), every patch has at least
``min_tissue`` (default :data:`MIN_TISSUE`, 90 %) of its window in tissue, so
coarse paint that spills over a cut face or the pia trains no patch of background.

The paper's train / validation / test protocol (:func:`~.splits.sample_splits`,
:func:`~.splits.split_slices`) is in :mod:`napari_brainfeatures.train.splits`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.train.bounds import PATCH_SIZE, PER_CLASS, SEED, as_slices
from napari_brainfeatures.train.windows import (
    MIN_PAINTED,
    enough_tissue,
    inside_class,
    paint_report,
    within_mask,
)

__all__ = ["MIN_TISSUE", "PatchSet", "sample_patches"]

#: Least share of a patch window in tissue when a tissue mask is given.
MIN_TISSUE = 0.9


@dataclass
class PatchSet:
    """Patches with their labels and where they came from.

    Attributes
    ----------
    patches : ndarray (N, P, P)
        The image's dtype (uint8 for micro-CT).
    labels : ndarray (N,) int64
        Label id (class id) of each patch's centre.
    centres : ndarray (N, 3) int64
        ``(z, y, x)`` of each patch's centre pixel.
    classes : ClassTable
        The classes in output order (network output ``k`` is ``classes.ids[k]``).
    interior : bool
        True when every pixel of each patch has its class.
    available : dict of int to int
        How many distinct positions each class offered.
    centred : tuple of int
        Classes whose training patches are centred on painted pixels because
        no patch fits inside their paint (``interior="auto"``).
    min_tissue : float or None
        The least share of each window in tissue, when a tissue mask restricted
        the patches (None: no mask).
    """

    patches: NDArray[Any]
    labels: NDArray[np.int64]
    centres: NDArray[np.int64]
    classes: ClassTable
    interior: bool = False
    available: dict[int, int] = field(default_factory=dict)
    centred: tuple[int, ...] = ()
    min_tissue: float | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def patch_size(self) -> int:
        """Side P of the patches."""
        return int(self.patches.shape[-1])

    @property
    def class_ids(self) -> list[int]:
        """Label ids in output order."""
        return self.classes.ids

    @property
    def slices(self) -> list[int]:
        """The distinct z-slices the patches come from."""
        return sorted({int(z) for z in self.centres[:, 0]})

    @property
    def counts(self) -> dict[int, int]:
        """Patches per class id, in output order."""
        return {i: int((self.labels == i).sum()) for i in self.class_ids}

    @property
    def targets(self) -> NDArray[np.int64]:
        """Class index (0..K-1, output order) of each patch ``(N,)``."""
        lut = {cid: k for k, cid in enumerate(self.class_ids)}
        try:
            return np.fromiter((lut[int(v)] for v in self.labels), np.int64, len(self.labels))
        except KeyError as err:
            raise ValueError(f"label {err} is not one of the classes {self.class_ids!r}") from None

    def subset(self, index: Any) -> PatchSet:
        """The patches selected by ``index`` (boolean mask or integer indices)."""
        return PatchSet(
            self.patches[index],
            self.labels[index],
            self.centres[index],
            self.classes,
            self.interior,
            dict(self.available),
            self.centred,
            self.min_tissue,
        )


def _as_slices(slices: int | Sequence[int]) -> list[int]:
    return as_slices("slices", slices)


def _read_slice(arr: Any, z: int) -> NDArray[Any]:
    """Read one z-slice of a numpy/zarr/dask volume (or a 2-D image when z is 0)."""
    if arr.ndim == 2:
        return np.asarray(arr)
    sl = arr[int(z)]
    return np.asarray(sl.compute() if hasattr(sl, "compute") else sl)


def _class_table(classes: Any, present: Sequence[int]) -> ClassTable:
    if isinstance(classes, ClassTable):
        return classes
    ids = sorted(int(i) for i in (present if classes is None else classes))
    table = default_table()
    if set(ids) <= set(table.ids):
        return ClassTable(tuple(table.by_id(i) for i in ids))
    too_big = [i for i in ids if not 1 <= i <= 65535]
    if too_big:
        raise ValueError(
            f"label ids {too_big[:5]!r}{' …' if len(too_big) > 5 else ''} are outside 1..65535 "
            "(e.g. Allen atlas ids); relabel the areas to 1..N (0 = unlabelled) first"
        )
    return ClassTable.generic(ids)


def _check_inputs(image: Any, labels: Any, zs: list[int], p: int) -> None:
    if tuple(image.shape) != tuple(labels.shape):
        raise ValueError(
            f"labels shape {tuple(labels.shape)!r} differs from image shape "
            f"{tuple(image.shape)!r}; paint labels on the same grid as the image"
        )
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (Z, Y, X) or (Y, X), got shape {tuple(image.shape)!r}")
    h, w = image.shape[-2:]
    if p < 2 or p > min(h, w):
        raise ValueError(f"patch_size must be in 2..{min(h, w)} for a {h}x{w} image, got {p!r}")
    n_z = 1 if image.ndim == 2 else image.shape[0]
    bad = [z for z in zs if not 0 <= z < n_z]
    if bad or not zs:
        raise ValueError(f"slices must be in 0..{n_z - 1}, got {zs!r}")


def sample_patches(
    image: Any,
    labels: Any,
    *,
    slices: int | Sequence[int],
    patch_size: int = 128,
    per_class: int = 2000,
    interior: bool | str = True,
    classes: ClassTable | Sequence[int] | None = None,
    seed: int = 0,
    skip_missing: bool = False,
    within: Any = None,
    min_painted: float = MIN_PAINTED,
    tissue: Any = None,
    min_tissue: float = MIN_TISSUE,
    core: int | None = None,
) -> PatchSet:
    """Draw up to ``per_class`` patches of each class from the given z-slices.

    Parameters
    ----------
    image : array-like (Z, Y, X) or (Y, X)
        numpy, zarr or dask; only the listed slices are read.  Float images
        may hold NaN (e.g. outside a reconstruction's field of view): no patch
        includes a NaN pixel.
    labels : array-like, same shape as ``image``
        Integer label ids; 0 is unlabelled.
    slices : int or sequence of int
        The z-slices to sample from (patches of all of them are pooled).
    patch_size : int
        Side P of the square patches; default 128.
    per_class : int
        Patches wanted per class; default 2000.  A class offering fewer distinct
        positions gives all of them, with a warning.
    interior : bool or "auto"
        True (default, the paper's training patches): every pixel of a patch
        has its class.  False (validation / test): only the centre pixel's
        label counts.  "auto" (training on scribbles): interior patches for
        every class that offers any, patches centred on painted pixels for a
        class painted too thinly for one patch to fit inside (with a warning
        giving the best painted share of a window and the widest painted square).
    classes : ClassTable or sequence of int, optional
        The classes to sample, in output order; default every label id found
        on the slices (named from the paper's table when its ids fit).
    seed : int
        Seeds the choice of positions; same seed, same patches.
    skip_missing : bool
        For validation / test: a class with no position on these slices is
        left out with a warning (the class table is kept) instead of refused.
    within : array-like (Y, X) of bool, optional
        Every patch lies entirely inside it (a split's region of one section,
        see :func:`~napari_brainfeatures.train.regions.spatial_split`).
    min_painted : float
        The inside rule's share of a window painted with its class (the rest
        unpainted, no other class); default 0.99; 1.0 is the strict rule.
    tissue : array-like, the image's shape, optional
        A tissue mask (non-zero: tissue; numpy, zarr or dask, only the listed
        slices are read).  Every patch then has at least ``min_tissue`` of its
        window in tissue.  A slice whose mask is all zero (never computed) is
        not restricted.  None (default): no restriction.
    min_tissue : float
        In (0, 1]; default :data:`MIN_TISSUE` (0.9).
    core : int, optional
        The inside rule looks at the central ``core x core`` pixels of each
        window only (a multi-scale network's fine view, ``patch_size / context``):
        the rest of the window is context and may show other areas.  Default:
        the whole window.

    Returns
    -------
    PatchSet
        Patches grouped by class in ``classes`` order (slice by slice, in random
        order within a class and slice, so any prefix is an unbiased subset),
        positions drawn without replacement; ``available`` counts the distinct
        positions per class.

    Raises
    ------
    ValueError
        Mismatched shapes, a patch larger than the image, nothing painted, a
        single class, or a class with no valid (NaN-free) position.
    """
    if interior not in (True, False, "auto"):
        raise ValueError(f"interior must be True, False or 'auto', got {interior!r}")
    if not 0.5 <= float(min_painted) <= 1.0:
        raise ValueError(f"min_painted must be in 0.5..1, got {min_painted!r}")
    if isinstance(min_tissue, bool) or not 0.0 < float(min_tissue) <= 1.0:
        raise ValueError(f"min_tissue must be a share of the window in (0, 1], got {min_tissue!r}")
    zs = _as_slices(slices)
    if len(set(zs)) != len(zs):
        raise ValueError(f"slices must be distinct, got {zs!r}")
    p, seed = PATCH_SIZE.check("patch_size", patch_size), SEED.check("seed", seed)
    per_class = PER_CLASS.check("per_class", per_class)
    _check_inputs(image, labels, zs, p)
    lab2d = {z: _read_slice(labels, z) for z in zs}
    if any(v.dtype.kind not in "uib" for v in lab2d.values()):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype!r}")
    present = sorted({int(i) for v in lab2d.values() for i in np.unique(v)} - {0})
    if not present:
        raise ValueError(f"no labels painted on slices {zs!r}; paint at least two classes there")
    table = _class_table(classes, present)
    if interior and len(table) < 2:  # evaluation patches of one class are fine (its recall)
        raise ValueError(
            f"training needs at least two classes; slices {zs!r} hold only {table.names!r}"
        )
    h, w = lab2d[zs[0]].shape
    half = p // 2
    inside = (slice(half, h - p + half + 1), slice(half, w - p + half + 1))
    imgs: dict[int, NDArray[Any]] = {}
    clean: dict[int, NDArray[np.bool_] | None] = dict.fromkeys(zs)  # NaN-free corners
    if np.dtype(image.dtype).kind == "f":  # e.g. NaN outside a reconstruction's circle
        for z in zs:
            imgs[z] = _read_image_slice(image, z)
            finite = np.isfinite(imgs[z])
            clean[z] = None if finite.all() else within_mask(finite, p)
    region = "" if within is None else " inside the split region"
    if within is not None:
        region_ok = within_mask(_region(within, (h, w)), p)
        clean = {z: region_ok if v is None else v & region_ok for z, v in clean.items()}
    if tissue is not None:
        if tuple(tissue.shape) != tuple(image.shape):
            raise ValueError(
                f"tissue mask shape {tuple(tissue.shape)!r} differs from image shape "
                f"{tuple(image.shape)!r}; compute the mask on this volume (brainfeatures tissue)"
            )
        for z in zs:
            mask = _read_slice(tissue, z) != 0
            if mask.any():  # an all-zero slice was never computed: not restricted
                ok = enough_tissue(mask, p, min_tissue)
                clean[z] = ok if clean[z] is None else clean[z] & ok
        region += f" with {float(min_tissue):.0%} of the patch in tissue"

    # Candidate centres per class and slice: flat indices into the (H-P+1, W-P+1) corner grid.
    def candidates(c: int, inner: bool) -> list[tuple[int, NDArray[np.int64]]]:
        out = []
        for z, lab in lab2d.items():
            ok = inside_core(lab, c) if inner else (lab == c)[inside]
            if clean[z] is not None:
                ok = ok & clean[z]
            out.append((z, np.flatnonzero(ok)))
        return out

    k = p if core is None else PATCH_SIZE.check("core", core)
    if k > p or (p - k) % 2:
        raise ValueError(f"core must be at most patch_size {p} and of its parity, got {core!r}")

    def inside_core(lab: NDArray[Any], c: int) -> NDArray[np.bool_]:
        """The inside rule on each window's central ``k`` pixels, on the window corner grid."""
        d = half - k // 2
        return inside_class(lab, c, k, min_painted)[d : d + h - p + 1, d : d + w - p + 1]

    cands = {c: candidates(c, bool(interior)) for c in table.ids}
    centred: list[int] = []
    if interior == "auto":  # scribbles: centre the patches of classes no patch fits inside
        painted: list[str] = []
        found: list[str] = []
        mp = float(min_painted)
        # what must lie inside: the whole window, or its central view (a context network)
        fits = f"{p}x{p} patch" if k == p else f"{p}x{p} patch with its central {k}x{k} view"
        for c in table.ids:
            if not any(len(f) for _, f in cands[c]):
                centre = candidates(c, False)
                if any(len(f) for _, f in centre):
                    cands[c] = centre
                    centred.append(c)
                    n_px = sum(int((lab == c).sum()) for lab in lab2d.values())
                    painted.append(f"{table.by_id(c).name!r} (id {c}, {n_px} px)")
                    why = _best_report(lab2d, c, k, mp)
                    if within is not None and any(
                        inside_core(lab, c).any() for lab in lab2d.values()
                    ):
                        why = f"each {fits} inside the paint lies outside this region"
                    found.append(f"{table.by_id(c).name!r}: {why}")
        if painted:  # one warning for all of them
            warnings.warn(
                f"no {fits} fits inside the paint of class(es) {', '.join(painted)} "
                f"on slices {zs!r}{region} ({'; '.join(found)}); their training patches are "
                "centred on their painted pixels instead and also show the tissue around them",
                stacklevel=2,
            )
    available = {c: sum(len(f) for _, f in v) for c, v in cands.items()}
    empty = [table.by_id(c).name for c, n in available.items() if n == 0]
    if empty and skip_missing and len(empty) < len(table):
        warnings.warn(
            f"class(es) {empty!r} offer no patch position on slices {zs!r}{region} (not "
            "painted there, or too close to its edge); they are left out of these patches",
            stacklevel=2,
        )
    elif empty:
        where = "entirely inside" if interior is True else "centred in"
        nan = np.dtype(image.dtype).kind == "f" and any(v is not None for v in clean.values())
        raise ValueError(
            f"no {p}x{p} patch {'free of NaN pixels ' if nan else ''}fits {where} class(es) "
            f"{empty!r} on slices {zs!r}{region}; "
            + (
                "paint larger regions, choose other slices, or centre training patches on "
                "the paint (interior='auto', for strokes)"
                if interior is True
                else f"paint them there or choose other slices (a patch centre must be {half} px "
                "from the image edge)"
                if within is None
                else "paint them inside that region too (the Train dock's 'split regions' "
                "layer shows it; paint each class in several places across the section), "
                "draw the split regions yourself (a split mask), or lower the guard band or "
                "the patch size (a whole patch must fit inside the region)"
            )
        )
    rng = np.random.default_rng(seed)
    out_p, out_l, out_c = [], [], []
    for c in table.ids:
        n_avail = available[c]
        if n_avail == 0:  # skipped above
            continue
        k = min(int(per_class), n_avail)
        if k < per_class:
            inner = interior is True or (interior == "auto" and c not in centred)
            warnings.warn(
                f"class {table.by_id(c).name!r} (id {c}) offers only {n_avail} "
                f"{'interior ' if inner else ''}patch positions on slices {zs!r}; "
                f"using {k} instead of {per_class}",
                stacklevel=2,
            )
        pick = rng.choice(n_avail, size=k, replace=False)  # random order, no repeats
        offsets = np.cumsum([0] + [len(f) for _, f in cands[c]])
        for (z, flat), lo, hi in zip(cands[c], offsets[:-1], offsets[1:], strict=True):
            sel = flat[pick[(pick >= lo) & (pick < hi)] - lo]
            if not len(sel):
                continue
            if z not in imgs:
                imgs[z] = _read_image_slice(image, z)
            y0, x0 = np.divmod(sel, w - p + 1)
            view = np.lib.stride_tricks.sliding_window_view(imgs[z], (p, p))  # (H-P+1, W-P+1, P, P)
            out_p.append(view[y0, x0])  # (n, P, P)
            out_l.append(np.full(len(sel), c, np.int64))
            out_c.append(np.stack([np.full(len(sel), z), y0 + half, x0 + half], axis=1))
    return PatchSet(
        np.concatenate(out_p),
        np.concatenate(out_l),
        np.concatenate(out_c).astype(np.int64),
        table,
        bool(interior) and not centred,
        available,
        tuple(centred),
        None if tissue is None else float(min_tissue),
    )


def _read_image_slice(image: Any, z: int) -> NDArray[Any]:
    img = _read_slice(image, z)
    if img.dtype.kind not in "uif":
        raise ValueError(f"image must be integer or float, got dtype {img.dtype!r}")
    return img


def _region(within: Any, shape: tuple[int, int]) -> NDArray[np.bool_]:
    region = np.asarray(within, dtype=bool)
    if region.shape != shape:
        raise ValueError(
            f"within must be a (Y, X) mask of the section's shape {shape!r}, got {region.shape!r}"
        )
    return region


def _best_report(lab2d: dict[int, NDArray[Any]], c: int, p: int, min_painted: float) -> str:
    """:func:`paint_report` of the slice where class ``c`` has the most paint."""
    z = max(lab2d, key=lambda k: int((lab2d[k] == c).sum()))
    return paint_report(lab2d[z], c, p, min_painted)
