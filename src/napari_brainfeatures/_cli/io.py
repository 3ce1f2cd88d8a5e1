"""``brainfeatures info`` and ``brainfeatures convert``."""

from __future__ import annotations

import argparse
import json

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures.io.convert import convert_to_ome_zarr
from napari_brainfeatures.io.volume import open_volume
from napari_brainfeatures.progress import run as run_gen


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="zarr / OME-Zarr store, TIFF file or folder of TIFF slices")
    if name == "convert":
        parser.add_argument("out", help="the .ome.zarr folder to write")
        parser.add_argument(
            "--chunks", type=int, nargs=3, default=(4, 512, 512), metavar=("Z", "Y", "X")
        )
        parser.add_argument(
            "--levels", type=int, default=None, help="resolution levels (default: auto)"
        )
        parser.add_argument(
            "--voxel-size",
            type=float,
            nargs=3,
            default=None,
            metavar=("Z", "Y", "X"),
            help="micrometres (default: from the source, else 1)",
        )
        parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")


def run(name: str, args: argparse.Namespace) -> int:
    if name == "info":
        print(json.dumps(open_volume(args.path).describe(), indent=2))
        return 0
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
