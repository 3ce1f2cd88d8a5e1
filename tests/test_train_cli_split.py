"""train-cnn / evaluate on one annotated section: split by region, a guard band apart."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_brainfeatures.cli import main
from napari_brainfeatures.models.cnn import load_cnn

ARGS = "--patch-size 56 --per-class 8 --eval-per-class 6 --epochs 1 --batch-size 8"
ARGS += " --device cpu --threads 1"


def cli(*words: object) -> int:
    return main([w for x in words for w in (x.split() if isinstance(x, str) else [str(x)])])


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    """One (1, 320, 500) section, two areas side by side (as a 2-D image opens)."""
    rng = np.random.default_rng(0)
    areas = np.zeros((1, 320, 500), np.uint8)
    areas[:, 10:, :250], areas[:, 10:, 250:] = 1, 5
    image = np.where(areas == 1, rng.normal(110, 8, areas.shape), rng.normal(110, 40, areas.shape))
    path = tmp_path_factory.mktemp("one") / "one.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.create_array("image", data=np.clip(image, 0, 255).astype(np.uint8))
    group.create_array("areas", data=areas)
    return path


def test_one_section_trains_by_blocks_and_evaluates_its_test_region(section, tmp_path, capsys):
    out = tmp_path / "cnn.safetensors"
    rc = cli("train-cnn", section / "image", "--out", out, ARGS)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "painted on one slice (z = 0)" in captured.err
    summary = json.loads(captured.out)
    split = summary["split"]
    assert split["mode"] == "blocks" and split["guard"] == 56 and split["z"] == 0
    assert all(split["patches"][k] > 0 for k in ("train", "val", "test"))
    _, meta = load_cnn(out)
    assert meta["split"]["regions_sha256"] == split["regions_sha256"]
    rc = cli("evaluate", out, section / "image", "--json", tmp_path / "ev.json", "--device cpu")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads((tmp_path / "ev.json").read_text())
    assert report["split"]["evaluated"] == "test region"
    assert report["split"]["regions_sha256"] == split["regions_sha256"]
    rc = cli("evaluate", out, section / "image", "--slice 0 --device cpu --predict-stride 16")
    assert rc == 0 and json.loads(capsys.readouterr().out)["split"]["evaluated"] == "test region"


def test_drawn_mask_and_kfold(section, tmp_path, capsys):
    mask = np.zeros((320, 500), np.uint8)
    mask[:, :170], mask[:, 170:340], mask[:, 340:] = 1, 3, 2
    mask[:, 170:340] = 0
    mask[:140, 100:400] = 1
    mask[200:, 100:400] = 3  # the test band is half train: both classes in every split
    tifffile.imwrite(tmp_path / "split.tif", mask)
    out = tmp_path / "m.safetensors"
    rc = cli("train-cnn", section / "image", "--out", out, "--split mask --split-mask",
             tmp_path / "split.tif", "--guard 40", ARGS)  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    split = json.loads(captured.out)["split"]
    assert split["mode"] == "mask" and split["guard"] == 40 and split["mask_sha256"]
    assert cli("evaluate", out, section / "image", "--device cpu") == 2
    assert "give the same mask" in capsys.readouterr().err
    mask[0, 0] = 2
    tifffile.imwrite(tmp_path / "other.tif", mask)
    assert cli("evaluate", out, section / "image", "--split-mask", tmp_path / "other.tif") == 2
    assert "not the one recorded" in capsys.readouterr().err
    rc = cli("train-cnn", section / "image", "--out", tmp_path / "k", "--split blocks --folds 3",
             ARGS)  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    folds = json.loads(captured.out)["folds"]
    assert folds["k"] == 3 and len(folds["test_accuracy"]) == 3
    assert folds["mean"] == pytest.approx(np.mean(folds["test_accuracy"]))
    assert (tmp_path / "k_fold2.safetensors").is_file()
    assert (
        cli("train-cnn", section / "image", "--out", tmp_path / "z", "--split slices --folds 3")
        == 2
    )
    assert "need split='blocks'" in capsys.readouterr().err
