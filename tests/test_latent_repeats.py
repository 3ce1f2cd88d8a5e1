"""Repeated runs: seeds, progress, one file per seed, medians with ranges or intervals."""

import numpy as np
import pytest

from napari_brainfeatures.latent.model import load_latent_model
from napari_brainfeatures.latent.repeats import (
    Spread,
    fit_latent_repeats,
    iter_repeats,
    parse_seeds,
    seeded_path,
    seeds_agreeing,
    summarise,
)
from napari_brainfeatures.progress import Progress, run


@pytest.mark.parametrize(
    ("seeds", "repeats", "expected"),
    [(None, None, [0]), (None, 3, [0, 1, 2]), ("4, 7,9", None, [4, 7, 9]), ([2, 5], 2, [2, 5])],
)
def test_parse_seeds(seeds, repeats, expected):
    assert parse_seeds(seeds, repeats) == expected


@pytest.mark.parametrize(
    ("seeds", "repeats", "match"),
    [
        ("0,x", None, "integers separated by commas"),
        ("1,1", None, "must differ"),
        ("0,1", 3, "repeats=3 but 2 seeds"),
        (None, 0, "repeats"),
        ("-1", None, "seed"),
    ],
)
def test_parse_seeds_refuses(seeds, repeats, match):
    with pytest.raises(ValueError, match=match):
        parse_seeds(seeds, repeats)


def test_seeded_path():
    assert seeded_path("m/vae.safetensors", 3).name == "vae_seed3.safetensors"
    assert seeded_path("m/vae", 0).name == "vae_seed0.safetensors"


def _fit(seed):
    for step in range(4):
        yield Progress(step + 1, 4, f"step {step}")
    return seed * 10


def test_iter_repeats_passes_progress_on_in_order_and_closes_on_cancel():
    records = []
    assert run(iter_repeats(_fit, [3, 1]), records.append) == [30, 10]
    steps = [r.step for r in records]
    assert steps == sorted(steps) and records[-1].step == records[-1].total == 2000
    assert records[0].values == {"run": 0, "seed": 3}
    assert records[1].message == "seed 3 (1/2): step 0"
    assert any(r.message.startswith("seed 1 (2/2)") for r in records)

    closed = []

    def fit(seed):
        try:
            yield Progress(0, 1)
            yield Progress(1, 1)
        finally:
            closed.append(seed)
        return seed

    gen = iter_repeats(fit, [5, 6])
    next(gen), next(gen)  # inside the first run
    gen.close()  # Cancel
    assert closed == [5]


def test_summarise_median_range_and_bootstrap():
    runs = [{"acc": 0.8, "n": 3, "ok": True, "name": "a", "x": None},
            {"acc": 0.9, "n": 5, "ok": True, "name": "b", "x": 1.0},
            {"acc": 0.7, "n": 4, "ok": False, "name": "c", "x": 2.0}]  # fmt: skip
    s = summarise(runs)
    assert set(s) == {"acc", "n"}  # bools, strings and gaps are not metrics
    assert s["acc"] == Spread(0.8, 0.7, 0.9, (0.8, 0.9, 0.7))
    assert str(s["acc"]) == "0.8 [0.7–0.9]" and s["acc"].as_dict()["values"] == [0.8, 0.9, 0.7]
    x = np.random.default_rng(0).normal(size=9)
    boot = summarise([{"v": v} for v in x], interval="bootstrap")["v"]
    assert boot.kind == "bootstrap" and x.min() <= boot.low < boot.median < boot.high <= x.max()
    assert (boot.high - boot.low) < (x.max() - x.min())  # the median is surer than one run
    assert str(summarise([{"v": 5}, {"v": 5}])["v"]) == "5"  # all runs agree: no range
    one = summarise([{"v": 2.0}], interval="bootstrap")["v"]
    assert str(one) == "2" and one.kind == "range"
    with pytest.raises(ValueError, match="interval"):
        summarise(runs, interval="sd")
    with pytest.raises(ValueError, match="no runs"):
        summarise([])


def test_seeds_agreeing():
    assert seeds_agreeing([0.3, 0.1, 0.5], [0.2, 0.2, 0.4]) == 2
    with pytest.raises(ValueError, match="paired"):
        seeds_agreeing([1.0], [1.0, 2.0])


def test_fit_latent_repeats_saves_one_model_per_seed(tmp_path):
    images = np.random.default_rng(0).random((12, 32, 48)).astype(np.float32)
    fitted = run(
        fit_latent_repeats(
            images, kind="pca", latent_dim=3, seeds=[4, 2], checkpoint_path=tmp_path / "p"
        )
    )
    assert [f.path.name for f in fitted] == ["p_seed4.safetensors", "p_seed2.safetensors"]
    model, meta = load_latent_model(fitted[1].path)
    assert model.latent_dim == 3 and model.seed == 2
    with pytest.raises(ValueError, match="kind"):  # checked before the first run
        fit_latent_repeats(images, kind="gan", seeds=[0])


def test_cli_train_vae_repeats_then_latent_compares_with_medians(tmp_path, capsys):
    import json

    from napari_brainfeatures import cli
    from test_latent_population import write_population

    pop = write_population(tmp_path / "pop.zarr")
    out = tmp_path / "vae.safetensors"
    small = ["--n-down", "3", "--channels", "4", "--epochs", "1", "--batch-size", "4"]
    argv = ["train-vae", str(pop), "--out", str(out), "--model", "vae", "--latent", "2", *small]
    assert cli.main([*argv, "--seeds", "3,5"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["seeds"] == [3, 5] and [r["seed"] for r in res["runs"]] == [3, 5]
    paths = [tmp_path / f"vae_seed{s}.safetensors" for s in (3, 5)]
    assert [r["path"] for r in res["runs"]] == list(map(str, paths))
    loss = res["summary"]["best_val_loss"]
    assert loss["low"] <= loss["median"] <= loss["high"] and len(loss["values"]) == 2
    assert load_latent_model(paths[1])[1]["training"]["seed"] == 5  # recorded
    assert cli.main([*argv, "--repeats", "2"]) == 0  # seeds 0, 1: other files
    capsys.readouterr()
    # the same files again: refused, naming the first that exists, nothing trained
    assert cli.main([*argv, "--seeds", "5,3"]) == 2
    assert "vae_seed5.safetensors" in capsys.readouterr().err
    assert cli.main([*argv, "--repeats", "3", "--seeds", "1,2"]) == 2
    assert "repeats=3 but 2 seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: a bad list is a usage error
        cli.main([*argv, "--seeds", "1,one"])
    capsys.readouterr()

    models = [*paths, tmp_path / "vae_seed0.safetensors"]
    cmp = tmp_path / "cmp"
    argv = ["latent", *map(str, models), str(pop), "--out", str(cmp), "--what", "quality",
            "receptive", "--n-images", "8"]  # fmt: skip
    assert cli.main(argv) == 0
    table = json.loads((cmp / "comparison.json").read_text())
    assert [r["seed"] for r in table["comparison"]] == [3, 5, 0]
    (group,) = table["repeats"]  # three runs of one model
    assert group["label"] == "VAE L=2" and group["runs"] == 3 and group["seeds"] == [3, 5, 0]
    assert group["models"] == list(map(str, models))
    mig = group["metrics"]["mig"]
    assert 0 <= mig["low"] <= mig["median"] <= mig["high"] <= 1
    assert mig["values"] == [r["mig"] for r in table["comparison"]]
    assert "disentanglement_active" in table["comparison"][0]
