"""Train, validation and test regions within one section, with a guard band between them.

One annotated section is the common case; :func:`spatial_split` divides it by
region instead of by slice, so that it can be trained and scored honestly:

* ``mode="blocks"``: the image is cut into a grid of blocks laid over the
  painted area (about ``3 * patch_size`` wide), and the blocks are given to
  train / validation / test (shares 60 / 20 / 20 %, or ``folds`` equal groups)
  so that every class appears in every split where its paint allows (a seeded
  search over assignments).
* ``mode="mask"``: a drawn split map, pixels 1 / 2 / 3 = train / val / test.

Then a **guard band** of ``guard`` pixels (default one patch) is cleared
between the regions of different splits: any two pixels of different regions
are more than ``guard`` apart along y or x (Chebyshev distance >= guard + 1).
Each split's patches lie entirely inside its region
(:func:`~napari_brainfeatures.train.patches.sample_patches` ``within=``), so a
validation or test patch never overlaps a training patch, and the nearest
windows of two splits are at least ``guard`` px apart.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from napari_brainfeatures.train import bounds as _b
from napari_brainfeatures.train.windows import integral_image, near, patch_centres, within_mask

__all__ = ["SPLITS", "SplitMap", "default_split", "spatial_split"]

SPLITS = ("train", "val", "test")
MODES = ("blocks", "mask")
SHARES = (0.6, 0.2, 0.2)  # train / val / test share of each class's paint (blocks)
_TRIES = 4096  # assignments of blocks to splits tried (seeded)

Block = tuple[int, int, int, int, int]  # y0, y1, x0, x1, split id (1..3)


@dataclass(frozen=True)
class SplitMap:
    """Where each split may take its patches on one section (:func:`spatial_split`).

    Attributes
    ----------
    regions : ndarray (Y, X) uint8
        1 = train, 2 = validation, 3 = test, 0 = none (guard band, outside).
    z : int
        The section's z-slice.
    mode : str
        ``"blocks"`` or ``"mask"``.
    guard, patch_size : int
        Guard band width and patch side, px.
    blocks : tuple of (y0, y1, x0, x1, split)
        The blocks before the guard band (``mode="blocks"``).
    fold, folds : int or None
        The fold of a spatial k-fold (``folds`` groups of blocks; fold ``f``
        tests on group ``f`` and validates on group ``f + 1``).
    mask_sha256 : str or None
        The drawn mask's hash (``mode="mask"``).
    """

    regions: NDArray[np.uint8] = field(repr=False)
    z: int = 0
    mode: str = "blocks"
    guard: int = 128
    patch_size: int = 128
    blocks: tuple[Block, ...] = ()
    fold: int | None = None
    folds: int | None = None
    seed: int = 0
    mask_sha256: str | None = None

    def region(self, split: str) -> NDArray[np.bool_]:
        """The ``(Y, X)`` mask of ``"train"``, ``"val"`` or ``"test"``."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS!r}, got {split!r}")
        return self.regions == SPLITS.index(split) + 1

    @property
    def sha256(self) -> str:
        """Hash of :attr:`regions` (shape and bytes)."""
        return _hash(self.regions)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record stored in model files and evaluations."""
        rec: dict[str, Any] = {
            "mode": self.mode,
            "z": int(self.z),
            "guard": int(self.guard),
            "patch_size": int(self.patch_size),
            "fold": self.fold,
            "folds": self.folds,
            "seed": int(self.seed),
            "shape": [int(n) for n in self.regions.shape],
            "regions_sha256": self.sha256,
            "pixels": {s: int(self.region(s).sum()) for s in SPLITS},
            "bbox": {s: _bbox(self.region(s)) for s in SPLITS},
        }
        if self.mode == "blocks":
            rec["blocks"] = [list(b) for b in self.blocks]
        else:
            rec["mask_sha256"] = self.mask_sha256
        return rec

    @classmethod
    def from_dict(cls, rec: dict[str, Any], mask: Any = None) -> SplitMap:
        """Rebuild a recorded split (a ``mask`` is needed for ``mode="mask"``); hash-checked."""
        mode, shape = rec.get("mode"), tuple(rec.get("shape") or ())
        common = {k: rec[k] for k in ("z", "guard", "patch_size", "fold", "folds", "seed")}
        if mode == "blocks":
            blocks = tuple(tuple(int(v) for v in b) for b in rec["blocks"])
            raw = np.zeros(shape, np.uint8)
            for y0, y1, x0, x1, s in blocks:
                raw[y0:y1, x0:x1] = s
            out = cls(_guarded(raw, int(rec["guard"])), mode=mode, blocks=blocks, **common)  # type: ignore[arg-type]
        elif mode == "mask":
            if mask is None:
                raise ValueError(
                    "the model was split by a drawn mask; give the same mask (--split-mask PATH)"
                )
            raw = _check_mask(mask, shape)
            if _hash(raw) != rec.get("mask_sha256"):
                raise ValueError(
                    f"this split mask (sha256 {_hash(raw)[:12]}…) is not the one recorded "
                    f"({str(rec.get('mask_sha256'))[:12]}…); give the mask the model was "
                    "trained with"
                )
            out = cls(_guarded(raw, int(rec["guard"])), mode=mode, mask_sha256=_hash(raw), **common)  # type: ignore[arg-type]
        else:
            raise ValueError(f"split mode must be 'blocks' or 'mask', got {mode!r}")
        if rec.get("regions_sha256") not in (None, out.sha256):
            raise ValueError("the rebuilt split regions differ from the recorded ones")
        return out


def spatial_split(
    labels2d: Any,
    *,
    patch_size: int = 128,
    mode: str = "blocks",
    mask: Any = None,
    guard: int | None = None,
    block: int | None = None,
    folds: int | None = None,
    fold: int = 0,
    seed: int = 0,
    z: int = 0,
    centres: Any = None,
) -> SplitMap:
    """Split one section into train / validation / test regions with a guard band.

    Parameters
    ----------
    labels2d : array-like (Y, X) int
        The section's area labels (0 = unpainted).
    patch_size : int
        Patch side P; default 128.
    mode : {"blocks", "mask"}
        Automatic blocks over the paint, or the drawn ``mask``.
    mask : array-like (Y, X), optional
        For ``mode="mask"``: 1 / 2 / 3 = train / val / test, 0 = none; all three needed.
    guard : int, optional
        Guard band between different splits' regions, px; default ``patch_size``.
    block : int, optional
        Block side, px; default ``3 * patch_size`` (more blocks where needed).
    folds : int, optional
        Spatial k-fold: ``folds`` >= 3 equal groups of blocks; ``fold`` picks the test group.
    seed : int
        Seeds the assignment of blocks.
    z : int
        The section's z (recorded).
    centres : bool array (Y, X), optional
        Where a patch may be centred (:func:`~.windows.patch_centres`: inside the
        image, with enough tissue in the window).  The blocks are given to the
        splits by the paint there, so that a class whose paint reaches a cut face
        or the image edge still gets patches in every split.  Default: at least
        half a patch from the image edge.

    Returns
    -------
    SplitMap
        Every split's region holds at least one ``P x P`` window.

    Raises
    ------
    ValueError
        Nothing painted, a mask without all three splits, or a region too small
        for a patch after the guard band (the message says what to lower).
    """
    lab = np.asarray(labels2d)
    if lab.ndim != 2:
        raise ValueError(f"labels2d must be one (Y, X) section, got shape {lab.shape!r}")
    p, seed = _b.PATCH_SIZE.check("patch_size", patch_size), _b.SEED.check("seed", seed)
    z = _b.SLICE.check("z", z)
    if z < 0:
        raise ValueError(f"z must be the section's z-slice index (>= 0), got {z!r}")
    g = p if guard is None else _b.GUARD.check("guard", guard)
    block = _b.check_optional(_b.BLOCK, "block", block)
    if mode not in MODES:
        raise ValueError(f"split mode must be one of {MODES!r}, got {mode!r}")
    if folds is not None and not (
        mode == "blocks" and _b.inside(_b.FOLDS, folds) and 0 <= fold < folds
    ):
        raise ValueError(
            f"folds needs mode='blocks', folds {_b.FOLDS.describe()} and 0 <= fold < folds, "
            f"got mode={mode!r}, folds={folds!r}, fold={fold!r}"
        )
    folds = _b.check_optional(_b.FOLDS, "folds", folds)
    common: dict[str, Any] = {"z": int(z), "guard": g, "patch_size": p, "seed": int(seed)}
    if mode == "mask":
        raw = _check_mask(mask, lab.shape)
        out = SplitMap(_guarded(raw, g), mode="mask", mask_sha256=_hash(raw), **common)
    else:
        ok = patch_centres(lab.shape, p) if centres is None else np.asarray(centres, bool)
        if ok.shape != lab.shape:
            raise ValueError(f"centres shape {ok.shape!r} differs from the section's {lab.shape!r}")
        usable = np.where(ok, lab, 0)  # the paint where patches can be centred
        blocks = _blocks(usable if usable.any() else lab, p, block or 3 * p, folds, fold, seed, g)
        raw = np.zeros(lab.shape, np.uint8)
        for y0, y1, x0, x1, s in blocks:
            raw[y0:y1, x0:x1] = s
        out = SplitMap(
            _guarded(raw, g), mode="blocks", blocks=blocks, fold=fold if folds else None,
            folds=folds, **common,
        )  # fmt: skip
    for i, name in enumerate(SPLITS):
        if not within_mask(out.regions == i + 1, p).any():
            raise ValueError(
                f"the {name} region of slice {z} holds no {p}x{p} patch after a guard band of "
                f"{g} px; lower the guard or the patch size, paint a larger area, or draw "
                "larger regions (mode='mask')"
            )
    return out


def default_split(painted: list[int] | None, n_z: int) -> tuple[str, str]:
    """``("slices", "")``, or ``("blocks", why)`` for one painted slice or a volume under 3."""
    if painted is not None and len(painted) == 1:
        return "blocks", (
            f"labels are painted on one slice (z = {painted[0]}): train, validation and test "
            "come from spatial blocks of that section, a guard band apart"
        )
    if n_z < 3:
        return "blocks", f"the volume has {n_z} slice(s): spatial blocks of one section"
    return "slices", ""


def _check_mask(mask: Any, shape: tuple[int, ...]) -> NDArray[np.uint8]:
    if mask is None:
        raise ValueError("mode='mask' needs a mask: (Y, X), 1/2/3 = train/val/test, 0 = none")
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.shape != tuple(shape):
        raise ValueError(f"the split mask has shape {m.shape!r}; the section is {tuple(shape)!r}")
    bad = sorted({int(v) for v in np.unique(m)} - {0, 1, 2, 3})
    if bad:
        raise ValueError(f"split mask values must be 0..3 (1/2/3 = train/val/test), got {bad!r}")
    missing = [s for i, s in enumerate(SPLITS) if not (m == i + 1).any()]
    if missing:
        raise ValueError(f"the split mask has no {missing!r} region; draw all three (1, 2, 3)")
    return m.astype(np.uint8)


def _guarded(raw: NDArray[np.uint8], g: int) -> NDArray[np.uint8]:
    """``raw`` less a guard band: pixels of different splits end more than ``g`` px apart.

    Each region gives up the pixels within ``ceil(g / 2)`` (Chebyshev) of another
    split in the nearest-region filling of ``raw``, which leaves any two kept
    pixels of different splits at least ``2 * ceil(g / 2) + 1`` apart; a last
    pass (validation, then test, give way) makes the rule exact in every case.
    """
    from scipy.ndimage import distance_transform_edt

    full = raw
    if (raw == 0).any():  # fill the gaps with the nearest region, so the halves meet
        idx = distance_transform_edt(raw == 0, return_distances=False, return_indices=True)
        full = raw[tuple(idx)]
    h = math.ceil(g / 2)
    out = raw.copy()
    for s in (1, 2, 3):
        out[(raw == s) & near((full != s) & (full != 0), h)] = 0
    for s in (2, 3):  # exact by construction: no-op unless the above missed a pixel
        out[(out == s) & near((out != 0) & (out < s), g)] = 0
    return out


def _blocks(
    lab: NDArray[Any], p: int, side: int, folds: int | None, fold: int, seed: int, g: int
) -> tuple[Block, ...]:
    """A grid of blocks over the painted area, given to splits so each class is in each."""
    painted = lab != 0
    if not painted.any():
        raise ValueError("nothing is painted on this section; paint at least two classes")
    groups = int(folds) if folds else 3
    ys, xs = np.flatnonzero(painted.any(1)), np.flatnonzero(painted.any(0))
    (y0, y1), (x0, x1) = (ys[0], ys[-1] + 1), (xs[0], xs[-1] + 1)
    n = [max(1, round((y1 - y0) / side)), max(1, round((x1 - x0) / side))]
    while n[0] * n[1] < groups:  # more blocks along the longer side of a block
        n[int((x1 - x0) / n[1] > (y1 - y0) / n[0])] += 1
    ey = np.linspace(y0, y1, n[0] + 1).round().astype(int)
    ex = np.linspace(x0, x1, n[1] + 1).round().astype(int)
    ey[0], ey[-1], ex[0], ex[-1] = 0, lab.shape[0], 0, lab.shape[1]  # the margins too
    cells = [(a, b, c, d) for a, b in zip(ey[:-1], ey[1:]) for c, d in zip(ex[:-1], ex[1:])]  # noqa: B905
    usable = _usable_counts(lab, cells, p // 2 + math.ceil(g / 2) + 1)  # (cells, 256, classes)
    targets = np.full(groups, 1 / groups) if folds else np.array(SHARES)
    group = _assign(usable, (n[0], n[1]), targets, seed)
    if folds:  # fold f: test = group f, validation = group f + 1, train = the rest
        split = np.where(group == fold, 3, np.where(group == (fold + 1) % groups, 2, 1))
    else:
        split = group + 1
    return tuple(
        (int(a), int(b), int(c), int(d), int(s))
        for (a, b, c, d), s in zip(cells, split)  # noqa: B905
    )


def _usable_counts(lab: NDArray[Any], cells: list[tuple[int, ...]], m: int) -> NDArray:
    """Class pixels of each cell that can centre a patch, per pattern of differing neighbours.

    Pattern bits 1 / 2 / 4 / 8: the top / bottom / left / right neighbour is another
    split, so the cell loses ``m`` px (half a patch and half the guard) on that side;
    16 / 32 / 64 / 128: the top-left / top-right / bottom-left / bottom-right
    neighbour is, so the cell loses the ``m x m`` square in that corner (a window
    centred there would reach into the diagonal neighbour's guard band).
    """
    ids = np.unique(lab[lab != 0])
    sums = np.stack([integral_image(lab == i) for i in ids])  # (classes, H + 1, W + 1)

    def box(r: tuple[int, int, int, int]) -> NDArray:
        y0, y1, x0, x1 = r
        return sums[:, y1, x1] - sums[:, y0, x1] - sums[:, y1, x0] + sums[:, y0, x0]

    sides = [(1, 4, 16), (1, 8, 32), (2, 4, 64), (2, 8, 128)]  # a corner's two sides
    out = np.zeros((len(cells), 256, len(ids)))
    for k, (a, b, c, d) in enumerate(cells):
        for pat in range(256):
            canon = pat  # a corner square is already lost with either of its sides
            for s1, s2, bit in sides:
                if pat & bit and pat & (s1 | s2):
                    canon &= ~bit
            if canon != pat:
                out[k, pat] = out[k, canon]
                continue
            ya, yb = a + m * (pat & 1 > 0), b - m * (pat & 2 > 0)
            xa, xb = c + m * (pat & 4 > 0), d - m * (pat & 8 > 0)
            if not (ya < yb and xa < xb):
                continue
            squares = [(a, a + m, c, c + m), (a, a + m, d - m, d),
                       (b - m, b, c, c + m), (b - m, b, d - m, d)]  # fmt: skip
            cut = [q for q, (_, _, bit) in zip(squares, sides, strict=True) if pat & bit]
            total = box((ya, yb, xa, xb))
            for n in range(1, 1 << len(cut)):  # inclusion-exclusion over the lost squares
                part = [q for i, q in enumerate(cut) if n >> i & 1]
                r = (max(ya, *(q[0] for q in part)), min(yb, *(q[1] for q in part)),
                     max(xa, *(q[2] for q in part)), min(xb, *(q[3] for q in part)))  # fmt: skip
                if r[0] < r[1] and r[2] < r[3]:
                    total = total - (-1) ** (len(part) + 1) * box(r)
            out[k, pat] = total
    return out


def _assign(
    usable: NDArray, grid: tuple[int, int], targets: NDArray[np.float64], seed: int
) -> NDArray:
    """Groups ``(cells,)``: no class missing from training, then from any split, then shares.

    A seeded random search, then hill-climbing by moving one block at a time.
    """
    rng = np.random.default_rng(seed)
    n_cells, k = usable.shape[0], len(targets)
    tries = max(64, min(_TRIES, 4_000_000 // (n_cells * k * usable.shape[2] + 1)))
    cand = rng.choice(k, size=(tries, n_cells), p=targets)  # (T, cells)
    cand[0] = np.arange(n_cells) % k  # one candidate that uses every group
    score = _scores(cand, usable, grid, targets)
    best, best_score = cand[np.lexsort(score[::-1])[0]], min(map(tuple, score.T))
    for _ in range(4 * n_cells):  # hill-climb: every single-block move, keep the best
        moves = np.repeat(best[None], n_cells * k, axis=0)  # (cells * k, cells)
        moves[np.arange(n_cells * k), np.repeat(np.arange(n_cells), k)] = np.tile(
            np.arange(k), n_cells
        )
        sc = _scores(moves, usable, grid, targets)
        i = np.lexsort(sc[::-1])[0]
        if tuple(sc[:, i]) >= best_score:
            break
        best, best_score = moves[i], tuple(sc[:, i])
    return best


def _scores(
    cand: NDArray, usable: NDArray, grid: tuple[int, int], targets: NDArray[np.float64]
) -> NDArray[np.float64]:
    """``(4, T)``: empty groups, classes missing from training, missing pairs, share deviation."""
    t, n_cells = cand.shape
    k = len(targets)
    g = cand.reshape(t, *grid)
    pat = np.zeros(g.shape, np.int64)  # which neighbours belong to another split
    pat[:, 1:, :] += g[:, 1:, :] != g[:, :-1, :]
    pat[:, :-1, :] += 2 * (g[:, :-1, :] != g[:, 1:, :])
    pat[:, :, 1:] += 4 * (g[:, :, 1:] != g[:, :, :-1])
    pat[:, :, :-1] += 8 * (g[:, :, :-1] != g[:, :, 1:])
    pat[:, 1:, 1:] += 16 * (g[:, 1:, 1:] != g[:, :-1, :-1])
    pat[:, 1:, :-1] += 32 * (g[:, 1:, :-1] != g[:, :-1, 1:])
    pat[:, :-1, 1:] += 64 * (g[:, :-1, 1:] != g[:, 1:, :-1])
    pat[:, :-1, :-1] += 128 * (g[:, :-1, :-1] != g[:, 1:, 1:])
    got = usable[np.arange(n_cells)[None], pat.reshape(t, n_cells)]  # (T, cells, classes)
    onehot = np.eye(k)[cand]  # (T, cells, k)
    per = np.einsum("tck,tcj->tkj", onehot, got)  # (T, k, classes)
    total = per.sum(1, keepdims=True)
    gaps = (per == 0) & (total > 0)  # (T, k, classes)
    share = per / np.maximum(total, 1)
    dev = np.abs(share - targets[None, :, None]).sum((1, 2))
    empty = (onehot.sum(1) == 0).sum(1)
    return np.stack([empty, gaps[:, 0].sum(1), gaps.sum((1, 2)), dev]).astype(np.float64)


def _hash(arr: NDArray[Any]) -> str:
    a = np.ascontiguousarray(arr, dtype=np.uint8)
    return hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()


def _bbox(mask: NDArray[np.bool_]) -> list[int] | None:
    """``[y0, y1, x0, x1]`` (end exclusive) of a mask, None when empty."""
    if not mask.any():
        return None
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return [int(ys[0]), int(ys[-1] + 1), int(xs[0]), int(xs[-1] + 1)]
