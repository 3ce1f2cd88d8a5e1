"""``brainfeatures apply-live MODEL STORE``: a saved live classifier over whole slices.

The Explore dock's live classifier, saved with **Save model…**
(``<workspace>/models/live-TIME.safetensors``), labels every grid point of one slice
of a feature store made by the same CNN (:func:`~..explore.apply.apply_live_model`), no
viewer needed.  The folder written (``--out``, default ``STORE_live`` beside the
store) holds ``prediction.zarr`` (a cluster map on the store's grid, the class names
in its attributes, the uncertainty as a second array; the Results dock and the
Factors dock open it), ``prediction.json`` (points per class, the model and
store) and ``prediction.png``.  Prints the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures._util.ranges import Bounded

FILES = ("prediction.zarr", "prediction.json", "prediction.png")
INT = Bounded("int", 0, 10_000_000)


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("model", help="a live classifier saved by the Explore dock (live-*.safetensors)")
    add("store", help="a dense feature store (STORE.zarr) of the CNN the strokes were painted on")
    add("--z", type=INT, default=None, help="z index of the store's grid (default: the only one)")
    add("--within", default=None, metavar="AREA",
        help="predict only inside this one of the store's predicted areas (e.g. Ctx)")  # fmt: skip
    add("--out", type=Path, default=None, help="output folder (default: STORE_live beside it)")
    add("--overwrite", action="store_true", help="replace an earlier result in the output folder")


def run(name: str, args: argparse.Namespace) -> int:
    from matplotlib import colormaps
    from matplotlib.image import imsave

    from napari_brainfeatures._util.overwrite import write_folder
    from napari_brainfeatures.explore.apply import apply_live_model
    from napari_brainfeatures.factors.results import save_clusters
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.workspace import write_json_atomic

    for what, path in (("model", args.model), ("store", args.store)):
        if not Path(path).exists():
            raise FileNotFoundError(f"no {what} at {str(path)!r}")
    grid = FeatureGrid.open(args.store, args.z, flag="--z")
    within = _within(args, grid) if args.within else None
    pred = apply_live_model(args.model, grid, within=within)
    report = {
        "model": str(Path(args.model).resolve()),
        "store": str(Path(args.store).resolve()),
        "z": grid.z,
        "within": args.within,
        "context_px": pred.context_px,
        "names": {str(k): v for k, v in pred.names.items()},
        "points_per_class": {str(k): v for k, v in pred.counts().items()},
        "mean_uncertainty": float(np.nanmean(pred.uncertainty))
        if np.isfinite(pred.uncertainty).any()
        else None,
    }
    colours = colormaps["tab10"](np.arange(10))[:, :3]
    rgb = np.zeros((*grid.shape, 3))
    shown = pred.labels > 0
    rgb[shown] = colours[(pred.labels[shown].astype(int) - 1) % 10]

    def fill(folder: Path) -> None:  # a fresh folder: no file of an earlier run stays
        save_clusters(
            folder / "prediction.zarr", pred.labels.astype(np.int32), grid, report,
            inputs=[args.model], extra={"uncertainty": pred.uncertainty},
        )  # fmt: skip
        write_json_atomic(folder / "prediction.json", report)
        imsave(folder / "prediction.png", rgb)

    target = args.out or Path(args.store).with_name(Path(args.store).stem + "_live")
    out = write_folder(
        target, fill, names=FILES, inputs=[args.store, args.model], overwrite=args.overwrite
    )
    print(json.dumps({**report, "out": str(out)}))
    return 0


def _within(args: argparse.Namespace, grid: Any) -> np.ndarray:
    store = grid.store  # the store FeatureGrid.open read, not opened again
    classes = store.classes
    names = [c.name for c in classes] if classes is not None else []
    if args.within not in names:
        raise ValueError(
            f"--within {args.within!r} is not one of the store's areas {names}; "
            "name one of them (the CNN's classes)"
        )
    areas = store.areas
    if areas.ndim == 3:
        areas = areas[grid.index or 0]
    return np.asarray(areas) == classes.by_name(args.within).id
