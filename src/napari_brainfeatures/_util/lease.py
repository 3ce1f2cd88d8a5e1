"""One writer per folder: a lease other processes can see, and that dies with its holder.

The lease is an operating-system lock (``filelock.FileLock``: ``flock`` where the
file system has it, else a marker file naming the holder's pid and host, which
filelock breaks once that process is gone) on ``<folder>/.writer.lock``.  The
holder's host, pid, user, program and start time go to ``<folder>/.writer.json``
so that a refused process can say who holds it.  A process that dies, even by
``kill -9``, releases its lease: the kernel drops its locks, so the next opener
takes over and overwrites the stale record.

Inside one process the lease is shared and counted (every :func:`acquire` needs a
:func:`release`); a forked child does not inherit it.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["LOCK_NAME", "INFO_NAME", "Holder", "LeaseBusy", "acquire", "release", "holder"]

LOCK_NAME = ".writer.lock"
INFO_NAME = ".writer.json"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease: host, process id, user, program and since when (UTC, ISO 8601)."""

    host: str
    pid: int
    user: str = ""
    program: str = ""
    since: str = ""

    def describe(self) -> str:
        """``"process 123 (napari) of ana on lab-pc since 2025-01-01T10:00:00+00:00"``."""
        if self.pid <= 0:
            return "another process (not recorded yet)"
        who = f"process {self.pid}" + (f" ({self.program})" if self.program else "")
        who += f" of {self.user}" if self.user else ""
        return f"{who} on {self.host}" + (f" since {self.since}" if self.since else "")


_UNKNOWN = Holder(host="", pid=0)


class LeaseBusy(Exception):
    """Another process holds the lease; ``holder`` says who."""

    def __init__(self, folder: Path, holder: Holder) -> None:
        self.folder, self.holder = folder, holder
        super().__init__(f"{str(folder)!r} is being written by {holder.describe()}")


@dataclass
class _Held:
    pid: int
    lock: FileLock
    count: int


_HELD: dict[str, _Held] = {}
_GUARD = threading.Lock()


def _key(folder: Path) -> str:
    return str(Path(folder).resolve())


def _me() -> Holder:
    try:
        user = getpass.getuser()
    except Exception:  # no user name (containers): the record is only informative
        user = ""
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    since = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    return Holder(socket.gethostname(), os.getpid(), user, program, since)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _recorded(folder: Path) -> Holder:
    """The holder recorded in the folder (pid 0: not recorded yet, or a dead process's record)."""
    try:
        data = json.loads((folder / INFO_NAME).read_text(encoding="utf-8"))
        rec = Holder(**{k: data[k] for k in ("host", "pid", "user", "program", "since")})
    except (OSError, ValueError, KeyError, TypeError):
        return _UNKNOWN
    if rec.host == socket.gethostname() and not _alive(int(rec.pid)):
        return _UNKNOWN  # a stale record: the new holder has not written its own yet
    return rec


def _recorded_soon(folder: Path, within: float = 1.0) -> Holder:
    """The holder's record; a holder that has just locked writes it within moments."""
    deadline = time.monotonic() + within
    rec = _recorded(folder)
    while rec is _UNKNOWN and time.monotonic() < deadline:
        time.sleep(0.01)
        rec = _recorded(folder)
    return rec


def acquire(folder: str | os.PathLike[str], *, wait: float = 0.0) -> None:
    """Take (or share, inside this process) the write lease on ``folder``.

    ``wait``: seconds to wait for another process to let go (default: none).

    Raises
    ------
    LeaseBusy
        If another process holds it.
    OSError
        If the lock file cannot be created (a read-only folder).
    """
    folder = Path(folder)
    key = _key(folder)
    with _GUARD:
        held = _HELD.get(key)
        if held is not None and held.pid == os.getpid():
            held.count += 1
            return
        lock = FileLock(str(folder / LOCK_NAME), timeout=max(wait, 0.0), thread_local=False)
        try:
            lock.acquire(poll_interval=0.005)
        except Timeout:
            raise LeaseBusy(folder, _recorded_soon(folder)) from None
        try:
            _write_record(folder, _me())
        except OSError:
            lock.release()
            raise
        _HELD[key] = _Held(os.getpid(), lock, 1)


def release(folder: str | os.PathLike[str]) -> None:
    """Give back one share of this process's lease on ``folder`` (the last one unlocks it)."""
    key = _key(Path(folder))
    with _GUARD:
        held = _HELD.get(key)
        if held is None or held.pid != os.getpid():
            return
        held.count -= 1
        if held.count > 0:
            return
        del _HELD[key]
        try:
            (Path(folder) / INFO_NAME).unlink(missing_ok=True)
        except OSError:
            pass  # a read-only record is only informative; the lock is what counts
        held.lock.release()


def holder(folder: str | os.PathLike[str]) -> Holder | None:
    """Who holds the lease on ``folder`` now, from its record: ``None`` when free or ours.

    Reading the record leaves the lock alone (probing it could refuse a real
    writer); a record of a dead process of this host counts as free.
    """
    folder = Path(folder)
    with _GUARD:
        held = _HELD.get(_key(folder))
        if held is not None and held.pid == os.getpid():
            return None
    rec = _recorded(folder)
    return None if rec is _UNKNOWN else rec


def _write_record(folder: Path, me: Holder) -> None:
    path = folder / INFO_NAME
    tmp = folder / f"{INFO_NAME}.{me.pid}.tmp"
    tmp.write_text(json.dumps(me.__dict__), encoding="utf-8")
    os.replace(tmp, path)
