"""The range of every number a CNN training, evaluation or analysis takes: declared once.

Each is a :class:`~napari_brainfeatures._util.ranges.Bounded`: the argparse ``type``
of the command-line option (``train-cnn``, ``evaluate``, ``analyse``: exit status 2,
the value quoted, nothing run) and the check the Python API makes for the same
value (:class:`~.recipe.Recipe`, :func:`~.patches.sample_patches`,
:func:`~.splits.sample_splits`, :func:`~.regions.spatial_split`,
:func:`~.evaluation.evaluate`, :func:`~napari_brainfeatures.analyse.report.analyse_model`:
ValueError naming the parameter).  No torch here: the command line reads it to
build its parser.
"""

from __future__ import annotations

from typing import Any

from napari_brainfeatures._util.ranges import SEED, Bounded

__all__ = [
    "BATCH_SIZE",
    "BLOCK",
    "CONTEXT",
    "EPOCHS",
    "FOLDS",
    "GUARD",
    "LR",
    "PATCH_SIZE",
    "PATIENCE",
    "PER_CLASS",
    "PROBABILITY",
    "SEED",
    "SIGMA",
    "SLICE",
    "STRIDE",
    "THREADS",
    "as_slices",
    "check_optional",
    "inside",
]

#: Patch side, px (the model file allows the same).
PATCH_SIZE = Bounded("int", 4, 4096, hint="px")
#: Multi-scale input: a window of patch_size seen as its central 1/K and as K x K averages.
CONTEXT = Bounded("int", 1, 16, hint="1: one view (the paper's network)")
#: Patches per class (training, validation, test, analysis).
PER_CLASS = Bounded("int", 1, 999_999)
#: Most passes over the training patches.
EPOCHS = Bounded("int", 1, 100_000)
#: Patches per step (training, evaluation, prediction).
BATCH_SIZE = Bounded("int", 1, 65_536)
#: Adam learning rate.
LR = Bounded("float", 0, 10, open_lo=True)
#: Early-stopping patience; 0 (or None in Python): never stop early.
PATIENCE = Bounded("int", 0, 100_000, hint="epochs; 0: never stop early")
#: A z-slice index of sane size; where the volume is known, it must be in 0..Z-1 (a
#: message naming that range; negative indices are refused there too).
SLICE = Bounded("int", -999_999, 999_999, hint="z index, then checked against the volume")
#: Guard band between the splits of one section.
GUARD = Bounded("int", 0, 65_536, hint="px")
#: Spatial k-fold: groups of blocks.
FOLDS = Bounded("int", 3, 100)
#: CPU threads for torch.
THREADS = Bounded("int", 1, 4096)
#: Augmentation probabilities (``mix``, ``rotate``).
PROBABILITY = Bounded("float", 0, 1)
#: Noise standard deviation on images scaled to [0, 1].
SIGMA = Bounded("float", 0, 10, hint="on [0, 1] images")
#: Block side of a spatial split.
BLOCK = Bounded("int", 2, 65_536, hint="px")
#: Pixels between classified patches (slice prediction).
STRIDE = Bounded("int", 1, 4096, hint="px")


def check_optional(bounds: Bounded, name: str, value: Any) -> Any:
    """``bounds.check(name, value)``, or None when ``value`` is None (the default chosen)."""
    return None if value is None else bounds.check(name, value)


def inside(bounds: Bounded, value: Any) -> bool:
    """Whether ``bounds.check`` accepts ``value`` (for a message that says more)."""
    try:
        bounds.check("", value)
    except ValueError:
        return False
    return True


def as_slices(name: str, zs: Any) -> list[int]:
    """A z-slice or a sequence of them as a list, each a :data:`SLICE`."""
    if isinstance(zs, str) or not hasattr(zs, "__iter__"):
        return [SLICE.check(name, zs)]
    return [SLICE.check(name, z) for z in zs]
