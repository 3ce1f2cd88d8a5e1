"""What an exploration opens: a slice of a feature store, a factors result, or both.

:func:`open_sources` takes either path.  A factors result brings its maps and, when
its feature store is still there, the store's slice (features, areas); a store
being written is refused with how far it is, so nothing is plotted from half a map.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_brainfeatures.features.grid import FeatureGrid

__all__ = ["Sources", "open_sources"]


@dataclass(frozen=True, eq=False)
class Sources:
    """The slice being explored.

    Attributes
    ----------
    grid : FeatureGrid
        Where the slice lies on the image; its ``features`` ``(H', W', D)`` when the
        feature store is at hand, else None.
    factors : Factors, optional
        NMF factors of the slice (a factors result was opened).
    store : FeatureStore, optional
        The dense feature store (areas, confidence, features).
    note : str
        What is missing and what that rules out ("" when nothing is).
    """

    grid: FeatureGrid
    factors: Any = None
    store: Any = None
    note: str = ""


def _complete_store(path: Path) -> Any:
    from napari_brainfeatures.features.store import FeatureStore

    store = FeatureStore(path)
    if not store.complete:
        done, total = store.progress()
        raise ValueError(
            f"the feature store {str(path)!r} is still being written ({done}/{total} tiles "
            "done); wait until its run finishes (or resume it), then open it again"
        )
    return store


def open_sources(path: str | os.PathLike[str], z: int | None = None) -> Sources:
    """Open a ``factors.zarr`` or a dense feature store for exploring.

    Parameters
    ----------
    path : path
        A factors result (``factors.zarr``) or a feature store (``STORE.zarr``).
    z : int, optional
        The store's z index (a store of several slices); a factors result knows its own.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``, or neither kind of result.
    ValueError
        A store still being written, or a damaged result (naming it).
    """
    from napari_brainfeatures.factors.results import is_factors, open_factors

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such feature store or factors result: {str(path)!r}")
    if is_factors(path):
        factors = open_factors(path)
        source = factors.grid.source
        if source is None or not Path(source).exists():
            note = (
                f"the factors' feature store {source!r} is gone: the factor plot works; PCA, "
                "area readouts and the live classifier need the store (compute it again)"
            )
            return Sources(factors.grid, factors=factors, note=note)
        store = _complete_store(Path(source))
        grid = FeatureGrid.from_store(store, factors.grid.index, flag="store z index")
        if grid.shape != factors.grid.shape:
            note = (
                f"the feature store {source!r} no longer matches the factors (grid "
                f"{grid.shape} vs {factors.grid.shape}): it was computed again; factorise again"
            )
            return Sources(factors.grid, factors=factors, note=note)
        return Sources(grid, factors=factors, store=store)
    from napari_brainfeatures.features.store import _is_feature_store

    if not _is_feature_store(path):
        raise FileNotFoundError(
            f"{str(path)!r} is neither a dense feature store nor a factors result; pick the "
            "STORE.zarr of the Feature maps widget or a factors.zarr of the Factors widget"
        )
    store = _complete_store(path)
    return Sources(FeatureGrid.from_store(store, z, flag="store z index"), store=store)
