"""The β-VAE and VAE shipped for the sample population: recipe, files, record, loading.

The headless demo's latent stage used to train both VAEs for 10 epochs on 256
sections of 160×224 at its start: about 100 s on 2 cores, and models whose KL
term had collapsed (codes near constant, flat traversals).  The models shipped
here are trained once, by ``scripts/build_sample_vae.py``, with the recipe the
``vae`` benchmark found to converge on a CPU (:data:`RECIPE`: 512 sections of
64×96 from :func:`~napari_brainfeatures.synthetic.make_population` seed 0, 30 %
with artefacts, 8 latents, batch 16, lr 1e-3, 100 epochs; β = 3 and β = 1),
and stored in float16 (``sample_beta_vae.safetensors``, ``sample_vae.safetensors``,
a few hundred kB each).  ``sample_vae.json`` records their figures on that
population (active latents, the paper's disentanglement score, the mutual
information gap, reconstruction), the population's fingerprint, date, machine
and each file's sha256; ``tests/test_demo_sample_vae.py`` checks the files and
recomputes the figures, so they fail when the weights or the generator change.

:func:`install_sample_vae` writes one as an ordinary float32 model file (read by
:func:`~napari_brainfeatures.latent.model.load_latent_model`);
:func:`load_sample_vae` loads it.  Weights are safetensors, the record JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures.synthetic.weights import META_KEY, WEIGHTS_DIR, sha256_of

__all__ = [
    "FILES",
    "RECIPE",
    "RECORD_FILE",
    "check_sample_vaes",
    "install_sample_vae",
    "load_sample_vae",
    "population_sha256",
    "sample_population",
    "sample_vae_record",
    "score_latent_model",
]

#: How the shipped VAEs were trained (``scripts/build_sample_vae.py``); the demo's
#: ``--train`` path trains with it too.
RECIPE: dict[str, Any] = {
    "n": 512,
    "shape": [64, 96],
    "artifact_fraction": 0.3,
    "population_seed": 0,
    "seed": 0,
    "latent_dim": 8,
    "epochs": 100,
    "batch_size": 16,
    "lr": 1e-3,
    "betas": {"beta_vae": 3.0, "vae": 1.0},
}
FILES = {"beta_vae": "sample_beta_vae.safetensors", "vae": "sample_vae.safetensors"}
RECORD_FILE = "sample_vae.json"
SCORE_SECTIONS = 256  # clean sections the recorded figures are computed on


def sample_population(recipe: dict[str, Any] | None = None, *, seed: int | None = None) -> Any:
    """The recipe's population (``seed`` overrides its population seed)."""
    from napari_brainfeatures.synthetic.population import make_population

    r = recipe or RECIPE
    s = r["population_seed"] if seed is None else seed
    shape = (int(r["shape"][0]), int(r["shape"][1]))
    return make_population(
        int(r["n"]), shape=shape, seed=s, artifact_fraction=r["artifact_fraction"]
    )


def population_sha256(pop: Any) -> str:
    """Fingerprint of a population's sections (float32 bytes): a generator change shows."""
    return hashlib.sha256(np.ascontiguousarray(pop.images, np.float32).tobytes()).hexdigest()


def sample_vae_record(folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The shipped VAEs' record (``sample_vae.json``)."""
    path = Path(folder or WEIGHTS_DIR) / RECORD_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"the sample VAEs' record {str(path)!r} is missing; rebuild it with "
            "`python scripts/build_sample_vae.py`"
        )
    return json.loads(path.read_text())


def _file(name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    if name not in FILES:
        raise ValueError(f"name must be one of {sorted(FILES)!r}, got {name!r}")
    path = Path(folder or WEIGHTS_DIR) / FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"the sample model {str(path)!r} is missing from this installation; reinstall "
            "the package or build it with `python scripts/build_sample_vae.py`"
        )
    return path


def check_sample_vaes(folder: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The record, once every shipped file's sha256 matches it (else ValueError)."""
    record = sample_vae_record(folder)
    for name in FILES:
        digest, want = sha256_of(_file(name, folder)), record["models"][name]["sha256"]
        if digest != want:
            raise ValueError(
                f"{FILES[name]} has sha256 {digest!r}, its record says {want!r}; rebuild both "
                "with `python scripts/build_sample_vae.py`"
            )
    return record


def install_sample_vae(
    name: str, folder: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None
) -> Path:
    """Write shipped model ``name`` ("beta_vae" or "vae") into ``folder`` in float32.

    The file is an ordinary β-VAE model file; its meta holds the record's
    figures for that model under ``"sample_model"``.  ``source``: the folder
    holding the float16 files and record (default: the shipped ones).
    """
    from safetensors.torch import load_file

    from napari_brainfeatures.models.checkpoint import read_header
    from napari_brainfeatures.models.vae import BetaVAE, VAEConfig, save_vae

    src = _file(name, source)
    record = sample_vae_record(source)
    header = read_header(src)
    model = BetaVAE(VAEConfig.from_dict(header["config"]))
    model.load_state_dict({k: v.float() for k, v in load_file(str(src)).items()}, strict=True)
    meta = dict(header["meta"])
    meta[META_KEY] = {"model_source": "shipped", **record["models"][name]}
    target = Path(folder) / FILES[name].replace("sample_", "")
    return save_vae(target, model.eval(), meta=meta)


def load_sample_vae(
    name: str, *, source: str | os.PathLike[str] | None = None
) -> tuple[Any, dict[str, Any]]:
    """Shipped model ``name`` as a numpy latent model in float32: ``(model, meta)``."""
    from napari_brainfeatures.latent.model import load_latent_model

    with tempfile.TemporaryDirectory(prefix="brainfeatures-sample-vae-") as tmp:
        return load_latent_model(install_sample_vae(name, tmp, source=source))


def score_latent_model(
    model: Any, meta: dict[str, Any], pop: Any, *, seed: int = 0
) -> dict[str, Any]:
    """What the record states of a latent model, on the first clean sections of ``pop``.

    ``active_latents`` (code variance > 0.01), ``disentanglement`` (the paper's
    score of the receptive-field impact matrix), ``mig`` (mutual information
    gap on the known factors), ``recon_mse`` (clean sections) and
    ``code_std`` (per latent).
    """
    from napari_brainfeatures.latent.codes import active_units
    from napari_brainfeatures.latent.disentangle import mutual_info_gap
    from napari_brainfeatures.latent.explore import disentanglement_score, receptive_fields
    from napari_brainfeatures.latent.population import preprocess_for, roi_names_for
    from napari_brainfeatures.progress import run

    idx = np.flatnonzero(pop.artifact == 0)[:SCORE_SECTIONS]
    clean = preprocess_for(pop.clean[idx], meta)  # (N, H, W) in [0, 1]
    ids = sorted(int(i) for i in np.unique(pop.rois) if i)
    names = roi_names_for(ids, list(pop.roi_names))
    rf = run(receptive_fields(model, clean, pop.rois, roi_ids=ids, roi_names=names, seed=seed))
    codes = model.encode(clean)  # (N, L)
    recon = np.clip(model.decode(codes), 0, 1)  # (N, H, W)
    mig = mutual_info_gap(codes, pop.factors[idx], factor_names=list(pop.factor_names))
    return {
        "active_latents": int(active_units(codes).sum()),
        "disentanglement": round(float(disentanglement_score(rf.impact)), 4),
        "mig": round(float(mig["mig"]), 4),
        "recon_mse": round(float(np.mean((recon - clean) ** 2)), 5),
        "code_std": [round(float(s), 3) for s in codes.std(0)],
        "sections": len(idx),
    }
