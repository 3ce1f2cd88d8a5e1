"""``brainfeatures factors`` (NMF + ROI-aligned selection) and ``brainfeatures cluster``.

``factors STORE.zarr [--k 15] [--rois LABELS] [--lam 0.5] [--normalise area] [--out DIR]``
factorises one z-slice of a dense feature store (rows with NaN, i.e. not computed,
are left out) and writes into DIR (default ``STORE_factors`` beside the store):
``factors.zarr`` (``maps (k, H, W)`` float32 coefficients on the store's grid,
``components (k, D)``, provenance in its attributes), ``selection.json`` (with
``--rois``), ``factor_XX.png`` heatmaps and ``rgb.png`` (the top three selected
factors, or the first three).  A JSON summary goes to stdout.

``cluster PATH --k 4 --method gmm [--mask LABELS --mask-id 1 --erode 64 --smooth 64]
[--truth LAYERS]`` clusters a feature store or a ``factors.zarr`` (the paper: GMM on
the NMF coefficients of cortex eroded by 64 px) and writes ``clusters.zarr``,
``clusters.png`` and ``clusters.json`` (BIC, V-measure / ARI and layer profile
against ``--truth``).

Label volumes (ROIs, masks, truth) are images of the same pixels as the features'
source image; they are read at the store's grid (origin + stride × index).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures._util.overwrite import write_folder
from napari_brainfeatures._util.ranges import FLOAT, INT, SEED, Bounded
from napari_brainfeatures.factors.options import (
    NORMALISE,
    OUTSIDE,
    SOLVERS,
    NMFOptions,
    OptionError,
    SelectOptions,
)
from napari_brainfeatures.progress import run as run_gen

MAX_PX = 1e6  # --erode, --smooth: larger than any section

# core option -> the flag that sets it (errors name the flag)
NMF_NAMES = ("n_components", "solver", "max_iter", "tol", "seed", "device")
FLAGS = {
    "n_components": "--k",
    "solver": "--solver",
    "max_iter": "--max-iter",
    "tol": "--tol",
    "seed": "--seed",
    "device": "--device",
    "lam": "--lam",
    "p": "--p",
    "normalise": "--normalise",
    "eps": "--eps",
    "outside": "--outside",
}


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("store", help="dense feature store (STORE.zarr), or factors.zarr for 'cluster'")
    add("--z", type=INT, default=None, help="z index of the store's grid (default: the only one)")
    add("--out", type=Path, default=None, help="output folder (default: STORE_factors beside it)")
    add("--overwrite", action="store_true", help="replace an earlier result in the output folder")
    add("--seed", type=SEED, default=0)
    add(
        "--allow-incomplete",
        action="store_true",
        help="use a feature store with tiles not written yet (they are left out; the "
        "result records it); default: refused, with how to resume",
    )
    if name == "factors":
        nmf, sel = NMFOptions(), SelectOptions()
        add("--k", type=INT, default=nmf.n_components, help="number of factors (default 15)")
        add("--solver", default=nmf.solver, choices=SOLVERS)
        add("--max-iter", type=INT, default=nmf.max_iter)
        add("--tol", type=FLOAT, default=None, help="default 1e-5 (torch), 1e-4 (sklearn)")
        add("--device", default=None, help="cpu / cuda (default: cuda if present)")
        add("--rois", default=None, help="ROI label volume for the factor selection")
        add(
            "--tissue-mask",
            default="auto",
            help="tissue mask volume (non-zero: tissue): only pixels whose patch lies in "
            "tissue are factorised, so cut faces and the pial surface get no factors of their "
            "own; 'auto' (default): the tissue.zarr in the workspace of the store's image "
            "(brainfeatures tissue) when there is one, 'none': every pixel",
        )
        add(
            "--min-context",
            type=Bounded("float", 0.0, 1.0),
            default=None,
            help="least fraction of a pixel's patch inside tissue (default 1.0; with "
            "--tissue-mask)",
        )
        add("--roi-ids", type=INT, nargs="+", default=None, help="ROI ids (default: all painted)")
        add("--lam", type=FLOAT, default=sel.lam, help="leakage weight λ >= 0 (default 0.5)")
        add("--p", type=INT, default=None, help="factors to select (default min(k, #ROIs))")
        add("--normalise", choices=NORMALISE, default=sel.normalise)
        add("--eps", type=FLOAT, default=sel.eps, help="relative activity threshold (default 0)")
        add(
            "--outside",
            choices=OUTSIDE,
            default=sel.outside,
            help="leakage counts every point outside the ROI (all: the paper, for fully "
            "painted slices) or only points of other ROIs (labelled: for sparse painting)",
        )
        return
    add("--k", type=INT, default=4, help="number of clusters (default 4)")
    add("--method", choices=("kmeans", "gmm"), default="gmm")
    add("--pca", type=INT, default=None, help="reduce to N principal components first")
    add("--max-fit", type=INT, default=200_000, help="rows to fit on (default 200000)")
    add("--mask", default=None, help="label volume restricting the clustering")
    add("--mask-id", type=INT, nargs="+", default=[1], help="ids of --mask to keep (default 1)")
    add("--erode", type=float, default=0.0, help="erode the mask by a disk of R image px")
    add(
        "--smooth",
        type=float,
        default=0.0,
        help="first smooth the map inside the mask by a Gaussian of σ image px (default 0)",
    )
    add("--truth", default=None, help="label volume (e.g. cortical layers) to score against")


# -- inputs -----------------------------------------------------------------------------------
def labels_on_grid(path: str, grid: Any) -> np.ndarray:
    """The label volume at ``path`` read at the feature grid's pixels ``(H, W)``."""
    from napari_brainfeatures.io.volume import open_volume

    return grid.labels_on(open_volume(path).data, what=f"labels {path!r}")  # (Z, Y, X) -> (H, W)


