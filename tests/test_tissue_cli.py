"""``brainfeatures tissue``: the mask computed into the workspace, hand edits kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_brainfeatures import cli
from napari_brainfeatures.synthetic import write_microct
from napari_brainfeatures.tissue import edited_slices, tissue_mask
from napari_brainfeatures.workspace import Workspace


@pytest.fixture(scope="module")
def v3_volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("tissue") / "v3.zarr"
    write_microct(path, shape=(2, 256, 192), seed=2, chunks=(1, 128, 192), version=3)
    return path


def test_tissue_cli_writes_the_mask_and_keeps_edits(v3_volume, tmp_path, capsys):
    import zarr

    ws_path = tmp_path / "v3.brainfeatures"
    args = ["tissue", str(v3_volume / "image"), "--workspace", str(ws_path)]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["slices"] == [0, 1] and out["replaced_edited"] == []
    group = zarr.open_group(str(v3_volume), mode="r")
    truth, image = group["tissue"][:], group["image"][:]
    with Workspace.open(ws_path, mode="r") as ws:
        mask = ws.tissue(mode="r")[:]
        assert edited_slices(ws.tissue(mode="r"), [0, 1]) == []
    np.testing.assert_array_equal(mask[1], tissue_mask(image[1]))
    assert ((mask > 0) == (truth > 0)).mean() > 0.95  # the rule finds the v3 cut faces
    assert 0.5 < out["tissue_fraction"]["0"] < 0.95
    # recomputing an unedited mask needs no --overwrite (other options, same store)
    assert cli.main([*args, "--sigma", "3"]) == 0
    capsys.readouterr()
    # a hand edit on slice 1 is kept ...
    with Workspace.open(ws_path, mode="r+") as ws:
        before = ws.tissue()[1]
        ws.tissue()[1, :20, :20] = 1 - before[:20, :20]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "slice(s) [1]" in err and "edited by hand" in err and "--overwrite" in err
    with Workspace.open(ws_path, mode="r") as ws:
        kept = ws.tissue(mode="r")[1]
    assert (kept[:20, :20] != before[:20, :20]).all()
    # ... other slices can still be computed, and --overwrite replaces the edit
    assert cli.main([*args, "--slices", "0"]) == 0
    assert cli.main([*args, "--overwrite"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["replaced_edited"] == [1]
    with Workspace.open(ws_path, mode="r") as ws:
        np.testing.assert_array_equal(ws.tissue(mode="r")[1], mask[1])


def test_tissue_cli_refuses_bad_slices(v3_volume, tmp_path, capsys):
    args = ["tissue", str(v3_volume / "image"), "--workspace", str(tmp_path / "w")]
    assert cli.main([*args, "--slices", "5"]) == 2
    assert "--slices must be in 0..1, got [5]" in capsys.readouterr().err


def test_train_cnn_restricts_patches_to_the_workspace_tissue(tmp_path, capsys):
    from napari_brainfeatures.models.checkpoint import read_header

    vol = tmp_path / "s.zarr"
    write_microct(vol, shape=(3, 256, 256), seed=4, chunks=(1, 256, 256), version=3)
    assert cli.main(["tissue", str(vol / "image")]) == 0  # into s.brainfeatures beside it
    base = ["train-cnn", str(vol / "image"), "--labels", str(vol / "areas"), "--patch-size", "56",
            "--per-class", "16", "--eval-per-class", "8", "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--threads", "1", "--train-slice", "0", "--val-slice", "1",
            "--test-slice", "2"]  # fmt: skip
    real_scan = ["--gradient", "0.5", "--local-contrast", "0.25", "--rotate", "1"]
    assert cli.main([*base, "--out", str(tmp_path / "a"), *real_scan]) == 0
    assert cli.main([*base, "--out", str(tmp_path / "b"), "--tissue-mask", "none"]) == 0
    capsys.readouterr()
    meta_a = read_header(tmp_path / "a.safetensors")["meta"]
    meta_b = read_header(tmp_path / "b.safetensors")["meta"]
    assert meta_a["training"]["min_tissue"] == 0.9 and meta_b["training"]["min_tissue"] is None
    assert (meta_a["intensity_gradient"], meta_a["local_contrast"], meta_a["rotate"]) == (
        0.5,
        0.25,
        1,
    )
    assert (meta_b["intensity_gradient"], meta_b["local_contrast"], meta_b["rotate"]) == (0, 0, 0.5)
