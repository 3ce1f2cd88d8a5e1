"""End to end: the headless demo pipeline on tiny synthetic data."""

import json

import pytest

from napari_brainfeatures.cli import main
from napari_brainfeatures.factors.results import open_factors
from napari_brainfeatures.pipeline import run_pipeline
from napari_brainfeatures.progress import run


@pytest.mark.slow
def test_tiny_pipeline_writes_every_result(tmp_path):
    records = []
    summary = run(run_pipeline(tmp_path, size="tiny", seed=0), records.append)
    # every stage reported, in order
    steps = [r.step for r in records]
    assert steps == sorted(steps) and set(steps) >= {0, 1, 2, 3, 4, 5}
    for name in summary["files"]:
        assert (tmp_path / name).exists(), name
    assert json.loads((tmp_path / "summary.json").read_text())["size"] == "tiny"
    assert 0.0 <= summary["cnn"]["test_accuracy"] <= 1.0
    assert summary["model_source"] == "trained" and "not meant to be good" in summary["model_note"]
    assert summary["test_accuracy"] == summary["cnn"]["test_accuracy"]
    assert summary["chance_level"] == pytest.approx(1 / 6, abs=1e-4)
    assert summary["dense"]["grid"] == [128, 128]
    assert summary["factors"]["k"] == 15 and len(summary["factors"]["pairs"]) == 6
    saved = open_factors(tmp_path / "factors.zarr")  # reopened on the test slice's grid
    assert saved.k == 15 and saved.grid.z == summary["dense"]["z"]
    assert saved.grid.shape == tuple(summary["dense"]["grid"]) and len(saved.selection.pairs) == 6
    assert set(summary["analysis"]) == {"trained CNN", "random weights"}
    assert "vae" in summary and set(summary["vae"]) == {"beta_vae", "vae", "pca"}


def test_unknown_size_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        main(["demo", "--headless", str(tmp_path), "--size", "huge"])
    with pytest.raises(ValueError, match="size must be one of"):
        run(run_pipeline(tmp_path, size="huge"))


def test_the_shipped_model_needs_the_sample(tmp_path):
    with pytest.raises(ValueError, match="does not fit the model shipped"):
        run(run_pipeline(tmp_path, size="tiny", train=False))
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_shipped_model_on_the_sample_reports_its_accuracy(tmp_path, monkeypatch):
    """The default path (the shipped CNN on the sample's test slice), sizes cut down."""
    from dataclasses import replace

    from napari_brainfeatures import pipeline
    from napari_brainfeatures.synthetic.weights import sample_model_record

    quick = replace(pipeline.PRESETS["small"], stride=48, erode=8, smooth=0, eval_per_class=8,
                    analyse_per_class=None)  # fmt: skip
    monkeypatch.setitem(pipeline.PRESETS, "small", quick)
    summary = run(run_pipeline(tmp_path, vae=False))
    record = sample_model_record()
    assert summary["model_source"] == "shipped" and "model_note" not in summary
    assert summary["test_slice"] == record["slices"]["test"] == summary["dense"]["z"]
    assert summary["chance_level"] == pytest.approx(1 / 6, abs=1e-4)
    # 48 test patches: well above chance, not the record's figure to the point
    assert summary["test_accuracy"] >= 0.6 and summary["cnn"]["test_patches"] == 48
    assert summary["cnn"]["record"]["sha256"] == record["sha256"]
    assert summary["dense"]["slice_accuracy"] > 0.5
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["test_accuracy"] == summary["test_accuracy"]


def test_full_preset_trains_as_the_defaults_and_on_the_sample():
    from napari_brainfeatures.pipeline import PRESETS
    from napari_brainfeatures.synthetic import DEFAULT_SHAPE
    from napari_brainfeatures.train.fit import DEFAULTS

    full = PRESETS["full"]
    assert (full.per_class, full.epochs) == (DEFAULTS["per_class"], DEFAULTS["epochs"])
    assert full.shape == DEFAULT_SHAPE and full.patch_size == 128


@pytest.mark.slow
def test_the_latent_stage_uses_the_vaes_shipped_for_the_population(tmp_path, monkeypatch):
    """Size small: the shipped β-VAE and VAE, scored (fewer sections here) as the PCA fitted."""
    from napari_brainfeatures import pipeline
    from napari_brainfeatures.models.checkpoint import read_header
    from napari_brainfeatures.synthetic.weights import latent

    monkeypatch.setattr(latent, "SCORE_SECTIONS", 24)
    summary, records = {"files": []}, []
    run(pipeline._stage_vae(tmp_path, pipeline.PRESETS["small"], 0, summary, shipped=True),
        records.append)  # fmt: skip
    assert not any("loss" in r.values for r in records)  # nothing trained
    vae = summary["vae"]
    assert {k: v["model_source"] for k, v in vae.items()} == {
        "beta_vae": "shipped", "vae": "shipped", "pca": "fitted"}  # fmt: skip
    for name in summary["files"]:
        assert (tmp_path / name).exists(), name
    meta = read_header(tmp_path / "beta_vae.safetensors")["meta"]
    assert (
        meta["sample_model"]["sha256"] == latent.sample_vae_record()["models"]["beta_vae"]["sha256"]
    )
    assert all(v["sections"] == 24 and 0 <= v["active_latents"] <= 8 for v in vae.values())
    assert vae["pca"]["active_latents"] == 8 and vae["vae"]["active_latents"] >= 1
