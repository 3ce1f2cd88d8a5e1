"""Train the CNN shipped for the micro-CT sample, test it, write it in float16 with its record.

    .venv/bin/python scripts/build_sample_model.py [--out DIR] [--quick]

The default sample (``make_microct(DEFAULT_SHAPE, seed=0)``, rendered slice by
slice), the paper's three slices 50 µm apart (train, validation, test), the
full recipe (``train.recipe.DEFAULTS``: 600 patches per class, 18 epochs, 128 px
patches, seed 0, as ``benchmarks/bench_train_cnn.py``).  The best-on-validation
network is stored in float16 (``sample_cnn.safetensors``, half the bytes) and
that stored model, cast back to float32, is evaluated on the held-out test
slice; ``sample_cnn.json`` records the figures, the recipe, the sample
generator's version, date, machine and the file's sha256.  Rerun it whenever
the sample generator's version changes (``tests/test_demo_sample_model.py``
fails until then).  ``--quick`` (a few patches, one epoch) checks the script
itself and writes elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from napari_brainfeatures import __version__
from napari_brainfeatures.models.cnn import load_cnn, save_cnn
from napari_brainfeatures.progress import run as run_gen
from napari_brainfeatures.synthetic import (
    DEFAULT_SHAPE,
    GENERATOR_VERSION,
    VOXEL_SIZE_UM,
)
from napari_brainfeatures.synthetic.weights import (
    MODEL_FILE,
    RECORD_FILE,
    WEIGHTS_DIR,
    install_sample_model,
    sample_training_splits,
    sha256_of,
)
from napari_brainfeatures.train.evaluation import evaluate
from napari_brainfeatures.train.fit import train_cnn
from napari_brainfeatures.train.recipe import DEFAULTS, make_config

SEED = 0
RECIPE: dict[str, Any] = {**DEFAULTS, "patch_size": 128, "seed": SEED, "variant": "default"}
QUICK: dict[str, Any] = {**RECIPE, "per_class": 20, "eval_per_class": 20, "epochs": 1}


def machine() -> dict[str, Any]:
    """Where the model was trained."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_avg_before": [round(v, 2) for v in os.getloadavg()],
    }


def build(out: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Train, store in float16, test the stored model; return the record."""
    t0 = time.perf_counter()
    where = machine()
    sampling = {k: recipe[k] for k in ("patch_size", "per_class", "eval_per_class", "seed")}
    vol, slices, splits = sample_training_splits(DEFAULT_SHAPE, **sampling)
    config = make_config(recipe["variant"], patch_size=recipe["patch_size"], n_classes=6)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_gen(
            train_cnn(
                splits.train,
                splits.val,
                config=config,
                epochs=recipe["epochs"],
                batch_size=recipe["batch_size"],
                lr=recipe["lr"],
                patience=recipe["patience"],
                seed=recipe["seed"],
                checkpoint_path=Path(tmp) / "cnn.safetensors",
                classes=vol.classes,
                voxel_size=VOXEL_SIZE_UM,
                split=splits.record(),
            ),
            lambda p: print(f"  {p.message}", file=sys.stderr, flush=True),
        )
        train_s = time.perf_counter() - t1
        _, meta = load_cnn(Path(tmp) / "cnn.safetensors")  # the best epoch's description
    meta.pop("class_table", None)
    meta.pop("classes", None)
    out.mkdir(parents=True, exist_ok=True)
    path = save_cnn(out / MODEL_FILE, result.model.half(), classes=vol.classes, meta=meta)
    result.model.float()
    fp32 = evaluate(result.model, splits.test)
    record: dict[str, Any] = {
        "file": MODEL_FILE,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
        "dtype": "float16",
        "test_accuracy": None,
        "macro_f1": None,
        "chance_level": round(1.0 / len(splits.test.class_ids), 4),
        "slices": {"train": slices[0], "val": slices[1], "test": slices[2]},
        "sample": {
            "generator": "napari_brainfeatures.synthetic.make_microct",
            "generator_version": GENERATOR_VERSION,
            "shape": list(DEFAULT_SHAPE),
            "seed": SEED,
            "voxel_size_um": list(VOXEL_SIZE_UM),
        },
    }
    (out / RECORD_FILE).write_text(json.dumps(record))  # what installing reads
    with tempfile.TemporaryDirectory() as tmp:
        stored, _ = load_cnn(_install_from(out, Path(tmp)))
    ev = evaluate(stored, splits.test)  # the shipped (float16) weights, 8 views per patch
    single = evaluate(stored, splits.test, tta=False)
    counts = [int(s) for s in ev.support]
    record |= {
        "test_accuracy": round(float(ev.accuracy), 4),
        "macro_f1": round(float(ev.macro_f1), 4),
        "majority_share": round(max(counts) / sum(counts), 4),
        "tta": True,
        "test_accuracy_single_view": round(float(single.accuracy), 4),
        "test_accuracy_float32": round(float(fp32.accuracy), 4),
        "per_class_f1": {c: round(float(f), 4) for c, f in zip(ev.class_names, ev.f1, strict=True)},
        "n_test": ev.n,
        "best_val_acc": round(float(result.best_val_acc), 4),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "recipe": recipe,
        "seed": SEED,
        "train_s": round(train_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {**where, "load_avg_after": [round(v, 2) for v in os.getloadavg()]},
        "package_version": __version__,
        "script": "scripts/build_sample_model.py",
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _install_from(folder: Path, dest: Path) -> Path:
    """install_sample_model for the files in ``folder`` (the shipped ones or a --quick run)."""
    from napari_brainfeatures.synthetic import weights

    saved = weights.WEIGHTS_DIR
    weights.WEIGHTS_DIR = folder
    try:
        return install_sample_model(dest)
    finally:
        weights.WEIGHTS_DIR = saved


def main(argv: list[str] | None = None) -> int:
    """The command line: build, print the record (less recipe and machine) as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"default {WEIGHTS_DIR}")
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the script")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:
        parser.error("--quick writes a model not meant to ship: give --out DIR")
    record = build(args.out or WEIGHTS_DIR, QUICK if args.quick else RECIPE)
    print(json.dumps({k: v for k, v in record.items() if k not in ("recipe", "machine")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
