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
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures.progress import run as run_gen

KIND = "nmf-factors"
ATTR = "brainfeatures"


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("store", help="dense feature store (STORE.zarr), or factors.zarr for 'cluster'")
    add("--z", type=int, default=None, help="z index of the store's grid (default: the only one)")
    add("--out", type=Path, default=None, help="output folder (default: STORE_factors beside it)")
    add("--seed", type=int, default=0)
    if name == "factors":
        add("--k", type=int, default=15, help="number of factors (default 15)")
        add("--solver", default="auto", choices=("auto", "torch", "sklearn", "sklearn-minibatch"))
        add("--max-iter", type=int, default=200)
        add("--tol", type=float, default=None, help="default 1e-5 (torch), 1e-4 (sklearn)")
        add("--device", default=None, help="cpu / cuda (default: cuda if present)")
        add("--rois", default=None, help="ROI label volume for the factor selection")
        add("--roi-ids", type=int, nargs="+", default=None, help="ROI ids (default: all painted)")
        add("--lam", type=float, default=0.5, help="leakage weight λ (default 0.5)")
        add("--p", type=int, default=None, help="factors to select (default min(k, #ROIs))")
        add("--normalise", choices=("none", "area"), default="none")
        add("--eps", type=float, default=0.0, help="relative activity threshold (default 0)")
        add(
            "--outside",
            choices=("all", "labelled"),
            default="all",
            help="leakage counts every point outside the ROI (all: the paper, for fully "
            "painted slices) or only points of other ROIs (labelled: for sparse painting)",
        )
        return
    add("--k", type=int, default=4, help="number of clusters (default 4)")
    add("--method", choices=("kmeans", "gmm"), default="gmm")
    add("--pca", type=int, default=None, help="reduce to N principal components first")
    add("--max-fit", type=int, default=200_000, help="rows to fit on (default 200000)")
    add("--mask", default=None, help="label volume restricting the clustering")
    add("--mask-id", type=int, nargs="+", default=[1], help="ids of --mask to keep (default 1)")
    add("--erode", type=float, default=0.0, help="erode the mask by a disk of R image px")
    add(
        "--smooth",
        type=float,
        default=0.0,
        help="first smooth the map inside the mask by a Gaussian of σ image px (default 0)",
    )
    add("--truth", default=None, help="label volume (e.g. cortical layers) to score against")


# -- inputs -----------------------------------------------------------------------------------
def load_map(path: str | os.PathLike[str], z: int | None) -> tuple[Any, dict[str, Any]]:
    """A lazy ``(H, W, D)`` map and its grid ``{origin, step, z_image, source}``.

    Accepts a dense feature store (:mod:`napari_brainfeatures.features.store`), a
    ``factors.zarr`` written here, or a plain zarr array / group with a ``features``
    array of shape ``(H, W, D)`` or ``(Z, H, W, D)``.
    """
    import dask.array as da
    import zarr

    from napari_brainfeatures.features.store import FeatureStore, _is_feature_store
    from napari_brainfeatures.io.volume import is_zarr_store

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such feature store: {str(path)!r}")
    if not is_zarr_store(path):
        raise ValueError(
            f"{str(path)!r} is not a feature store (no zarr group found); pass the STORE.zarr "
            "written by 'brainfeatures features' (or a factors.zarr to cluster)"
        )
    if _is_feature_store(path):
        store = FeatureStore(path)
        f = store.features()  # (Z, C, Y, X) or (C, Y, X)
        if not store.is_2d:
            z = _pick_z(z, f.shape[0], path)
            f = f[z]
        origin, step = store.attrs["origin"], store.attrs["step"]
        grid = {"origin": origin[1:], "step": step[1:], "z_image": origin[0] + (z or 0) * step[0]}
        return da.moveaxis(f, 0, -1), {**grid, "source": str(path), "z": z}
    node = zarr.open(path, mode="r")
    attrs = dict(node.attrs).get(ATTR) if isinstance(node, zarr.Group) else None
    if isinstance(node, zarr.Group) and isinstance(attrs, dict) and attrs.get("kind") == KIND:
        maps = da.from_zarr(node["maps"])  # (k, H, W)
        info = {k: attrs[k] for k in ("origin", "step", "z_image")}
        return da.moveaxis(maps, 0, -1), {**info, "source": str(path), "z": attrs.get("z")}
    arr = node["features"] if isinstance(node, zarr.Group) and "features" in node else node
    if not isinstance(arr, zarr.Array) or arr.ndim not in (3, 4):
        raise ValueError(
            f"{str(path)!r} is neither a feature store nor a zarr array of shape (H, W, D) "
            "or (Z, H, W, D)"
        )
    f = da.from_zarr(arr)
    if f.ndim == 4:
        z = _pick_z(z, f.shape[0], path)
        f = f[z]
    return f, {"origin": [0, 0], "step": [1, 1], "z_image": z or 0, "source": str(path), "z": z}


