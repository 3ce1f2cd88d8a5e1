"""``brainfeatures train-cnn --repeats/--seeds``: one model per training seed, median and range."""

from __future__ import annotations

import json

from napari_brainfeatures.models.cnn import load_cnn
from test_train_cli import ARGS, cli, sample  # noqa: F401  (sample: the module's fixture)


def test_train_cnn_repeats(sample, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "cnn.safetensors"
    slices = "--train-slice 0 --val-slice 3 --test-slice 6"
    rc = cli("train-cnn", sample / "image", "--out", out, slices, ARGS, "--seeds 4,2")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    res = json.loads(captured.out)
    assert res["seeds"] == [4, 2] and [r["seed"] for r in res["runs"]] == [4, 2]
    paths = [tmp_path / f"cnn_seed{s}.safetensors" for s in (4, 2)]
    assert [r["model"] for r in res["runs"]] == list(map(str, paths)) and not out.exists()
    acc = res["summary"]["test_accuracy"]
    assert acc["values"] == [r["test_accuracy"] for r in res["runs"]]
    assert acc["low"] <= acc["median"] <= acc["high"]
    metas = [load_cnn(p, expect_patch_size=56)[1] for p in paths]
    assert [m["training"]["seed"] for m in metas] == [4, 2]  # each run's seed recorded
    assert [m["test"]["accuracy"] for m in metas] == acc["values"]

    # an existing run's file is refused before anything is read; folds and repeats clash
    assert cli("train-cnn", sample / "image", "--out", out, slices, ARGS, "--repeats 3") == 2
    assert "cnn_seed2.safetensors" in capsys.readouterr().err
    rc = cli("train-cnn", sample / "image", "--out", tmp_path / "x", ARGS, "--repeats 2 --folds 3")
    assert rc == 2 and "--folds" in capsys.readouterr().err
