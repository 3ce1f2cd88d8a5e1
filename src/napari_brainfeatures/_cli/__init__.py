"""Subcommands of ``brainfeatures``.

Each module has ``register(name, parser)`` and ``run(name, args)``.

Progress of long work is printed to stderr by :func:`progress_printer`.
"""

from __future__ import annotations

import sys

from napari_brainfeatures.progress import Progress


def progress_printer(record: Progress) -> None:
    """Print one progress record on stderr (one line each)."""
    total = f"/{record.total}" if record.total else ""
    vals = " ".join(f"{k}={v:.4g}" for k, v in record.values.items())
    print(f"[{record.step}{total}] {record.message} {vals}".rstrip(), file=sys.stderr, flush=True)
