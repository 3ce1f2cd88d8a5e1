"""The options of the NMF and of the factor selection, declared and validated once.

:class:`NMFOptions` is what :func:`~.nmf.fit_nmf`, :class:`~.nmf.FeatureNMF`, the
``factors`` command and the dock widget pass on; :class:`SelectOptions` is what
:func:`~.select.select_factors` takes.  Both are frozen dataclasses that check
their values when made (and again after :func:`dataclasses.replace`).  A bad value
raises :class:`OptionError`, a :class:`ValueError` that knows which option and
value it is about, so an interface can name the option its own way
(``--lam``, "leakage λ") with :meth:`OptionError.named` or :meth:`NMFOptions.named`.

This module imports nothing heavy: the command line builds its options (and its
``--solver`` choices) from it before torch is loaded.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["INITS", "NORMALISE", "OUTSIDE", "SOLVERS", "NMFOptions", "OptionError", "SelectOptions"]

SOLVERS = ("auto", "torch", "sklearn", "sklearn-minibatch")
INITS = ("nndsvda", "random")
#: Upper bounds: factors (and picks), NMF iterations, the leakage weight λ.
MAX_COMPONENTS, MAX_ITER, MAX_LAM = 100_000, 1_000_000, 1e6
NORMALISE = ("none", "area")
OUTSIDE = ("all", "labelled")

_O = TypeVar("_O", bound="_Options")


class OptionError(ValueError):
    """An option with a value outside its range; the message quotes the value.

    Attributes
    ----------
    option : str
        The option's name in the core (``"lam"``, ``"n_components"``).
    rule : str
        What it must be (``"must be >= 0"``).
    value : Any
        The value given.
    """

    def __init__(self, option: str, rule: str, value: Any, *, name: str | None = None) -> None:
        self.option, self.rule, self.value = option, rule, value
        super().__init__(f"{name or option} {rule}, got {value!r}")

    def named(self, names: Mapping[str, str]) -> OptionError:
        """The same error, the option called by its name in ``names`` (e.g. its flag)."""
        err = OptionError(self.option, self.rule, self.value, name=names.get(self.option))
        err.__cause__ = self.__cause__
        return err


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _positive_int(option: str, v: Any, hi: int = 2**31 - 1) -> None:
    if not _is_int(v) or int(v) < 1:
        raise OptionError(option, "must be an integer >= 1", v)
    if int(v) > hi:
        raise OptionError(option, f"must be an integer in 1..{hi}", v)


def _one_of(option: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise OptionError(option, f"must be one of {choices!r}", v)


class _Options:
    """Shared by the options dataclasses: build with interface names in errors."""

    def _check(self) -> None:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def named(cls: type[_O], names: Mapping[str, str], /, **values: Any) -> _O:
        """Build the options; an error calls each option by ``names[option]``.

        ``names`` maps core names to an interface's (``{"lam": "--lam"}``).
        """
        try:
            return cls(**values)
        except OptionError as err:
            raise err.named(names) from None


@dataclass(frozen=True)
class NMFOptions(_Options):
    """Options of the NMF ``X ≈ W H`` (see :func:`~.nmf.fit_nmf`).

    Parameters
    ----------
    n_components : int
        Number of factors ``k`` >= 1, default 15 (the paper); at most ``min(N, D)``,
        which is checked against the data when fitting.
    solver : {'auto', 'torch', 'sklearn', 'sklearn-minibatch'}
        'auto' = 'torch' (block HALS in PyTorch).
    init : {'nndsvda', 'random'}
        Start, as in scikit-learn.
    max_iter : int
        At most this many iterations (passes over ``X``), default 200.
    tol : float, optional
        Torch: stop when the relative error falls by less than ``tol`` (relative) in
        one iteration; default 1e-5, which reaches the error scikit-learn's default
        (tol 1e-4 on its own, gradient-based measure) reaches.  scikit-learn solvers:
        their own criterion, default 1e-4.  See :attr:`tolerance`.
    seed : int
        Seed for 'random' init and scikit-learn.
    device : str, optional
        'cpu', 'cuda' or None (CUDA when available).  Torch solver only.
    block_rows : int
        Rows per block (memory beyond ``X``: ``W`` plus one block), default 32 768.
    sweeps : (int, int)
        HALS sweeps over ``W`` per block and over ``H`` per iteration, default (3, 6):
        reusing each block's ``X Hᵀ`` for a few sweeps is nearly free and halves the
        iterations.
    """

    n_components: int = 15
    solver: str = "auto"
    init: str = "nndsvda"
    max_iter: int = 200
    tol: float | None = None
    seed: int = 0
    device: str | None = None
    block_rows: int = 32_768
    sweeps: tuple[int, int] = (3, 6)

    def _check(self) -> None:
        _positive_int("n_components", self.n_components, MAX_COMPONENTS)
        _one_of("solver", self.solver, SOLVERS)
        _one_of("init", self.init, INITS)
        _positive_int("max_iter", self.max_iter, MAX_ITER)
        if self.tol is not None and not (_is_real(self.tol) and self.tol >= 0):
            raise OptionError(
                "tol", "must be a number >= 0 (or None: the solver's default)", self.tol
            )
        if self.tol is not None and not (math.isfinite(self.tol) and self.tol <= 1):
            raise OptionError("tol", "must be a finite number in [0, 1] (relative)", self.tol)
        if not (_is_int(self.seed) and 0 <= int(self.seed) <= 2**32 - 1):
            raise OptionError("seed", "must be an integer in 0..4294967295", self.seed)
        _positive_int("block_rows", self.block_rows, 2**26)
        sweeps = tuple(self.sweeps) if isinstance(self.sweeps, tuple | list) else ()
        if len(sweeps) != 2 or not all(_is_int(s) and 1 <= int(s) <= 1000 for s in sweeps):
            raise OptionError(
                "sweeps", "must be two integers >= 1 and <= 1000 (W sweeps, H sweeps)", self.sweeps
            )
        object.__setattr__(self, "sweeps", (int(sweeps[0]), int(sweeps[1])))

    @property
    def tolerance(self) -> float:
        """``tol``, or the solver's default when it is None (1e-4 scikit-learn, 1e-5 torch)."""
        if self.tol is not None:
            return float(self.tol)
        return 1e-4 if self.solver.startswith("sklearn") else 1e-5


