"""The tables a result keeps as CSV: sizes in µm², mean factor activity, layer profiles.

Each builder returns ``(columns, rows)`` for :func:`write_table`; names come from a
mapping id -> name (a class table's, or ``"<what> <id>"`` without one).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["area_table", "mean_activity_table", "profile_table", "read_table", "write_table"]

Table = tuple[list[str], list[list[Any]]]


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return v.item() if hasattr(v, "item") else v


def write_table(
    path: str | os.PathLike[str], columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> Path:
    """Write a CSV file: a header row of ``columns``, then ``rows`` (floats to 6 digits)."""
    width = len(columns)
    bad = [i for i, r in enumerate(rows) if len(r) != width]
    if bad:
        raise ValueError(f"every row needs {width} cells ({list(columns)}); rows {bad[:5]} do not")
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(list(columns))
        out.writerows([[_cell(v) for v in r] for r in rows])
    return Path(path)


def read_table(path: str | os.PathLike[str]) -> Table:
    """A CSV file as ``(columns, rows)`` of strings."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return (rows[0], rows[1:]) if rows else ([], [])


def _name(names: Mapping[int, str] | None, i: int, what: str) -> str:
    return (names or {}).get(int(i), f"{what} {int(i)}")


def area_table(
    labels: Any,
    pixel_um: Sequence[float],
    *,
    names: Mapping[int, str] | None = None,
    what: str = "area",
) -> Table:
    """Size of each id of a 2-D label map: pixels and µm² (0 = none is left out).

    Parameters
    ----------
    labels : int array ``(H, W)``
    pixel_um : (sy, sx)
        Micrometres between pixels (on the map's own grid).
    names : mapping id -> name, optional
    what : str
        Column title and default name prefix (``"area"``, ``"cluster"``).
    """
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be a 2-D map (H, W), got shape {lab.shape}")
    ids, counts = np.unique(lab[lab > 0], return_counts=True)
    px = float(pixel_um[0]) * float(pixel_um[1])
    pairs = zip(ids, counts, strict=True)
    rows = [[int(i), _name(names, i, what), int(n), n * px] for i, n in pairs]
    return ["id", what, "pixels", "area_um2"], rows


def mean_activity_table(
    maps: Any,
    areas: Any,
    *,
    names: Mapping[int, str] | None = None,
    factors: Sequence[str] | None = None,
) -> Table:
    """Mean of each factor map over each area (NaN pixels left out).

    Parameters
    ----------
    maps : float array ``(k, H, W)``
    areas : int array ``(H, W)``
        Area ids on the maps' grid (0 = none).
    """
    m = np.asarray(maps, dtype=np.float64)
    lab = np.asarray(areas)
    if m.ndim != 3 or lab.shape != m.shape[1:]:
        raise ValueError(f"maps (k, H, W) and areas (H, W) must agree, got {m.shape}, {lab.shape}")
    cols = list(factors or [f"F{i}" for i in range(m.shape[0])])
    rows = []
    for a in np.unique(lab[lab > 0]):
        inside = m[:, lab == a]  # (k, n)
        n = int(np.isfinite(inside).all(axis=0).sum())
        with np.errstate(invalid="ignore"):
            means = np.nanmean(inside, axis=1) if n else np.full(m.shape[0], np.nan)
        rows.append([int(a), _name(names, a, "area"), n, *means])
    return ["id", "area", "pixels", *cols], rows


def profile_table(profile: Any, *, names: Mapping[int, str] | None = None) -> Table:
    """A :class:`~napari_brainfeatures.factors.scores.LayerProfile` as rows per cluster.

    Columns: cluster, pixels, then the fraction of the cluster in each layer / area.
    """
    layer_cols = [_name(names, j, "layer") for j in profile.layer_ids]
    rows = [
        [int(c), int(np.sum(profile.counts[i])), *profile.matrix[i]]
        for i, c in enumerate(profile.cluster_ids)
    ]
    return ["cluster", "pixels", *layer_cols], rows
