"""``brainfeatures train-cnn`` and ``evaluate`` on a tiny zarr group."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from napari_brainfeatures.classes import default_table
from napari_brainfeatures.cli import main
from napari_brainfeatures.models.cnn import load_cnn


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A group like the synthetic sample's: arrays image and areas, classes in attrs."""
    rng = np.random.default_rng(0)
    z, h, w = 7, 72, 150
    areas = np.zeros((z, h, w), np.uint8)
    areas[:, :, :75], areas[:, :, 75:] = 1, 5
    image = np.where(areas == 1, rng.normal(110, 8, areas.shape), rng.normal(110, 40, areas.shape))
    path = tmp_path_factory.mktemp("cli") / "sample.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update({"classes": default_table().to_dict(), "voxel_size_um": [1.17] * 3})
    for name, arr in (("image", np.clip(image, 0, 255).astype(np.uint8)), ("areas", areas)):
        group.create_array(name, shape=arr.shape, chunks=(1, h, w), dtype=np.uint8)[:] = arr
    return path


ARGS = ["--patch-size", "56", "--per-class", "16", "--eval-per-class", "8", "--epochs", "2",
        "--batch-size", "8", "--device", "cpu", "--threads", "1"]


def test_train_then_evaluate(sample, tmp_path, capsys):
    out = tmp_path / "cnn.safetensors"
    rc = main(["train-cnn", str(sample / "image"), "--labels", str(sample / "areas"),
               "--out", str(out), "--train-slice", "0", "--val-slice", "3", "--test-slice", "6",
               *ARGS])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert 0 <= summary["test_accuracy"] <= 1 and set(summary["per_class_f1"]) == {"Ctx", "WM"}
    assert summary["slices"] == {"train": [0], "val": [3], "test": [6]}
    assert "epoch 1/2" in captured.err and "val_acc" in captured.err
    model, meta = load_cnn(out, expect_patch_size=56)
    assert meta["class_table"].names == ["Ctx", "WM"]
    assert meta["test"]["accuracy"] == summary["test_accuracy"]
    assert meta["voxel_size_um"] == [1.17] * 3

    # refuses to overwrite without --overwrite
    rc = main(["train-cnn", str(sample), "--out", str(out), *ARGS])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err

    js, fig = tmp_path / "ev.json", tmp_path / "cm.png"
    rc = main(["evaluate", str(out), str(sample), "--slice", "5", "--per-class", "10",
               "--json", str(js), "--figure", str(fig), "--predict-stride", "16"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["n"] == 20 and report["slices"] == [5]
    assert json.loads(js.read_text())["accuracy"] == report["accuracy"]
    assert report["tta"] and meta["test"]["tta"]  # trained with flips: scored as their mean
    assert fig.read_bytes()[:4] == b"\x89PNG"
    assert 0 <= report["slice_accuracy"]["accuracy"] <= 1


def test_default_slices_and_labels_beside_image(sample, tmp_path, capsys):
    out = tmp_path / "m"  # .safetensors is added
    rc = main(["train-cnn", str(sample), "--out", str(out), *ARGS, "--epochs", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["model"].endswith("m.safetensors")
    assert summary["slices"] == {"train": [0], "val": [3], "test": [6]}  # 50 µm rule, clipped


def test_no_augment_model_is_scored_once(sample, tmp_path, capsys):
    out = tmp_path / "plain.safetensors"
    rc = main(["train-cnn", str(sample), "--out", str(out), *ARGS, "--epochs", "1",
               "--no-augment"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert load_cnn(out)[1]["test"]["tta"] is False  # no flips in training: none in testing
    rc = main(["evaluate", str(out), str(sample), "--slice", "5", "--per-class", "5"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert json.loads(captured.out)["tta"] is False


def test_errors_are_reported(sample, tmp_path, capsys):
    rc = main(["evaluate", str(tmp_path / "none.safetensors"), str(sample), "--slice", "1"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    lonely = tmp_path / "lonely.zarr"
    zarr.create_array(str(lonely), shape=(3, 60, 60), dtype=np.uint8)
    rc = main(["train-cnn", str(lonely), "--out", str(tmp_path / "x"), *ARGS])
    assert rc == 2 and "--labels" in capsys.readouterr().err
