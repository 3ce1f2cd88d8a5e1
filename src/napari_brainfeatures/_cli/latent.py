"""``brainfeatures train-vae`` and ``brainfeatures latent``.

``train-vae POP.zarr --out MODEL.safetensors`` trains a β-VAE, a vanilla VAE
or the PCA baseline on a population store.  ``latent MODEL POP.zarr --out DIR``
writes traversals, projective fields, the receptive-field impact matrix and
quality metrics as PNG pictures plus one ``latent.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures.latent import bounds as B
from napari_brainfeatures.progress import run as run_gen

WHAT = ("traversal", "projective", "receptive", "quality")


def add_repeat_options(parser: argparse.ArgumentParser) -> None:
    """``--repeats N`` / ``--seeds 0,1,2``: train N times, one model file per seed (``_seedS``)."""
    from napari_brainfeatures.latent.repeats import REPEATS

    parser.add_argument(
        "--repeats", type=REPEATS, default=None,
        help="train N times with seeds 0..N-1 (or --seeds): each run saved as OUT_seedS, the "
        "summary gives median and range",
    )  # fmt: skip
    parser.add_argument("--seeds", type=_seed_list, default=None, help="seeds, e.g. 0,1,2")


def _seed_list(text: str) -> list[int]:
    from napari_brainfeatures.latent.repeats import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def repeat_seeds(args: argparse.Namespace) -> list[int] | None:
    """The seeds of ``--repeats`` / ``--seeds``, or None for one run with ``--seed``."""
    from napari_brainfeatures.latent.repeats import parse_seeds

    if args.repeats is None and args.seeds is None:
        return None
    return parse_seeds(args.seeds, args.repeats)


def register(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "train-vae":
        parser.add_argument("population", help="population zarr group (arrays images, rois, ...)")
        parser.add_argument("--out", required=True, help="model file to write (.safetensors)")
        parser.add_argument("--model", choices=("beta-vae", "vae", "pca"), default="beta-vae")
        parser.add_argument("--latent", type=B.LATENT, default=8, help="latent size L (default 8)")
        parser.add_argument("--beta", type=B.BETA, default=3.0, help="KL weight (beta-vae only)")
        parser.add_argument("--epochs", type=B.EPOCHS, default=10)
        parser.add_argument(
            "--n-down",
            type=B.N_DOWN,
            default=None,
            help="stride-2 convolutions (default: 6, the authors', or fewer for small sections)",
        )
        parser.add_argument("--channels", type=B.CHANNELS, default=32, help="conv channels (32)")
        # CPU preset: 16 / 1e-3 reach a usable model in minutes; the paper's 64 / 2e-4 needs
        # far more steps (hours on a GPU).  Measured in bench_vae and the notes of train_vae.
        parser.add_argument(
            "--batch-size", type=B.BATCH_SIZE, default=16, help="default 16 (paper: 64)"
        )
        parser.add_argument(
            "--lr",
            type=B.LR,
            default=1e-3,
            help="default 1e-3 (paper: 2e-4)",
        )
        parser.add_argument("--seed", type=B.SEED, default=0)
        add_repeat_options(parser)
        parser.add_argument(
            "--kl-warmup",
            type=B.KL_WARMUP,
            default=0.0,
            help="epochs of KL ramp (0)",
        )
        parser.add_argument(
            "--recon-weight",
            type=B.RECON_WEIGHT,
            default=1.0,
            help="weight of the reconstruction term (1: the paper's loss; sections downsampled "
            "from 320x448: their area ratio keeps the paper's balance with beta)",
        )
        parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if present)")
        parser.add_argument("--clean", action="store_true", help="train on 'clean', not 'images'")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
        return
    parser.add_argument(
        "model", nargs="+",
        help="model file(s) written by train-vae; several (e.g. β-VAE, VAE, PCA, or a sweep "
        "of L) are compared side by side in OUT/comparison.json",
    )  # fmt: skip
    parser.add_argument("population", help="population zarr group")
    parser.add_argument(
        "--out", required=True,
        help="folder for PNG pictures and latent.json (one sub-folder per model when several)",
    )  # fmt: skip
    parser.add_argument("--what", nargs="+", choices=WHAT, default=list(WHAT))
    parser.add_argument("--section", type=B.SECTION, default=0, help="section for the traversal")
    parser.add_argument("--c-max", type=B.C_MAX, default=7.0, help="half-range of latent sweeps")
    parser.add_argument(
        "--step",
        type=B.STEP,
        default=None,
        help="projective step (0.05 on CPU)",
    )
    parser.add_argument(
        "--n-images",
        type=B.N_IMAGES,
        default=832,
        help="sections for receptive fields",
    )
    parser.add_argument("--device", default="cpu")


def run(name: str, args: argparse.Namespace) -> int:
    from napari_brainfeatures.io.volume import is_zarr_store
    from napari_brainfeatures.latent.population import read_population

    population = Path(args.population)
    if population.exists() and not is_zarr_store(population):  # missing: read_population says
        raise ValueError(
            f"{args.population!r} is not a population (no zarr group found); pass the .zarr "
            "folder written by 'brainfeatures sample population OUT'"
        )
    if name == "train-vae":
        check_outputs(args.out, repeat_seeds(args), args.overwrite)
    pop = read_population(args.population)
    printer = progress_printer if args.verbose else None
    if name == "train-vae":
        return _train(args, pop, printer)
    return _latent(args, pop, printer)


def check_outputs(out: str | Path, seeds: list[int] | None, overwrite: bool) -> Path:
    """The model file ``out`` (``.safetensors`` added), refused if it exists (each ``_seedS``)."""
    from napari_brainfeatures.latent.repeats import seeded_path

    out = Path(out)
    if out.suffix != ".safetensors":  # as the model file is named on saving
        out = out.with_name(out.name + ".safetensors")
    for path in [out] if seeds is None else [seeded_path(out, s) for s in seeds]:
        if path.exists() and not overwrite:
            raise FileExistsError(
                f"model file {str(path)!r} exists; pass --overwrite to replace it"
            )
    return out


def _train(args: argparse.Namespace, pop: dict[str, Any], printer: Any) -> int:
    from napari_brainfeatures.latent.model import fit_latent_model
    from napari_brainfeatures.latent.repeats import fit_latent_repeats, summarise

    key = "clean" if args.clean else "images"
    if key not in pop:
        raise ValueError(f"{args.population!r} has no {key!r} array")
    options = dict(
        kind=args.model, latent_dim=args.latent, beta=args.beta, n_down=args.n_down,
        channels=args.channels, checkpoint_path=args.out, roi_names=pop["roi_names"],
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, device=args.device,
        kl_warmup=args.kl_warmup, recon_weight=args.recon_weight,
    )  # fmt: skip
    seeds = repeat_seeds(args)
    if seeds is None:
        fitted = run_gen(fit_latent_model(pop[key], seed=args.seed, **options), printer)
        print(json.dumps(_run_summary(args, fitted), indent=2))
        return 0
    fitted = run_gen(fit_latent_repeats(pop[key], seeds=seeds, **options), printer)
    runs = [{"seed": s, **_run_summary(args, f)} for s, f in zip(seeds, fitted, strict=True)]
    spread = {k: v.as_dict() for k, v in summarise(runs).items() if k != "seed"}
    print(json.dumps({"model": args.model, "seeds": seeds, "summary": spread, "runs": runs},
                     indent=2))  # fmt: skip
    return 0


def _run_summary(args: argparse.Namespace, fitted: Any) -> dict[str, Any]:
    """What one fitted model's run says: its file, and its loss and time (or PCA's variance)."""
    meta = fitted.meta
    summary: dict[str, Any] = {"model": args.model, "path": str(fitted.path)}
    if args.model == "pca":
        summary["explained_variance"] = float(sum(meta["explained_variance_ratio"]))
    else:
        tr = meta["training"]
        summary["beta"] = 1.0 if args.model == "vae" else args.beta
        summary |= {k: tr[k] for k in ("best_epoch", "best_val_loss", "wall_s", "device")}
        if "cropped_from" in meta:  # e.g. 320x456 Allen sections -> 320x448
            summary["cropped_from"] = meta["cropped_from"]
            summary["image_shape"] = meta["image_shape"]
    return summary


def _latent(args: argparse.Namespace, pop: dict[str, Any], printer: Any) -> int:
    from napari_brainfeatures.latent.model import load_latent_model, model_label
    from napari_brainfeatures.latent.population import crop_offset, preprocess_for

    # every model and request is checked before anything is written
    models = []
    for path in args.model:
        model, meta = load_latent_model(path, device=args.device)
        # larger sections are centre-cropped to the model's input (320x456 -> 320x448)
        crop_offset(pop["images"].shape, model.image_shape, name=f"the sections (for {path!r})")
        models.append((path, model, meta))
    if "traversal" in args.what and not 0 <= args.section < len(pop["images"]):
        raise ValueError(f"--section must be in 0..{len(pop['images']) - 1}, got {args.section}")
    if "receptive" in args.what and "rois" not in pop:
        raise ValueError(
            f"{args.population!r} has no 'rois' array for receptive fields; add one, or leave "
            "'receptive' out of --what"
        )
    out = Path(args.out)
    folders = [out] if len(models) == 1 else _model_folders(out, args.model)
    rows = []
    for (path, model, meta), folder in zip(models, folders, strict=True):
        images = preprocess_for(pop["images"], meta)
        clean = preprocess_for(pop["clean"], meta) if "clean" in pop else images
        folder.mkdir(parents=True, exist_ok=True)
        report = _report(model, meta, images, clean, pop, args, folder, printer)
        report["model"] = str(path)
        (folder / "latent.json").write_text(json.dumps(report, indent=2))
        row: dict[str, Any] = {"model": str(path), "label": model_label(model, meta)}
        if "active_latents" in report:
            row["active_latents"] = len(report["active_latents"])
        if "receptive" in report:
            for key in ("disentanglement", "disentanglement_active"):
                row[key] = report["receptive"].get(key)
        for key, value in report.get("quality", {}).items():
            if isinstance(value, float):
                row[key] = value
        row["seed"] = (meta.get("training") or {}).get("seed", meta.get("seed"))
        rows.append(row)
    if len(rows) == 1:
        print(json.dumps({"out": str(out), **rows[0]}, indent=2, ensure_ascii=False))
        return 0
    table = {"comparison": rows, "repeats": _repeat_groups(rows)}
    (out / "comparison.json").write_text(json.dumps(table, indent=2, ensure_ascii=False))
    print(json.dumps({"out": str(out), **table}, indent=2, ensure_ascii=False))
    return 0


def _repeat_groups(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Models of one label (repeats with other seeds): each metric's median and range."""
    from napari_brainfeatures.latent.repeats import summarise

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["label"], []).append(row)
    return [
        {"label": label, "runs": len(members), "seeds": [m["seed"] for m in members],
         "models": [m["model"] for m in members],
         "metrics": {k: v.as_dict() for k, v in summarise(members).items() if k != "seed"}}
        for label, members in groups.items()
    ]  # fmt: skip


