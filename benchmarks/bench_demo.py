"""The headless demo as a user runs it: ``brainfeatures demo --headless DIR`` (size small).

Measures the wall time of the whole pipeline (sample slices, the shipped CNN on
the sample's held-out test slice, dense maps, NMF, selection, cortex clusters,
feature analyses, β-VAE / VAE / PCA) and what it shows: ``test_accuracy``
(each test patch the mean of its 8 flips), ``chance_level``, ``macro_f1``, the
dense map's ``slice_accuracy`` on the test slice and ``model_source``, plus the
time of each stage (from its progress records).  Target: ``test_accuracy`` >= 0.85
with the default size.  ``--quick`` runs size ``tiny`` (a 3-epoch model, not
meant to be good).  ``BENCH_DEMO_TRAIN=1`` trains the CNN anew (size small: the
full recipe, about 10 min on 2 cores) instead of using the shipped one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from napari_brainfeatures.pipeline import run_pipeline
from napari_brainfeatures.progress import Progress
from napari_brainfeatures.progress import run as run_gen

STAGES = ("sample", "patches", "cnn", "dense", "factors", "analyse", "vae")


def run(quick: bool, out: Path) -> dict[str, Any]:
    size = "tiny" if quick else "small"
    train = True if os.environ.get("BENCH_DEMO_TRAIN") == "1" else None
    load_before = os.getloadavg()
    marks: dict[int, float] = {}
    t0 = time.perf_counter()

    def seen(rec: Progress) -> None:
        marks.setdefault(rec.step, time.perf_counter() - t0)

    summary = run_gen(run_pipeline(out / "demo", size=size, train=train), seen)
    wall = time.perf_counter() - t0
    steps = sorted(marks)
    ends = [marks[s] for s in steps[1:]] + [wall]
    stage_s = {STAGES[s]: round(e - marks[s], 1) for s, e in zip(steps, ends, strict=True)}
    acc = summary["test_accuracy"]
    return {
        "size": size,
        "wall_s": round(wall, 1),
        "model_source": summary["model_source"],
        "test_accuracy": acc,
        "chance_level": summary["chance_level"],
        "macro_f1": summary["macro_f1"],
        "dense_slice_accuracy": summary["dense"]["slice_accuracy"],
        "dense_stride": summary["dense"]["stride"],
        "test_slice": summary["test_slice"],
        "test_patches": summary["cnn"]["test_patches"],
        "cortex_layers_ari": summary["factors"]["cortex_layers"].get("ari"),
        "cortex_layers_ari_smoothed": summary["factors"]
        .get("cortex_layers_smoothed", {})
        .get("ari"),
        "stage_s": stage_s,
        "model_note": summary.get("model_note"),
        "target": "test_accuracy >= 0.85 with the default size (small)",
        "met": None if quick else bool(acc >= 0.85),
        "load_avg_before": [round(v, 2) for v in load_before],
        "load_avg_after": [round(v, 2) for v in os.getloadavg()],
    }