def _incomplete(grid: Any) -> dict[str, Any] | None:
    """``{"tiles_done", "tiles", "store"}`` of the grid's slice when tiles are missing (warns)."""
    from napari_brainfeatures.features.store import IncompleteStoreError

    store = getattr(grid, "store", None)
    try:
        if store is not None:
            store.require_complete(grid.index or 0)
    except IncompleteStoreError as err:
        warnings.warn(f"--allow-incomplete: {err}", stacklevel=1)
        return {"tiles_done": err.done, "tiles": err.total, "store": str(store.path)}
    return None


# -- outputs ----------------------------------------------------------------------------------
# What a result folder holds: replaced whole (other files of the user's are kept).
FACTOR_FILES = (
    "factors.zarr",
    "selection.json",
    "rgb.png",
    *(f"factor_{'[0-9]' * n}.png" for n in range(2, 7)),  # factor_00.png .. factor_99999.png
)
CLUSTER_FILES = ("clusters.zarr", "clusters.json", "clusters.png")


def _out_dir(args: argparse.Namespace, suffix: str) -> Path:
    return args.out or Path(args.store).with_name(Path(args.store).stem + suffix)


def _heatmap_png(path: Path, m: np.ndarray, cmap: str = "magma") -> None:
    from matplotlib.image import imsave

    from napari_brainfeatures.factors.maps import robust_max

    imsave(path, np.nan_to_num(m, nan=0.0), cmap=cmap, vmin=0.0, vmax=robust_max(m))


def run(name: str, args: argparse.Namespace) -> int:
    return _factors(args) if name == "factors" else _cluster(args)


def _options(args: argparse.Namespace) -> tuple[NMFOptions, SelectOptions]:
    """The NMF and selection options, checked before anything is read; errors name flags."""

    def given(names: tuple[str, ...]) -> dict[str, Any]:  # option -> its flag's value
        return {n: getattr(args, FLAGS[n].removeprefix("--").replace("-", "_")) for n in names}

    nmf = NMFOptions.named(FLAGS, **given(NMF_NAMES))
    select = SelectOptions.named(FLAGS, **given(tuple(n for n in FLAGS if n not in NMF_NAMES)))
    return nmf, select


