"""``brainfeatures info`` and ``brainfeatures convert``."""

from __future__ import annotations

import argparse
import json
import sys

from napari_brainfeatures._cli import add_zyx, progress_printer
from napari_brainfeatures._util.ranges import Bounded
from napari_brainfeatures.io.convert import CHUNK, VOXEL, convert_to_ome_zarr
from napari_brainfeatures.io.volume import open_volume
from napari_brainfeatures.progress import run as run_gen


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "path",
        help="zarr / OME-Zarr store, TIFF file, folder of TIFF slices or a 2-D PNG/JPEG image",
    )
    if name == "convert":
        parser.add_argument("out", help="the .ome.zarr folder to write")
        add_zyx(parser, "--chunks", CHUNK, default=(4, 512, 512))
        parser.add_argument(
            "--levels",
            type=Bounded("int", 1),  # the most the volume allows is checked on it
            default=None,
            help="resolution levels (default: auto)",
        )
        add_zyx(
            parser,
            "--voxel-size",
            VOXEL,
            default=None,
            help="micrometres (default: from the source; where it has none, 1 with a warning)",
        )
        parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def run(name: str, args: argparse.Namespace) -> int:
    if name == "info":
        print(json.dumps(open_volume(args.path).describe(), indent=2))
        return 0
    if args.voxel_size is None and open_volume(args.path).voxel_size is None:
        print(
            f"warning: {args.path!r} has no voxel size; writing 1 µm. Pass --voxel-size Z Y X "
            "(micrometres) to record the real one.",
            file=sys.stderr,
        )
    out = run_gen(
        convert_to_ome_zarr(
            args.path,
            args.out,
            chunks=tuple(args.chunks),
            levels=args.levels,
            voxel_size=tuple(args.voxel_size) if args.voxel_size else None,
            overwrite=args.overwrite,
        ),
        progress_printer if args.verbose else None,
    )
    print(json.dumps(open_volume(out).describe(), indent=2))
    return 0
