"""``brainfeatures analyse``: how good are a trained CNN's features? (paper 000).

``analyse MODEL IMAGE --labels LABELS --train-slice Z --test-slice Z [--out DIR]``
samples patches of the model's size from a training slice (inside one area) and a
test slice (unrestricted), extracts features with the trained network and with
the same architecture at random weights (and, with ``--torchvision ARCH WEIGHTS``,
an ImageNet network from a local weights file), then reports linear/RBF SVM and
logistic-regression probe accuracies, GMM V-measure, the Gram-matrix distance to
the ideal block-diagonal matrix and the logistic-regression accuracy under growing
Gaussian noise.  Writes ``analysis.json`` and ``analysis.png`` into DIR and prints
the JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures._cli.train import SAMPLING, sampling_arg
from napari_brainfeatures.progress import run as run_gen


def register(name: str, parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("model", help="model file written by train-cnn")
    add("image", help="image volume: zarr store / group path / TIFF")
    add("--labels", default=None, help="label volume (default: the 'areas' array beside the image)")
    add("--train-slice", type=int, nargs="+", required=True, metavar="Z")
    add("--test-slice", type=int, nargs="+", required=True, metavar="Z")
    add("--per-class", type=int, default=300, help="patches per class and split (default 300)")
    add(
        "--sigmas",
        type=float,
        nargs="+",
        default=[0.0, 0.05, 0.1, 0.2, 0.3],
        help="noise standard deviations on [0, 1] images",
    )
    add("--relu", action="store_true", help="post-ReLU features (default: pre-ReLU, as the paper)")
    add("--random-seed", type=int, default=1, help="seed of the random-weight baseline")
    add(
        "--torchvision",
        nargs=2,
        default=None,
        metavar=("ARCH", "WEIGHTS"),
        help="also an ImageNet baseline, e.g. resnet18 resnet18.pth (no download)",
    )
    sampling_arg(parser)
    add("--seed", type=int, default=0)
    add("--device", default=None)
    add("--out", type=Path, default=None, help="output folder (default: MODEL_analysis)")


def run(name: str, args: argparse.Namespace) -> int:
    from napari_brainfeatures._cli.train import _open, _present_table, check_slices
    from napari_brainfeatures._util.overwrite import input_overlaps
    from napari_brainfeatures.analyse.report import (
        compare_extractors,
        feature_extractor,
        report_figure,
        report_json,
        training_input_stats,
    )
    from napari_brainfeatures.models.cnn import check_image_dtype, load_cnn
    from napari_brainfeatures.train.patches import sample_patches
    from napari_brainfeatures.workspace import write_json_atomic

    out = args.out or Path(args.model).with_name(Path(args.model).stem + "_analysis")
    if out.exists() and not out.is_dir():  # checked before any work
        raise FileExistsError(f"--out {str(out)!r} is a file; give a folder for the results")
    inputs = (args.model, args.image, *([args.labels] if args.labels else []))
    for src, how in input_overlaps(out, inputs):
        if how != "contains":  # results beside the model, in its folder, are fine
            raise FileExistsError(f"--out {str(out)!r} is or lies inside the input {str(src)!r}")
    model, meta = load_cnn(args.model, device=args.device or "cpu")
    table = meta["class_table"]
    image, labels, _, _ = _open(args)
    check_slices("--train-slice", args.train_slice, image.shape[0])
    check_image_dtype(meta, image.dtype)
    check_slices("--test-slice", args.test_slice, image.shape[0])
    opts = {"relu": args.relu, "device": args.device}
    extractors = {
        "trained": feature_extractor("cnn", model=model, **opts),
        "random": feature_extractor(
            "random",
            model=model,
            seed=args.random_seed,
            input_stats=training_input_stats(meta),
            **opts,
        ),
    }
    if args.torchvision:  # built before sampling: a missing package or file fails at once
        arch, weights = args.torchvision
        try:
            extractors[arch] = feature_extractor(
                "torchvision",
                arch=arch,
                weights=weights,
                input_size=299 if "inception" in arch else 224,
                device=args.device,
            )
        except ImportError:
            raise ValueError(
                "torchvision is not installed; pip install torchvision (the build matching "
                "your torch) to use --torchvision, or leave --torchvision out"
            ) from None
    present = _present_table(table, labels, args.train_slice + args.test_slice)
    p = model.config.patch_size
    common: dict[str, Any] = {"patch_size": p, "per_class": args.per_class, "classes": present}
    train = sample_patches(
        image,
        labels,
        slices=args.train_slice,
        interior=SAMPLING[args.sampling],
        seed=args.seed,
        **common,
    )
    test = sample_patches(
        image, labels, slices=args.test_slice, interior=False, seed=args.seed + 1, **common
    )
    report = run_gen(
        compare_extractors(
            extractors,
            (train.patches, train.labels),
            (test.patches, test.labels),
            sigmas=args.sigmas,
            seed=args.seed,
        ),
        progress_printer if args.verbose else None,
    )
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "model": str(args.model),
        "train_slices": train.slices,
        "test_slices": test.slices,
        "n_train": len(train),
        "n_test": len(test),
        "classes": table.names,
        "results": report_json(report),
    }
    write_json_atomic(out / "analysis.json", summary)
    report_figure(report, classes=table).savefig(out / "analysis.png", dpi=110)
    print(json.dumps({**summary, "out": str(out)}))
    return 0
