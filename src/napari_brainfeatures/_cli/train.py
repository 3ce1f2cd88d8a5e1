"""``brainfeatures train-cnn`` and ``brainfeatures evaluate``.

``train-cnn IMAGE --labels LABELS --out MODEL.safetensors`` samples patches
from three slices 50 µm apart (training patches inside one area, validation and
test unrestricted), trains the CNN (progress on stderr), tests it on the test
slice and prints the test metrics as JSON on stdout.  ``evaluate MODEL IMAGE
--labels LABELS --slice Z`` tests a model file on other slices.

Volumes are zarr / OME-Zarr / TIFF (see :func:`napari_brainfeatures.io.volume.open_volume`);
``store.zarr/name`` selects an array of a group.  When ``--labels`` is left
out, the ``areas`` array beside the image is used (the synthetic sample's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures._cli.latent import add_repeat_options, check_outputs, repeat_seeds
from napari_brainfeatures._cli.tissue import tissue_args, tissue_sampling
from napari_brainfeatures.latent.repeats import seeded_path
from napari_brainfeatures.progress import Progress
from napari_brainfeatures.progress import run as run_gen


def register(name: str, parser: argparse.ArgumentParser) -> None:
    from napari_brainfeatures._util.device import PRECISIONS
    from napari_brainfeatures.train import bounds as b
    from napari_brainfeatures.train.recipe import DEFAULTS, VARIANTS

    if name == "train-cnn":
        parser.add_argument("image", help="image volume: zarr store / group path / TIFF")
        _labels_arg(parser)
        parser.add_argument("--out", required=True, help="model file to write (.safetensors)")
        parser.add_argument(
            "--patch-size", type=b.PATCH_SIZE, default=128, help="patch side (default 128)"
        )
        parser.add_argument(
            "--context", type=b.CONTEXT, default=1, metavar="K",
            help="multi-scale input: the window seen as its central 1/K and as K x K averages; "
            "training patches lie inside an area by their central view (default 1: one view)",
        )  # fmt: skip
        for split in ("train", "val", "test"):
            parser.add_argument(
                f"--{split}-slice",
                type=b.SLICE,
                nargs="+",
                default=None,
                metavar="Z",
                help=f"{split} z-slice(s) (default: 50 µm rule)",
            )
        for flag, kind, what in TRAIN_OPTIONS:  # defaults: train.recipe.DEFAULTS
            key = flag.removeprefix("--").replace("-", "_")
            what += " (default %(default)s)"
            parser.add_argument(flag, type=getattr(b, kind), default=DEFAULTS[key], help=what)
        choice_options = (  # (flag, choices; the first is the default, help)
            ("--variant", VARIANTS, "default: no internal padding (exact dense maps); authors: "
             "paddings 1,1,0,0 and 3-channel input"),
            ("--precision", PRECISIONS, "arithmetic of the training steps: auto (default) = "
             "bfloat16 on a CPU with AMX (about 1.8x faster), float32 elsewhere; the model is "
             "float32 either way"),
        )  # fmt: skip
        for flag, choices, what in choice_options:
            parser.add_argument(flag, choices=choices, default=choices[0], help=what)
        parser.add_argument("--no-augment", action="store_true", help="no flips/rotations/jitter")
        for flag, default, what in AUGMENT_OPTIONS:
            parser.add_argument(flag, type=b.PROBABILITY, default=default, help=what)
        sampling_arg(parser)
        tissue_args(parser)
        _split_args(parser)
        parser.add_argument("--seed", type=b.SEED, default=0)
        add_repeat_options(parser)  # training seeds; the patches stay those of --seed
        parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if present)")
        parser.add_argument("--threads", type=b.THREADS, default=None, help="CPU threads for torch")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
        _tta_arg(parser)
        return
    parser.add_argument("model", help="model file written by train-cnn")
    parser.add_argument("image", help="image volume: zarr store / group path / TIFF")
    _labels_arg(parser)
    parser.add_argument(
        "--slice",
        type=b.SLICE,
        nargs="+",
        default=None,
        metavar="Z",
        help="test z-slice(s) (default: the model's own test slices or test region)",
    )
    parser.add_argument(
        "--split-mask", default=None, metavar="PATH", help="the drawn split of a --split mask model"
    )
    parser.add_argument("--per-class", type=b.PER_CLASS, default=1000, help="patches per class")
    parser.add_argument("--seed", type=b.SEED, default=0)
    parser.add_argument("--batch-size", type=b.BATCH_SIZE, default=64)
    parser.add_argument("--device", default=None)
    _tta_arg(parser)
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--figure", default=None, help="write the confusion matrix as PNG")
    parser.add_argument(
        "--predict-stride",
        type=b.STRIDE,
        default=None,
        metavar="S",
        help="also classify the whole first slice every S px (slice accuracy)",
    )


SAMPLING = {"auto": "auto", "interior": True, "centre": False}
AUGMENT_OPTIONS = (  # (flag, default, help): probabilities per training patch
    ("--rotate", 0.5, "rotation by any angle (default %(default)s)"),
    ("--gradient", 0.0, "a smooth brightness gradient across the patch (default 0: off)"),
    ("--local-contrast", 0.0, "smooth local contrast changes (default 0: off)"),
)
TRAIN_OPTIONS = (  # (flag, its range in train.bounds, help)
    ("--per-class", "PER_CLASS", "training patches per class"),
    ("--eval-per-class", "PER_CLASS", "validation and test patches per class"),
    ("--epochs", "EPOCHS", "most passes over the training patches"),
    ("--batch-size", "BATCH_SIZE", "patches per training step"),
    ("--lr", "LR", "Adam learning rate"),
    ("--patience", "PATIENCE", "early stopping patience in epochs (0: never stop early)"),
)


def sampling_arg(parser: argparse.ArgumentParser) -> None:
    """``--sampling``: where training patches may lie (see ``patches.sample_patches``)."""
    parser.add_argument(
        "--sampling",
        choices=tuple(SAMPLING),
        default="auto",
        help="training patches: 'interior' = inside one area (the paper's rule), 'centre' = "
        "centred on a painted pixel, 'auto' (default) = interior where the paint allows, "
        "centred for classes painted as thin strokes (scribbles)",
    )


def check_slices(option: str, zs: list[int] | None, n_z: int) -> None:
    """Refuse z-slices outside ``0..n_z - 1`` (negative ones too) before anything is read."""
    bad = [z for z in zs or [] if not 0 <= z < n_z]
    if bad:
        raise ValueError(
            f"{option} {' '.join(map(str, bad))} is out of range: the volume has {n_z} "
            f"z-slices, so Z must be in 0..{n_z - 1} (negative indices are not accepted)"
        )


def _split_args(parser: argparse.ArgumentParser) -> None:
    from napari_brainfeatures.train import bounds as b

    add = parser.add_argument
    add("--split", choices=("slices", "blocks", "mask"), default=None,
        help="train/val/test by slice, by spatial blocks of one section, or by a drawn mask "
        "(--split-mask; 1/2/3 = train/val/test); default: slices when 3+ slices are painted, "
        "else blocks")  # fmt: skip
    add("--split-mask", default=None, metavar="PATH", help="split map for --split mask")
    add("--split-slice", type=b.SLICE, default=None, metavar="Z",
        help="the section to split (default: the painted one)")  # fmt: skip
    add("--guard", type=b.GUARD, default=None, metavar="PX",
        help="guard band between splits, px (default: the patch size)")  # fmt: skip
    add("--folds", type=b.FOLDS, default=None, metavar="K",
        help="spatial k-fold (blocks): train K models, report mean and spread")  # fmt: skip


def _tta_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-tta",
        action="store_true",
        help="score each test patch once, not as the mean of its 8 flips "
        "(always once for a model trained without augmentation)",
    )


def _labels_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--labels", default=None, help="label volume (default: the 'areas' array beside the image)"
    )


def _open(args: argparse.Namespace) -> tuple[Any, Any, Any, tuple[float, ...] | None]:
    """(image, labels, class table or None, voxel size) from the command line."""
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.io.volume import is_zarr_store, open_volume
    from napari_brainfeatures.workspace import SUFFIX, default_workspace_path

    image = open_volume(args.image)
    lab_path = args.labels
    if lab_path is None:
        p = Path(args.image)
        group = p if (p / "areas").exists() else p.parent
        painted = default_workspace_path(p) / "labels.zarr"  # the viewer's painting
        if is_zarr_store(group) and (group / "areas").exists():
            lab_path = str(group / "areas")
        elif is_zarr_store(painted):
            lab_path = str(painted)
        else:
            raise ValueError(
                f"no --labels given, no 'areas' array beside {args.image!r} and no labels "
                f"painted in its workspace {str(painted.parent)!r}; pass --labels LABELS.zarr "
                "(or group.zarr/name)"
            )
    labels = open_volume(lab_path)
    if labels.shape != image.shape:
        raise ValueError(
            f"labels {lab_path!r} have shape {labels.shape!r}, the image {image.shape!r}"
        )
    attrs = {**_group_attrs(args.image), **image.attrs}
    lab_attrs = {**_group_attrs(lab_path), **labels.attrs}
    raw = lab_attrs.get("classes") or attrs.get("classes")
    table = ClassTable.from_dict(raw) if isinstance(raw, dict) else None
    workspace = Path(lab_path).parent
    if table is None and workspace.name.endswith(SUFFIX) and (workspace / "classes.json").is_file():
        # labels painted in the viewer: their names and ids are the workspace's class table
        table = ClassTable.from_json((workspace / "classes.json").read_text(encoding="utf-8"))
    voxel: tuple[float, ...] | None = image.voxel_size
    if voxel is None and attrs.get("voxel_size_um"):
        voxel = tuple(float(v) for v in attrs["voxel_size_um"])
    return image.data, labels.data, table, voxel


def _group_attrs(path: str) -> dict[str, Any]:
    """Attributes of the zarr group holding the array at ``path`` (empty if none)."""
    import zarr

    from napari_brainfeatures.io.volume import is_zarr_store

    parent = Path(path).parent
    if not is_zarr_store(parent):
        return {}
    try:
        return dict(zarr.open_group(str(parent), mode="r").attrs)
    except Exception:  # not a group, or unreadable: no extra metadata
        return {}


def _printer(verbose: bool) -> Any:
    def show(rec: Progress) -> None:
        if verbose or rec.values or "batch" not in rec.message:
            progress_printer(rec)

    return show


def run(name: str, args: argparse.Namespace) -> int:
    if name == "train-cnn":
        return _train(args)
    return _evaluate(args)


def _train(args: argparse.Namespace) -> int:
    if (seeds := repeat_seeds(args)) is not None and args.folds:
        raise ValueError("--repeats/--seeds and --folds both train several models: pick one")
    out = check_outputs(args.out, seeds, args.overwrite)
    _network(args)  # a patch size the context does not divide: refused before any reading
    image, labels, table, voxel = _open(args)
    show = _printer(args.verbose)
    runs = _sample(args, image, labels, table, voxel, show)
    if seeds is not None:  # the same patches, one model per training seed
        fits = [
            (_fit(args, runs[0][1], out, voxel, show, s)[0], seeded_path(out, s)) for s in seeds
        ]
        return _repeats(fits, seeds)
    fits = [_fit(args, s, out if i == 0 else _fold_path(out, i), voxel, show) for i, s in runs]
    (ev, result, splits), accs = fits[0], [f[0].accuracy for f in fits]
    tr = result.meta["training"]
    summary = {
        "model": str(out),
        "test_accuracy": ev.accuracy,
        "macro_f1": ev.macro_f1,
        "per_class_f1": dict(zip(ev.class_names, ev.f1.tolist(), strict=True)),
        "confusion": ev.confusion.tolist(),
        "best_epoch": result.best_epoch,
        "best_val_acc": result.best_val_acc,
        "epochs_run": tr["epochs_run"],
        "stopped_early": result.stopped_early,
        "slices": splits.slices(),
        "split": splits.record(),
        "counts": {k: {str(c): n for c, n in v.items()} for k, v in splits.counts().items()},
        "wall_s": tr["wall_s"],
        "device": tr["device"],
    }
    if len(fits) > 1:
        summary["folds"] = {
            "k": len(fits),
            "test_accuracy": accs,
            "mean": float(np.mean(accs)),
            "std": float(np.std(accs)),
            "models": [str(out)] + [str(_fold_path(out, i)) for i in range(1, len(fits))],
        }
    print(json.dumps(summary, indent=2))
    return 0


def _repeats(fits: list[tuple[Any, Path]], seeds: list[int]) -> int:
    """Each run's test accuracy and model (``OUT_seedS``), and their median and range."""
    from napari_brainfeatures.latent.repeats import summarise

    runs = [
        {"seed": s, "model": str(out), "test_accuracy": ev.accuracy, "macro_f1": ev.macro_f1}
        for s, (ev, out) in zip(seeds, fits, strict=True)
    ]
    spread = {k: v.as_dict() for k, v in summarise(runs).items() if k != "seed"}
    print(json.dumps({"seeds": seeds, "summary": spread, "runs": runs}, indent=2))
    return 0


