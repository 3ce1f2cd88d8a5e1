"""``brainfeatures train-cnn`` and ``evaluate`` on a tiny zarr group."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr

from helpers import textures, tiny_cnn
from napari_brainfeatures.classes import default_table
from napari_brainfeatures.cli import main
from napari_brainfeatures.models.cnn import load_cnn


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A group like the synthetic sample's: arrays image and areas, classes in attrs."""
    image, areas = textures((7, 72, 150), ids=(1, 5))
    h, w = image.shape[1:]
    path = tmp_path_factory.mktemp("cli") / "sample.zarr"
    group = zarr.open_group(str(path), mode="w")
    group.attrs.update({"classes": default_table().to_dict(), "voxel_size_um": [1.17] * 3})
    for name, arr in (("image", image), ("areas", areas)):
        group.create_array(name, shape=arr.shape, chunks=(1, h, w), dtype=np.uint8)[:] = arr
    return path


ARGS = "--patch-size 56 --per-class 16 --eval-per-class 8 --epochs 2 --batch-size 8"
ARGS += " --device cpu --threads 1"


def cli(*words: object) -> int:
    """``brainfeatures WORDS``: strings split at spaces, paths kept whole; the exit code."""
    return main([w for x in words for w in (x.split() if isinstance(x, str) else [str(x)])])


def test_train_then_evaluate(sample, tmp_path, capsys):
    out = tmp_path / "cnn.safetensors"
    inputs = (sample / "image", "--labels", sample / "areas")
    rc = cli(
        "train-cnn", *inputs, "--out", out, "--train-slice 0 --val-slice 3 --test-slice 6", ARGS
    )
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
    rc = cli("train-cnn", sample, "--out", out, ARGS)
    assert rc == 2 and "--overwrite" in capsys.readouterr().err

    js, fig = tmp_path / "ev.json", tmp_path / "cm.png"
    reports = ("--json", js, "--figure", fig)
    rc = cli("evaluate", out, sample, "--slice 5 --per-class 10 --predict-stride 16", *reports)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["n"] == 20 and report["slices"] == [5]
    assert json.loads(js.read_text())["accuracy"] == report["accuracy"]
    assert report["tta"] and meta["test"]["tta"]  # trained with flips: scored as their mean
    assert fig.read_bytes()[:4] == b"\x89PNG"
    assert 0 <= report["slice_accuracy"]["accuracy"] <= 1
    assert "warnings" not in report or not any("not a test" in w for w in report["warnings"])
    rc = cli("evaluate", out, sample, "--slice 0 --per-class 5")  # its training slice
    captured = capsys.readouterr()
    assert rc == 0 and "slice(s) [0] are among the model's own training" in captured.err
    assert any("not a test" in w for w in json.loads(captured.out)["warnings"])


def test_default_slices_and_labels_beside_image(sample, tmp_path, capsys):
    out = tmp_path / "m"  # .safetensors is added
    rc = cli("train-cnn", sample, "--out", out, ARGS, "--epochs 1")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["model"].endswith("m.safetensors")
    assert summary["slices"] == {"train": [0], "val": [3], "test": [6]}  # 50 µm rule, clipped


def test_labels_and_class_names_painted_in_the_workspace(sample, tmp_path, capsys):
    """A TIFF painted in the viewer: labels and names come from its workspace."""
    import tifffile

    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import load_cnn
    from napari_brainfeatures.workspace import Workspace, default_workspace_path

    group = zarr.open_group(str(sample), mode="r")
    image, areas = group["image"][:], group["areas"][:]
    tif = tmp_path / "brain.tif"
    tifffile.imwrite(tif, image)
    ws = Workspace.open(
        default_workspace_path(tif),
        shape=image.shape,
        data_path=tif,
        classes=ClassTable.from_names(["cortex", "fibres"]),
    )
    ws.save_labels(np.where(areas == 5, 2, areas).astype(np.uint16))
    out = tmp_path / "painted.safetensors"
    rc = cli("train-cnn", tif, "--out", out, ARGS, "--epochs 1")
    assert rc == 0, capsys.readouterr().err
    _, meta = load_cnn(out)
    assert meta["class_table"].names == ["cortex", "fibres"]
    # the same labels passed explicitly keep their names too
    labels = ("--labels", ws.labels_path)
    rc = cli("train-cnn", tif, *labels, "--out", out, "--overwrite", ARGS, "--epochs 1")
    assert rc == 0, capsys.readouterr().err
    assert load_cnn(out)[1]["class_table"].names == ["cortex", "fibres"]


