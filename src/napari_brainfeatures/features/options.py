"""The options of a dense feature-map job, declared once and checked at the boundary.

:class:`DenseOptions` is what a caller asks for (``None`` = choose automatically);
:class:`~napari_brainfeatures.features.plan.DenseJob` is what gets computed, with
every automatic choice made.  :func:`~.run.compute_feature_map`,
:func:`~.distributed.compute_feature_map_distributed`, the ``features`` command and
the dock widget all build a ``DenseOptions``, so the defaults live here only.

This module imports no torch (the command line reads the defaults for ``--help``);
resolving the device imports it when options are made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_brainfeatures.classes import ClassTable

if TYPE_CHECKING:
    import torch

__all__ = ["EDGES", "METHODS", "OUTPUTS", "PRECISIONS", "DenseOptions"]

OUTPUTS = ("features", "features_pre", "probs", "areas")
EDGES = ("reflect", "zero", "invalid")
METHODS = ("auto", "dense", "patch")
PRECISIONS = ("float32", "mixed")
#: Upper bounds of the numeric options (far above any use, far below an overflow).
MAX_STRIDE, MAX_TILE, MAX_BATCH, MAX_MEMORY_MB = 65_536, 65_536, 2**24, 2**24


@dataclass(frozen=True, kw_only=True)
class DenseOptions:
    """Options of a dense feature-map job (everything but the image, model and store).

    Parameters
    ----------
    stride : int
        Pixels between outputs, default 1 (every pixel).
    region : None, int, slice, (start, stop), dict, Region or bool array
        ``None``: everything; int / slice / pair: z-slices; ``{"z": .., "y": (y0, y1),
        "x": (x0, x1)}`` or :class:`~.plan.Region`: a box; a bool mask ``(Y, X)`` or
        ``(Z, Y, X)``: only outputs whose pixel is in the mask (others NaN / 0).
        Checked against the image when the job is planned.
    tile : int, optional
        Outputs per tile side (= zarr chunk), at least 1; default from ``memory_mb``.
    batch : int, optional
        Patches per forward pass (``method="patch"``) or FC1 outputs per call (dense);
        default 256 per patch, 8192 dense on CPU, 65536 dense on CUDA.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU (all cores).  Stored resolved
        (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    precision : {"float32", "mixed"}
        ``"mixed"``: autocast (float16 on CUDA, bfloat16 on CPU); stores stay float32.
        Meant for CUDA: CPUs without bfloat16 units run it slower than float32.
    which : sequence of str
        Any of ``"features"`` (post-ReLU), ``"features_pre"`` (pre-ReLU),
        ``"probs"``, ``"areas"``; default features, probs and areas.
    edge : {"reflect", "zero", "invalid"}
        Edge rule (see :mod:`~napari_brainfeatures.features.run`).
    method : {"auto", "dense", "patch"}
        ``"auto"``: exact fully convolutional evaluation for unpadded networks, batched
        per-patch evaluation (exact, slow) for padded ones; ``"dense"`` on a padded
        network is the inexact dense approximation.
    classes : ClassTable, optional
        Label ids for ``areas`` (default: the model file's, else 1..K).
    input_scale : float, optional
        Multiply the image by this (> 0) instead of the dtype rule.
    memory_mb : float, optional
        Working-set budget (MiB, > 0) that sets the default tile (1024 on CPU, 8192
        on CUDA).
    overwrite : bool
        Replace a store made by another job (default: refuse).
    image_name : str, optional
        Recorded in the provenance.

    Raises
    ------
    ValueError
        A value out of range or not one of the known names (the message quotes it).
    """

    stride: int = 1
    region: Any = None
    tile: int | None = None
    batch: int | None = None
    device: str | torch.device | None = None
    precision: str = "float32"
    which: tuple[str, ...] = ("features", "probs", "areas")
    edge: str = "reflect"
    method: str = "auto"
    classes: ClassTable | None = None
    input_scale: float | None = None
    memory_mb: float | None = None
    overwrite: bool = False
    image_name: str | None = None

    def __post_init__(self) -> None:
        from napari_brainfeatures._util.device import resolve_device

        for name, val, allowed in (
            ("edge", self.edge, EDGES),
            ("method", self.method, METHODS),
            ("precision", self.precision, PRECISIONS),
        ):
            if val not in allowed:
                raise ValueError(f"{name} must be one of {allowed!r}, got {val!r}")
        which = (self.which,) if isinstance(self.which, str) else tuple(self.which)
        if not which or not set(which) <= set(OUTPUTS):
            raise ValueError(f"which must be a non-empty subset of {OUTPUTS!r}, got {which!r}")
        if self.classes is not None and not isinstance(self.classes, ClassTable):
            raise TypeError(f"classes must be a ClassTable, got {type(self.classes).__name__}")
        normal = {
            "stride": _count("stride", self.stride, hi=MAX_STRIDE),
            "tile": None
            if self.tile is None
            else _count("tile", self.tile, "outputs per side", hi=MAX_TILE),
            "batch": None if self.batch is None else _count("batch", self.batch, hi=MAX_BATCH),
            "memory_mb": _positive("memory_mb", self.memory_mb, "MiB", hi=MAX_MEMORY_MB),
            "input_scale": _positive("input_scale", self.input_scale, "factor", hi=1e12),
            "which": tuple(dict.fromkeys(which)),
            "device": str(resolve_device(self.device)),
            "overwrite": bool(self.overwrite),
        }
        for key, value in normal.items():  # frozen: set the normalised values once
            object.__setattr__(self, key, value)

    @classmethod
    def of(cls, options: DenseOptions | None = None, **changes: Any) -> DenseOptions:
        """``options`` (default: all defaults) with the keyword options ``changes`` applied.

        Raises
        ------
        TypeError
            A keyword that is no option, or ``options`` that is no ``DenseOptions``.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown!r}; the options are {', '.join(names)}")
        if options is None:
            return cls(**changes)
        if not isinstance(options, cls):
            raise TypeError(f"options must be DenseOptions, got {type(options).__name__}")
        return replace(options, **changes) if changes else options


def _count(name: str, value: Any, what: str = "", *, hi: int) -> int:
    """``value`` as an int in ``1..hi`` (bools and floats refused)."""
    unit = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer{unit}, got {value!r}")
    if value > hi:
        raise ValueError(f"{name} must be a positive integer of at most {hi}{unit}, got {value!r}")
    return int(value)


def _positive(name: str, value: Any, unit: str, *, hi: float) -> float | None:
    """``value`` as a finite float in ``(0, hi]``, or None (automatic)."""
    if value is None:
        return None
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok and math.isfinite(value) and value > hi:
        raise ValueError(
            f"{name} must be a positive number of at most {hi:.0f} ({unit}), got {value!r}"
        )
    if not ok or not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name} must be a positive number ({unit}) or None (automatic), got {value!r}"
        )
    return float(value)
