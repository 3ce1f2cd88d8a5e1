"""Choose and sample the train / validation / test split of a training run (CLI, scripts).

:func:`plan_splits` takes the user's choice -- by slice (the paper's protocol),
by spatial blocks of one section, or by a drawn split mask, optionally as a
spatial k-fold -- fills in what was left out (a volume painted on fewer than
three slices is split by blocks of its painted section, and says so) and
returns the sampled :class:`~.splits.Splits` of each fold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_brainfeatures.train.bounds import FOLDS, GUARD, SLICE, as_slices, check_optional
from napari_brainfeatures.train.patches import MIN_TISSUE, _read_slice
from napari_brainfeatures.train.recorded import read_split_mask, recorded_slices, recorded_split
from napari_brainfeatures.train.regions import default_split, spatial_split
from napari_brainfeatures.train.splits import (
    Splits,
    choose_slices,
    painted_classes,
    painted_slices,
    sample_splits,
)
from napari_brainfeatures.train.windows import patch_centres

__all__ = ["fit_and_test", "held_out_patches", "plan_splits", "split_centres"]


def plan_splits(
    image: Any,
    labels: Any,
    *,
    split: str | None = None,
    slices: Sequence[Any] = (None, None, None),
    split_mask: Any = None,
    split_slice: int | None = None,
    guard: int | None = None,
    folds: int | None = None,
    classes: Any = None,
    voxel_size: float | None = None,
    report: Callable[[str], None] | None = None,
    **sampling: Any,
) -> list[Splits]:
    """The sampled splits of each fold (one unless ``folds``).

    Parameters
    ----------
    image, labels : array-like (Z, Y, X)
    split : {"slices", "blocks", "mask"}, optional
        Default: "slices" when slices are given or 3+ slices are painted, else
        "blocks" on the painted section (:func:`~.regions.default_split`).
    slices : (train, val, test)
        Given slices (None: chosen by :func:`~.splits.choose_slices`).
    split_mask : path or array, optional
        The drawn split for ``split="mask"`` (1/2/3 = train/val/test).
    split_slice : int, optional
        The section to split by region; default the first painted slice.
    guard, folds
        As for :func:`~.regions.spatial_split` (``folds``: fold 0..K-1).
    classes : ClassTable, optional
        Names and colours; default the label ids painted.
    report : callable, optional
        Receives one line per decision (what was chosen and why).
    **sampling
        ``patch_size``, ``per_class``, ``eval_per_class``, ``seed``, ``interior``
        for :func:`~.splits.sample_splits`.
    """
    say = report or (lambda _m: None)
    given = tuple(slices)
    guard, folds = check_optional(GUARD, "guard", guard), check_optional(FOLDS, "folds", folds)
    split_slice = check_optional(SLICE, "split_slice", split_slice)
    if split_slice is not None and not 0 <= split_slice < image.shape[0]:
        raise ValueError(
            f"split_slice must be a z-slice of the volume (0..{image.shape[0] - 1}), "
            f"got {split_slice!r}"
        )
    mode, why = split, ""
    if mode is None and not any(s is not None for s in given):
        mode, why = default_split(painted_slices(labels), image.shape[0])
    if mode in (None, "slices"):
        if folds or split_mask is not None:
            raise ValueError("folds and a split mask need split='blocks' / split='mask'")
        return [_by_slices(image, labels, given, classes, voxel_size, say, sampling)]
    if mode not in ("blocks", "mask"):
        raise ValueError(f"split must be 'slices', 'blocks' or 'mask', got {mode!r}")
    if any(s is not None for s in given):
        raise ValueError(
            f"split={mode!r} divides one section by region; give its slice (split_slice, "
            "--split-slice Z), not train/val/test slices"
        )
    if (mode == "mask") != (split_mask is not None):
        raise ValueError("split='mask' needs a split mask (--split-mask PATH), and only it")
    z = split_slice if split_slice is not None else (painted_slices(labels) or [0])[0]
    lab = np.asarray(labels[z])
    mask = read_split_mask(split_mask, z, lab.shape) if split_mask is not None else None
    say(why or f"splitting slice {z} by {mode}")
    p = sampling.get("patch_size", 128)
    centres = split_centres(lab.shape, p, z, sampling.get("tissue"), sampling.get("min_tissue"))
    out = []
    for fold in range(folds or 1):
        sm = spatial_split(
            lab, patch_size=p, mode=mode, mask=mask, guard=guard, folds=folds, fold=fold,
            seed=sampling.get("seed", 0), z=z, centres=centres,
        )  # fmt: skip
        rec = sm.to_dict()
        say(f"split regions ({mode}, fold {fold}): guard {rec['guard']} px, px {rec['pixels']}")
        splits = sample_splits(image, labels, split_map=sm, classes=classes, **sampling)
        say(f"patches per class: {splits.counts()}")
        out.append(splits)
    return out


def split_centres(
    shape: tuple[int, int], patch_size: int, z: int, tissue: Any, min_tissue: float | None
) -> np.ndarray:
    """Where slice ``z`` can centre a patch: in the image, with enough of a ``tissue`` volume.

    ``tissue``: the sampling's tissue mask ``(Z, Y, X)`` or ``(Y, X)``, or None;
    ``min_tissue``: its share of the window (default that of sample_patches).
    """
    t = None if tissue is None else _read_slice(tissue, z)
    share = MIN_TISSUE if min_tissue is None else float(min_tissue)
    return patch_centres(shape, int(patch_size), tissue=t, min_tissue=share)


def _by_slices(image, labels, given, table, voxel_size, say, sampling) -> Splits:  # type: ignore[no-untyped-def]
    choice = choose_slices(labels, given, voxel_size=voxel_size)
    chosen, how = choice.slices, choice.how
    where = f"train {chosen[0]}, val {chosen[1]}, test {chosen[2]}"
    say(f"sampling patches: {where}" + (f" ({how})" if how else ""))
    try:
        splits = sample_splits(
            image, labels, slices=chosen, classes=painted_classes(table, labels, chosen[0]),
            **sampling,
        )  # fmt: skip
    except ValueError as err:
        if not how:  # every slice given: the error says it all
            raise
        painted = "" if choice.painted is None else f"labels are painted on z = {choice.painted}; "
        raise ValueError(
            f"{err}. The slices {where} were chosen by default ({how}); {painted}choose slices "
            "with --train-slice Z --val-slice Z --test-slice Z, or split one section by region "
            "(--split blocks)"
        ) from None
    say(f"patches per class: {splits.counts()}")
    return splits


def fit_and_test(
    splits: Splits,
    out: Any,
    *,
    variant: str = "default",
    context: int = 1,
    tta: bool = True,
    device: str | None = None,
    **train: Any,
) -> Any:
    """Train on ``splits`` (progress generator), test, save: returns ``(Evaluation, TrainResult)``.

    The model file (``out``) records the split and the test scores; ``context``
    K > 1 trains the multi-scale network (:func:`~.recipe.make_config`), recorded
    in its config.
    """
    from napari_brainfeatures.models.cnn import save_cnn
    from napari_brainfeatures.train.evaluation import evaluate, trained_with_flips
    from napari_brainfeatures.train.fit import train_cnn
    from napari_brainfeatures.train.recipe import make_config

    n = len(splits.train.class_ids)
    config = make_config(variant, patch_size=splits.train.patch_size, n_classes=n, context=context)
    result = yield from train_cnn(
        splits.train, splits.val, config=config, device=device, checkpoint_path=out,
        split=splits.record(), **train,
    )  # fmt: skip
    ev = evaluate(
        result.model, splits.test, device=device, tta=tta and trained_with_flips(result.meta)
    )
    meta = {**result.meta, "test": {**ev.to_dict(), "slices": splits.test.slices}}
    save_cnn(out, result.model, classes=splits.train.classes, meta=meta)
    return ev, result


def held_out_patches(
    meta: dict[str, Any],
    image: Any,
    labels: Any,
    *,
    slices: Sequence[int] | None = None,
    split_mask: Any = None,
    patch_size: int,
    per_class: int,
    seed: int = 0,
    report: Callable[[str], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Test patches for a model: its own test slices or test region unless ``slices`` given.

    A model split by region of one section is tested on that section only in
    its test region (never its training region), also when ``slices`` names it.
    Returns ``(PatchSet, split record)``.
    """
    from napari_brainfeatures.train.patches import sample_patches

    say = report or (lambda _m: None)
    table = meta["class_table"]
    rec = meta.get("split") if isinstance(meta.get("split"), dict) else {}
    spatial = rec.get("mode") in ("blocks", "mask")
    zs = as_slices("slices", slices) if slices is not None else recorded_slices(meta, "test")
    if zs is None:
        raise ValueError("the model records no test slices; give --slice Z")
    if any(not 0 <= z < labels.shape[0] for z in zs):
        raise ValueError(f"slices must be in 0..{labels.shape[0] - 1}, got {zs!r}")
    within, used = None, {"mode": "slices", "slices": {"test": zs}}
    if spatial and int(rec["z"]) in zs:
        if len(zs) > 1:
            raise ValueError(
                f"slice {rec['z']} was split by region for training; evaluate it alone "
                f"(--slice {rec['z']}, its test region) or leave it out of --slice {zs}"
            )
        sm = recorded_split(meta, split_mask)
        within, used = sm.region("test"), {**sm.to_dict(), "evaluated": "test region"}  # type: ignore[union-attr]
        say(f"slice {sm.z} was split by region ({sm.mode}): testing in its test region only")  # type: ignore[union-attr]
    seen = sorted(
        {z for part in ("train", "val") for z in recorded_slices(meta, part) or []} & set(zs)
    )
    if within is None and seen:  # a slice the model learnt from (or was chosen on)
        import warnings

        used["seen_in_training"] = seen
        warnings.warn(
            f"slice(s) {seen} are among the model's own training or validation slices: "
            "scores there are not a test of the model; give --slice of a slice it never saw",
            stacklevel=2,
        )
    lab = [np.asarray(labels[z]) for z in zs]
    ids = {int(i) for a in lab for i in np.unique(a if within is None else a[within])}
    present = type(table)(tuple(c for c in table if c.id in ids))
    if not len(present):
        raise ValueError(
            f"slices {zs} hold none of the model's classes {table.names!r}; "
            "add a --slice Z where they are painted"
        )
    if len(present) < len(table):
        say(f"classes {sorted(set(table.names) - set(present.names))} are not painted there")
    patches = sample_patches(
        image, labels, slices=zs, patch_size=patch_size, per_class=per_class, interior=False,
        classes=present, seed=seed, within=within,
    )  # fmt: skip
    return patches, used
