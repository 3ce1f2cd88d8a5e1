"""Repeated runs: one model trained with several seeds, each metric as a median and a spread.

Training on a CPU is not bit-reproducible and single runs of the same
settings disagree (the β-VAE paper's comparison flips between seeds), so a
comparison rests on repeats: :func:`parse_seeds` lists the seeds (recorded
with every run), :func:`iter_repeats` runs any fit once per seed,
:func:`fit_latent_repeats` does it for a latent model (each run saved under a
name carrying its seed, :func:`seeded_path`), and :func:`summarise` gives
each metric as a :class:`Spread`: the median with the range of the runs, or
a percentile-bootstrap interval of the median.  :func:`seeds_agreeing`
counts the seeds on which one model beats another.

Nothing here depends on what is trained: the CNN's ``train-cnn --repeats``
uses the same functions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike

from napari_brainfeatures._util.ranges import SEED, Bounded
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = [
    "REPEATS",
    "Spread",
    "parse_seeds",
    "seeded_path",
    "iter_repeats",
    "fit_latent_repeats",
    "summarise",
    "seeds_agreeing",
]

T = TypeVar("T")

#: Runs of one model (``--repeats``).
REPEATS = Bounded("int", 1, 1000)
_SUB = 1000  # progress units per run


@dataclass(frozen=True)
class Spread:
    """One metric over repeated runs.

    Attributes
    ----------
    median : float
    low, high : float
        The range of the runs (``kind="range"``) or the bootstrap interval of
        the median (``kind="bootstrap"``).
    values : tuple of float
        Every run's value, in the order of the seeds.
    kind : {"range", "bootstrap"}
    """

    median: float
    low: float
    high: float
    values: tuple[float, ...]
    kind: str = "range"

    def __str__(self) -> str:
        """``"0.42 [0.31–0.55]"`` (one run, or all runs equal: ``"0.42"``)."""
        if len(self.values) == 1 or self.low == self.high:
            return _fmt(self.median)
        return f"{_fmt(self.median)} [{_fmt(self.low)}–{_fmt(self.high)}]"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``median``, ``low``, ``high``, ``kind``, ``values``."""
        return {"median": self.median, "low": self.low, "high": self.high, "kind": self.kind,
                "values": list(self.values)}  # fmt: skip


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def parse_seeds(seeds: str | Sequence[int] | None = None, repeats: int | None = None) -> list[int]:
    """The seeds of repeated runs: listed (``"0,1,2"`` or a sequence) or ``0..repeats−1``.

    Parameters
    ----------
    seeds : str or sequence of int, optional
        Explicit seeds, distinct, each in the seed range.
    repeats : int, optional
        Number of runs (1..1000); with ``seeds`` it must equal their number.
        Neither given: one run, seed 0.

    Raises
    ------
    ValueError
        A seed that is not an integer or is out of range, a repeated seed, or
        ``repeats`` that disagrees with the seeds listed.
    """
    if repeats is not None:
        repeats = REPEATS.check("repeats", repeats)
    if seeds is None or (isinstance(seeds, str) and not seeds.strip()):
        return list(range(repeats or 1))
    items = [s.strip() for s in seeds.split(",")] if isinstance(seeds, str) else list(seeds)
    out = []
    for item in items:
        if isinstance(item, str) and not re.fullmatch(r"[+-]?\d+", item):
            raise ValueError(f"seeds must be integers separated by commas, got {seeds!r}")
        out.append(SEED.check("seed", int(item)))
    if len(set(out)) != len(out):
        raise ValueError(f"seeds must differ (a repeat with the same seed adds nothing), got {out}")
    if repeats is not None and repeats != len(out):
        raise ValueError(
            f"repeats={repeats} but {len(out)} seeds listed ({out}); give one of the two, or "
            "as many seeds as repeats"
        )
    return out


def seeded_path(path: str | os.PathLike[str], seed: int) -> Path:
    """``model.safetensors`` -> ``model_seed3.safetensors``: one file per run, named by its seed."""
    p = Path(path)
    suffix = p.suffix if p.suffix == ".safetensors" else ""
    stem = p.name[: -len(suffix)] if suffix else p.name
    return p.with_name(f"{stem}_seed{int(seed)}{suffix or '.safetensors'}")


