"""The workspace: a folder beside the data that keeps a user's work.

Layout of ``<data>.brainfeatures/``::

    workspace.json     provenance: data path, shape, created, package version
    classes.json       the class table (names, colours, ids)
    labels.zarr        painted area labels, same (Z, Y, X) shape as the volume
    models/            trained models (.safetensors)
    features/          dense feature stores (zarr)
    results/           evaluations, factor tables, cluster maps, figures

Every write is atomic (temporary file + rename; zarr chunks are written the
same way by zarr's local store), so a crash never leaves a half-written file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_brainfeatures import __version__
from napari_brainfeatures._util.files import as_if_created
from napari_brainfeatures.classes import ClassTable, default_table

__all__ = ["Workspace", "WorkspaceError", "write_json_atomic", "default_workspace_path"]

SUFFIX = ".brainfeatures"
SUBFOLDERS = ("models", "features", "results")


class WorkspaceError(ValueError):
    """A workspace that does not fit the data, or a corrupt workspace file."""


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        as_if_created(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def default_workspace_path(
    data_path: str | os.PathLike[str] | None, name: str = "untitled"
) -> Path:
    """Where the workspace of ``data_path`` lives.

    Beside the data (``/d/brain.zarr`` -> ``/d/brain.brainfeatures``) when the
    data is a file; for in-memory data (sample data, layers without a source)
    under ``$BRAINFEATURES_HOME`` (default ``~/.napari-brainfeatures``).
    """
    if data_path:
        p = Path(data_path).expanduser().resolve()
        stem = p.name
        for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        return p.with_name(stem + SUFFIX)
    home = Path(os.environ.get("BRAINFEATURES_HOME", Path.home() / ".napari-brainfeatures"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "untitled"
    return home / "workspaces" / (safe + SUFFIX)


class Workspace:
    """A user's work on one volume, kept on disk.

    Use :meth:`open` (creates the folder when needed).  ``shape`` is the
    (Z, Y, X) shape of the volume the labels belong to.
    """

    def __init__(self, root: Path, info: dict[str, Any]) -> None:
        self.root = root
        self.info = info

    # -- opening --------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        *,
        shape: Sequence[int] | None = None,
        data_path: str | os.PathLike[str] | None = None,
        classes: ClassTable | None = None,
    ) -> Workspace:
        """Open the workspace at ``root``, creating it if it does not exist.

        Parameters
        ----------
        root : path
            The workspace folder.
        shape : sequence of int, optional
            The volume's (Z, Y, X) shape; required to create a workspace, and
            checked against the stored one when opening an existing workspace.
        data_path : path, optional
            Recorded as provenance.
        classes : ClassTable, optional
            Class table for a new workspace (default: the paper's six areas).

        Raises
        ------
        WorkspaceError
            If the stored shape differs from ``shape`` or ``workspace.json`` is corrupt.
        """
        root = Path(root).expanduser()
        info_path = root / "workspace.json"
        if info_path.exists():
            try:
                info = json.loads(info_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise WorkspaceError(f"{str(info_path)!r} is corrupt: {err}") from None
            if shape is not None and list(shape) != list(info.get("shape", [])):
                raise WorkspaceError(
                    f"workspace {str(root)!r} belongs to a volume of shape {info.get('shape')}, "
                    f"not {list(shape)}; open the matching volume or choose another workspace"
                )
            return cls(root, info)
        if shape is None:
            raise WorkspaceError(
                f"no workspace at {str(root)!r}; give the volume shape to create one"
            )
        if len(shape) != 3 or any(int(s) < 1 for s in shape):
            raise WorkspaceError(
                f"workspace shape must be (Z, Y, X) positive, got {tuple(shape)!r}"
            )
        if root.exists() and any(root.iterdir()):
            raise WorkspaceError(
                f"{str(root)!r} exists and is not a workspace (no workspace.json); "
                "choose an empty or new folder"
            )
        info = {
            "format": "napari-brainfeatures-workspace/1",
            "shape": [int(s) for s in shape],
            "data_path": str(data_path) if data_path else None,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "version": __version__,
        }
        root.mkdir(parents=True, exist_ok=True)
        for sub in SUBFOLDERS:
            (root / sub).mkdir(exist_ok=True)
        ws = cls(root, info)
        ws.save_classes(classes or default_table())
        write_json_atomic(info_path, info)
        return ws

    @property
    def shape(self) -> tuple[int, int, int]:
        """The volume's (Z, Y, X) shape."""
        z, y, x = self.info["shape"]
        return (int(z), int(y), int(x))

    def path(self, kind: str, name: str = "") -> Path:
        """A path inside ``models``, ``features`` or ``results`` (folder created)."""
        if kind not in SUBFOLDERS:
            raise ValueError(f"kind must be one of {SUBFOLDERS!r}, got {kind!r}")
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name if name else folder

    # -- classes --------------------------------------------------------
    @property
    def classes(self) -> ClassTable:
        """The class table (read from ``classes.json``)."""
        path = self.root / "classes.json"
        if not path.exists():
            return default_table()
        try:
            return ClassTable.from_json(path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise WorkspaceError(f"{str(path)!r} is not a valid class table: {err}") from None

    def save_classes(self, table: ClassTable) -> None:
        """Replace the class table (atomically)."""
        write_json_atomic(self.root / "classes.json", table.to_dict())

    # -- labels ---------------------------------------------------------
    @property
    def labels_path(self) -> Path:
        """Where the labels store lives."""
        return self.root / "labels.zarr"

    def labels(self, *, chunks: tuple[int, int, int] | None = None) -> zarr.Array:
        """The labels store, a writable uint16 zarr array of the volume's shape.

        Created on first use with chunks of one slice by up to 512x512 pixels,
        so that painting one slice rewrites only the chunks it touches.
        """
        path = self.labels_path
        if path.exists():
            try:
                arr = zarr.open_array(str(path), mode="r+")
            except Exception as err:
                raise WorkspaceError(f"labels store {str(path)!r} is corrupt: {err}") from None
            if tuple(arr.shape) != self.shape:
                raise WorkspaceError(
                    f"labels store {str(path)!r} has shape {tuple(arr.shape)}, "
                    f"the workspace volume {self.shape}"
                )
            return arr
        z, y, x = self.shape
        chunks = chunks or (1, min(512, y), min(512, x))
        return zarr.create_array(
            str(path), shape=self.shape, chunks=chunks, dtype=np.uint16, fill_value=0
        )

    def has_labels(self) -> bool:
        """True when a labels store exists (it may still be all zeros)."""
        return self.labels_path.exists()

    def save_labels(self, data: np.ndarray, *, region: tuple[slice, ...] | None = None) -> None:
        """Write ``data`` into the labels store at ``region`` (default: everything).

        Only chunks overlapping ``region`` are rewritten, each atomically.
        """
        arr = self.labels()
        region = region or tuple(slice(0, s) for s in self.shape)
        block = np.asarray(data)
        if block.min(initial=0) < 0 or block.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError("label ids must lie in 0..65535")
        arr[region] = block.astype(np.uint16, copy=False)

    def write_json(self, name: str, data: Any) -> Path:
        """Write a JSON result into ``results/`` atomically and return its path."""
        path = self.path("results", name)
        write_json_atomic(path, data)
        return path
