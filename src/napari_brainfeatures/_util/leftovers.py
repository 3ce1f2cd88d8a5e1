"""Hidden temporary files and folders that a killed writer leaves beside its output.

Every atomic writer of this package builds its result under a hidden sibling
name and renames it into place at the end.  A writer killed on the way (power
cut, ``kill -9``, a closed laptop) leaves that sibling behind.  This module
names those siblings (:func:`temp_path`), recognises ours by their name alone
(:func:`leftover_of`) and removes those of a target that no live writer owns
(:func:`clean_leftovers`), which writers call before they write the target
again.  Readers that search a folder for results skip them
(:func:`is_leftover`).

Names, for a target ``NAME``:

- ``.NAME.<tag>-<pid>[-<random>]`` with tag ``partial``, ``tmp`` or ``old``:
  written by process ``pid`` (on this machine); removable once that process has
  ended.
- ``.NAME.<8 random chars>`` folders holding only ``NAME`` (``mkdtemp``) and
  ``.NAME.<8 random chars>.tmp`` files (``mkstemp``): no owner recorded, so
  removable only when also untouched for :data:`IDLE_S` seconds.

A ``.NAME.old-<pid>`` left while ``NAME`` itself is missing (a swap killed
between its two renames) is the previous result: it is put back, not deleted.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path

__all__ = ["IDLE_S", "clean_leftovers", "is_leftover", "leftover_of", "temp_path"]

#: Leftovers with no owner recorded are removed only after this long untouched.
IDLE_S = 600.0

_TAGS = ("partial", "tmp", "old")
_RANDOM = re.compile(r"[a-z0-9_]{8}")


def temp_path(target: str | os.PathLike[str], tag: str = "tmp") -> Path:
    """A fresh hidden sibling of ``target`` for a writer to build in: ``.NAME.tag-PID-XXXX``."""
    if tag not in _TAGS:
        raise ValueError(f"tag must be one of {_TAGS}, got {tag!r}")
    target = Path(target)
    return target.with_name(f".{target.name}.{tag}-{os.getpid()}-{secrets.token_hex(3)}")


def leftover_of(path: str | os.PathLike[str]) -> tuple[str, str, int | None] | None:
    """``(target name, tag, pid or None)`` when ``path`` is named as one of our temporaries.

    The tag is ``"random"`` for ``mkdtemp``/``mkstemp`` names.  Anything else: None.
    """
    name = Path(path).name
    if not name.startswith(".") or len(name) < 4:
        return None
    body = name[1:]
    for tag in _TAGS:
        head, sep, tail = body.rpartition(f".{tag}-")
        if sep and head:
            pid, _, rand = tail.partition("-")
            if pid.isdigit() and (not rand or rand.isalnum()):
                return head, tag, int(pid)
    stem = body.removesuffix(".tmp")
    head, sep, rand = stem.rpartition(".")
    if sep and head and _RANDOM.fullmatch(rand):
        return head, "random", None
    return None


def is_leftover(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` or a folder above it is one of our temporaries: never a result."""
    p = Path(path)
    return any(leftover_of(part) is not None for part in (p, *p.parents))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # os.kill would end the process on Windows; keep what we cannot check
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0  # another user's process; OverflowError: not a pid at all
    return True


def _last_touched(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, anything in it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
                except OSError:
                    continue
    return newest


def _ours_without_owner(path: Path, target_name: str) -> bool:
    """A random-named leftover carries our signature: a ``.tmp`` file, or a folder of ``NAME``."""
    if path.is_symlink():
        return False
    if path.is_file():
        return path.name.endswith(".tmp")
    if path.is_dir():
        return all(entry.name == target_name for entry in path.iterdir())
    return False


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def clean_leftovers(target: str | os.PathLike[str], *, now: float | None = None) -> list[Path]:
    """Remove the temporaries of ``target`` that killed writers left; returns those handled.

    Only siblings named as ours for this very ``target`` are considered (see the
    module notes); one that a live process may still be writing is kept, and an
    ``old`` one is put back when ``target`` is missing.  Never raises for a
    leftover it cannot remove.
    """
    target = Path(target).expanduser()
    folder = target.parent
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    prefix = f".{target.name}."
    try:
        entries = [e for e in folder.iterdir() if e.name.startswith(prefix)]
    except OSError:
        return []
    for entry in entries:
        found = leftover_of(entry)
        if found is None or found[0] != target.name:
            continue
        _, tag, pid = found
        try:
            if pid is not None:
                if pid_alive(pid):
                    continue
            elif not _ours_without_owner(entry, target.name) or _last_touched(entry) > now - IDLE_S:
                continue
            if tag == "old" and not (target.exists() or target.is_symlink()):
                os.replace(entry, target)  # the previous result, caught between two renames
            else:
                _remove(entry)
        except OSError:
            continue
        removed.append(entry)
    return removed
