"""The demo as a user runs it: ``brainfeatures demo --headless DIR`` and ``brainfeatures demo``.

Headless (size small): the wall time of the whole pipeline (sample slices, the
shipped CNN on the sample's held-out test slice, dense maps, NMF, selection,
cortex clusters, feature analyses, the shipped β-VAE / VAE and PCA on a
population) and what it shows: ``demo_test_accuracy`` (each test patch the mean
of its 8 flips), ``chance_level``, ``macro_f1``, the dense map's
``slice_accuracy`` on the test slice, ``model_source``, the latent models'
disentanglement and active latents, and each stage's time (from its progress
records).

Viewer: ``viewer_ready_s``, from launching ``brainfeatures demo`` (a subprocess,
under ``xvfb-run`` when there is no display) to every dock's work done and its
layers drawn (the hidden ``--exit-when-ready`` flag prints the moment and
quits).  Run twice with a fresh ``BRAINFEATURES_HOME``: ``first_run`` generates
the sample, ``warm`` finds it cached (the target's "after the first run").

``demo_cpu_s`` and the viewer's ``cpu_s`` (CPU seconds, all threads) do not
depend on what else runs on a shared machine: on an idle 2-core one the wall
time is at least half of them.  ``load_avg_*`` say how busy the machine was.

Targets (``met``): ``demo_wall_s`` <= 180 s, ``demo_test_accuracy`` >= 0.85,
``viewer_ready_s`` (warm) <= 60 s.  ``--quick`` runs size ``tiny`` headless (a
3-epoch model, not meant to be good) and skips the viewer.
``BENCH_DEMO_TRAIN=1`` trains every network anew (size small: the CNN's full
recipe and both VAEs', about 15 min on an idle 2-core machine) instead of the shipped ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from napari_brainfeatures._cli.demo import READY
from napari_brainfeatures.pipeline import run_pipeline
from napari_brainfeatures.progress import Progress
from napari_brainfeatures.progress import run as run_gen

STAGES = ("sample", "patches", "cnn", "dense", "factors", "analyse", "vae")
TARGETS = {"demo_wall_s": 180.0, "demo_test_accuracy": 0.85, "viewer_ready_s": 60.0}
VIEWER_TIMEOUT_S = 900


def headless(size: str, out: Path) -> dict[str, Any]:
    train = True if os.environ.get("BENCH_DEMO_TRAIN") == "1" else None
    marks: dict[int, float] = {}
    cpu0, t0 = time.process_time(), time.perf_counter()

    def seen(rec: Progress) -> None:
        marks.setdefault(rec.step, time.perf_counter() - t0)

    summary = run_gen(run_pipeline(out, size=size, train=train), seen)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    steps = sorted(marks)
    ends = [marks[s] for s in steps[1:]] + [wall]
    stage_s = {STAGES[s]: round(e - marks[s], 1) for s, e in zip(steps, ends, strict=True)}
    factors = summary["factors"]
    return {
        "size": size,
        "demo_wall_s": round(wall, 1),
        "demo_cpu_s": round(cpu, 1),  # all threads: on an idle 2-core machine wall >= cpu / 2
        "model_source": summary["model_source"],
        "demo_test_accuracy": summary["test_accuracy"],
        "chance_level": summary["chance_level"],
        "macro_f1": summary["macro_f1"],
        "dense_slice_accuracy": summary["dense"]["slice_accuracy"],
        "dense_stride": summary["dense"]["stride"],
        "test_slice": summary["test_slice"],
        "test_patches": summary["cnn"]["test_patches"],
        "cortex_layers_ari": factors["cortex_layers"].get("ari"),
        "cortex_layers_ari_smoothed": factors.get("cortex_layers_smoothed", {}).get("ari"),
        "latent": {
            name: {k: r[k] for k in ("model_source", "active_latents", "disentanglement", "mig")}
            for name, r in summary.get("vae", {}).items()
        },
        "stage_s": stage_s,
        "model_note": summary.get("model_note"),
    }


def viewer_ready(home: Path) -> dict[str, Any]:
    """Seconds from launching ``brainfeatures demo`` to its ready line; the line's outcome."""
    exe = Path(sys.executable).with_name("brainfeatures")
    cmd = [str(exe), "demo", "--exit-when-ready"]
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        if shutil.which("xvfb-run") is None:
            return {"error": "no display and no xvfb-run"}
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", *cmd]
    env = {**os.environ, "BRAINFEATURES_HOME": str(home)}
    t0, cpu0 = time.time(), _children_cpu()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=VIEWER_TIMEOUT_S)  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"error": f"not ready within {VIEWER_TIMEOUT_S} s"}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(READY)), None)
    if line is None:
        return {"error": f"exit {proc.returncode}, no ready line: {proc.stderr[-500:]}"}
    outcome = json.loads(line[len(READY) :])
    return {
        "ready_s": round(outcome["unix_time"] - t0, 1),
        "exit_s": round(time.time() - t0, 1),
        "cpu_s": round(_children_cpu() - cpu0, 1),  # the demo and Xvfb, start to exit
        "ok": outcome["ok"],
        "steps": outcome["steps"],
        "step_s": outcome.get("step_s"),
        "error": outcome["error"],
    }


def _children_cpu() -> float:
    import resource

    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def run(quick: bool, out: Path) -> dict[str, Any]:
    load_before = os.getloadavg()
    res = headless("tiny" if quick else "small", out / "demo")
    if quick:
        res["viewer"] = "skipped (--quick)"
    else:
        home = out / "home"  # no sample yet: the first run generates it
        first, warm = viewer_ready(home), viewer_ready(home)
        res["viewer_ready_first_run_s"] = first.get("ready_s")
        res["viewer_ready_s"] = warm.get("ready_s")
        res["viewer"] = {"first_run": first, "warm": warm}
    res["targets"] = {
        k: (f"<= {v:g}" if k.endswith("_s") else f">= {v:g}") for k, v in TARGETS.items()
    }
    met = {}
    for key, bound in TARGETS.items():
        value = res.get(key)
        met[key] = None if quick or value is None else (
            value <= bound if key.endswith("_s") else value >= bound)  # fmt: skip
    res["met"] = met
    res["met_all"] = None if quick else all(v is True for v in met.values())
    res["load_avg_before"] = [round(v, 2) for v in load_before]
    res["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    return res
