"""The workspace: a folder beside the data that keeps a user's work.

Layout of ``<data>.brainfeatures/``::

    workspace.json     provenance: data path, shape, created, package version
    classes.json       the class table (names, colours, ids)
    labels.zarr        painted area labels, same (Z, Y, X) shape as the volume
    tissue.zarr        the tissue mask (uint8, 1 = tissue), computed then edited
    models/            trained models (.safetensors)
    features/          dense feature stores (zarr)
    results/           evaluations, factor tables, cluster maps, figures

:meth:`Workspace.inventory` lists what it holds (:func:`inventory`, :class:`Entry`).

Every write is atomic (temporary file + rename; zarr chunks too), so a crash never
leaves a half-written file; a new workspace is built in a temporary folder and
renamed into place, so two processes creating it at once share one.

One writer at a time: writing the labels, tissue mask or class table takes the
workspace's write lease (:mod:`napari_brainfeatures._util.lease`, a lock file that
records host, pid and time and dies with its process).  Another process then gets
:class:`WorkspaceBusyError`, naming the holder, or opens the workspace read-only
(``mode="r"``): a stroke is never lost without a word.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from napari_brainfeatures import __version__
from napari_brainfeatures._util import lease
from napari_brainfeatures._util.files import as_if_created
from napari_brainfeatures._util.inventory import Entry, inventory
from napari_brainfeatures._util.leftovers import clean_leftovers, temp_path
from napari_brainfeatures.classes import ClassTable, default_table

if TYPE_CHECKING:  # numpy and zarr load on first use: listing a workspace needs neither
    import numpy as np
    import zarr

__all__ = [
    "Entry",
    "Workspace",
    "WorkspaceError",
    "WorkspaceBusyError",
    "write_json_atomic",
    "default_workspace_path",
    "inventory",
]

SUFFIX = ".brainfeatures"
SUBFOLDERS = ("models", "features", "results")
MODES = ("a", "r+", "r")
Mode = Literal["a", "r+", "r"]


class WorkspaceError(ValueError):
    """A workspace that does not fit the data, or a corrupt workspace file."""


class WorkspaceBusyError(WorkspaceError, PermissionError):
    """Another process writes this workspace; ``holder`` says which (host, pid, since)."""

    def __init__(self, message: str, holder: lease.Holder) -> None:
        super().__init__(message)
        self.holder = holder


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)  # temporaries of killed writers of this file
    tmp = temp_path(path)
    try:
        with open(tmp, "x", encoding="utf-8") as f:
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
        store = _outer_zarr(p)
        if store is None or store == p:
            return p.with_name(_stem(p.name) + SUFFIX)
        # An array inside a zarr store: beside the store, never inside it (a store's
        # --overwrite would take the workspace along).  The store's default image array
        # shares the store's workspace; another array gets one of its own.
        inner = p.relative_to(store).parts
        old = p.with_name(_stem(p.name) + SUFFIX)  # where earlier versions put it
        if (old / "workspace.json").is_file():
            return old
        tag = "" if len(inner) == 1 and inner[0] in _IMAGE_ARRAYS else "_" + "_".join(inner)
        return store.with_name(_stem(store.name) + tag + SUFFIX)
    home = Path(os.environ.get("BRAINFEATURES_HOME", Path.home() / ".napari-brainfeatures"))
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "untitled"
    return home / "workspaces" / (safe + SUFFIX)


_IMAGE_ARRAYS = ("image", "raw", "data", "volume", "0")  # io.volume.IMAGE_NAMES


def _stem(name: str) -> str:
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _outer_zarr(path: Path) -> Path | None:
    """The outermost zarr store that is or holds ``path`` (resolved), or None."""
    for d in (*reversed(path.parents), path):
        if any((d / f).is_file() for f in ("zarr.json", ".zgroup", ".zarray")):
            return d
    return None


class Workspace:
    """A user's work on one volume, kept on disk.

    Use :meth:`open` (creates the folder when needed).  ``shape`` is the
    (Z, Y, X) shape of the volume the labels belong to.  A workspace that
    took the write lease keeps it until :meth:`close` (or the ``with`` block,
    or the process, ends).
    """

    def __init__(
        self, root: Path, info: dict[str, Any], *, mode: Mode = "a", wait: float = 0.0
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES!r}, got {mode!r}")
        self.root = root
        self.info = info
        self.mode: Mode = mode
        self.wait = float(wait)
        self._lease_pid = 0  # the process that holds this object's share of the lease

    # -- opening --------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: str | os.PathLike[str],
        *,
        shape: Sequence[int] | None = None,
        data_path: str | os.PathLike[str] | None = None,
        classes: ClassTable | None = None,
        mode: Mode = "a",
        wait: float = 0.0,
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
        mode : {"a", "r+", "r"}, default "a"
            ``"a"``: open or create; the write lease is taken when the labels
            or the class table are first opened for writing.  ``"r+"``: the
            same, but the lease is taken now, so a busy workspace is refused
            here.  ``"r"``: read only (the workspace must exist; no lease,
            nothing written, another process may be writing).
        wait : float, default 0
            Seconds to wait for another process's write lease before
            :class:`WorkspaceBusyError` (a script sharing with a viewer).

        Raises
        ------
        WorkspaceError
            If the stored shape differs from ``shape`` or ``workspace.json`` is corrupt.
        WorkspaceBusyError
            With ``mode="r+"``, if another process holds the write lease.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES!r}, got {mode!r}")
        root = Path(root).expanduser()
        if not (root / "workspace.json").exists():
            if shape is None or mode == "r":
                raise WorkspaceError(
                    f"no workspace at {str(root)!r}; give the volume shape to create one"
                    + (" (not with mode='r')" if mode == "r" else "")
                )
            _create(root, shape=shape, data_path=data_path, classes=classes)
        ws = cls(root, _read_info(root, shape), mode=mode, wait=wait)
        if mode == "r+":
            ws._take_lease()
        return ws

    def close(self) -> None:
        """Give back the write lease (the labels array must not be written afterwards)."""
        if self._leased:
            self._lease_pid = 0
            lease.release(self.root)

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def read_only(self) -> bool:
        """True when opened with ``mode="r"``."""
        return self.mode == "r"

    def writer(self) -> lease.Holder | None:
        """The other process writing this workspace now (host, pid, since), or None."""
        return None if self._leased else lease.holder(self.root)

    @property
    def _leased(self) -> bool:
        return self._lease_pid == os.getpid()  # a forked child must take its own

    def _take_lease(self) -> None:
        if self.read_only:
            raise WorkspaceError(
                f"workspace {str(self.root)!r} was opened read-only (mode='r'); "
                "open it with mode='a' to change it"
            )
        if self._leased:
            return
        try:
            lease.acquire(self.root, wait=self.wait)
        except lease.LeaseBusy as busy:
            raise WorkspaceBusyError(
                f"workspace {str(self.root)!r} is being written by {busy.holder.describe()}; "
                "close it there first, or open it read-only with mode='r'",
                busy.holder,
            ) from None
        self._lease_pid = os.getpid()

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
        """Replace the class table (atomically; takes the write lease)."""
        self._take_lease()
        write_json_atomic(self.root / "classes.json", table.to_dict())

    # -- labels ---------------------------------------------------------
    @property
    def labels_path(self) -> Path:
        """Where the labels store lives."""
        return self.root / "labels.zarr"

    def labels(
        self, *, chunks: tuple[int, int, int] | None = None, mode: Literal["r+", "r"] = "r+"
    ) -> zarr.Array:
        """The labels store, a uint16 zarr array of the volume's shape.

        ``mode="r+"`` (default; not on a read-only workspace) takes the write
        lease and creates the store on first use, with chunks of one slice by
        up to 512x512 pixels, so that painting one slice rewrites only the
        chunks it touches.  ``mode="r"`` gives a read-only array.

        Raises
        ------
        WorkspaceBusyError
            For writing, if another process holds the write lease.
        """
        return self._store(self.labels_path, "labels", "uint16", chunks, mode)

    def _store(
        self, path: Path, what: str, dtype: Any, chunks: Any, mode: Literal["r+", "r"]
    ) -> zarr.Array:
        """A zarr array of the volume's shape at ``path``: opened, or created for writing."""
        import zarr

        writable = mode != "r" and not self.read_only
        if writable:
            self._take_lease()
        elif not path.exists():
            raise WorkspaceError(f"no {what} in {str(self.root)!r} yet; nothing to read")
        if path.exists():
            try:
                arr = zarr.open_array(str(path), mode="r+" if writable else "r")
            except Exception as err:
                raise WorkspaceError(f"{what} store {str(path)!r} is corrupt: {err}") from None
            if tuple(arr.shape) != self.shape:
                raise WorkspaceError(
                    f"{what} store {str(path)!r} has shape {tuple(arr.shape)}, "
                    f"the workspace volume {self.shape}"
                )
            return arr
        chunks = chunks or (1, min(512, self.shape[1]), min(512, self.shape[2]))
        return zarr.create_array(
            str(path), shape=self.shape, chunks=chunks, dtype=dtype, fill_value=0
        )

    @property
    def tissue_path(self) -> Path:
        """Where the tissue mask store lives (slices never computed are all 0)."""
        return self.root / "tissue.zarr"

    def tissue(self, *, mode: Literal["r+", "r"] = "r+") -> zarr.Array:
        """The tissue mask store (uint8, 1 = tissue), opened and created as the labels."""
        return self._store(self.tissue_path, "tissue mask", "uint8", None, mode)

    def has_labels(self) -> bool:
        """True when a labels store exists (it may still be all zeros)."""
        return self.labels_path.exists()

    def save_labels(self, data: np.ndarray, *, region: tuple[slice, ...] | None = None) -> None:
        """Write ``data`` into the labels store at ``region`` (default: everything).

        Only chunks overlapping ``region`` are rewritten, each atomically; takes the
        write lease (:class:`WorkspaceBusyError` if another holds it).
        """
        region = region or tuple(slice(0, s) for s in self.shape)
        import numpy as np

        block = np.asarray(data)
        lo, hi = block.min(initial=0), block.max(initial=0)
        if lo < 0 or hi > np.iinfo(np.uint16).max:
            raise ValueError(f"label ids must lie in 0..65535, got {lo}..{hi}")
        arr = self.labels()
        top = np.iinfo(arr.dtype).max if arr.dtype.kind in "iu" else 0
        if hi > top:  # an older, narrower store: never wrap an id (300 -> 44 in uint8)
            raise ValueError(
                f"label id {hi} does not fit the labels store {str(self.labels_path)!r} "
                f"({arr.dtype}, ids 0..{top}); nothing was written: use ids up to {top}"
            )
        arr[region] = block.astype(arr.dtype, copy=False)

    def inventory(self) -> list[Entry]:
        """What the workspace holds: models, feature stores, factor/cluster results, evaluations.

        A list of :class:`Entry` (``kind``, ``path``,
        ``name``, ``created``, ``provenance``; ``complete`` and ``tiles`` for feature
        stores), in kind order then oldest first; reads descriptions only, writes
        nothing (also on a read-only workspace).  See :func:`inventory`.
        """
        return inventory(self.root)

    def write_json(self, name: str, data: Any) -> Path:
        """Write a JSON result into ``results/`` atomically and return its path."""
        path = self.path("results", name)
        write_json_atomic(path, data)
        return path


