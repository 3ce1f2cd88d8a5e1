"""Checks of a model file's description before anything is built from it.

A model file is data from anywhere (a colleague, a download, a disk that
failed): every field of its header is checked here for its JSON type and a
sane range, and the network it describes is counted on the ``meta`` device
(no memory) against a parameter budget, before one byte of weights is
allocated.  The safetensors tensor table (names, dtypes, shapes, byte ranges)
is compared with that network too.  Errors name the field and the value.

The bounds are far above every network of the papers (the default CNN has
3.4 M parameters, the default β-VAE 0.7 M) and far below what would exhaust a
workstation.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "CNN_FIELDS",
    "MAX_PARAMETERS",
    "PCA_FIELDS",
    "VAE_FIELDS",
    "Field",
    "as_int",
    "check_fields",
    "check_tensor_table",
    "count_on_meta",
]

#: Largest network a model file may describe: 2**28 parameters (1 GiB of float32).
MAX_PARAMETERS = 2**28

# safetensors dtype name -> torch dtype, for the tensor table check
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class Field:
    """One config field: its JSON type (``int``, ``float``, ``ints``, ``bool``, ``dict``), range.

    ``ints`` is a list of integers each in ``[lo, hi]``, of ``length`` entries
    (``(min, max)``).  ``open_lo`` / ``open_hi`` exclude the bound (floats).
    """

    def __init__(
        self,
        kind: str,
        lo: float | None = None,
        hi: float | None = None,
        *,
        length: tuple[int, int] = (1, 16),
        open_lo: bool = False,
        open_hi: bool = False,
        choices: tuple[Any, ...] | None = None,
    ) -> None:
        self.kind, self.lo, self.hi, self.length = kind, lo, hi, length
        self.open_lo, self.open_hi, self.choices = open_lo, open_hi, choices

    def range_text(self) -> str:
        """The allowed values, as error messages say them."""
        if self.choices is not None:
            return f"one of {list(self.choices)!r}"
        left = "(" if self.open_lo else "["
        right = ")" if self.open_hi else "]"
        return f"in {left}{self.lo:g}, {self.hi:g}{right}"

    def check(self, name: str, value: Any) -> None:
        """Raise ValueError (naming ``name``) unless ``value`` is of this type and range."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"field {name!r} must be true or false, got {_show(value)}")
            return
        if self.kind == "dict":
            if not isinstance(value, Mapping):
                raise ValueError(f"field {name!r} must be a JSON object, got {_show(value)}")
            return
        if self.kind == "ints":
            if not isinstance(value, list | tuple):
                raise ValueError(f"field {name!r} must be a list of integers, got {_show(value)}")
            lo_n, hi_n = self.length
            if not lo_n <= len(value) <= hi_n:
                raise ValueError(
                    f"field {name!r} must have {lo_n}..{hi_n} entries, got {len(value)}"
                )
            for i, v in enumerate(value):
                self._scalar(f"{name}[{i}]", v, integer=True)
            return
        self._scalar(name, value, integer=self.kind == "int")

    def _scalar(self, name: str, value: Any, *, integer: bool) -> None:
        ok = isinstance(value, int) if integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            what = "an integer" if integer else "a number"
            raise ValueError(f"field {name!r} must be {what}, got {_show(value)}")
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"field {name!r} must be {self.range_text()}, got {_show(value)}")
            return
        bad = not math.isfinite(value)
        if self.lo is not None:
            bad = bad or value < self.lo or (self.open_lo and value == self.lo)
        if self.hi is not None:
            bad = bad or value > self.hi or (self.open_hi and value == self.hi)
        if bad:
            raise ValueError(f"field {name!r} must be {self.range_text()}, got {_show(value)}")


#: :class:`~.cnn.CNNConfig` fields and their bounds.
CNN_FIELDS: dict[str, Field] = {
    "patch_size": Field("int", 4, 4096),
    "n_classes": Field("int", 2, 1000),
    "in_channels": Field("int", choices=(1, 3)),
    "channels": Field("ints", 1, 4096),
    "kernels": Field("ints", 1, 31),
    "paddings": Field("ints", 0, 15),
    "fc": Field("ints", 1, 65536, length=(1, 8)),
    "dropout": Field("float", 0, 1, open_hi=True),
    "context": Field("int", 1, 16),
    "extra": Field("dict"),
}

#: :class:`~.vae.VAEConfig` fields and their bounds.
VAE_FIELDS: dict[str, Field] = {
    "latent_dim": Field("int", 1, 64),
    "beta": Field("float", 0, 1e6, open_lo=True),
    "image_shape": Field("ints", 1, 16384, length=(2, 2)),
    "channels": Field("int", 1, 1024),
    "n_down": Field("int", 1, 12),
    "fc": Field("ints", 1, 65536, length=(1, 8)),
    "extra": Field("dict"),
}