def _tissue(given: str, grid: Any, store: str) -> tuple[str, Any] | None:
    """The tissue mask to use, ``(path, volume)``: ``given``, None for 'none', or 'auto'.

    'auto' looks for ``tissue.zarr`` in the workspace of the image the store was
    computed from (its recorded path, as given or relative to the working directory
    or to the store's folder) and takes it when its shape is the image's.
    """
    from napari_brainfeatures.io.volume import open_volume

    if given != "auto":
        return None if given == "none" else (given, open_volume(given).data)
    from napari_brainfeatures.workspace import default_workspace_path

    attrs = grid.store.attrs if grid.store is not None else None  # open already
    image = _image_of(store, attrs)
    found = None if image is None else default_workspace_path(image) / "tissue.zarr"
    if found is None or not found.exists():
        return None
    mask = open_volume(str(found)).data
    shape = ((attrs or {}).get("image") or {}).get("shape")
    return (str(found), mask) if shape and tuple(mask.shape) == tuple(shape) else None


def _image_of(store: Any, attrs: dict[str, Any] | None = None) -> Path | None:
    """The image a feature store was computed from, when it is still where the store says.

    ``attrs``: the store's attributes when it is open already (else it is read).
    """
    from napari_brainfeatures.features.store import FeatureStore

    try:
        name = (attrs if attrs is not None else FeatureStore(store).attrs).get("image_name")
    except Exception:  # noqa: BLE001 - gone or not a store: nothing to keep beside
        return None
    paths = (Path(name), Path(store).parent / name) if name else ()
    return next((p for p in dict.fromkeys(paths) if p.exists()), None)  # cwd first


def _keep(what: str, grid: Any, write: Any) -> str | None:
    """Keep the result in the workspace of the store's image as well, as the docks do.

    There ``brainfeatures export`` and the Results dock find it; ``write(workspace,
    geometry, image, class names)`` writes it.  Returns the result folder (None: no image).
    """
    from napari_brainfeatures.io.volume import open_volume
    from napari_brainfeatures.workspace import Workspace, default_workspace_path

    attrs = grid.store.attrs if grid.store is not None else None  # open already, if so
    image = _image_of(grid.source, attrs) if grid.source else None
    if image is None:
        return None
    ws = default_workspace_path(image)
    try:
        vol = open_volume(image)
        space = Workspace.open(ws, shape=tuple(vol.shape), data_path=image)  # a whole one
        names = {c.id: c.name for c in space.classes}  # tables name areas as the docks do
        space.close()
        voxel = vol.voxel_size or (1.0,) * 3
        geo = grid.layer_kwargs(voxel if vol.shape[0] > 1 else voxel[1:])  # a section: 2-D
        return str(write(ws, geo, str(image), names))
    except (OSError, ValueError) as err:  # WorkspaceError too
        warnings.warn(f"{what} written, but not kept in {str(ws)!r}: {err}", stacklevel=1)
        return None


