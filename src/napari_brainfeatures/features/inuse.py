"""Feature stores in use, and replacing one without ever destroying it first.

A store is *in use* while an open :class:`~.store.FeatureStore` object of it lives
in this process (the Feature maps dock keeps the one it shows; a
:class:`~.grid.FeatureGrid` read from a store, and factors made from that grid,
keep theirs), or while someone :func:`hold` s it.  :func:`check_replaceable`
refuses to replace a store in use, naming it.

Replacing (``overwrite=True`` for a store made by another job): the new store is
built under a hidden sibling name (:func:`~napari_brainfeatures._util.leftovers.temp_path`,
tag ``partial``, by :func:`~.store.prepare`) and :func:`finish` swaps it in only
once every tile is written;
until then the old store stays whole and readable.  A killed run leaves the
partial sibling, which the next write of that store removes
(:func:`~napari_brainfeatures._util.leftovers.clean_leftovers`); a run that
stops in this process (Cancel, an error) removes it at once (:func:`discard`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["StoreInUseError", "check_replaceable", "discard", "finish", "hold", "in_use"]

_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()  # open FeatureStore objects
_HELD: Counter[Path] = Counter()


class StoreInUseError(FileExistsError):
    """A store to replace (or delete) is open in this process (a dock shows it)."""


def _key(path: str | os.PathLike[str]) -> Path:
    return Path(path).expanduser().resolve()


def register(store: Any) -> None:
    """Count ``store`` (an open FeatureStore with a ``path``) as using its store while it lives."""
    _LIVE.add(store)


def _users(key: Path) -> int:
    return _HELD[key] + sum(1 for s in list(_LIVE) if _key(s.path) == key)


def in_use(path: str | os.PathLike[str]) -> bool:
    """Whether the store at ``path`` is open in this process (see the module notes)."""
    key = _key(path)
    if _users(key) and _HELD[key] == 0:
        gc.collect()  # a store object kept only by a reference cycle is not a user
    return _users(key) > 0


@contextlib.contextmanager
def hold(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Keep the store at ``path`` from being replaced for the ``with`` block."""
    key = _key(path)
    _HELD[key] += 1
    try:
        yield key
    finally:
        _HELD[key] -= 1
        if _HELD[key] <= 0:
            del _HELD[key]


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`StoreInUseError` when the store at ``path`` is in use."""
    if in_use(path):
        raise StoreInUseError(
            f"the feature store {str(path)!r} is in use (open in a dock: Feature maps or "
            "Factors) and is not replaced; close the factors or maps made from it, or choose "
            "another output path"
        )


def finish(built: Path, target: Path, total: int) -> Path:
    """Mark the store ``built`` complete once its ``total`` tiles are done; put it at ``target``.

    Returns where the store now lies.  A store written in place (``built`` is
    ``target``) stays, complete or not (a later run resumes it).  A replacement
    is swapped in only when complete: the old store is renamed aside, the new one
    renamed in, and only then is the old one deleted
    (:func:`~napari_brainfeatures._util.overwrite.swap_in`); when the old store came
    into use meanwhile, it stays, and the new one is kept beside it as
    ``<name>-<time>.zarr`` (returned).
    """
    import zarr

    from napari_brainfeatures._util.overwrite import swap_in
    from napari_brainfeatures.features.store import done_tiles, mark_complete

    if len(done_tiles(built)) == total:
        mark_complete(zarr.open_group(built, mode="r+"))
    elif built != target:
        discard(built, target)
        raise RuntimeError(f"the replacement of {str(target)!r} stopped before its last tile")
    if built == target:
        return target
    if in_use(target):
        stamp = time.strftime("%Y%m%dT%H%M%S")
        kept = target.with_name(f"{target.name.removesuffix('.zarr')}-{stamp}.zarr")
        os.replace(built, kept)
        return kept
    swap_in(built, target)
    return target


def discard(built: Path, target: Path) -> None:
    """Remove an unfinished replacement (never ``target`` itself)."""
    if built != target and built.exists():
        shutil.rmtree(built, ignore_errors=True)
