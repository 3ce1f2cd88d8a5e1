"""What ``overwrite=True`` (``--overwrite``) may delete: only a zarr store we could have written.

Writers that create a zarr store (``convert``, ``sample``) call :func:`check_target`
before any work, write into a temporary sibling, and :func:`swap_in` the result
at the end, so a failed run leaves the old store untouched.  A plain file, a
folder that is not a zarr store, and anything that is or holds the input are
never deleted.  (Dense feature stores apply a stricter rule of their own, in
:func:`napari_brainfeatures.features.store.prepare`.)
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from napari_brainfeatures._util.leftovers import clean_leftovers, temp_path
from napari_brainfeatures.io.volume import is_zarr_store

__all__ = [
    "check_output_file",
    "check_target",
    "input_overlaps",
    "swap_in",
    "write_folder",
]


def input_overlaps(
    target: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> Iterator[tuple[Path, str]]:
    """How ``target`` overlaps each input: ``(input, "is" | "contains" | "inside")``.

    Paths are resolved; inputs apart from ``target`` are not listed.
    """
    resolved = Path(target).expanduser().resolve()
    for src in inputs:
        src = Path(src).expanduser().resolve()
        if resolved == src:
            yield src, "is"
        elif resolved in src.parents:
            yield src, "contains"
        elif src in resolved.parents:
            yield src, "inside"


def check_target(
    target: str | os.PathLike[str],
    *,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """Raise unless a new zarr store may be written at ``target``.

    Parameters
    ----------
    target : path-like
        The store to create.
    overwrite : bool
        Whether an existing zarr store (or empty folder) at ``target`` may be replaced.
    inputs : iterable of path-like
        Files or folders the writer reads; ``target`` must not be or contain one,
        nor lie inside one that is a zarr store.

    Raises
    ------
    FileExistsError
        ``target`` exists and ``overwrite`` is False, or it is not something
        ``overwrite`` may delete (it is then never deleted).

    When the write may go ahead, the hidden temporaries that killed earlier
    writes to ``target`` left beside it are removed
    (:func:`~napari_brainfeatures._util.leftovers.clean_leftovers`).
    """
    path = Path(target).expanduser()
    _check_target(path, overwrite=overwrite, inputs=inputs)
    clean_leftovers(path)  # what a killed earlier write to this place left beside it


def _check_target(path: Path, *, overwrite: bool, inputs: Iterable[str | os.PathLike[str]]) -> None:
    for src, how in input_overlaps(path, inputs):
        if how != "inside":
            raise FileExistsError(
                f"the output {str(path)!r} is or contains the input {str(src)!r}; "
                "choose an output path outside the input"
            )
        if is_zarr_store(src):
            raise FileExistsError(
                f"the output {str(path)!r} lies inside the input store {str(src)!r}; "
                "choose an output path outside the input"
            )
    if not path.exists() and not path.is_symlink():
        return
    if not overwrite:
        raise FileExistsError(
            f"{str(path)!r} exists; choose another output path, or pass overwrite=True "
            "(--overwrite) to replace it"
        )
    if not (is_zarr_store(path) or (path.is_dir() and not any(path.iterdir()))):
        kind = "a folder that is not a zarr store" if path.is_dir() else "not a folder"
        raise FileExistsError(
            f"{str(path)!r} exists and is {kind}; choose another output path "
            "(it is never deleted, even with overwrite=True)"
        )


def swap_in(tmp: Path, target: Path) -> None:
    """Move the finished store ``tmp`` to ``target``, then delete what was there.

    The old store is first renamed aside, so ``target`` is never missing for long
    and a failing rename keeps the old store.  A symbolic link at ``target`` is
    replaced, not followed.
    """
    if not (target.exists() or target.is_symlink()):
        os.replace(tmp, target)
        return
    old = temp_path(target, "old")
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(old, target)
        raise
    if old.is_symlink() or not old.is_dir():
        old.unlink()
    else:
        shutil.rmtree(old)


def check_output_file(
    path: str | os.PathLike[str],
    *,
    suffixes: Iterable[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    what: str = "output",
) -> Path:
    """Raise unless a result file (a report, a figure) may be written at ``path``.

    An earlier result with one of ``suffixes`` is replaced; the inputs, anything
    inside them, a folder and a file of another kind (a volume, a model) are
    refused, never overwritten.
    """
    p = Path(path).expanduser()
    for src, how in input_overlaps(p, inputs):
        if how != "contains":  # a folder holding an input is refused below, as a folder
            raise FileExistsError(
                f"the {what} {str(p)!r} is or lies inside the input {str(src)!r}; choose "
                "another file name"
            )
    if p.is_dir():
        raise FileExistsError(f"the {what} {str(p)!r} is a folder; choose a file name")
    allowed = tuple(s.lower() for s in suffixes)
    if p.exists() and p.suffix.lower() not in allowed:
        raise FileExistsError(
            f"the {what} {str(p)!r} exists and is not a {'/'.join(allowed)} file; it is not "
            "overwritten: choose another file name"
        )
    return p


_HOW = {"is": "is", "contains": "holds", "inside": "lies inside"}


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # no bytes copied; the file lives on in the new folder
    except OSError as err:
        raise FileExistsError(
            f"{src!r} cannot be kept while its folder is replaced (no hard links on this "
            f"disk: {err.strerror}); nothing was changed: choose a new or empty output folder"
        ) from None


def _carry(src: Path, dst: Path) -> None:
    """Hard-link the file or folder tree ``src`` to ``dst``; symbolic links stay links."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link)
    elif src.is_symlink():
        os.symlink(os.readlink(src), dst)
    else:
        _link(str(src), str(dst))