def _model_folders(out: Path, paths: list[str]) -> list[Path]:
    """One sub-folder per model, named by its file (numbered when two files share a name)."""
    stems = [Path(p).name.removesuffix(".safetensors") for p in paths]
    return [
        out / (stem if stems.count(stem) == 1 else f"{i}_{stem}") for i, stem in enumerate(stems)
    ]


def _report(
    model: Any, meta: dict, images: np.ndarray, clean: np.ndarray, pop: dict,
    args: argparse.Namespace, out: Path, printer: Any,
) -> dict[str, Any]:  # fmt: skip
    """One model's traversal, projective and receptive fields and quality, into ``out``."""
    from napari_brainfeatures.latent.codes import active_units
    from napari_brainfeatures.latent.disentangle import impact_scores

    report: dict[str, Any] = {"model_type": meta.get("model_type")}
    codes = model.encode(clean)  # (N, L)
    report["latent_mean"] = codes.mean(0).tolist()
    report["latent_std"] = codes.std(0).tolist()
    if len(codes) >= 2:  # which latents the model uses (variance of the code > 0.01)
        report["active_latents"] = np.flatnonzero(active_units(codes)).tolist()
    if "traversal" in args.what:
        report["traversal"] = _traversal(model, images, args, out)
    if "projective" in args.what:
        report["projective"] = _projective(model, codes.mean(0), args, out, printer)
    if "receptive" in args.what:
        report["receptive"] = _receptive(model, clean, pop, args, out, printer)
        if "active_latents" in report:  # the paper's score over the latents the model uses
            active = np.isin(np.arange(len(codes[0])), report["active_latents"])
            scores = impact_scores(report["receptive"]["impact"], active)
            report["receptive"]["disentanglement_active"] = scores["disentanglement_active"]
    if "quality" in args.what:
        report["quality"] = _quality(model, images, clean, pop, codes, printer, out)
    return report


