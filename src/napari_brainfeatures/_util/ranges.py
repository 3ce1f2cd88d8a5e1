"""Numbers with a range, checked where they enter: the command line and the Python API.

A :class:`Bounded` is both an argparse ``type`` (a bad value is an argparse
error: exit status 2, the value quoted, nothing run) and a checker for the
same value passed from Python (:meth:`Bounded.check` raises ValueError).  One
declaration gives both, so the two can not drift apart.

Options whose meaning (and range) belongs to a core options dataclass
(``DenseOptions``, ``NMFOptions``...) get :data:`INT` / :data:`FLOAT` on the
command line: a number of sane size, finite; the dataclass checks the rest.
"""

from __future__ import annotations

import argparse
import math
import operator
from typing import Any

__all__ = ["FLOAT", "INT", "SEED", "Bounded"]


class Bounded:
    """An integer or a finite float in ``[lo, hi]`` (``open_lo``: ``lo`` itself excluded).

    Parameters
    ----------
    kind : {"int", "float"}
    lo, hi : number, optional
        Bounds, inclusive unless ``open_lo``; None: unbounded on that side (still
        finite, and an integer within ±2**63).
    open_lo : bool
        Refuse ``lo`` itself (``lr > 0``).
    hint : str
        What the number is, for the message (``"micrometres"``).
    """

    def __init__(
        self,
        kind: str,
        lo: float | None = None,
        hi: float | None = None,
        *,
        open_lo: bool = False,
        hint: str = "",
    ) -> None:
        if kind not in ("int", "float"):
            raise ValueError(f"kind must be 'int' or 'float', got {kind!r}")
        self.numeric, self.lo, self.hi, self.open_lo, self.hint = kind, lo, hi, open_lo, hint
        self.__name__ = "an integer" if kind == "int" else "a number"  # argparse's wording

    def describe(self) -> str:
        """``"an integer in 1..64"``, ``"a number > 0 and <= 10"``..."""
        what = self.__name__
        lo, hi = self.lo, self.hi
        if self.numeric == "int" and lo is not None and hi is not None:
            text = f"{what} in {lo:g}..{hi:g}"
        else:
            parts = []
            if lo is not None:
                parts.append(f"{'>' if self.open_lo else '>='} {lo:g}")
            if hi is not None:
                parts.append(f"<= {hi:g}")
            text = f"{what} {' and '.join(parts)}" if parts else f"a finite {what[2:]}"
        return f"{text} ({self.hint})" if self.hint else text

    def check(self, name: str, value: Any) -> Any:
        """``value`` as int/float if in range, else ValueError naming ``name`` and the value."""
        try:
            number = self._number(value)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None or not self._inside(number):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return number

    def __call__(self, text: str) -> Any:
        """The argparse ``type``: the number in ``text``, or an ArgumentTypeError quoting it."""
        try:
            number = self._number(text.strip() if isinstance(text, str) else text)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None or not self._inside(number):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return number

    def _number(self, value: Any) -> int | float | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, str):
            value = int(value, 10) if self.numeric == "int" else float(value)
        if self.numeric == "int":
            if isinstance(value, float):
                return int(value) if value.is_integer() else None
            return operator.index(value)
        return float(value)

    def _inside(self, x: float) -> bool:
        if not math.isfinite(x) or abs(x) > 2**63:
            return False
        if self.lo is not None and (x < self.lo or (self.open_lo and x == self.lo)):
            return False
        return self.hi is None or x <= self.hi


#: A seed: numpy's and torch's generators take 0..2**32 - 1 alike.
SEED = Bounded("int", 0, 2**32 - 1)
#: An integer of sane size; the core options dataclass checks its meaning.
INT = Bounded("int", -(2**31), 2**31 - 1)
#: A finite number of sane size; the core options dataclass checks its meaning.
FLOAT = Bounded("float", -1e12, 1e12)
