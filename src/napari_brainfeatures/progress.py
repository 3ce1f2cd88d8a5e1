"""Progress records for long-running core work.

Long work in the core is written as a generator that ``yield``s
:class:`Progress` records and ``return``s its result.  Scripts drive it with
:func:`run`; widgets wrap the same generator in a napari worker so that the
yields feed a progress bar and live plots and the return value becomes layers.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")

__all__ = ["Progress", "ProgressGen", "blocking", "run"]


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
    try:
        while True:
            try:
                record = next(gen)
            except StopIteration as stop:
                return stop.value
            if callback is not None:
                callback(record)
    except BaseException:
        gen.close()  # a failing callback or Ctrl-C: run the generator's cleanup now
        raise


def blocking(gen_fn: Callable[P, Generator[Progress, Any, T]]) -> Callable[P, T]:
    """The blocking twin of a progress generator function ``iter_<name>``.

    Long work is written once, as a generator function named ``iter_<name>`` that
    yields :class:`Progress`; ``<name> = blocking(iter_<name>)`` takes the same
    arguments, drives it with :func:`run` and returns its result (for scripts).
    """
    name = gen_fn.__name__.removeprefix("iter_")

    @functools.wraps(gen_fn)
    def plain(*args: P.args, **kwargs: P.kwargs) -> T:
        return run(gen_fn(*args, **kwargs))

    sig = inspect.signature(gen_fn)
    ret = sig.return_annotation
    if isinstance(ret, str) and ret.startswith("ProgressGen[") and ret.endswith("]"):
        ret = ret[len("ProgressGen[") : -1]
    elif typing.get_origin(ret) is Generator:
        ret = typing.get_args(ret)[2]
    plain.__signature__ = sig.replace(return_annotation=ret)  # type: ignore[attr-defined]
    plain.__name__ = name
    plain.__qualname__ = gen_fn.__qualname__.removesuffix(gen_fn.__name__) + name
    plain.__doc__ = (
        f"Run :func:`{gen_fn.__name__}` to the end and return its result (no progress).\n\n"
        + (gen_fn.__doc__ or "")
    )
    return plain
