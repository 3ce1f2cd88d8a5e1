"""One result, one folder: written atomically with its provenance, listed and read back.

A result lives at ``<workspace>/results/<kind>/<name>-<timestamp>/``::

    provenance.json   format, kind, name, created (UTC), package version, machine,
                      inputs (paths; a model with its SHA-256), parameters, files
    *.json            numbers (metrics, reports)
    *.csv             tables (one header row)
    *.png, *.svg      figures
    *.zarr            maps (see :mod:`.maps`) or a stage's own store (``factors.zarr``)

:func:`new_result` builds the folder under a hidden temporary name beside it and
renames it into place when the ``with`` block ends without an error, so a folder
never holds half a result nor two runs; a failed or killed run leaves nothing
but a hidden temporary, which the next write of that kind removes.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from napari_brainfeatures import __version__
from napari_brainfeatures._util.leftovers import (
    clean_leftovers,
    is_leftover,
    leftover_of,
    temp_path,
)
from napari_brainfeatures.synthetic.weights import sha256_of  # one file hash for the package

__all__ = [
    "KINDS",
    "PROVENANCE",
    "Result",
    "ResultBuilder",
    "list_results",
    "new_result",
    "open_result",
]

#: What a result can be (a sub-folder of ``results/`` each).
KINDS = ("evaluation", "factors", "clusters", "report", "latent")
PROVENANCE = "provenance.json"
FORMAT = "napari-brainfeatures-result/1"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "cpu": platform.machine(),
        "cores": os.cpu_count(),
        "system": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def _jsonable(value: Any) -> Any:
    """Paths as strings, numpy numbers and arrays as Python ones, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return value