def _fold_path(out: Path, fold: int) -> Path:
    return out.with_name(f"{out.stem}_fold{fold}.safetensors")


def _sample(args: argparse.Namespace, image: Any, labels: Any, table: Any, voxel: Any, show: Any):
    """``[(fold, Splits)]``: by slice (one), or by region of one section (``--folds`` of them)."""
    from napari_brainfeatures.train.plan import plan_splits

    given = (args.train_slice, args.val_slice, args.test_slice)
    for split, zs in zip(("train", "val", "test"), given, strict=True):
        check_slices(f"--{split}-slice", zs, image.shape[0])
    if args.split_slice is not None:
        check_slices("--split-slice", [args.split_slice], image.shape[0])
    opts = {"patch_size": args.patch_size, "per_class": args.per_class, "seed": args.seed}
    opts |= {"eval_per_class": args.eval_per_class, "interior": SAMPLING[args.sampling]}
    if args.context > 1:  # inside an area by the central view; the rest of the window is context
        opts["core"] = _network(args).view_size
    opts |= tissue_sampling(args, image.shape, show)
    plan = plan_splits(
        image, labels, split=args.split, slices=given, split_mask=args.split_mask,
        split_slice=args.split_slice, guard=args.guard, folds=args.folds, classes=table,
        voxel_size=voxel[0] if voxel else None, report=lambda m: show(Progress(0, None, m)),
        **opts,
    )  # fmt: skip
    return list(enumerate(plan))