def _read_info(root: Path, shape: Sequence[int] | None) -> dict[str, Any]:
    info_path = root / "workspace.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WorkspaceError(f"{str(info_path)!r} is corrupt: {err}") from None
    if shape is not None and list(shape) != list(info.get("shape", [])):
        raise WorkspaceError(
            f"workspace {str(root)!r} belongs to a volume of shape {info.get('shape')}, "
            f"not {list(shape)}; open the matching volume or choose another workspace"
        )
    return info


def _create(
    root: Path,
    *,
    shape: Sequence[int],
    data_path: str | os.PathLike[str] | None,
    classes: ClassTable | None,
) -> None:
    """Build a workspace in a temporary folder beside ``root`` and rename it into place.

    The rename is atomic: of two processes creating the same workspace one
    wins, and the other opens the winner's (its own copy is discarded).
    """
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise WorkspaceError(f"workspace shape must be (Z, Y, X) positive, got {tuple(shape)!r}")
    not_ours = WorkspaceError(
        f"{str(root)!r} exists and is not a workspace (no workspace.json); "
        "choose an empty or new folder"
    )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        if (root / "workspace.json").exists():
            return  # created meanwhile by another process
        raise not_ours
    info = {
        "format": "napari-brainfeatures-workspace/1",
        "shape": [int(s) for s in shape],
        "data_path": str(Path(data_path).expanduser().resolve()) if data_path else None,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "version": __version__,
    }
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new"
    tmp.mkdir()  # mode from the umask, as for any folder
    try:
        for sub in SUBFOLDERS:
            (tmp / sub).mkdir()
        write_json_atomic(tmp / "classes.json", (classes or default_table()).to_dict())
        write_json_atomic(tmp / "workspace.json", info)
        try:
            os.rename(tmp, root)  # replaces an empty folder; fails on a filled one
        except OSError:
            if not (root / "workspace.json").exists():
                raise not_ours from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