def _factors(args: argparse.Namespace) -> int:
    from matplotlib.image import imsave

    from napari_brainfeatures.factors.maps import rgb_composite
    from napari_brainfeatures.factors.results import factorise
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.results.kinds import save_factors_result
    from napari_brainfeatures.workspace import write_json_atomic

    nmf, select = _options(args)  # --lam -1 is refused with or without --rois
    grid = FeatureGrid.open(args.store, args.z, flag="--z", allow_incomplete=args.allow_incomplete)
    rois, roi_ids = _check_rois(args, grid, select)
    edges: dict[str, Any] = {}
    found = _tissue(args.tissue_mask, grid, args.store)
    tissue = None if found is None else found[0]
    if found is not None:
        from napari_brainfeatures.progress import Progress

        progress_printer(Progress(0, None, f"only pixels whose patch lies in tissue: {tissue}"))
        edges["tissue"] = found[1]
        if args.min_context is not None:
            edges["min_context"] = args.min_context
    elif args.min_context is not None:
        raise ValueError(
            "--min-context needs --tissue-mask MASK"
            + (" (none was found in the image's workspace)" if args.tissue_mask == "auto" else "")
        )
    fac = run_gen(factorise(grid, options=nmf, **edges), progress_printer if args.verbose else None)
    incomplete = _incomplete(grid) if args.allow_incomplete else None
    if incomplete:
        fac.info["incomplete"] = incomplete  # saved with the factors: the result says so
    summary: dict[str, Any] = dict(fac.info) | {"tissue_mask": tissue}
    if rois is not None:
        share = float(np.count_nonzero(rois[fac.used])) / max(1, int(fac.used.sum()))
        if args.outside == "all" and share < 0.5:
            warnings.warn(
                f"the ROIs cover {share:.0%} of the map, so leakage (every unlabelled point "
                "counts) outweighs coverage; for sparse painting try --outside labelled "
                "(or --normalise area)",
                stacklevel=1,
            )
        fac = fac.with_selection(fac.select(rois, options=select, roi_ids=roi_ids))
        summary["selected"] = fac.selection.to_dict()["pairs"]  # type: ignore[union-attr]
    chosen = fac.selection.factors if fac.selection is not None else []
    top = (chosen + [i for i in range(fac.k) if i not in chosen])[:3]

    def fill(folder: Path) -> None:  # a fresh folder: no file of an earlier run stays
        if fac.selection is not None:
            write_json_atomic(folder / "selection.json", fac.selection.to_dict())
        fac.save(folder / "factors.zarr", inputs=[args.store])
        for i, m in enumerate(fac.maps):
            _heatmap_png(folder / f"factor_{i:02d}.png", m)
        if len(top) == 3:
            imsave(folder / "rgb.png", rgb_composite(fac.maps, tuple(top)))  # type: ignore[arg-type]

    target = _out_dir(args, "_factors")
    stale = [p for p in target.glob("*_clusters") if (p / "clusters.zarr").exists()]
    out = write_folder(
        target, fill, names=FACTOR_FILES, inputs=[args.store], overwrite=args.overwrite
    )
    for folder in stale:  # clustered from the factors just replaced
        print(f"warning: {folder} holds clusters of the factors this run replaced; run "
              "'brainfeatures cluster' again", file=sys.stderr)  # fmt: skip
    summary.update({"out": str(out), "rgb_factors": top})
    summary["kept"] = _keep("factors", grid, lambda ws, geo, image, names: save_factors_result(
        ws, fac, **geo, rois=rois, roi_names=names, name=f"{Path(args.store).stem}-z{grid.z}",
        inputs={"volume": image, "feature_store": str(args.store)},
        parameters={**fac.info, "store_z": grid.index, "z": grid.z},
    ))  # fmt: skip
    print(json.dumps(summary))
    return 0


def _check_rois(
    args: argparse.Namespace, grid: Any, select: SelectOptions
) -> tuple[np.ndarray | None, list[int]]:
    """The ROIs on the grid and their ids, checked before the NMF runs."""
    from napari_brainfeatures.factors.select import check_rois

    if args.rois is None:
        for opt in ("roi_ids", "p"):
            if getattr(args, opt) is not None:
                raise ValueError(f"--{opt.replace('_', '-')} needs --rois LABELS")
        return None, []
    rois = labels_on_grid(args.rois, grid)  # (H, W) on the store's grid
    present = check_rois(rois, what=f"--rois {args.rois!r}")
    ids = present if args.roi_ids is None else [int(i) for i in args.roi_ids]
    missing = [i for i in ids if i not in present]
    if missing:
        raise ValueError(
            f"--roi-ids {missing} not found in {args.rois!r} at the features' pixels; "
            f"the ids present are {present}"
        )
    try:
        select.check_p(args.k, len(ids))
    except OptionError as err:
        raise err.named(FLAGS) from None
    return rois, ids


