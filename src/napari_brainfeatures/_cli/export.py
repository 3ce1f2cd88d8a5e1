"""``brainfeatures export``: a kept result as files other tools read.

``export RESULT --to DIR [--format ome-zarr tiff csv png]`` writes a result folder
(``<workspace>/results/<kind>/<name>-<time>/``, as the docks keep them) into DIR:
maps as OME-Zarr (validated) and TIFF, tables and numbers as CSV, figures as
PNG/SVG (default: every format).  RESULT may also be a workspace: then each of
its results goes into ``DIR/<kind>/<folder>/``.  Prints the written paths as JSON.
The work is one core call, :func:`napari_brainfeatures.results.export.export_result`,
as the results browser's Export button.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(name: str, parser: argparse.ArgumentParser) -> None:
    from napari_brainfeatures.results.export import FORMATS

    add = parser.add_argument
    add("result", help="a result folder (workspace/results/KIND/NAME-TIME) or a workspace")
    add("--to", required=True, metavar="DIR", help="folder to write into (created)")
    add("--format", nargs="+", choices=FORMATS, default=list(FORMATS), dest="formats",
        help="what to write (default: all)")  # fmt: skip


def run(name: str, args: argparse.Namespace) -> int:
    from napari_brainfeatures.results.export import export_result
    from napari_brainfeatures.results.record import PROVENANCE, list_results

    src, to = Path(args.result).expanduser(), Path(args.to).expanduser()
    if not src.exists():
        raise FileNotFoundError(f"no result or workspace at {str(src)!r}")
    if (src / PROVENANCE).exists():
        jobs = [(src, to)]
    else:
        found = list_results(src)
        if not found:
            raise ValueError(
                f"{str(src)!r} is neither a result folder (no {PROVENANCE}) nor a workspace "
                "with results; give a folder under <workspace>/results/<kind>/"
            )
        jobs = [(r.path, to / r.kind / r.path.name) for r in found]
    written = [str(p) for path, out in jobs for p in export_result(path, out, args.formats)]
    if not written:  # said, not left to an empty list
        print(f"brainfeatures export: warning: nothing to write: {str(src)!r} holds nothing that "
              f"exports as {' or '.join(args.formats)}", file=sys.stderr)  # fmt: skip
    print(json.dumps({"written": written}, indent=2))
    return 0
