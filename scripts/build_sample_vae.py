"""Train the β-VAE and VAE shipped for the sample population; write them in float16 with a record.

    .venv/bin/python scripts/build_sample_vae.py [--out DIR] [--quick]

The recipe is :data:`napari_brainfeatures.synthetic.weights.latent.RECIPE`
(512 sections of 64×96, seed 0, 30 % with artefacts; 8 latents, batch 16,
lr 1e-3, 100 epochs; β = 3 and β = 1), the one the ``vae`` benchmark found to
converge on a CPU (a few minutes per model on 2 cores).  Each best-on-validation
network is stored in float16, and the stored model, cast back to float32, is
scored on the population's first clean sections (``score_latent_model``);
``sample_vae.json`` records those figures, the recipe, the population's
fingerprint, date, machine and each file's sha256.  Rerun it when the population
generator changes (``tests/test_demo_sample_vae.py`` fails until then).
``--quick`` (64 sections, 2 epochs) checks the script and writes elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from napari_brainfeatures import __version__
from napari_brainfeatures.latent.model import fit_latent_model
from napari_brainfeatures.models.vae import load_vae, save_vae
from napari_brainfeatures.progress import run as run_gen
from napari_brainfeatures.synthetic.weights import WEIGHTS_DIR, sha256_of
from napari_brainfeatures.synthetic.weights.latent import (
    FILES,
    RECIPE,
    RECORD_FILE,
    load_sample_vae,
    population_sha256,
    sample_population,
    score_latent_model,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_sample_model import machine  # noqa: E402  (the sibling script: where it ran)

QUICK: dict[str, Any] = {**RECIPE, "n": 64, "epochs": 2}


def build(out: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Train both models, store them in float16, score the stored ones; return the record."""
    where = machine()
    pop = sample_population(recipe)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"recipe": recipe, "models": {}}
    record["population"] = {
        "generator": "napari_brainfeatures.synthetic.make_population",
        "sha256": population_sha256(pop),
    }
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(len(recipe["betas"])) as pool:
        jobs = {name: pool.submit(_train_one, name, beta, recipe, Path(tmp) / name)
                for name, beta in recipe["betas"].items()}  # fmt: skip
        for name, job in jobs.items():
            trained, train_s = job.result()
            model, meta = load_vae(trained)  # the best epoch, as written
            path = save_vae(out / FILES[name], model.half(), meta=meta)
            record["models"][name] = {
                "file": FILES[name],
                "sha256": sha256_of(path),
                "bytes": path.stat().st_size,
                "dtype": "float16",
                "beta": recipe["betas"][name],
                "best_val_loss": round(float(meta["training"]["best_val_loss"]), 3),
                "best_epoch": meta["training"].get("best_epoch"),
                "train_s": round(train_s, 1),
            }
    (out / RECORD_FILE).write_text(json.dumps(record))  # what loading the stored models reads
    for name in FILES:
        stored, meta = load_sample_vae(name, source=out)
        record["models"][name] |= score_latent_model(stored, meta, pop)
    where["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    record["date"], record["machine"] = time.strftime("%Y-%m-%dT%H:%M:%S%z"), where
    record["package_version"], record["script"] = __version__, "scripts/build_sample_vae.py"
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _train_one(name: str, beta: float, recipe: dict[str, Any], path: Path) -> tuple[Path, float]:
    """One model, in its own process on one thread.

    On a busy 2-core machine, two such processes train both models several
    times faster than one process with two threads (10 s an epoch against 50).
    """
    torch.set_num_threads(1)
    pop = sample_population(recipe)
    t0 = time.perf_counter()
    gen = fit_latent_model(
        pop.images, kind="vae" if name == "vae" else "beta-vae", latent_dim=recipe["latent_dim"],
        beta=beta, seed=recipe["seed"], epochs=recipe["epochs"], batch_size=recipe["batch_size"],
        lr=recipe["lr"], roi_names=list(pop.roi_names), checkpoint_path=path,
    )  # fmt: skip
    fitted = run_gen(gen, lambda p: _say(name, p))
    return Path(fitted.path), time.perf_counter() - t0


def _say(name: str, p: Any) -> None:
    if "loss" in p.values:  # one line per epoch
        print(f"  {name}: {p.message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """The command line: build, print each model's figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help=f"default {WEIGHTS_DIR}; needed with --quick")
    parser.add_argument("--quick", action="store_true", help="tiny models, to check the script")
    args = parser.parse_args(argv)
    if args.quick and args.out is None:  # never over the shipped files
        parser.error("--quick writes models not meant to ship: give --out DIR")
    print(json.dumps(build(args.out or WEIGHTS_DIR, QUICK if args.quick else RECIPE)["models"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
