"""``brainfeatures features``: dense feature maps of a trained CNN into a zarr store."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures._util.ranges import FLOAT, INT, Bounded
from napari_brainfeatures.features.options import EDGES, OUTPUTS, DenseOptions
from napari_brainfeatures.progress import run as run_gen

# The defaults live in DenseOptions; options left out on the command line keep them.
DEFAULT: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(DenseOptions)}


def register(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="model file (.safetensors) of a trained CNN")
    parser.add_argument(
        "image", help="volume: zarr / OME-Zarr (path.zarr or path.zarr/array), TIFF or TIFF folder"
    )
    parser.add_argument("--out", type=Path, required=True, help="the feature store STORE.zarr")
    zs = parser.add_mutually_exclusive_group()
    zs.add_argument("--z", type=INT, default=None, help="one z-slice (default: all)")
    zs.add_argument(
        "--z-range", type=INT, nargs=2, default=None, metavar=("A", "B"), help="z-slices A..B-1"
    )
    parser.add_argument(
        "--stride", type=INT, help=f"pixels between outputs (default {DEFAULT['stride']})"
    )
    parser.add_argument("--tile", type=INT, help="outputs per tile side (default: auto)")
    parser.add_argument(
        "--memory-mb", type=FLOAT, help="working-set budget per tile, MiB (default: by device)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if any)")
    parser.add_argument(
        "--mixed-precision", action="store_true", help="autocast (float16 on CUDA, bfloat16 on CPU)"
    )
    parser.add_argument(
        "--edge",
        choices=EDGES,
        help=f"patches leaving the image: mirror, zeros, or NaN/0 (default {DEFAULT['edge']})",
    )
    parser.add_argument(
        "--which",
        type=lambda text: tuple(w.strip() for w in text.split(",") if w.strip()),
        help=f"comma list of {', '.join(OUTPUTS)} (default {','.join(DEFAULT['which'])})",
    )
    parser.add_argument(
        "--exact-patches",
        action="store_true",
        help="per-patch evaluation (exact for padded networks; slow)",
    )
    parser.add_argument(
        "--scheduler",
        default=None,
        help="'local' (a LocalCluster) or a dask scheduler address tcp://host:port",
    )
    parser.add_argument(
        "--workers",
        type=Bounded("int", 1, 1024),
        default=2,
        help="LocalCluster processes (default 2)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a feature store made by another job (the new one is built beside it "
        "and swapped in when complete; a store open in a dock is never replaced). Rerunning "
        "the same job resumes an interrupted store",
    )


def open_image(path: str) -> tuple[Any, Any]:
    """A lazy ``(Z, Y, X)`` array for ``path`` and its voxel size (None: unknown)."""
    try:
        from napari_brainfeatures.io.volume import open_volume
    except ImportError:  # pragma: no cover - io not installed in this build
        import dask.array as da
        import zarr

        p = Path(path)
        if not p.exists() and p.parent.suffix == ".zarr":
            return da.from_zarr(zarr.open_array(p.parent, path=p.name, mode="r")), None
        return da.from_zarr(zarr.open_array(p, mode="r")), None
    vol = open_volume(path)
    return vol.data, vol.voxel_size


def _check_pixel_size(model: str, voxel: Any) -> None:
    """Warn when the image's pixel size is not the model's (an unreadable model: said later)."""
    import warnings

    from napari_brainfeatures.models.checkpoint import read_header
    from napari_brainfeatures.train.recorded import pixel_size_warning

    try:
        said = pixel_size_warning(read_header(model)["meta"], voxel)
    except (OSError, ValueError, KeyError):
        return
    if said:
        warnings.warn(said, stacklevel=2)


def _where(image: str) -> str:
    """The image's absolute path when it is one on disk (else as given)."""
    p = Path(image).expanduser()
    return str(p.resolve()) if p.exists() else str(image)


def options_of(args: argparse.Namespace) -> DenseOptions:
    """The job's options from the command line (checked; those not given keep the defaults)."""
    given = {
        "stride": args.stride,
        "region": args.z if args.z is not None else tuple(args.z_range) if args.z_range else None,
        "tile": args.tile,
        "device": args.device,
        "precision": "mixed" if args.mixed_precision else None,
        "edge": args.edge,
        "which": args.which,
        "method": "patch" if args.exact_patches else None,
        "memory_mb": args.memory_mb,
        "overwrite": args.overwrite,
        "image_name": _where(args.image),  # found again later: its workspace's tissue mask
    }
    return DenseOptions(**{k: v for k, v in given.items() if v is not None})


def run(name: str, args: argparse.Namespace) -> int:
    from napari_brainfeatures.features.run import compute_feature_map

    options = options_of(args)  # bad values: a clear error before the image is opened
    image, voxel = open_image(args.image)
    _check_pixel_size(args.model, voxel)
    if args.scheduler:
        from napari_brainfeatures.features.distributed import compute_feature_map_distributed

        gen = compute_feature_map_distributed(
            image,
            args.model,
            out=args.out,
            scheduler=args.scheduler,
            n_workers=args.workers,
            options=options,
        )
    else:
        gen = compute_feature_map(image, args.model, out=args.out, options=options)
    store = run_gen(gen, progress_printer)
    done, total = store.progress()
    print(
        json.dumps(
            {
                "store": str(store.path),
                "shape": list(store.shape),
                "stride": store.stride,
                "tiles": total,
                "complete": done == total,
                "method": store.attrs["method"],
            }
        )
    )
    return 0
