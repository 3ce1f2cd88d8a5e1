"""``brainfeatures demo``: the sample data in napari with every widget docked.

``--headless DIR`` runs the whole pipeline without a window instead
(see :mod:`napari_brainfeatures.pipeline`) and writes every result and a
picture of each map into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from napari_brainfeatures._cli import progress_printer


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--headless",
        metavar="DIR",
        type=Path,
        default=None,
        help="run the whole pipeline without a window, writing results and pictures into DIR",
    )
    parser.add_argument(
        "--size",
        choices=["tiny", "small", "full"],
        default="small",
        help="tiny (a minute), small (default, a few minutes) or full (128x1536x1024, paper sizes)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-show", action="store_true", help=argparse.SUPPRESS)


def run(name: str, args: argparse.Namespace) -> int:
    if args.headless is not None:
        from napari_brainfeatures.pipeline import run_pipeline
        from napari_brainfeatures.progress import run as run_gen

        summary = run_gen(
            run_pipeline(args.headless, size=args.size, seed=args.seed), progress_printer
        )
        print(json.dumps(summary, indent=2))
        return 0
    problem = display_problem()
    if problem and not args.no_show:
        print(f"brainfeatures demo: {problem}", file=sys.stderr)
        return 2
    from napari_brainfeatures._napari.sample_data import ensure_microct
    from napari_brainfeatures.progress import run as run_gen

    # Generate the sample once (about a minute), with progress, before the window opens.
    run_gen(ensure_microct(seed=args.seed), progress_printer)
    viewer = open_demo_viewer(show=not args.no_show)
    if args.no_show:
        viewer.close()
        return 0
    import napari

    napari.run()
    return 0


def display_problem() -> str | None:
    """Why a napari window cannot open here (no display on Linux), or None.

    Qt aborts the whole process when it finds no display, so the demo asks first.
    """
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "no display to open the napari window on (neither DISPLAY nor WAYLAND_DISPLAY is "
        "set). Run it where a display is, or under a virtual one (`xvfb-run -a "
        "brainfeatures demo`), or run the whole pipeline without a window: "
        "`brainfeatures demo --headless DIR`."
    )


def open_demo_viewer(*, show: bool = True, viewer=None):  # type: ignore[no-untyped-def]
    """A napari viewer with the micro-CT sample loaded and every plugin widget docked.

    ``viewer``: fill this viewer instead of opening a new one (tests pass the one
    their fixture closes); ``show`` is then ignored.
    """
    import napari
    from npe2 import PluginManager

    if viewer is None:
        viewer = napari.Viewer(title="napari-brainfeatures demo", show=show)
    viewer.open_sample("napari-brainfeatures", "microct")
    manifest = PluginManager.instance().get_manifest("napari-brainfeatures")
    docks = [
        viewer.window.add_plugin_dock_widget("napari-brainfeatures", c.display_name, tabify=i > 0)[
            0
        ]
        for i, c in enumerate(manifest.contributions.widgets or [])
    ]
    if len(docks) > 1:
        docks[1].raise_()  # "Annotate areas": the first step on the sample
    return viewer