def iter_repeats(
    fit: Callable[[int], ProgressGen[T]], seeds: Iterable[int]
) -> ProgressGen[list[T]]:
    """Run ``fit(seed)`` (a progress generator) once per seed, one after the other.

    Each run's records are passed on, scaled into its share of the whole and
    prefixed ``"seed 3 (2/5): "``; the first record of every run carries
    ``values={"run": i, "seed": s}``.

    Returns
    -------
    list
        The runs' results, in the order of ``seeds``.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("no seeds: pass at least one")
    total, results = _SUB * len(seeds), []
    for i, seed in enumerate(seeds):
        head = f"seed {seed} ({i + 1}/{len(seeds)})"
        yield Progress(i * _SUB, total, f"{head}: starting", {"run": i, "seed": seed})
        gen = fit(seed)
        try:
            while True:
                rec = next(gen)
                frac = rec.fraction or 0.0
                yield Progress(i * _SUB + round(frac * (_SUB - 1)), total,
                               f"{head}: {rec.message}", rec.values, rec.payload)  # fmt: skip
        except StopIteration as stop:
            results.append(stop.value)
        finally:
            gen.close()
    yield Progress(total, total, f"{len(seeds)} runs done")
    return results


def fit_latent_repeats(
    images: ArrayLike,
    *,
    seeds: Sequence[int],
    checkpoint_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> ProgressGen[list[Any]]:
    """Fit one latent model once per seed (:func:`~.model.fit_latent_model`; a progress generator).

    Every option is checked when this is called, before any run.  With ``checkpoint_path``,
    run ``s`` is saved as :func:`seeded_path` ``(checkpoint_path, s)``; its
    metadata records the seed.

    Returns
    -------
    list of FittedModel
        In the order of ``seeds``.
    """
    from napari_brainfeatures.latent.model import fit_latent_model

    seeds = parse_seeds(list(seeds))
    fit_latent_model(images, seed=seeds[0], **options).close()  # check everything up front

    def one(seed: int) -> ProgressGen[Any]:
        path = None if checkpoint_path is None else seeded_path(checkpoint_path, seed)
        return fit_latent_model(images, seed=seed, checkpoint_path=path, **options)

    return iter_repeats(one, seeds)


def summarise(
    runs: Sequence[Mapping[str, Any]],
    *,
    interval: str = "range",
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Spread]:
    """Each numeric metric of repeated runs as a :class:`Spread` (median and range or interval).

    Parameters
    ----------
    runs : sequence of mapping
        One ``{metric: value}`` per run.  Metrics that are numbers (not bool)
        and finite in every run are summarised; others are left out.
    interval : {"range", "bootstrap"}
        ``"range"`` (default): the lowest and highest run.  ``"bootstrap"``:
        the percentile bootstrap interval of the median (``n_boot``
        resamples of the runs, ``level`` coverage, seeded) — with few runs
        it is no wider than the range, and is only worth it from about 5.
    """
    if interval not in ("range", "bootstrap"):
        raise ValueError(f"interval must be 'range' or 'bootstrap', got {interval!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not runs:
        raise ValueError("no runs to summarise")
    out = {}
    for key in runs[0]:
        vals = [r.get(key) for r in runs]
        if not all(_is_number(v) for v in vals):
            continue
        x = np.asarray(vals, dtype=np.float64)
        if interval == "range" or len(x) == 1:
            low, high = float(x.min()), float(x.max())
        else:
            rng = np.random.default_rng(seed)
            meds = np.median(x[rng.integers(0, len(x), (n_boot, len(x)))], axis=1)
            low, high = (float(q) for q in np.quantile(meds, [(1 - level) / 2, (1 + level) / 2]))
        kind = "range" if len(x) == 1 else interval
        out[key] = Spread(float(np.median(x)), low, high, tuple(x.tolist()), kind)
    return out


def _is_number(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.number) and not isinstance(v, bool) and np.isfinite(v)
    )  # fmt: skip


def seeds_agreeing(a: Sequence[float], b: Sequence[float]) -> int:
    """On how many seeds ``a`` beats ``b`` (paired by seed: ``a[i] > b[i]``)."""
    if len(a) != len(b):
        raise ValueError(f"paired values needed, got {len(a)} and {len(b)}")
    return int(sum(x > y for x, y in zip(a, b, strict=True)))
