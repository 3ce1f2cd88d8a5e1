"""The paper's protocol: train, validation and test patches from sections 50 µm apart.

:func:`split_slices` gives the three sections; :func:`choose_slices` fills in
the ones a user left out (the 50 µm rule, or the painted slices when labels
are painted on a few slices only); :func:`sample_splits` (blocking twin of
:func:`iter_sample_splits`) samples all three with the paper's rules (training
patches inside one class, validation and test unrestricted) and checks that
the slices are disjoint.  :func:`painted_classes` restricts a class table to
the classes painted on given slices.  With ``split_map`` (one section divided
by region, :func:`~napari_brainfeatures.train.regions.spatial_split`) the
three splits come from the regions of one slice instead, each patch inside
its split's region.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.progress import Progress, ProgressGen, blocking
from napari_brainfeatures.train.bounds import PATCH_SIZE, PER_CLASS, SEED, check_optional
from napari_brainfeatures.train.patches import PatchSet, _as_slices, _read_slice, sample_patches
from napari_brainfeatures.train.regions import SplitMap

__all__ = [
    "SliceChoice",
    "Splits",
    "choose_slices",
    "iter_sample_splits",
    "painted_classes",
    "painted_slices",
    "sample_splits",
    "split_slices",
]

Slices = int | Sequence[int]


@dataclass
class Splits:
    """Train, validation and test patches of :func:`sample_splits`.

    ``warned`` holds what the sampling warned about (each message names its split);
    ``split_map`` the regions of one section when split by region.
    """

    train: PatchSet
    val: PatchSet
    test: PatchSet
    warned: tuple[str, ...] = ()
    split_map: SplitMap | None = None

    def record(self) -> dict[str, Any]:
        """How the data was split (JSON, stored in model files and evaluations)."""
        if self.split_map is not None:
            n = {k: len(v) for k, v in zip(("train", "val", "test"), self.parts(), strict=True)}
            return {**self.split_map.to_dict(), "patches": n}
        return {"mode": "slices", "slices": self.slices()}

    def parts(self) -> tuple[PatchSet, PatchSet, PatchSet]:
        """``(train, val, test)``."""
        return self.train, self.val, self.test

    def slices(self) -> dict[str, list[int]]:
        """The z-slices of each split."""
        return {"train": self.train.slices, "val": self.val.slices, "test": self.test.slices}

    def counts(self) -> dict[str, dict[int, int]]:
        """Patches per class id in each split."""
        return {"train": self.train.counts, "val": self.val.counts, "test": self.test.counts}


def split_slices(
    n_z: int,
    *,
    voxel_size: float | None = 1.17,
    spacing_um: float = 50.0,
    start: int | None = None,
) -> tuple[int, int, int]:
    """Train, validation and test z-slices ``spacing_um`` apart (the paper's rule).

    Parameters
    ----------
    n_z : int
        Depth of the volume.
    voxel_size : float or None
        z voxel size in µm; default 1.17 (the paper's), also when None.
    spacing_um : float
        Distance between the sections; default 50 µm, i.e. Δ = round(50 / 1.17) = 43.
    start : int, optional
        The training slice z0; default centres the three sections in the volume.

    Returns
    -------
    (z0, z0 + Δ, z0 + 2Δ)
        Δ shrinks to fit the volume when it must.
    """
    n_z = int(n_z)
    if n_z < 3:
        raise ValueError(
            f"train/val/test need 3 distinct slices; the volume has {n_z}: split one section "
            "by region instead (spatial_split, split='blocks' / --split blocks)"
        )
    voxel = float(voxel_size or 1.17)
    if not voxel > 0 or not spacing_um > 0:
        raise ValueError(
            f"voxel_size and spacing_um must be positive, got {voxel!r}, {spacing_um!r}"
        )
    delta = max(1, round(spacing_um / voxel))
    if start is None:
        delta = min(delta, (n_z - 1) // 2)
        start = (n_z - 1 - 2 * delta) // 2
    start = int(start)
    if not 0 <= start < n_z:
        raise ValueError(f"start slice must be in 0..{n_z - 1}, got {start!r}")
    delta = min(delta, (n_z - 1 - start) // 2)
    if delta < 1:
        raise ValueError(
            f"no room for validation and test slices after z={start} in a volume of depth "
            f"{n_z}; choose a training slice <= {n_z - 3}"
        )
    return start, start + delta, start + 2 * delta


def painted_slices(labels: Any, max_bytes: int = 2**31) -> list[int] | None:
    """The z-slices of a label volume with any non-zero label (None when too big to scan)."""
    import dask.array as da

    if labels.ndim != 3 or labels.size * labels.dtype.itemsize > max_bytes:
        return None
    arr = labels if isinstance(labels, da.Array) else da.from_array(labels)
    return [int(z) for z in np.flatnonzero(np.asarray((arr != 0).any(axis=(1, 2))))]


def painted_classes(table: ClassTable | None, labels: Any, slices: Slices) -> ClassTable | None:
    """The classes of ``table`` painted on any of ``slices`` (None when there is no table)."""
    if table is None:
        return None
    ids: set[int] = set()
    for z in _as_slices(slices):
        ids |= {int(i) for i in np.unique(_read_slice(labels, z))}
    unknown = sorted(ids - {0} - {c.id for c in table})
    if unknown:  # painted, but no class of the table: said, never dropped silently
        import warnings

        shown = ", ".join(map(str, unknown[:8])) + (", …" if len(unknown) > 8 else "")
        warnings.warn(
            f"label ids {shown} are painted but are no class of the table "
            f"({', '.join(f'{c.id} {c.name}' for c in table)}); they are left out. Add them "
            "to the class table (the Annotate dock, or the workspace's classes.json) to "
            "train on them.",
            stacklevel=2,
        )
    return ClassTable(tuple(c for c in table if c.id in ids))


@dataclass(frozen=True)
class SliceChoice:
    """The slices of each split (:func:`choose_slices`) and how the missing ones were chosen.

    ``how`` is empty when every split was given; ``painted`` lists the painted
    slices when they were scanned (None otherwise).
    """

    slices: tuple[list[int], list[int], list[int]]
    how: str = ""
    painted: list[int] | None = None


def choose_slices(
    labels: Any,
    given: tuple[Slices | None, Slices | None, Slices | None] = (None, None, None),
    *,
    voxel_size: float | None = None,
) -> SliceChoice:
    """Train, validation and test slices: the ``given`` ones, the others by rule.

    A split left out (None) gets its slice from :func:`split_slices` (50 µm
    apart, from the given training slice if there is one).  When all three are
    left out and the labels are painted on three or more slices but not on the
    rule's, the first, middle and last painted slices are used instead (the
    usual way to annotate: a few slices).
    """
    chosen = [None if s is None else _as_slices(s) for s in given]
    if all(s is not None for s in chosen):
        return SliceChoice(tuple(chosen))  # type: ignore[arg-type]
    painted = painted_slices(labels)
    train = chosen[0]
    auto = split_slices(labels.shape[0], voxel_size=voxel_size, start=train[0] if train else None)
    gap = auto[1] - auto[0]
    how = f"{gap} slices = {gap * (voxel_size or 1.17):.0f} µm apart"
    unpainted = painted is not None and len(painted) >= 3 and not set(auto) <= set(painted)
    if all(s is None for s in chosen) and unpainted:
        auto = (painted[0], painted[len(painted) // 2], painted[-1])  # type: ignore[index]
        how = f"the first, middle and last of the painted slices {painted}"
    slices = tuple(s if s is not None else [a] for s, a in zip(chosen, auto, strict=True))
    return SliceChoice(slices, how, painted)  # type: ignore[arg-type]


def iter_sample_splits(
    image: Any,
    labels: Any,
    *,
    slices: tuple[Slices, Slices, Slices] | None = None,
    voxel_size: float | None = None,
    patch_size: int = 128,
    per_class: int = 2000,
    eval_per_class: int | None = None,
    classes: ClassTable | Sequence[int] | None = None,
    seed: int = 0,
    interior: bool | str = "auto",
    warn: bool = True,
    split_map: SplitMap | None = None,
    tissue: Any = None,
    min_tissue: float | None = None,
    core: int | None = None,
) -> ProgressGen[Splits]:
    """Training (interior), validation and test (unrestricted) patches from disjoint slices.

    Parameters
    ----------
    image, labels : array-like (Z, Y, X)
        As for :func:`~.patches.sample_patches`.
    slices : (train, val, test), optional
        z-slice (or slices) of each split; default :func:`split_slices` of the
        volume's depth and ``voxel_size`` (sections 50 µm apart).
    voxel_size : float, optional
        z voxel size in µm for the default slices; default 1.17.
    patch_size, per_class, seed
        As for :func:`~.patches.sample_patches`; validation and test use seeds
        ``seed + 1`` and ``seed + 2``.
    eval_per_class : int, optional
        Validation and test patches per class; default ``per_class // 2``
        (the paper's 2000 / 1000).
    classes : ClassTable or sequence of int, optional
        Default: the label ids painted on the training slices.
    interior : bool or "auto"
        The training patches' rule (see :func:`~.patches.sample_patches`); default
        "auto": inside one class where the paint allows, centred on strokes
        otherwise.  A class not painted on the validation or test slices is left
        out of that split with a warning.
    warn : bool
        Emit the sampling's warnings (default); False only records them in
        :attr:`Splits.warned` (a GUI that shows them itself).
    split_map : SplitMap, optional
        Split one section by region (:func:`~.regions.spatial_split`): every
        split samples slice ``split_map.z``, each patch inside its split's
        region (``slices`` is then ignored).  Classes with no painted pixel in
        the training region are left out, with a warning.
    tissue, min_tissue : optional
        A tissue mask restricting every split's patches (see
        :func:`~.patches.sample_patches`; ``min_tissue`` default 0.9).
    core : int, optional
        The training inside rule's central window (a multi-scale network's view).

    Yields
    ------
    Progress
        One before each split.

    Raises
    ------
    ValueError
        When a slice is shared between splits, or any ``sample_patches`` error
        (naming the split).
    """
    patch_size, seed = PATCH_SIZE.check("patch_size", patch_size), SEED.check("seed", seed)
    per_class = PER_CLASS.check("per_class", per_class)
    eval_per_class = check_optional(PER_CLASS, "eval_per_class", eval_per_class)
    if split_map is not None:
        slices = (split_map.z,) * 3
        if split_map.patch_size != patch_size:
            raise ValueError(
                f"the split map was made for {split_map.patch_size}-px patches, not "
                f"{patch_size!r}; make it again with patch_size={patch_size!r}"
            )
        classes = _train_region_classes(labels, split_map, classes)
    elif slices is None:
        slices = split_slices(1 if image.ndim == 2 else image.shape[0], voxel_size=voxel_size)
    sets = [_as_slices(s) for s in slices]
    if len(sets) != 3:
        raise ValueError(f"slices must be (train, val, test), got {slices!r}")
    for i, j in ((0, 1), (0, 2), (1, 2)) if split_map is None else ():
        shared = set(sets[i]) & set(sets[j])
        if shared:
            short = ("train", "val", "test")
            one = image.ndim == 2 or image.shape[0] == 1
            raise ValueError(
                f"{short[i]} and {short[j]} slices must be disjoint, both use {sorted(shared)!r}"
                + (
                    "; the image is a single section: split it by region instead (spatial "
                    "blocks, or regions you draw)"
                    if one
                    else ""
                )
            )
    n_eval = eval_per_class if eval_per_class is not None else max(1, per_class // 2)
    kw: dict[str, Any] = {"patch_size": patch_size, "per_class": per_class, "interior": interior}
    kw["classes"] = classes
    if tissue is not None:
        kw["tissue"] = tissue
        kw |= {} if min_tissue is None else {"min_tissue": min_tissue}
    kw |= {} if core is None else {"core": core}
    out: list[PatchSet] = []
    warned: list[str] = []
    for i, (name, zs) in enumerate(zip(("training", "validation", "test"), sets, strict=True)):
        where, shown = f"{name} slices", f"{name} slices {zs}"
        if split_map is not None:
            kw["within"] = split_map.region(("train", "val", "test")[i])
            where = shown = f"{name} region of slice {split_map.z}"
        yield Progress(i, 3, f"sampling patches on the {shown}")
        if i == 1:  # validation and test: unrestricted, the training classes, gaps allowed
            kw |= {"per_class": n_eval, "interior": False, "classes": out[0].classes}
            kw["skip_missing"] = True
        got, caught = _split(where, image, labels, slices=zs, seed=seed + i, **kw)
        out.append(got)
        for msg, category in caught:
            warned.append(msg)
            if warn:  # stacklevel: the caller of the blocking twin
                warnings.warn(msg, category, stacklevel=4)
    return Splits(*out, warned=tuple(warned), split_map=split_map)


sample_splits = blocking(iter_sample_splits)


def _split(name: str, *args: Any, **kw: Any) -> tuple[PatchSet, list[tuple[str, type]]]:
    """``sample_patches(*args, **kw)`` and its warnings; errors and warnings name the split."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = sample_patches(*args, **kw)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    return out, [(f"{name}: {w.message}", w.category) for w in caught]


def _train_region_classes(labels: Any, split_map: SplitMap, classes: Any) -> Any:
    """``classes`` less those with no painted pixel in the training region (warned)."""
    from napari_brainfeatures.train.patches import _class_table

    lab = _read_slice(labels, split_map.z)
    if lab.shape != split_map.regions.shape:
        raise ValueError(
            f"the split map is {split_map.regions.shape!r}, the section {lab.shape!r}; make "
            "the split map on this section"
        )
    on_train = {int(i) for i in np.unique(lab[split_map.region("train")])} - {0}
    present = sorted({int(i) for i in np.unique(lab)} - {0})
    table = _class_table(classes, present)
    left = [c.name for c in table if c.id in present and c.id not in on_train]
    if left:
        warnings.warn(
            f"class(es) {left!r} are not painted in the training region of slice "
            f"{split_map.z}; they are left out (paint them more widely, or draw the split)",
            stacklevel=4,
        )
    return ClassTable(tuple(c for c in table if c.id in on_train))
