"""Subcommands of ``brainfeatures``.

Each module has ``register(name, parser)`` and ``run(name, args)``.

Progress of long work is printed to stderr by :func:`progress_printer`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from napari_brainfeatures.progress import Progress


def progress_printer(record: Progress) -> None:
    """Print one progress record on stderr (one line each)."""
    total = f"/{record.total}" if record.total else ""
    vals = " ".join(f"{k}={v:.4g}" for k, v in record.values.items())
    print(f"[{record.step}{total}] {record.message} {vals}".rstrip(), file=sys.stderr, flush=True)


def add_zyx(
    parser: argparse.ArgumentParser,
    flag: str,
    type: Callable[[str], Any],
    *,
    default: tuple[Any, Any, Any] | None,
    help: str | None = None,
) -> None:
    """Add an option taking three values, ``Z Y X`` (a shape, chunks, a voxel size)."""
    parser.add_argument(
        flag, type=type, nargs=3, default=default, metavar=("Z", "Y", "X"), help=help
    )
