"""``brainfeatures analyse``: how good are a trained CNN's features? (paper 000).

``analyse MODEL IMAGE --labels LABELS --train-slice Z --test-slice Z [--out DIR]``
samples patches of the model's size from a training slice (inside one area) and a
test slice (unrestricted) for the model's classes painted on both (the others are
left out with a warning), extracts features with the trained network and with
the same architecture at random weights (and, with ``--torchvision ARCH WEIGHTS``,
an ImageNet network from a local weights file), then reports linear/RBF SVM and
logistic-regression probe accuracies, GMM V-measure, the Gram-matrix distance to
the ideal block-diagonal matrix and the logistic-regression accuracy under growing
Gaussian noise.  Writes ``analysis.json`` and ``analysis.png`` into DIR and prints
the JSON on stdout.  The work is one core call,
:func:`napari_brainfeatures.analyse.report.analyse_model`, as in the Analyse dock.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from napari_brainfeatures._cli import progress_printer
from napari_brainfeatures._cli.train import SAMPLING, sampling_arg
from napari_brainfeatures.progress import run as run_gen


def register(name: str, parser: argparse.ArgumentParser) -> None:
    from napari_brainfeatures.train import bounds as b

    add = parser.add_argument
    add("model", help="model file written by train-cnn")
    add("image", help="image volume: zarr store / group path / TIFF")
    add("--labels", default=None, help="label volume (default: the 'areas' array beside the image)")
    add("--train-slice", type=b.SLICE, nargs="+", default=None, metavar="Z",
        help="default: the model's own split (slices, or regions of one section)")  # fmt: skip
    add("--test-slice", type=b.SLICE, nargs="+", default=None, metavar="Z")
    add(
        "--split-mask", default=None, metavar="PATH", help="the drawn split of a --split mask model"
    )
    add(
        "--per-class",
        type=b.PER_CLASS,
        default=300,
        help="patches per class and split (default 300)",
    )
    add(
        "--sigmas",
        type=b.SIGMA,
        nargs="+",
        default=[0.0, 0.05, 0.1, 0.2, 0.3],
        help="noise standard deviations on [0, 1] images",
    )
    add("--relu", action="store_true", help="post-ReLU features (default: pre-ReLU, as the paper)")
    add("--random-seed", type=b.SEED, default=1, help="seed of the random-weight baseline")
    add(
        "--torchvision",
        nargs=2,
        default=None,
        metavar=("ARCH", "WEIGHTS"),
        help="also an ImageNet baseline, e.g. resnet18 resnet18.pth (no download)",
    )
    sampling_arg(parser)
    add("--seed", type=b.SEED, default=0)
    add("--device", default=None)
    add("--out", type=Path, default=None, help="output folder (default: MODEL_analysis)")
    add("--overwrite", action="store_true", help="replace an earlier analysis in the folder")


def run(name: str, args: argparse.Namespace) -> int:
    from napari_brainfeatures._cli.train import _open, check_slices
    from napari_brainfeatures._util.overwrite import input_overlaps
    from napari_brainfeatures.analyse.report import analyse_model, report_figure
    from napari_brainfeatures.workspace import write_json_atomic

    out = args.out or Path(args.model).with_name(Path(args.model).stem + "_analysis")
    if out.exists() and not out.is_dir():  # checked before any work
        raise FileExistsError(f"--out {str(out)!r} is a file; give a folder for the results")
    inputs = (args.model, args.image, *([args.labels] if args.labels else []))
    for src, how in input_overlaps(out, inputs):
        if how != "contains":  # results beside the model, in its folder, are fine
            raise FileExistsError(f"--out {str(out)!r} is or lies inside the input {str(src)!r}")
    image, labels, _, _ = _open(args)
    check_slices("--train-slice", args.train_slice, image.shape[0])
    check_slices("--test-slice", args.test_slice, image.shape[0])
    both = sorted(set(args.train_slice or []) & set(args.test_slice or []))
    if both:  # the probes would be scored on patches beside those they were fitted on
        import warnings

        warnings.warn(f"slice(s) {both} are both --train-slice and --test-slice: the probe "
                      "scores are not a test; give test slices apart from the training ones",
                      stacklevel=1)  # fmt: skip
    earlier = [f for f in ("analysis.json", "analysis.png") if (out / f).exists()]
    if earlier and not args.overwrite:
        raise FileExistsError(
            f"--out {str(out)!r} already holds {' and '.join(earlier)}; pass --overwrite to "
            "replace them, or choose another folder"
        )
    same = (
        "per_class",
        "sigmas",
        "relu",
        "random_seed",
        "seed",
        "device",
    )  # as the core names them
    gen = analyse_model(
        args.model,
        image,
        labels,
        train_slices=args.train_slice,
        test_slices=args.test_slice,
        split_mask=args.split_mask,
        torchvision=tuple(args.torchvision) if args.torchvision else None,
        interior=SAMPLING[args.sampling],
        **{k: getattr(args, k) for k in same},
    )
    try:
        result = run_gen(gen, progress_printer if args.verbose else None)
    except ImportError:
        if not args.torchvision:
            raise
        raise ValueError(
            "torchvision is not installed; pip install torchvision (the build matching "
            "your torch) to use --torchvision, or leave --torchvision out"
        ) from None
    out.mkdir(parents=True, exist_ok=True)
    summary = {"model": str(args.model), **result.to_dict()}
    write_json_atomic(out / "analysis.json", summary)
    report_figure(result.report, classes=result.classes).savefig(out / "analysis.png", dpi=110)
    print(json.dumps({**summary, "out": str(out)}))
    return 0