def _fit(args: argparse.Namespace, splits: Any, out: Path, voxel: Any, show: Any, seed=None):  # type: ignore[no-untyped-def]
    """Train on ``splits``, test, save to ``out`` (``OUT_seedS`` with a ``seed`` of repeats)."""
    from napari_brainfeatures.train.plan import fit_and_test

    if seed is not None:
        args, out = argparse.Namespace(**{**vars(args), "seed": seed}), seeded_path(out, seed)
    keys = ("epochs", "batch_size", "lr", "device", "seed", "rotate", "gradient", "precision")
    ev, result = run_gen(
        fit_and_test(splits, out, variant=args.variant, context=args.context,
                     tta=not args.no_tta, augment=not
                     args.no_augment, patience=args.patience or None, voxel_size=voxel,
                     num_threads=args.threads, contrast=args.local_contrast,
                     **{k: getattr(args, k) for k in keys}),
        show,
    )  # fmt: skip
    return ev, result, splits


def _network(args: argparse.Namespace) -> Any:
    """The network ``--variant``, ``--patch-size`` and ``--context`` ask for (checked)."""
    from napari_brainfeatures.train.recipe import make_config

    return make_config(args.variant, patch_size=args.patch_size, context=args.context)


def _evaluate(args: argparse.Namespace) -> int:
    from napari_brainfeatures._util.overwrite import check_output_file
    from napari_brainfeatures.models.cnn import check_image_dtype, load_cnn
    from napari_brainfeatures.train.evaluation import (
        confusion_figure,
        iter_evaluate,
        trained_with_flips,
    )
    from napari_brainfeatures.train.plan import held_out_patches
    from napari_brainfeatures.train.predict import predict_slice, slice_accuracy

    inputs = [args.model, args.image, *([args.labels] if args.labels else [])]
    if args.json:  # checked before any work: never over an input, a model or a volume
        check_output_file(args.json, suffixes=(".json",), inputs=inputs, what="--json file")
    if args.figure:
        check_output_file(
            args.figure,
            suffixes=(".png", ".pdf", ".svg", ".jpg", ".jpeg"),
            inputs=inputs,
            what="--figure",
        )
    model, meta = load_cnn(args.model, device=args.device or "cpu")
    table = meta["class_table"]
    image, labels, _, _ = _open(args)
    check_slices("--slice", args.slice, image.shape[0])
    check_image_dtype(meta, image.dtype)
    patches, split = held_out_patches(
        meta, image, labels, slices=args.slice, split_mask=args.split_mask,
        patch_size=model.config.patch_size, per_class=args.per_class, seed=args.seed,
        report=lambda m: _printer(args.verbose)(Progress(0, None, m)),
    )  # fmt: skip
    printer = progress_printer if args.verbose else None
    ev = run_gen(
        iter_evaluate(
            model,
            patches,
            batch_size=args.batch_size,
            classes=table,
            tta=not args.no_tta and trained_with_flips(meta),
        ),
        printer,
    )
    report: dict[str, Any] = {"model": str(args.model), "slices": patches.slices, **ev.to_dict()}
    report["split"] = split
    if split.get("seen_in_training"):
        report["warnings"] = [
            *report.get("warnings", []),
            f"slices {split['seen_in_training']} are the model's own training or validation "
            "slices: not a test",
        ]
    if args.predict_stride:
        z = patches.slices[0]
        pred = run_gen(
            predict_slice(
                model,
                image[z],
                stride=args.predict_stride,
                batch_size=args.batch_size,
                classes=table,
            ),
            printer,
        )
        report["slice_accuracy"] = {
            "z": z,
            "stride": args.predict_stride,
            "accuracy": slice_accuracy(pred, _scored(labels[z], meta, args, split)),
        }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.figure:
        confusion_figure(ev, args.figure)
    print(json.dumps(report, indent=2))
    return 0


def _scored(lab: Any, meta: dict[str, Any], args: argparse.Namespace, split: dict) -> Any:
    """The labels a slice accuracy counts: only the test region of a section split by region."""
    from napari_brainfeatures.train.recorded import recorded_split

    if not split.get("evaluated"):
        return lab
    return np.where(recorded_split(meta, args.split_mask).region("test"), lab, 0)  # type: ignore[union-attr]
