"""Progress records for long-running core work.

Long work in the core is written as a generator that ``yield``s
:class:`Progress` records and ``return``s its result.  Scripts drive it with
:func:`run`; widgets wrap the same generator in a napari worker so that the
yields feed a progress bar and live plots and the return value becomes layers.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["Progress", "ProgressGen", "run"]


@dataclass(frozen=True)
class Progress:
    """One progress report from a long-running generator.

    Parameters
    ----------
    step : int
        Units of work done so far.
    total : int or None
        Units of work in all, or None when unknown.
    message : str
        Short human-readable status ("epoch 3/20", "tile 12/40").
    values : dict of str to float
        Numbers for live plots (e.g. ``{"train_loss": 0.4, "val_acc": 0.8}``).
    payload : Any
        Optional partial result (e.g. the region just written) for live display.
    """

    step: int
    total: int | None = None
    message: str = ""
    values: dict[str, float] = field(default_factory=dict)
    payload: Any = None

    @property
    def fraction(self) -> float | None:
        """Fraction done in [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(max(self.step / self.total, 0.0), 1.0)


ProgressGen = Generator[Progress, None, T]


def run(gen: Generator[Progress, Any, T], callback: Callable[[Progress], Any] | None = None) -> T:
    """Drive a progress generator to completion and return its result.

    Parameters
    ----------
    gen : generator
        A generator yielding :class:`Progress` and returning a result.
    callback : callable, optional
        Called with every yielded record (e.g. to log or print it).

    Returns
    -------
    result
        The generator's return value.
    """
    while True:
        try:
            record = next(gen)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(record)