def _pick_z(z: int | None, n: int, path: Path) -> int:
    if z is None:
        if n != 1:
            raise ValueError(f"{str(path)!r} holds {n} z-slices; choose one with --z 0..{n - 1}")
        return 0
    if not 0 <= z < n:
        raise ValueError(f"--z must be in 0..{n - 1} for {str(path)!r}, got {z}")
    return z


def labels_on_grid(path: str, grid: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    """The label volume at ``path`` read at the feature grid's pixels."""
    from napari_brainfeatures.factors.clusters import on_grid
    from napari_brainfeatures.io.volume import open_volume

    vol = open_volume(path).data  # (Z, Y, X)
    zi = int(grid["z_image"])
    if not 0 <= zi < vol.shape[0]:
        raise ValueError(f"labels {path!r} have {vol.shape[0]} slices; the features are at z={zi}")
    origin, step = tuple(grid["origin"]), tuple(grid["step"])
    return on_grid(np.asarray(vol[zi]), shape, origin=origin, step=step)  # type: ignore[arg-type]


# -- outputs ----------------------------------------------------------------------------------
def _out_dir(args: argparse.Namespace, suffix: str) -> Path:
    out = args.out or Path(args.store).with_name(Path(args.store).stem + suffix)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _write_group(
    target: Path, arrays: dict[str, np.ndarray], attrs: dict[str, Any], source: Any
) -> None:
    """Write a zarr group atomically (build beside, then swap).

    An earlier result (a zarr store) is replaced; anything else at ``target``,
    and a target in or holding the ``source`` store, is refused, never deleted.
    """
    import zarr

    from napari_brainfeatures._util.overwrite import check_target, swap_in

    check_target(target, overwrite=True, inputs=[source])
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    group = zarr.open_group(tmp, mode="w")
    for name, a in arrays.items():
        chunks = tuple(min(s, 1 if i < a.ndim - 2 else 1024) for i, s in enumerate(a.shape))
        group.create_array(name, data=a, chunks=chunks)
    group.attrs[ATTR] = attrs
    swap_in(tmp, target)


def _heatmap_png(path: Path, m: np.ndarray, cmap: str = "magma") -> None:
    from matplotlib.image import imsave

    finite = m[np.isfinite(m)]
    hi = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    imsave(path, np.nan_to_num(m, nan=0.0), cmap=cmap, vmin=0.0, vmax=max(hi, 1e-12))


def run(name: str, args: argparse.Namespace) -> int:
    return _factors(args) if name == "factors" else _cluster(args)


def _factors(args: argparse.Namespace) -> int:
    from matplotlib.image import imsave

    from napari_brainfeatures.factors.select import (
        factor_maps,
        finite_rows,
        fit_nmf,
        rgb_composite,
        select_factors,
    )
    from napari_brainfeatures.workspace import write_json_atomic

    f, grid = load_map(args.store, args.z)
    rois, roi_ids = _check_factor_args(args, grid, tuple(f.shape[:2]))
    rows, valid = finite_rows(f)
    if rois is not None:
        empty = [i for i in roi_ids if not np.any(rois[valid] == i)]
        if empty:
            raise ValueError(
                f"ROI id(s) {empty} of {args.rois!r} lie only where no feature was computed "
                "(NaN in the store); compute features there or choose other ids with --roi-ids"
            )
    res = run_gen(
        fit_nmf(
            rows,
            args.k,
            solver=args.solver,
            max_iter=args.max_iter,
            tol=args.tol,
            seed=args.seed,
            device=args.device,
        ),
        progress_printer,
    )
    maps = factor_maps(res.W, valid.shape, valid=valid)  # (k, H, W)
    summary: dict[str, Any] = {
        "k": args.k,
        "solver": res.solver,
        "n_rows": int(rows.shape[0]),
        "rel_error": res.rel_error,
        "n_iter": res.n_iter,
        "wall_s": round(res.wall_s, 3),
    }
    selection = None
    if rois is not None:
        share = float(np.count_nonzero(rois[valid])) / max(1, int(valid.sum()))
        if args.outside == "all" and share < 0.5:
            warnings.warn(
                f"the ROIs cover {share:.0%} of the map, so leakage (every unlabelled point "
                "counts) outweighs coverage; for sparse painting try --outside labelled "
                "(or --normalise area)",
                stacklevel=1,
            )
        selection = select_factors(
            res.W,
            rois[valid],
            lam=args.lam,
            p=args.p,
            normalise=args.normalise,
            eps=args.eps,
            outside=args.outside,
            roi_ids=roi_ids,
        )
        summary["selected"] = selection.to_dict()["pairs"]
    out = _out_dir(args, "_factors")  # only now: a failed run leaves no empty folder
    if selection is not None:
        write_json_atomic(out / "selection.json", selection.to_dict())
    attrs = {
        "kind": KIND,
        **grid,
        **summary,
        "selection": selection.to_dict() if selection else None,
    }
    _write_group(out / "factors.zarr", {"maps": maps, "components": res.H}, attrs, args.store)
    for i, m in enumerate(maps):
        _heatmap_png(out / f"factor_{i:02d}.png", m)
    for stale in out.glob("factor_*.png"):  # pictures of an earlier run with a larger k
        index = stale.stem.removeprefix("factor_")
        if index.isdigit() and int(index) >= len(maps):
            stale.unlink()
    top = (
        (selection.factors + [i for i in range(args.k) if i not in selection.factors])[:3]
        if (selection)
        else list(range(min(3, args.k)))
    )
    if len(top) == 3:
        imsave(out / "rgb.png", rgb_composite(maps, tuple(top)))  # type: ignore[arg-type]
    summary.update({"out": str(out), "rgb_factors": top})
    print(json.dumps(summary))
    return 0


def _check_factor_args(
    args: argparse.Namespace, grid: dict[str, Any], shape: tuple[int, int]
) -> tuple[np.ndarray | None, list[int]]:
    """Validate the options before the NMF runs; the ROIs on the grid and their ids."""
    if args.k < 1:
        raise ValueError(f"--k must be >= 1, got {args.k}")
    if args.rois is None:
        for opt in ("roi_ids", "p"):
            if getattr(args, opt) is not None:
                raise ValueError(f"--{opt.replace('_', '-')} needs --rois LABELS")
        return None, []
    if not args.lam >= 0:
        raise ValueError(f"--lam must be >= 0, got {args.lam}")
    if not 0 <= args.eps < 1:
        raise ValueError(f"--eps must be in [0, 1), got {args.eps}")
    rois = labels_on_grid(args.rois, grid, shape)  # (H, W) on the store's grid
    if rois.dtype.kind not in "uib":
        raise ValueError(
            f"--rois {args.rois!r} has dtype {rois.dtype}: it is an image, not integer labels; "
            "pass the painted labels"
        )
    present = [int(i) for i in np.unique(rois) if i != 0]
    if not present:
        raise ValueError(f"no ROI is painted in {args.rois!r} at the features' pixels; paint one")
    ids = present if args.roi_ids is None else [int(i) for i in args.roi_ids]
    missing = [i for i in ids if i not in present]
    if missing:
        raise ValueError(
            f"--roi-ids {missing} not found in {args.rois!r} at the features' pixels; "
            f"the ids present are {present}"
        )
    top = min(args.k, len(ids))
    if args.p is not None and not 1 <= args.p <= top:
        raise ValueError(
            f"--p must be in 1..{top} (at most --k {args.k} and the {len(ids)} ROI(s)), "
            f"got {args.p}"
        )
    return rois, ids


def _cluster(args: argparse.Namespace) -> int:
    from matplotlib.image import imsave

    from napari_brainfeatures.factors.clusters import (
        cluster_map,
        erode_mask,
        layer_profile,
        score_against,
    )
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
    f, grid = load_map(args.store, args.z)
    shape = tuple(f.shape[:2])
    mask = None
    if args.mask:
        ids = labels_on_grid(args.mask, grid, shape)  # type: ignore[arg-type]
        present = [int(i) for i in np.unique(ids) if i != 0]
        missing = [i for i in args.mask_id if i not in present]
        if missing:
            raise ValueError(
                f"--mask-id {missing} not present in {args.mask!r} at the features' pixels; "
                f"the ids present are {present}"
            )
        mask = np.isin(ids, args.mask_id)
        radius = args.erode / float(min(grid["step"]))  # image px -> grid px
        mask = erode_mask(mask, radius)
        if not mask.any():
            raise ValueError(
                f"no pixel of ids {args.mask_id} in {args.mask!r} is left after eroding by "
                f"{args.erode} px; erode less"
            )
    res = cluster_map(
        f,
        method=args.method,
        k=args.k,
        pca_components=args.pca,
        mask=mask,
        max_fit=args.max_fit,
        seed=args.seed,
        smooth=tuple(args.smooth / float(s) for s in grid["step"][-2:]),
    )
    report: dict[str, Any] = {
        "k": args.k,
        "method": args.method,
        "smooth_px": args.smooth,
        "bic": res.bic,
        "n_fit": res.n_fit,
        "n_labelled": res.n_labelled,
        "sizes": np.bincount(res.labels.ravel(), minlength=args.k + 1)[1:].tolist(),
    }
    if args.truth:
        truth = labels_on_grid(args.truth, grid, shape)  # type: ignore[arg-type]
        report["scores"] = score_against(truth, res.labels, mask)
        prof = layer_profile(res.labels, truth, mask=mask)
        report["layer_profile"] = {
            "clusters": prof.cluster_ids,
            "layers": prof.layer_ids,
            "matrix": prof.matrix.round(4).tolist(),
        }
    out = _out_dir(args, "_clusters")
    _write_group(
        out / "clusters.zarr",
        {"labels": res.labels},
        {"kind": "cluster-map", **grid, **report},
        args.store,
    )
    write_json_atomic(out / "clusters.json", report)
    from matplotlib import colormaps

    colours = colormaps["tab10"](np.arange(args.k) % 10)[:, :3]
    rgb = np.zeros((*shape, 3))
    rgb[res.labels > 0] = colours[res.labels[res.labels > 0] - 1]
    imsave(out / "clusters.png", rgb)
    print(json.dumps({**report, "out": str(out)}))
    return 0