#: ``PCABaseline`` (``latent.pca``) config fields and their bounds.
PCA_FIELDS: dict[str, Field] = {
    "latent_dim": Field("int", 1, 4096),
    "whiten": Field("bool"),
    "seed": Field("int", 0, 2**32 - 1),
    "image_shape": Field("ints", 1, 16384, length=(2, 2)),
}


def as_int(value: Any) -> Any:
    """``value`` as a Python int when it is an integer (numpy's too, or a whole float).

    Anything else is returned unchanged, for :func:`check_fields` to refuse by name
    (``int(3.7)`` would silently make it 3).
    """
    if isinstance(value, bool):
        return value
    try:
        return operator.index(value)
    except TypeError:
        pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_fields(data: Any, schema: Mapping[str, Field], what: str) -> None:
    """Check a config ``data`` (a JSON object) against ``schema``; unknown keys refused.

    Missing keys are allowed (the config class fills its default).

    Raises
    ------
    ValueError
        Naming the first bad field and its value.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"the {what} config must be a JSON object, got {_show(data)}")
    unknown = sorted(str(k) for k in set(data) - set(schema))
    if unknown:
        raise ValueError(f"unknown {what} config keys {unknown!r}")
    for name, field in schema.items():
        if name in data:
            field.check(name, data[name])


def count_on_meta(build: Callable[[Any], nn.Module], config: Any, what: str) -> nn.Module:
    """Build the network on the ``meta`` device (no memory) and check its size.

    Returns
    -------
    nn.Module
        The network without storage, for its parameter shapes.

    Raises
    ------
    ValueError
        The network would have more than :data:`MAX_PARAMETERS` parameters.
    """
    with torch.device("meta"):
        probe = build(config)
    n = sum(t.numel() for t in probe.state_dict().values())
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"the {what} config describes {n:,} parameters ({4 * n / 2**30:.1f} GiB), more "
            f"than the {MAX_PARAMETERS:,} a model file may hold; the file is damaged or not "
            "a network of this package"
        )
    return probe


def check_tensor_table(
    raw: Mapping[str, Any], data_size: int, expected: Mapping[str, torch.Tensor]
) -> None:
    """Compare a safetensors header's tensor table with the network's ``state_dict``.

    Parameters
    ----------
    raw : mapping
        The parsed safetensors header (tensor name -> ``{dtype, shape, data_offsets}``,
        plus ``__metadata__``).
    data_size : int
        Bytes of the file after the header.
    expected : mapping
        The network's tensors (shapes and dtypes only are read; ``meta`` tensors do).

    Raises
    ------
    ValueError
        A tensor missing, extra, of another shape or dtype, or its bytes outside the file.
    """
    table = {k: v for k, v in raw.items() if k != "__metadata__"}
    missing = sorted(set(expected) - set(table))
    extra = sorted(set(table) - set(expected))
    if missing or extra:
        raise ValueError(f"its tensors do not match the network (missing {missing}, extra {extra})")
    for name, want in expected.items():
        entry = table[name]
        if not isinstance(entry, Mapping):
            raise ValueError(f"tensor {name!r} has no description, got {_show(entry)}")
        dtype = _DTYPES.get(entry.get("dtype")) if isinstance(entry.get("dtype"), str) else None
        half = want.dtype == torch.float32 and dtype in (torch.float16, torch.bfloat16)
        if dtype != want.dtype and not half:  # half-precision weights load as float32
            raise ValueError(
                f"tensor {name!r} is {_show(entry.get('dtype'))}, the network needs "
                f"{str(want.dtype).removeprefix('torch.')}"
            )
        shape = entry.get("shape")
        if not (isinstance(shape, list) and all(type(s) is int for s in shape)):
            raise ValueError(f"tensor {name!r} has an invalid shape {_show(shape)}")
        if tuple(shape) != tuple(want.shape):
            raise ValueError(
                f"tensor {name!r} has shape {tuple(shape)}, the network needs {tuple(want.shape)}"
            )
        offsets = entry.get("data_offsets")
        nbytes = math.prod(shape) * (2 if half else want.element_size())
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size
            and offsets[1] - offsets[0] == nbytes
        ):
            raise ValueError(
                f"tensor {name!r} has byte range {_show(offsets)} for {nbytes} bytes in a "
                f"data section of {data_size} bytes (truncated or damaged file)"
            )


class JSONConfig:
    """Mixin for a config dataclass saved as JSON in a model file's header.

    A subclass sets ``FIELDS`` (its :class:`Field` schema) and ``WHAT`` (its name in errors).
    """

    FIELDS: Mapping[str, Field]
    WHAT: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """Rebuild from :meth:`to_dict`: JSON types and bounds checked, unknown keys refused."""
        check_fields(d, cls.FIELDS, cls.WHAT)
        return cls(**d)
