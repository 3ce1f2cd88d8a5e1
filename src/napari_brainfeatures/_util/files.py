"""File modes for atomic writes.

``tempfile.mkstemp`` creates files readable by their owner only (0600); a file
renamed into place keeps that mode, so models and results written atomically
would be hidden from a lab's group.  :func:`as_if_created` gives a temporary
file the mode ``open()`` would have given it (0666 minus the umask).
"""

from __future__ import annotations

import os
import re

__all__ = ["as_if_created"]


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask has no read-only form)
        with open("/proc/self/status", encoding="ascii") as f:
            found = re.search(r"^Umask:\s*([0-7]+)", f.read(), re.MULTILINE)
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_if_created(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the permissions a plain ``open(path, "w")`` would have."""
    os.chmod(path, 0o666 & ~_umask())