def _ours(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def write_folder(
    target: str | os.PathLike[str],
    fill: Callable[[Path], None],
    *,
    names: Iterable[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = False,
) -> Path:
    """Write a command's result into a folder whole: ``fill`` a fresh sibling, then swap in.

    A folder never holds two runs of the command: the earlier run's files (those
    matching ``names``) go with the old folder, replaced as a whole and only once
    ``fill`` returned (a failure, or a kill, keeps it as it was; the killed run's
    sibling is removed by the next write).  Everything else in the folder (another
    command's result, the user's files) is carried into the new folder before the
    swap as hard links (no bytes copied), so at every moment one of the two folders
    holds it; on a disk without hard links such a folder is refused, unchanged.

    Parameters
    ----------
    target : path-like
        The result folder.
    fill : callable
        Writes the result's files into the folder it is given.
    names : iterable of str
        Glob patterns of the files this command writes (``"factor_[0-9][0-9].png"``).
    inputs : iterable of path-like
        What the run read: ``target`` must not be one, lie inside a zarr store, or
        hold one among the files it replaces.
    overwrite : bool
        Replace an earlier result (files under ``names``) in ``target``; without it
        such a folder is refused, so that neither an earlier run nor a file of the
        user's that happens to bear a result's name is lost unasked.

    Raises
    ------
    FileExistsError
        ``target`` is not a folder, is or lies inside a zarr store, overlaps an input,
        holds an earlier result and ``overwrite`` is False, holds a folder under a
        result's name that is not a zarr store (never deleted), or holds other files
        that cannot be hard-linked.
    """
    path = Path(target).expanduser()
    patterns = tuple(names)
    store = next((p for p in (path, *path.parents) if is_zarr_store(p)), None)
    if store is not None:
        raise FileExistsError(
            f"the output folder {str(path)!r} "
            + ("is" if store == path else "lies inside")
            + f" the zarr store {str(store)!r}; choose an output folder outside it"
        )
    for src, how in input_overlaps(path, inputs):
        top = src.relative_to(path.resolve()).parts[0] if how == "contains" else ""
        if (
            how == "is"
            or (how == "contains" and _ours(top, patterns))
            or (how == "inside" and is_zarr_store(src))
        ):
            raise FileExistsError(
                f"the output folder {str(path)!r} {_HOW[how]} the input {str(src)!r}; choose "
                "another output folder"
            )
    keep: list[Path] = []
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise FileExistsError(f"{str(path)!r} exists and is not a folder; choose another")
        keep = [e for e in path.iterdir() if not _ours(e.name, patterns)]
        earlier = sorted(e.name for e in path.iterdir() if _ours(e.name, patterns))
        if earlier and not overwrite:
            shown = ", ".join(earlier[:4]) + (", …" if len(earlier) > 4 else "")
            raise FileExistsError(
                f"{str(path)!r} already holds a result ({shown}); pass --overwrite to "
                "replace it, or choose another output folder with --out"
            )
        for entry in path.iterdir():  # a folder under a result's name must be a zarr store
            if _ours(entry.name, patterns) and entry.is_dir() and not is_zarr_store(entry):
                raise FileExistsError(
                    f"{str(entry)!r} is a folder that is not a result of this command; it is "
                    "never deleted: move it, or choose another output folder"
                )
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)  # what a killed earlier write of this folder left beside it
    tmp = temp_path(path, "tmp")
    tmp.mkdir()
    try:
        fill(tmp)
        for entry in keep:
            if not (tmp / entry.name).exists():
                _carry(entry, tmp / entry.name)
        swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path