@dataclass(frozen=True)
class SelectOptions(_Options):
    """Options of the greedy ROI-aligned factor selection (see :func:`~.select.select_factors`).

    Parameters
    ----------
    lam : float
        Leakage weight λ >= 0, default 0.5 (the paper's whole-slice value; 0.3 for
        cortical layers).
    p : int, optional
        Number of picks >= 1, default ``min(k, r)``; checked against ``k`` and the
        number of ROIs by :meth:`check_p`.
    normalise : {'none', 'area'}
    eps : float in [0, 1)
        Relative activity threshold.
    outside : {'all', 'labelled'}
    """

    lam: float = 0.5
    p: int | None = None
    normalise: str = "none"
    eps: float = 0.0
    outside: str = "all"

    def _check(self) -> None:
        if not (_is_real(self.lam) and math.isfinite(self.lam) and self.lam >= 0):
            raise OptionError("lam", "must be >= 0", self.lam)
        if self.lam > MAX_LAM:
            raise OptionError("lam", f"must be >= 0 and <= {MAX_LAM:g}", self.lam)
        if self.p is not None:
            _positive_int("p", self.p, MAX_COMPONENTS)
        _one_of("normalise", self.normalise, NORMALISE)
        if not (_is_real(self.eps) and 0 <= self.eps < 1):
            raise OptionError("eps", "must be in [0, 1)", self.eps)
        _one_of("outside", self.outside, OUTSIDE)

    def check_p(self, k: int, r: int) -> int:
        """The number of picks for ``k`` factors and ``r`` ROIs: ``p``, or ``min(k, r)``."""
        top = min(k, r)
        if self.p is None:
            return top
        if not 1 <= self.p <= top:
            raise OptionError(
                "p", f"must be in 1..{top} (at most the {k} factors and the {r} ROI(s))", self.p
            )
        return int(self.p)
