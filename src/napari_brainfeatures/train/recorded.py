"""The split a model was trained with, read back: evaluate and analyse on the same split.

A model file's ``split`` record (:meth:`~napari_brainfeatures.train.splits.Splits.record`)
says how its data was divided: by slice (``mode="slices"``) or by region of one
section (``"blocks"``, ``"mask"``; :class:`~.regions.SplitMap`).
:func:`recorded_split` rebuilds the regions (a drawn mask must be given again,
hash-checked); :func:`recorded_slices` gives the slices of a split;
:func:`read_split_mask` reads a drawn mask from an array or a file;
:func:`model_warnings` reads what the training record says against building on the
model (validation accuracy near chance: :func:`near_chance`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_brainfeatures.train.regions import SplitMap

__all__ = [
    "chance_of",
    "model_warnings",
    "pixel_size_warning",
    "near_chance",
    "read_split_mask",
    "recorded_slices",
    "recorded_split",
]


def read_split_mask(mask: Any, z: int, shape: tuple[int, int]) -> np.ndarray:
    """A ``(Y, X)`` split mask (1/2/3 = train/val/test) from an array or a volume file.

    ``mask`` may be a path (anything :func:`~napari_brainfeatures.io.volume.open_volume`
    reads), or an array ``(Y, X)``, ``(1, Y, X)`` or ``(Z, Y, X)`` (slice ``z`` is used).
    """
    if isinstance(mask, str) or hasattr(mask, "__fspath__"):
        from napari_brainfeatures.io.volume import open_volume

        mask = open_volume(mask).data
    arr = mask
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr[int(z)]
    out = np.asarray(arr.compute() if hasattr(arr, "compute") else arr)
    if out.shape != tuple(shape):
        raise ValueError(
            f"the split mask is {tuple(out.shape)!r} per section, the image {tuple(shape)!r}; "
            "draw it on the image's grid"
        )
    return out


def recorded_split(meta: dict[str, Any], mask: Any = None) -> SplitMap | None:
    """The model's regions of one section, or None when it was split by slice (or unknown)."""
    rec = meta.get("split")
    if not isinstance(rec, dict) or rec.get("mode") not in ("blocks", "mask"):
        return None
    if mask is not None:
        mask = read_split_mask(mask, int(rec["z"]), tuple(rec["shape"]))
    return SplitMap.from_dict(rec, mask=mask)


def recorded_slices(meta: dict[str, Any], split: str) -> list[int] | None:
    """The z-slices of ``split`` ("train" / "val" / "test") the model records, if any."""
    rec = meta.get("split")
    if isinstance(rec, dict) and rec.get("mode") in ("blocks", "mask"):
        return [int(rec["z"])]
    if isinstance(rec, dict) and isinstance(rec.get("slices"), dict):
        return [int(z) for z in rec["slices"].get(split, [])] or None
    training = meta.get("training") or {}
    if split in ("train", "val") and isinstance(training.get("slices"), dict):
        return [int(z) for z in training["slices"].get(split, [])] or None
    test = meta.get("test") or {}
    if split == "test" and test.get("slices"):
        return [int(z) for z in test["slices"]]
    return None


def chance_of(counts: Any) -> float | None:
    """Accuracy of always guessing the largest class, from per-class counts (None: no counts)."""
    counts = [int(c) for c in counts]
    return max(counts) / sum(counts) if counts and sum(counts) else None


def near_chance(accuracy: float, chance: float) -> bool:
    """Whether an accuracy is too close to chance to build on: under ``min(2c, (1 + c) / 2)``."""
    return accuracy < min(2 * chance, 0.5 + chance / 2)


def pixel_size_warning(meta: dict[str, Any], voxel: Any) -> str | None:
    """What to say when an image's pixels are not the size the model learnt on (> 10 % off).

    ``voxel``: the image's ``(z, y, x)`` (or ``(y, x)``) in micrometres, None if unknown.
    """
    trained = meta.get("voxel_size_um")
    if not trained or voxel is None:
        return None
    a, b = float(trained[-1]), float(voxel[-1])
    if not (a > 0 and b > 0) or max(a, b) / min(a, b) <= 1.1:
        return None
    return (
        f"the image's pixels are {b:.3g} µm, the model learnt on {a:.3g} µm pixels: its window "
        f"covers {(b / a) ** 2:.2g} times the tissue it was trained on; resample the image to "
        f"{a:.3g} µm (or train a model at this scale)"
    )


def model_warnings(meta: dict[str, Any]) -> list[str]:
    """What a model file's own record says against building on it (empty: nothing).

    Reads the training record (best validation accuracy against the
    validation patches' chance level), so that the Feature maps and Factors
    docks can say it beside every map made with the model, evaluated or not.
    """
    training = meta.get("training") or {}
    out = []
    ran, planned = training.get("epochs_run"), training.get("epochs")
    if "stopped_early" not in training and isinstance(ran, int) and isinstance(planned, int):
        if ran < planned:  # the best model so far of a run that did not end by itself
            out.append(
                f"interrupted model: its training stopped at epoch {ran} of {planned} "
                "(cancelled, or the viewer closed); this is the best model until then"
            )
    chance = chance_of(((training.get("counts") or {}).get("val") or {}).values())
    acc = training.get("best_val_acc")
    if acc is not None and chance is not None and near_chance(float(acc), chance):
        out.append(
            f"weak model: validation accuracy {float(acc):.1%} is near chance ({chance:.1%}); "
            "its features mostly show texture, not areas"
        )
    return out
