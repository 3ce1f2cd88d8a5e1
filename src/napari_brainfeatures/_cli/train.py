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

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures.progress import Progress
from napari_brainfeatures.progress import run as run_gen


def register(name: str, parser: argparse.ArgumentParser) -> None:
    from napari_brainfeatures.train.recipe import DEFAULTS, VARIANTS

    if name == "train-cnn":
        parser.add_argument("image", help="image volume: zarr store / group path / TIFF")
        _labels_arg(parser)
        parser.add_argument("--out", required=True, help="model file to write (.safetensors)")
        parser.add_argument("--patch-size", type=int, default=128, help="patch side (default 128)")
        for split in ("train", "val", "test"):
            parser.add_argument(
                f"--{split}-slice",
                type=int,
                nargs="+",
                default=None,
                metavar="Z",
                help=f"{split} z-slice(s) (default: 50 µm rule)",
            )
        for flag, kind, what in TRAIN_OPTIONS:  # defaults: train.recipe.DEFAULTS
            key = flag.removeprefix("--").replace("-", "_")
            what += " (default %(default)s)"
            parser.add_argument(flag, type=kind, default=DEFAULTS[key], help=what)
        parser.add_argument(
            "--variant",
            choices=VARIANTS,
            default="default",
            help="default: no internal padding (exact dense maps); authors: "
            "paddings 1,1,0,0 and 3-channel input",
        )
        parser.add_argument("--no-augment", action="store_true", help="no flips/rotations/jitter")
        sampling_arg(parser)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda if present)")
        parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
        parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
        _tta_arg(parser)
        return
    parser.add_argument("model", help="model file written by train-cnn")
    parser.add_argument("image", help="image volume: zarr store / group path / TIFF")
    _labels_arg(parser)
    parser.add_argument(
        "--slice", type=int, nargs="+", required=True, metavar="Z", help="test z-slice(s)"
    )
    parser.add_argument("--per-class", type=int, default=1000, help="patches per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None)
    _tta_arg(parser)
    parser.add_argument("--json", default=None, help="also write the metrics to this JSON file")
    parser.add_argument("--figure", default=None, help="write the confusion matrix as PNG")
    parser.add_argument(
        "--predict-stride",
        type=positive_int,
        default=None,
        metavar="S",
        help="also classify the whole first slice every S px (slice accuracy)",
    )


SAMPLING = {"auto": "auto", "interior": True, "centre": False}
TRAIN_OPTIONS = (
    ("--per-class", int, "training patches per class"),
    ("--eval-per-class", int, "validation and test patches per class"),
    ("--epochs", int, "most passes over the training patches"),
    ("--batch-size", int, "patches per training step"),
    ("--lr", float, "Adam learning rate"),
    ("--patience", int, "early stopping patience in epochs (0: never stop early)"),
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


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def check_slices(option: str, zs: list[int] | None, n_z: int) -> None:
    """Refuse z-slices outside ``0..n_z - 1`` (negative ones too) before anything is read."""
    bad = [z for z in zs or [] if not 0 <= z < n_z]
    if bad:
        raise ValueError(
            f"{option} {' '.join(map(str, bad))} is out of range: the volume has {n_z} "
            f"z-slices, so Z must be in 0..{n_z - 1} (negative indices are not accepted)"
        )


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
    from napari_brainfeatures.models.cnn import save_cnn
    from napari_brainfeatures.train.evaluation import evaluate, trained_with_flips
    from napari_brainfeatures.train.fit import train_cnn
    from napari_brainfeatures.train.recipe import make_config
    from napari_brainfeatures.train.splits import choose_slices, painted_classes, sample_splits

    out = Path(args.out)
    if out.suffix != ".safetensors":
        out = out.with_name(out.name + ".safetensors")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"model file {str(out)!r} exists; pass --overwrite to replace it")
    image, labels, table, voxel = _open(args)
    given = (args.train_slice, args.val_slice, args.test_slice)
    for split, zs in zip(("train", "val", "test"), given, strict=True):
        check_slices(f"--{split}-slice", zs, image.shape[0])
    choice = choose_slices(labels, given, voxel_size=voxel[0] if voxel else None)
    chosen, how = choice.slices, choice.how
    show = _printer(args.verbose)
    where = f"train {chosen[0]}, val {chosen[1]}, test {chosen[2]}"
    show(Progress(0, None, f"sampling patches: {where}" + (f" ({how})" if how else "")))
    try:
        splits = sample_splits(
            image,
            labels,
            slices=chosen,
            patch_size=args.patch_size,
            per_class=args.per_class,
            eval_per_class=args.eval_per_class,
            seed=args.seed,
            classes=painted_classes(table, labels, chosen[0]),
            interior=SAMPLING[args.sampling],
        )
    except ValueError as err:
        if not how:  # every slice given: the error says it all
            raise
        painted = "" if choice.painted is None else f"labels are painted on z = {choice.painted}; "
        raise ValueError(
            f"{err}. The slices {where} were chosen by default ({how}); {painted}choose slices "
            "with --train-slice Z --val-slice Z --test-slice Z"
        ) from None
    show(Progress(0, None, f"patches per class: {splits.counts()}"))
    config = make_config(
        args.variant, patch_size=args.patch_size, n_classes=len(splits.train.class_ids)
    )
    result = run_gen(
        train_cnn(
            splits.train,
            splits.val,
            config=config,
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            augment=not args.no_augment,
            patience=args.patience or None,
            device=args.device,
            seed=args.seed,
            checkpoint_path=out,
            voxel_size=voxel,
            num_threads=args.threads,
        ),
        show,
    )
    tta = not args.no_tta and trained_with_flips(result.meta)
    ev = evaluate(result.model, splits.test, device=args.device, tta=tta)
    meta = {**result.meta, "test": {**ev.to_dict(), "slices": splits.test.slices}}
    save_cnn(out, result.model, classes=splits.train.classes, meta=meta)
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
        "counts": {k: {str(c): n for c, n in v.items()} for k, v in splits.counts().items()},
        "wall_s": tr["wall_s"],
        "device": tr["device"],
    }
    print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from napari_brainfeatures._util.overwrite import check_output_file
    from napari_brainfeatures.models.cnn import check_image_dtype, load_cnn
    from napari_brainfeatures.train.evaluation import (
        confusion_figure,
        iter_evaluate,
        trained_with_flips,
    )
    from napari_brainfeatures.train.patches import sample_patches
    from napari_brainfeatures.train.predict import predict_slice, slice_accuracy
    from napari_brainfeatures.train.splits import painted_classes

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
    present = painted_classes(table, labels, args.slice)
    if not len(present):
        raise ValueError(
            f"slices {args.slice} hold none of the model's classes {table.names!r}; "
            "add a --slice Z where they are painted"
        )
    if len(present) < len(table):
        missing = sorted(set(table.names) - set(present.names))
        show = _printer(args.verbose)
        show(Progress(0, None, f"classes {missing} are not painted on slices {args.slice}"))
    patches = sample_patches(
        image,
        labels,
        slices=args.slice,
        patch_size=model.config.patch_size,
        per_class=args.per_class,
        interior=False,
        classes=present,
        seed=args.seed,
    )
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
    if args.predict_stride:
        z = args.slice[0]
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
            "accuracy": slice_accuracy(pred, labels[z]),
        }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.figure:
        confusion_figure(ev, args.figure)
    print(json.dumps(report, indent=2))
    return 0