def _cluster(args: argparse.Namespace) -> int:
    from matplotlib import colormaps
    from matplotlib.image import imsave

    from napari_brainfeatures.factors.clusters import cluster_map, erode_mask
    from napari_brainfeatures.factors.results import open_map, save_clusters
    from napari_brainfeatures.factors.scores import layer_profile, score_against
    from napari_brainfeatures.results.kinds import save_clusters_result
    from napari_brainfeatures.workspace import write_json_atomic

    if args.max_fit < args.k:
        raise ValueError(
            f"--max-fit must be >= --k (one row per cluster at least), got {args.max_fit} < "
            f"{args.k}"
        )
    # Checked in the image px the user typed, before they become grid px.
    for flag, value in (("--smooth", args.smooth), ("--erode", args.erode)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag} must be a finite number of image px >= 0, got {value:g}")
        if value > MAX_PX:
            raise ValueError(f"{flag} must be at most {MAX_PX:g} image px, got {value:g}")
    grid = open_map(args.store, args.z, flag="--z", allow_incomplete=args.allow_incomplete)
    mask = None
    if args.mask:
        ids = labels_on_grid(args.mask, grid)
        present = [int(i) for i in np.unique(ids) if i != 0]
        missing = [i for i in args.mask_id if i not in present]
        if missing:
            raise ValueError(
                f"--mask-id {missing} not present in {args.mask!r} at the features' pixels; "
                f"the ids present are {present}"
            )
        mask = erode_mask(np.isin(ids, args.mask_id), grid.radius(args.erode))
        if not mask.any():
            raise ValueError(
                f"no pixel of ids {args.mask_id} in {args.mask!r} is left after eroding by "
                f"{args.erode} px; erode less"
            )
    res = cluster_map(
        grid.features,
        method=args.method,
        k=args.k,
        pca_components=args.pca,
        mask=mask,
        max_fit=args.max_fit,
        seed=args.seed,
        smooth=grid.sigma(args.smooth),
    )
    incomplete = _incomplete(grid) if args.allow_incomplete else None
    report: dict[str, Any] = {
        **({"incomplete": incomplete} if incomplete else {}),
        "k": args.k,
        "method": args.method,
        "smooth_px": args.smooth,
        "bic": res.bic,
        "n_fit": res.n_fit,
        "n_labelled": res.n_labelled,
        "sizes": np.bincount(res.labels.ravel(), minlength=args.k + 1)[1:].tolist(),
    }
    if args.truth:
        truth = labels_on_grid(args.truth, grid)
        report["scores"] = score_against(truth, res.labels, mask)
        prof = layer_profile(res.labels, truth, mask=mask)
        report["layer_profile"] = {
            "clusters": prof.cluster_ids,
            "layers": prof.layer_ids,
            "matrix": prof.matrix.round(4).tolist(),
        }
    colours = colormaps["tab10"](np.arange(args.k) % 10)[:, :3]
    rgb = np.zeros((*grid.shape, 3))
    rgb[res.labels > 0] = colours[res.labels[res.labels > 0] - 1]

    def fill(folder: Path) -> None:  # a fresh folder: no file of an earlier run stays
        save_clusters(folder / "clusters.zarr", res.labels, grid, report, inputs=[args.store])
        write_json_atomic(folder / "clusters.json", report)
        imsave(folder / "clusters.png", rgb)

    out = write_folder(_out_dir(args, "_clusters"), fill, names=CLUSTER_FILES,
                       inputs=[args.store], overwrite=args.overwrite)  # fmt: skip
    report["kept"] = _keep("clusters", grid, lambda ws, geo, image, _: save_clusters_result(
        ws, res.labels, **geo, scores=report.get("scores"), name=Path(args.store).parent.name,
        inputs={"volume": image, "map": str(args.store)}, parameters=report,
    ))  # fmt: skip
    print(json.dumps({**report, "out": str(out)}))
    return 0