def test_no_augment_model_is_scored_once(sample, tmp_path, capsys):
    out = tmp_path / "plain.safetensors"
    opts = "--epochs 1 --no-augment --precision bfloat16"
    rc = cli("train-cnn", sample, "--out", out, ARGS, opts)
    err = capsys.readouterr().err
    assert rc == 0, err
    meta = load_cnn(out)[1]
    assert meta["test"]["tta"] is False  # no flips in training: none in testing
    assert meta["training_precision"] == "bfloat16"  # --precision reaches the training
    rc = main(["evaluate", str(out), str(sample), "--slice", "5", "--per-class", "5"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert json.loads(captured.out)["tta"] is False


def test_errors_are_reported(sample, tmp_path, capsys):
    rc = main(["evaluate", str(tmp_path / "none.safetensors"), str(sample), "--slice", "1"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    lonely = tmp_path / "lonely.zarr"
    zarr.create_array(str(lonely), shape=(3, 60, 60), dtype=np.uint8)
    rc = cli("train-cnn", lonely, "--out", tmp_path / "x", ARGS)
    assert rc == 2 and "--labels" in capsys.readouterr().err


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """A small untrained model of the sample's classes (Ctx, WM): enough for input checks."""
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import save_cnn

    table = ClassTable(tuple(c for c in default_table() if c.id in (1, 5)))
    return save_cnn(tmp_path_factory.mktemp("m") / "m", tiny_cnn(2), classes=table)


@pytest.mark.parametrize("z", ["7", "-1"])
def test_evaluate_refuses_slices_out_of_range(sample, untrained, z, capsys):
    rc = main(["evaluate", str(untrained), str(sample), "--slice", "2", z])
    err = capsys.readouterr().err
    assert rc == 2 and f"--slice {z} is out of range" in err and "0..6" in err
    assert "Traceback" not in err


def test_evaluate_on_one_painted_class(sample, untrained, tmp_path, capsys):
    """A test slice where only cortex is painted: scored (its recall), not refused."""
    group = zarr.open_group(str(tmp_path / "one.zarr"), mode="w")
    group.create_array("image", data=np.full((3, 72, 150), 100, np.uint8))
    areas = np.zeros((3, 72, 150), np.uint8)
    areas[1] = 1  # only Ctx painted
    group.create_array("areas", data=areas)
    rc = cli("evaluate", untrained, tmp_path / "one.zarr", "--slice 1 --per-class 5 --no-tta")
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(captured.out)
    assert report["n"] == 5 and report["per_class"]["Ctx"]["support"] == 5
    assert report["per_class"]["WM"]["support"] == 0 and 0.0 <= report["accuracy"] <= 1.0
    areas[1] = 0  # nothing of the model's classes painted
    group.create_array("areas", data=areas, overwrite=True)
    rc = main(["evaluate", str(untrained), str(tmp_path / "one.zarr"), "--slice", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "none of the model's classes" in err and "Traceback" not in err


@pytest.mark.parametrize("stage", ["evaluate", "analyse"])
def test_a_uint8_model_refuses_a_uint16_volume(untrained, tmp_path, capsys, stage):
    from napari_brainfeatures.models.cnn import load_cnn, save_cnn

    model, meta = load_cnn(untrained)
    trained = save_cnn(
        tmp_path / "u8.safetensors",
        model,
        classes=meta["class_table"],
        meta={"normalisation": "uint8/255", "input_scale": 1 / 255},
    )
    group = zarr.open_group(str(tmp_path / "u16.zarr"), mode="w")
    group.create_array("image", data=np.full((3, 72, 150), 1000, np.uint16))
    areas = np.zeros((3, 72, 150), np.uint8)
    areas[:, :, :75], areas[:, :, 75:] = 1, 5
    group.create_array("areas", data=areas)
    slices = (
        ["--slice", "1"] if stage == "evaluate" else ["--train-slice", "0", "--test-slice", "2"]
    )
    rc = main([stage, str(trained), str(tmp_path / "u16.zarr"), *slices])
    err = capsys.readouterr().err
    assert rc == 2 and "trained on uint8 images" in err and "uint16" in err


def test_reports_never_overwrite_inputs(sample, untrained, tmp_path, capsys):
    """--json / --figure / --out pointing at the model, the volume or a foreign file."""
    model_bytes = untrained.read_bytes()
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    base = ["evaluate", str(untrained), str(sample), "--slice", "2"]
    for extra, says in (
        (["--json", str(untrained)], "is or lies inside the input"),
        (["--figure", str(sample / "image")], "is or lies inside the input"),
        (["--json", str(notes)], "is not a .json file"),
        (["--figure", str(tmp_path)], "is a folder"),
    ):
        assert main([*base, *extra]) == 2
        assert says in capsys.readouterr().err
    assert untrained.read_bytes() == model_bytes and notes.read_text() == "mine"
    rc = cli("analyse", untrained, sample, "--train-slice 0 --test-slice 2 --out", notes)
    assert rc == 2 and "is a file" in capsys.readouterr().err and notes.read_text() == "mine"


def test_predict_stride_must_be_positive(sample, untrained, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(untrained), str(sample), "--slice", "2", "--predict-stride", "0"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--predict-stride: must be an integer in 1..4096" in err


def _five(tmp_path, painted):
    group = zarr.open_group(str(tmp_path / "five.zarr"), mode="w")
    rng = np.random.default_rng(0)  # texture: a constant image is refused before training
    group.create_array("image", data=rng.integers(0, 255, (5, 72, 150), dtype=np.uint8))
    areas = np.zeros((5, 72, 150), np.uint8)
    areas[painted, :, :75], areas[painted, :, 75:] = 1, 5
    group.create_array("areas", data=areas)
    return str(tmp_path / "five.zarr")


def test_default_split_uses_the_painted_slices(tmp_path, capsys):
    # painted on z = 1..3 only; the 50 µm rule would give 0 / 2 / 4
    rc = cli("train-cnn", _five(tmp_path, [1, 2, 3]), "--out", tmp_path / "x", ARGS)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "train [1], val [2], test [3] (the first, middle and last of the painted" in captured.err
    assert json.loads(captured.out)["slices"] == {"train": [1], "val": [2], "test": [3]}


def test_default_split_on_unpainted_slices_suggests_options(tmp_path, capsys):
    rc = cli("train-cnn", _five(tmp_path, [1, 3]), "--out", tmp_path / "x", ARGS)
    err = capsys.readouterr().err
    assert rc == 2 and "z = [1, 3]" in err and "--train-slice Z --val-slice Z" in err
    assert "(2 slices = 2 µm apart)" in err  # the rule's spacing as used, not "50 µm"
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("argv", [["-v", "info", "x"], ["info", "x", "-v"], ["info", "-v", "x"]])
def test_verbose_before_or_after_the_stage(argv):
    from napari_brainfeatures.cli import build_parser

    assert build_parser("info").parse_args(argv).verbose is True
    assert build_parser("info").parse_args(["info", "x"]).verbose is False


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a CPU-only torch")
@pytest.mark.parametrize("stage", ["evaluate", "train-cnn", "analyse"])
@pytest.mark.parametrize("device", ["cuda", "gpu"])
def test_unavailable_device_is_a_message(sample, untrained, capsys, stage, device):
    argv = {
        "evaluate": ("evaluate", untrained, sample, "--slice 2"),
        "train-cnn": ("train-cnn", sample, "--out unused.safetensors"),
        "analyse": ("analyse", untrained, sample, "--train-slice 0 --test-slice 2"),
    }[stage]
    assert cli(*argv, "--device", device) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("CUDA is not available" in err or "device must be" in err)


def test_train_on_scribbles(tmp_path, capsys):
    group = zarr.open_group(str(tmp_path / "ct.zarr"), mode="w")
    rng = np.random.default_rng(0)
    group.create_array("image", data=rng.integers(0, 255, (5, 72, 150), dtype=np.uint8))
    areas = np.zeros((5, 72, 150), np.uint8)
    areas[1:4, :, :70] = 1  # filled
    areas[1:4, 34:39, 80:140] = 5  # a 5-px brush stroke: no 56 px patch fits inside
    group.create_array("areas", data=areas)
    out = tmp_path / "cnn.safetensors"
    rc = cli("train-cnn", tmp_path / "ct.zarr", "--out", out, ARGS, "--sampling interior")
    err = capsys.readouterr().err
    assert rc == 2 and "['WM']" in err and "centre training patches" in err
    assert not out.exists()
    rc = cli("train-cnn", tmp_path / "ct.zarr", "--out", out, ARGS)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (
        "brainfeatures train-cnn: warning: training slices: no 56x56 patch fits inside the "
        "paint of class(es) 'WM' (id 5"
    ) in captured.err
    assert "UserWarning" not in captured.err and "sample_splits(" not in captured.err
    from napari_brainfeatures.models.cnn import load_cnn

    assert load_cnn(out)[1]["training"]["centred_classes"] == [5]


def test_train_with_a_context_view(tmp_path, capsys):
    """``--context 2``: a 112 px window, trained inside 90 px bands by its 56 px central view."""
    image, areas = textures((3, 120, 180), ids=(1, 5))
    path = tmp_path / "bands.zarr"
    group = zarr.open_group(str(path), mode="w")
    for name, arr in (("image", image), ("areas", areas)):
        group.create_array(name, shape=arr.shape, chunks=(1, 120, 180), dtype=np.uint8)[:] = arr
    out = tmp_path / "ctx.safetensors"
    args = "--per-class 8 --eval-per-class 4 --epochs 1 --batch-size 8 --device cpu --threads 1"
    slices = "--train-slice 0 --val-slice 1 --test-slice 2"
    rc = cli("train-cnn", path, "--out", out, "--patch-size 112 --context 2", slices, args)
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    model, meta = load_cnn(out)
    assert model.config.context == 2 and model.config.view_size == 56
    assert meta["training"]["centred_classes"] == []  # 112 px windows fit no band: the view did
    assert "fits inside the paint" not in captured.err

    rc = cli("train-cnn", path, "--out", tmp_path / "one.safetensors", "--patch-size 112", slices,
             args)  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert load_cnn(tmp_path / "one.safetensors")[0].config.context == 1
    assert "fits inside the paint" in captured.err  # without the view: centred on the paint


@pytest.mark.parametrize(
    ("words", "says"),
    [("--patch-size 112 --context 3", "multiple of context 3"),
     ("--patch-size 112 --context 2 --variant authors", "no multi-scale input")],
)  # fmt: skip
def test_a_context_the_network_cannot_take_is_refused(sample, tmp_path, capsys, words, says):
    rc = cli(
        "train-cnn", sample, "--out", tmp_path / "x", words, ARGS.replace("--patch-size 56", "")
    )
    err = capsys.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err
    assert not (tmp_path / "x.safetensors").exists()
    with pytest.raises(SystemExit) as exit_:
        cli("train-cnn", sample, "--out", tmp_path / "x", "--context 17")
    assert (
        exit_.value.code == 2
        and "--context: must be an integer in 1..16" in capsys.readouterr().err
    )