def _save_png(path: Path, img: np.ndarray, **kw: Any) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plt.imsave(path, img, **kw)


def _traversal(model: Any, images: np.ndarray, args: argparse.Namespace, out: Path) -> dict:
    from napari_brainfeatures.latent.explore import traverse

    if not 0 <= args.section < len(images):
        raise ValueError(f"--section must be in 0..{len(images) - 1}, got {args.section}")
    z0 = model.encode(images[args.section : args.section + 1])[0]
    values = np.linspace(-args.c_max / 2, args.c_max / 2, 7)
    rows = [np.concatenate(list(traverse(model, z0, k, values)), axis=1) for k in range(len(z0))]
    _save_png(out / "traversal.png", np.clip(np.concatenate(rows, axis=0), 0, 1), cmap="magma")
    return {"file": "traversal.png", "section": args.section, "values": values.tolist()}


def _projective(model: Any, z0: np.ndarray, args: Any, out: Path, printer: Any) -> dict:
    from napari_brainfeatures.latent.explore import default_step, projective_fields, projective_rgb

    step = args.step or default_step(model)
    fields = run_gen(projective_fields(model, z0, c_max=args.c_max, step=step), printer)
    files = [f"projective_{k}.png" for k in range(len(fields))]
    for name, picture in zip(files, projective_rgb(fields), strict=True):
        _save_png(out / name, picture)
    return {"files": files, "step": step, "c_max": args.c_max, "z0": z0.tolist()}


