"""The β-VAE and VAE shipped for the sample population: the recorded files, figures and population.

When the weights or the population generator change, these fail until the models
are rebuilt: ``.venv/bin/python scripts/build_sample_vae.py`` (a few minutes per
model on an idle 2-core machine).
"""

import pytest

from napari_brainfeatures.synthetic.weights import latent


@pytest.fixture(scope="module")
def population():
    return latent.sample_population()


def test_the_shipped_files_are_the_recorded_ones():
    record = latent.check_sample_vaes()  # every sha256, or ValueError
    assert record["recipe"] == latent.RECIPE
    for name in latent.FILES:
        model = record["models"][name]
        assert model["dtype"] == "float16" and model["bytes"] < 2**20
        assert model["beta"] == latent.RECIPE["betas"][name]


def test_the_population_is_the_one_they_were_trained_on(population):
    assert (
        latent.population_sha256(population) == latent.sample_vae_record()["population"]["sha256"]
    )


def test_a_changed_file_is_refused(tmp_path):
    for name in [*latent.FILES.values(), latent.RECORD_FILE]:
        (tmp_path / name).write_bytes((latent.WEIGHTS_DIR / name).read_bytes())
    with open(tmp_path / latent.FILES["vae"], "r+b") as f:
        f.seek(-2, 2)
        f.write(b"\x00\x3c")  # one weight changed
    with pytest.raises(ValueError, match="sample_vae.safetensors has sha256"):
        latent.check_sample_vaes(tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        latent.install_sample_vae("pca", tmp_path)


@pytest.mark.parametrize("name", sorted(latent.FILES))
def test_the_recorded_figures_hold(name, population, one_thread):
    """The stored (float16) model scores what its record says on the recorded population."""
    want = latent.sample_vae_record()["models"][name]
    model, meta = latent.load_sample_vae(name)
    assert meta["sample_model"]["sha256"] == want["sha256"]
    assert meta["sample_model"]["model_source"] == "shipped"
    got = latent.score_latent_model(model, meta, population)
    assert got["active_latents"] == want["active_latents"] >= 1  # a traversal moves something
    assert got["sections"] == want["sections"]
    for key in ("disentanglement", "mig", "recon_mse"):
        assert got[key] == pytest.approx(want[key], rel=0.02, abs=1e-3), key
    assert got["code_std"] == pytest.approx(want["code_std"], abs=0.01)


def test_the_beta_vae_is_the_more_disentangled():
    """The science the demo shows: β = 3 uses fewer latents, each for more of one thing."""
    models = latent.sample_vae_record()["models"]
    beta, vae = models["beta_vae"], models["vae"]
    assert beta["disentanglement"] > vae["disentanglement"]
    assert beta["active_latents"] <= vae["active_latents"]
    assert beta["recon_mse"] < 0.01 and vae["recon_mse"] < 0.01  # both reconstruct
