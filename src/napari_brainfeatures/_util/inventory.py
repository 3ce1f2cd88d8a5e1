"""What a workspace holds: models, feature stores, factor and cluster results, evaluations.

:func:`inventory` lists a workspace folder (see :mod:`napari_brainfeatures.workspace`)
as :class:`Entry` records, reading only small description files: a model file's
safetensors header, a zarr group's ``zarr.json``, a result's ``provenance.json``
or JSON record.  No weights, maps or features are read, and nothing is written, so
it is fast (a session restore lists a workspace in well under a second) and safe
while another process writes.  Hidden temporaries of killed writers are never
listed (:func:`~napari_brainfeatures._util.leftovers.is_leftover`), and nor is
anything unreadable: a damaged entry is skipped, not raised.

Where results are found under ``results/``: a folder with a ``provenance.json``
(``results/<kind>/<name>-<time>/``, kind from the provenance or the folder above),
a ``.zarr`` group written by :func:`~napari_brainfeatures.factors.results.save_factors`
or ``save_clusters``, and a JSON file that is an evaluation record (``accuracy`` and
``confusion``) or names its ``kind``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_brainfeatures._util.leftovers import is_leftover

__all__ = ["KINDS", "Entry", "inventory"]

#: Listing order of the kinds (others, e.g. "analysis" or "latent", follow in name order).
KINDS = ("model", "features", "factors", "clusters", "evaluation")
_ZARR_KINDS = {"nmf-factors": "factors", "cluster-map": "clusters"}
_FEATURES_KIND = "dense-feature-map"  # features.store.KIND (not imported: zarr, dask)
_MAX_HEADER = 16 * 2**20  # models.checkpoint.MAX_HEADER_BYTES (not imported: torch)
_DEPTH = 4  # folders below results/ searched


@dataclass(frozen=True)
class Entry:
    """One thing a workspace holds.

    Attributes
    ----------
    kind : str
        ``"model"`` (a ``.safetensors`` model file), ``"features"`` (a dense feature
        store), ``"factors"`` (NMF factors, ``factors.zarr``), ``"clusters"`` (a cluster
        map), ``"evaluation"`` (a model's scores), or the kind a result folder's
        ``provenance.json`` names (``"analysis"``, ``"latent"``, ...).
    path : Path
        The file or folder (a result folder with ``provenance.json``: that folder).
    name : str
        A short display name: the file or folder name without its suffix.
    created : str
        ISO 8601 time it was made (from its description; else the file's
        modification time, UTC).
    provenance : dict
        Its JSON description as stored: a model's ``{"kind", "config", "meta"}``, a
        store's or result's ``brainfeatures`` attributes, a ``provenance.json``, or an
        evaluation record.  Empty when it has none.
    complete : bool or None
        Feature stores: whether every tile was written (None for other kinds).
    tiles : (int, int) or None
        Feature stores: ``(tiles done, tiles in all)`` (None for other kinds, or
        when the store's tile table cannot be read).
    """

    kind: str
    path: Path
    name: str
    created: str
    provenance: dict[str, Any] = field(default_factory=dict)
    complete: bool | None = None
    tiles: tuple[int, int] | None = None


def _mtime_iso(path: Path) -> str:
    t = path.stat().st_mtime
    return _dt.datetime.fromtimestamp(t, _dt.UTC).isoformat(timespec="seconds")


def _created(path: Path, record: dict[str, Any]) -> str:
    for key in ("created", "time", "timestamp"):
        value = record.get(key)
        if isinstance(value, str) and value:
            return value
    return _mtime_iso(path)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _zarr_attrs(path: Path) -> dict[str, Any] | None:
    """The ``brainfeatures`` attributes of a zarr (v3) group, or None."""
    meta = _read_json(path / "zarr.json")
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = (meta.get("attributes") or {}).get("brainfeatures")
    return dict(attrs) if isinstance(attrs, dict) else None


def _model(path: Path) -> Entry | None:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if not 0 < n <= _MAX_HEADER:
            return None
        md = json.loads(f.read(n)).get("__metadata__") or {}
    if not str(md.get("format", "")).startswith("napari-brainfeatures/"):
        return None
    prov = {"kind": md.get("kind")}
    for key in ("config", "meta"):
        try:
            prov[key] = json.loads(md.get(key) or "{}")
        except (TypeError, ValueError):
            prov[key] = {}
    meta = prov["meta"] if isinstance(prov["meta"], dict) else {}
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    return Entry("model", path, path.stem, _created(path, {**meta, **training}), prov)


def _tiles(path: Path) -> tuple[int, int] | None:
    """``(done, total)`` from the ``done`` array's shape and its chunk files (one per tile)."""
    shape = _read_json(path / "done" / "zarr.json").get("shape")
    if not (isinstance(shape, list) and len(shape) == 3):
        return None
    total = int(shape[0]) * int(shape[1]) * int(shape[2])
    done = sum(len(files) for _, _, files in os.walk(path / "done" / "c"))
    return min(done, total), total


def _store(path: Path) -> Entry | None:
    attrs = _zarr_attrs(path)
    if attrs is None or attrs.get("kind") != _FEATURES_KIND:
        return None
    try:
        tiles = _tiles(path)
    except (OSError, ValueError, TypeError, AttributeError):
        tiles = None
    complete = bool(attrs.get("complete")) or (tiles is not None and tiles[0] == tiles[1])
    name = path.name.removesuffix(".zarr")
    return Entry("features", path, name, _created(path, attrs), attrs, complete, tiles)


def _result(path: Path, parent_kind: str | None) -> Entry | None:
    """A result under ``results/``: a provenance folder, a zarr group, or a JSON record."""
    if path.is_dir():
        if (path / "provenance.json").is_file():
            prov = _read_json(path / "provenance.json")
            if not isinstance(prov, dict):
                return None
            kind = prov.get("kind") if isinstance(prov.get("kind"), str) else parent_kind
            return Entry(kind or "result", path, path.name, _created(path, prov), prov)
        if path.suffix == ".zarr" and (path / "zarr.json").is_file():
            attrs = _zarr_attrs(path)
            kind = _ZARR_KINDS.get(str((attrs or {}).get("kind")))
            if kind is None or attrs is None:
                return None
            name = path.stem if path.stem not in ("factors", "clusters") else path.parent.name
            return Entry(kind, path, name, _created(path, attrs), attrs)
        return None
    if path.suffix != ".json" or path.name == "provenance.json":
        return None
    record = _read_json(path)
    if not isinstance(record, dict):
        return None
    if "accuracy" in record and "confusion" in record:
        kind = "evaluation"
    elif isinstance(record.get("kind"), str):
        kind = record["kind"]
    else:
        return None
    return Entry(kind, path, path.stem, _created(path, record), record)


def _walk_results(folder: Path, depth: int, found: list[Entry]) -> None:
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return
    for child in children:
        if child.name.startswith(".") or is_leftover(child):
            continue
        try:
            entry = _result(child, folder.name if depth < _DEPTH else None)
        except (OSError, ValueError, TypeError, AttributeError, struct.error):
            continue  # damaged or unreadable: not listed
        if entry is not None:
            found.append(entry)
        elif child.is_dir() and child.suffix != ".zarr" and depth > 1:
            _walk_results(child, depth - 1, found)


def _sort_key(entry: Entry) -> tuple[int, str, str, str]:
    rank = KINDS.index(entry.kind) if entry.kind in KINDS else len(KINDS)
    return rank, entry.kind, entry.created, str(entry.path)


def inventory(root: str | os.PathLike[str]) -> list[Entry]:
    """List what the workspace folder ``root`` holds (reads descriptions only; writes nothing).

    Parameters
    ----------
    root : path-like
        A workspace folder (``<data>.brainfeatures``).

    Returns
    -------
    list of Entry
        Models (``models/*.safetensors``), feature stores (``features/*.zarr``, with
        completeness), then the results under ``results/`` (factors, clusters,
        evaluations, then other kinds); within a kind, oldest first.  Damaged,
        unreadable or half-written (leftover) items are not listed.
    """
    root = Path(root).expanduser()
    found: list[Entry] = []
    for folder, suffix, read in (("models", ".safetensors", _model), ("features", ".zarr", _store)):
        path = root / folder
        for child in sorted(path.iterdir()) if path.is_dir() else ():
            if child.suffix != suffix or child.name.startswith(".") or is_leftover(child):
                continue
            try:
                entry = read(child)
            except (OSError, ValueError, TypeError, AttributeError, struct.error):
                continue
            if entry is not None:
                found.append(entry)
    _walk_results(root / "results", _DEPTH, found)
    return sorted(found, key=_sort_key)