def _receptive(model: Any, clean: np.ndarray, pop: dict, args: Any, out: Path, printer: Any):
    from napari_brainfeatures.latent.explore import (
        disentanglement_score,
        impact_covariance,
        receptive_fields,
    )
    from napari_brainfeatures.latent.population import roi_names_for

    if "rois" not in pop:
        raise ValueError(f"{args.population!r} has no 'rois' array for receptive fields")
    ids = sorted(int(i) for i in np.unique(pop["rois"]) if i)
    names = roi_names_for(ids, pop["roi_names"])
    rf = run_gen(
        receptive_fields(
            model, clean, pop["rois"], roi_ids=ids, roi_names=names, n_images=args.n_images
        ),
        printer,
    )
    _impact_png(out / "impact.png", rf.impact, rf.roi_names)
    return {
        "file": "impact.png",
        "roi_names": rf.roi_names,
        "impact": rf.impact.tolist(),
        "covariance": impact_covariance(rf.impact).tolist(),
        "disentanglement": disentanglement_score(rf.impact),
        "disentanglement_centered": disentanglement_score(rf.impact, centered=True),
        "n_images": rf.n_images,
    }


def _impact_png(path: Path, impact: np.ndarray, names: list[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1 + 0.6 * impact.shape[1], 1 + 0.45 * len(names)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(impact, cmap="viridis")
    ax.set_yticks(range(len(names)), names)
    ax.set_xticks(range(impact.shape[1]), [f"z{k}" for k in range(impact.shape[1])])
    ax.set_title("ROI impact (KL)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _quality(
    model: Any, images: np.ndarray, clean: np.ndarray, pop: dict, codes: Any, printer: Any,
    out: Path,
) -> dict:  # fmt: skip
    from napari_brainfeatures.latent.codes import factor_alignment
    from napari_brainfeatures.latent.disentangle import mutual_info_gap
    from napari_brainfeatures.latent.quality import quality_report

    gen = quality_report(
        model, images, clean=clean if "clean" in pop else None, artifact=pop.get("artifact")
    )
    report = run_gen(gen, printer)
    _save_png(out / "reconstructions.png", report.picture, cmap="magma", vmin=0, vmax=1)
    q = dict(report.scores)
    q["reconstructions"] = {"file": "reconstructions.png", "sections": report.sections.tolist(),
                            "columns": report.columns}  # fmt: skip
    if "factors" in pop:
        fa = factor_alignment(codes, pop["factors"], factor_names=pop["factor_names"])
        q["factor_alignment"] = fa["score"]
        q["factor_alignment_gap"] = fa["gap"]
        q["best_latent"] = fa["best_latent"]
        # a standard measure on the known factors, blind to unused latents
        q["mig"] = mutual_info_gap(codes, pop["factors"], factor_names=pop["factor_names"])["mig"]
    return q
