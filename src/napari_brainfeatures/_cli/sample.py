"""``brainfeatures sample microct|population OUT.zarr [--version 3]``: write the sample data."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from napari_brainfeatures._cli import add_zyx, progress_printer
from napari_brainfeatures._util.ranges import SEED, Bounded
from napari_brainfeatures.progress import run as run_gen

SIDE = Bounded("int", 1, 65536, hint="px")
N_SECTIONS = Bounded("int", 1, 100_000)
SECTION_SIDE = Bounded("int", 1, 8192, hint="px")


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["microct", "population"])
    parser.add_argument("out", type=Path, help="the zarr group to write")
    parser.add_argument("--seed", type=SEED, default=0)
    add_zyx(
        parser,
        "--shape",
        SIDE,
        default=None,
        help="micro-CT volume shape (default: the sample's, 128 1536 1024)",
    )
    add_zyx(parser, "--chunks", SIDE, default=(16, 256, 256), help="micro-CT zarr chunks")
    parser.add_argument(
        "--version",
        type=int,
        choices=(2, 3),
        default=2,
        help="micro-CT layout: 2 (default, the clean slab) or 3 (a section as a real scan "
        "shows it: cut faces, pia, brightness gradient, thin white matter, a fibre fan, "
        "tissue of no class; adds a 'tissue' array)",
    )
    parser.add_argument("--n", type=N_SECTIONS, default=256, help="population: number of sections")
    parser.add_argument(
        "--section-shape",
        type=SECTION_SIDE,
        nargs=2,
        default=(320, 448),
        metavar=("H", "W"),
        help="population: section shape (default 320 448)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing OUT (zarr stores only)"
    )


def run(name: str, args: argparse.Namespace) -> int:
    from napari_brainfeatures._util.leftovers import temp_path
    from napari_brainfeatures._util.overwrite import check_target, swap_in

    check_target(args.out, overwrite=args.overwrite)
    # Written beside OUT and swapped in when complete: a failed run keeps the old store.
    out = args.out.expanduser().resolve()
    tmp = temp_path(out, "partial")
    try:
        if args.kind == "microct":
            from napari_brainfeatures.synthetic import DEFAULT_SHAPE, iter_write_microct

            shape = tuple(args.shape or DEFAULT_SHAPE)
            run_gen(
                iter_write_microct(
                    tmp,
                    shape=shape,
                    seed=args.seed,
                    chunks=tuple(args.chunks),
                    version=args.version,
                ),
                progress_printer if args.verbose else None,
            )
        else:
            write_population(tmp, n=args.n, shape=tuple(args.section_shape), seed=args.seed)
        swap_in(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"written": str(args.out), "kind": args.kind, "seed": args.seed}))
    return 0


def write_population(out: Path, *, n: int, shape: tuple[int, int], seed: int) -> Path:
    """Write a synthetic population as the zarr group that ``train-vae`` reads."""
    import zarr

    from napari_brainfeatures.synthetic import make_population

    n, seed = N_SECTIONS.check("n", n), SEED.check("seed", seed)
    shape = tuple(SECTION_SIDE.check("shape", s) for s in shape)  # type: ignore[assignment]

    pop = make_population(n, shape=shape, seed=seed)
    group = zarr.open_group(str(out), mode="w")
    for key in ("images", "clean", "rois", "factors", "artifact"):
        arr = np.asarray(getattr(pop, key))
        chunks = (min(16, arr.shape[0]), *arr.shape[1:]) if arr.ndim == 3 else arr.shape
        group.create_array(key, shape=arr.shape, dtype=arr.dtype, chunks=chunks)[...] = arr
    group.attrs.update(
        {
            "generator": "napari_brainfeatures.synthetic.make_population",
            "seed": seed,
            # names of ROI ids 1, 2, ... (index 0 of pop.roi_names is the background)
            "roi_names": list(pop.roi_names)[1:],
            "factor_names": list(pop.factor_names),
            "artifact_names": list(getattr(pop, "artifact_names", ())),
        }
    )
    return out