def _inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs as given; a model file (``model``) also gets its SHA-256."""
    out = _jsonable(dict(inputs))
    model = out.get("model")
    if isinstance(model, str) and Path(model).is_file():
        out["model_sha256"] = sha256_of(model)
    return out


@dataclass
class ResultBuilder:
    """The folder being written; :func:`new_result` yields one.  Each method returns its file."""

    root: Path
    files: list[str] = field(default_factory=list)

    def _target(self, name: str) -> Path:
        if not name or Path(name).name != name or name == PROVENANCE:
            raise ValueError(f"a result file needs a plain file name, got {name!r}")
        if name in self.files:
            raise ValueError(f"{name!r} was already written into this result")
        self.files.append(name)
        return self.root / name

    def json(self, name: str, data: Any) -> Path:
        """``data`` as indented JSON (numpy values and paths converted)."""
        path = self._target(name)
        path.write_text(json.dumps(_jsonable(data), indent=2), encoding="utf-8")
        return path

    def table(self, name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
        """A CSV table: one header row, then ``rows`` (see :func:`.tables.write_table`)."""
        from napari_brainfeatures.results.tables import write_table

        return write_table(self._target(name), columns, rows)

    def figure(self, stem: str, figure: Any, *, svg: bool = True) -> Path:
        """A matplotlib figure as ``stem.png`` (150 dpi) and, with ``svg``, ``stem.svg``."""
        png = self._target(f"{stem}.png")
        figure.savefig(png, dpi=150)
        if svg:
            figure.savefig(self._target(f"{stem}.svg"))
        return png

    def map(self, name: str, data: Any, **kwargs: Any) -> Path:
        """A map as ``name.zarr`` with its geometry; ``kwargs`` as :func:`.maps.write_map`."""
        from napari_brainfeatures.results.maps import write_map

        return write_map(self._target(f"{name}.zarr"), data, **kwargs)

    def add(self, name: str, write: Callable[[Path], Any]) -> Path:
        """Let ``write(path)`` write the file or store ``name`` (e.g. ``save_factors``)."""
        path = self._target(name)
        write(path)
        return path


@dataclass(frozen=True)
class Result:
    """A finished result folder and its provenance."""

    path: Path
    provenance: dict[str, Any]

    @property
    def kind(self) -> str:  # noqa: D102
        return str(self.provenance.get("kind", self.path.parent.name))

    @property
    def name(self) -> str:  # noqa: D102
        return str(self.provenance.get("name", self.path.name))

    @property
    def created(self) -> str:  # noqa: D102
        return str(self.provenance.get("created", ""))

    @property
    def files(self) -> list[str]:  # noqa: D102
        return [str(f) for f in self.provenance.get("files", [])]

    def file(self, name: str) -> Path:
        """The path of one of its files (FileNotFoundError naming the result if missing)."""
        path = self.path / name
        if name not in self.files or not path.exists():
            raise FileNotFoundError(
                f"the result {str(self.path)!r} has no {name!r}; it has {self.files}"
            )
        return path


def _stamp(now: _dt.datetime) -> str:
    return now.strftime("%Y%m%d-%H%M%S")


def _clean_kind_folder(folder: Path) -> None:
    """Remove what killed writers of this kind left (their owners are gone)."""
    for entry in folder.iterdir() if folder.is_dir() else ():
        found = leftover_of(entry)
        if found is not None:
            clean_leftovers(folder / found[0])


@contextmanager
def new_result(
    workspace: str | os.PathLike[str],
    kind: str,
    name: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Iterator[ResultBuilder]:
    """Build a result folder under ``workspace/results/kind/`` and rename it into place.

    Parameters
    ----------
    workspace : path
        The workspace folder (``<data>.brainfeatures``).
    kind : {"evaluation", "factors", "clusters", "report", "latent"}
    name : str
        A short name (the model's or store's stem); made file-safe, and the time of
        writing appended: ``<name>-YYYYmmdd-HHMMSS`` (``-2``, ``-3`` on a clash).
    inputs : mapping, optional
        What the result was made from (``volume``, ``labels``, ``model``,
        ``feature_store``, ...); a ``model`` file is recorded with its SHA-256.
    parameters : mapping, optional
        The options used.

    Yields
    ------
    ResultBuilder
        Write the payload with it; its ``root`` is a hidden temporary folder until
        the block ends.  Afterwards ``root`` is the finished folder.

    Raises
    ------
    ValueError
        An unknown ``kind``.  Whatever the block raises propagates, and the
        temporary folder is removed: nothing of a failed run is left.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS!r}, got {kind!r}")
    folder = Path(workspace).expanduser() / "results" / kind
    folder.mkdir(parents=True, exist_ok=True)
    _clean_kind_folder(folder)
    now = _dt.datetime.now(_dt.UTC)
    spelt = name.replace("β", "beta").replace("σ", "sigma").replace("λ", "lambda")
    safe = _SAFE.sub("_", spelt).strip("._-") or kind  # 'β-VAE': 'beta-VAE', not '-VAE'
    target = folder / f"{safe}-{_stamp(now)}"
    tmp = temp_path(target, "partial")
    tmp.mkdir()
    builder = ResultBuilder(tmp)
    try:
        yield builder
        record = {
            "format": FORMAT,
            "kind": kind,
            "name": name,
            "created": now.isoformat(timespec="seconds"),
            "version": __version__,
            "machine": _machine(),
            "inputs": _inputs(inputs or {}),
            "parameters": _jsonable(dict(parameters or {})),
            "files": list(builder.files),
        }
        (tmp / PROVENANCE).write_text(json.dumps(record, indent=2), encoding="utf-8")
        builder.root = _rename_free(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _rename_free(tmp: Path, target: Path) -> Path:
    """Rename ``tmp`` to ``target``, or ``target-2``, ``-3``... if taken (never merged)."""
    for n in range(1, 1000):
        path = target if n == 1 else target.with_name(f"{target.name}-{n}")
        if path.exists():
            continue
        try:
            os.rename(tmp, path)  # fails rather than merge into a folder made meanwhile
        except OSError:
            if path.exists():
                continue
            raise
        return path
    raise FileExistsError(f"no free name for the result {str(target)!r}")


def open_result(path: str | os.PathLike[str]) -> Result:
    """Read a result folder's provenance.

    Raises
    ------
    FileNotFoundError
        ``path`` is not a folder.
    ValueError
        It has no readable ``provenance.json`` (not a result of this package).
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no result folder at {str(path)!r}")
    try:
        record = json.loads((path / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{str(path)!r} is not a result folder (no readable {PROVENANCE}: {err}); give a "
            "folder under <workspace>/results/<kind>/"
        ) from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{str(path / PROVENANCE)!r} is not a {FORMAT} record")
    return Result(path, record)


def list_results(workspace: str | os.PathLike[str], kind: str | None = None) -> list[Result]:
    """The finished results of a workspace (oldest first); damaged folders are skipped."""
    base = Path(workspace).expanduser() / "results"
    kinds = KINDS if kind is None else (kind,)
    found = []
    for k in kinds:
        folder = base / k
        for entry in sorted(folder.iterdir()) if folder.is_dir() else ():
            if is_leftover(entry) or not entry.is_dir():
                continue
            try:
                found.append(open_result(entry))
            except (OSError, ValueError):
                continue
    return sorted(found, key=lambda r: (r.created, r.path.name))
