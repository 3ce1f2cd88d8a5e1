"""``brainfeatures tissue IMAGE``: compute a volume's tissue mask into its workspace.

The mask (:func:`napari_brainfeatures.tissue.tissue_mask`, options as flags) is
written slice by slice into the workspace's ``tissue.zarr``, the store the
Annotate dock shows and every stage reads.  Slices a user corrected (painted
after they were computed, or painted from scratch) are kept unless
``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures._util.ranges import Bounded

FRACTION = Bounded("float", 0.0, 1.0)
POSITIVE = Bounded("float", 1e-3, 1e3, hint="px")
SLICE = Bounded("int", 0, 10_000_000)
HOLE = Bounded("int", 0, 2**40, hint="px")


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="the volume (zarr, OME-Zarr, TIFF, folder of TIFF slices)")
    parser.add_argument(
        "--workspace",
        type=Path,
        default=None,
        help="the workspace folder (default: beside the image, IMAGE.brainfeatures)",
    )
    parser.add_argument(
        "--slices", type=SLICE, nargs="+", default=None, metavar="Z", help="default: every slice"
    )
    parser.add_argument("--sigma", type=POSITIVE, default=4.0, help="smoothing scale (px)")
    parser.add_argument("--method", choices=("intensity", "texture"), default="intensity")
    parser.add_argument("--polarity", choices=("auto", "bright", "dark"), default="auto")
    parser.add_argument(
        "--flat-ratio", type=FRACTION, default=0.5, help="background/tissue texture at most"
    )
    parser.add_argument(
        "--min-component",
        type=FRACTION,
        default=0.1,
        help="keep tissue pieces of at least this fraction of the largest",
    )
    parser.add_argument(
        "--max-hole", type=HOLE, default=4096, help="fill enclosed holes up to this many px"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="fixed threshold instead of Otsu's"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace slices whose mask was corrected by hand (kept by default)",
    )


def run(name: str, args: argparse.Namespace) -> int:
    from napari_brainfeatures.io.volume import open_volume
    from napari_brainfeatures.tissue import (
        TissueOptions,
        edited_slices,
        tissue_mask,
        write_tissue_slice,
    )
    from napari_brainfeatures.workspace import Workspace, default_workspace_path

    options = TissueOptions(
        sigma=args.sigma,
        method=args.method,
        polarity=args.polarity,
        flat_ratio=args.flat_ratio,
        min_component=args.min_component,
        max_hole=args.max_hole,
        threshold=args.threshold,
    )
    volume = open_volume(args.image)
    shape = tuple(int(s) for s in volume.shape)
    zs = list(range(shape[0])) if args.slices is None else list(dict.fromkeys(args.slices))
    bad = [z for z in zs if z >= shape[0]]
    if bad:
        raise ValueError(f"--slices must be in 0..{shape[0] - 1}, got {bad!r}")
    root = args.workspace or default_workspace_path(args.image)
    with Workspace.open(root, shape=shape, data_path=args.image, mode="r+") as ws:
        store = ws.tissue()
        edited = edited_slices(store, zs)
        if edited and not args.overwrite:
            raise ValueError(
                f"the tissue mask of slice(s) {edited!r} in {str(ws.tissue_path)!r} was edited "
                "by hand (it differs from the computed one); pass --overwrite to replace it, "
                "or --slices to compute others"
            )
        share = {}
        for z in zs:
            mask = tissue_mask(np.asarray(volume.data[z]), options)
            write_tissue_slice(store, z, mask, options)
            share[str(z)] = round(float(mask.mean()), 4)
            if args.verbose:
                print(f"slice {z}: {share[str(z)]:.1%} tissue", file=sys.stderr, flush=True)
        out = {"tissue": str(ws.tissue_path), "slices": zs, "tissue_fraction": share}
        out["replaced_edited"] = edited
    print(json.dumps(out))
    return 0


def tissue_args(parser: argparse.ArgumentParser) -> None:
    """``--tissue-mask`` and ``--min-tissue`` of ``train-cnn``."""
    from napari_brainfeatures.train import bounds as b

    parser.add_argument(
        "--tissue-mask",
        default="auto",
        metavar="PATH",
        help="patches only where at least --min-tissue of the window is tissue (non-zero); "
        "'auto' (default): the workspace's tissue.zarr beside the image when it exists "
        "(brainfeatures tissue), 'none': no restriction",
    )
    parser.add_argument(
        "--min-tissue", type=b.PROBABILITY, default=0.9, help="(default %(default)s)"
    )


def tissue_sampling(args: argparse.Namespace, shape: tuple[int, ...], show: Any) -> dict[str, Any]:
    """``tissue`` and ``min_tissue`` for ``train-cnn``'s sampling, from ``--tissue-mask``."""
    from napari_brainfeatures.io.volume import open_volume
    from napari_brainfeatures.progress import Progress
    from napari_brainfeatures.workspace import default_workspace_path

    path = args.tissue_mask
    if path == "auto":
        found = default_workspace_path(args.image) / "tissue.zarr"
        path = str(found) if found.exists() else "none"
    if path == "none":
        return {}
    show(Progress(0, None, f"patches restricted to tissue: {path} (>= {args.min_tissue:.0%})"))
    mask = open_volume(path).data
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(
            f"--tissue-mask {path!r} has shape {tuple(mask.shape)!r}, the image "
            f"{tuple(shape)!r}; compute it on this volume (brainfeatures tissue)"
        )
    return {"tissue": mask, "min_tissue": args.min_tissue}
