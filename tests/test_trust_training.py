"""CNN training, evaluation and analysis: every number range-checked, blank images refused (#23).

The ranges live once in ``train.bounds``: the command line uses them as argparse
types, the Python API checks the same values (ValueError naming the parameter).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zarr

from helpers import TINY_CNN, tiny_cnn
from napari_brainfeatures.cli import build_parser, main
from napari_brainfeatures.progress import run
from napari_brainfeatures.train import bounds
from napari_brainfeatures.train.evaluation import evaluate
from napari_brainfeatures.train.fit import train_cnn
from napari_brainfeatures.train.patches import sample_patches
from napari_brainfeatures.train.plan import held_out_patches, plan_splits
from napari_brainfeatures.train.predict import predict_slice
from napari_brainfeatures.train.recipe import Recipe, check_contrast
from napari_brainfeatures.train.regions import spatial_split
from napari_brainfeatures.train.splits import sample_splits

pytestmark = pytest.mark.usefixtures("one_thread")
P = TINY_CNN.patch_size
TINY2 = dataclasses.replace(TINY_CNN, n_classes=2)


def _volume(image=None):
    """Three slices 40 x 80: class 1 on the left, 2 on the right; textured unless ``image``."""
    lab = np.zeros((3, 40, 80), np.uint8)
    lab[:, :, :40], lab[:, :, 40:] = 1, 2
    if image is None:
        rng = np.random.default_rng(0)
        image = rng.normal(110, np.where(lab == 1, 8, 40)).clip(0, 255).astype(np.uint8)
    return np.broadcast_to(image, lab.shape).copy(), lab


def _sets(image=None):
    img, lab = _volume(image)
    kw = {"patch_size": P, "per_class": 4, "interior": False}
    return (sample_patches(img, lab, slices=z, seed=z, **kw) for z in (0, 1))


@pytest.mark.parametrize(
    "image", [np.uint8(0), np.uint8(200), np.float32(0.3), np.float32(0.0), np.uint16(30_000)]
)
def test_a_blank_or_constant_volume_is_refused_before_training(image):
    train, val = _sets(image)
    gen = train_cnn(train, val, config=TINY2, epochs=1)
    with pytest.raises(ValueError, match="training patches have no contrast") as err:
        next(gen)  # before the first batch
    assert "blank or constant" in str(err.value)


def test_contrast_is_relative_to_the_dtype_or_the_data():
    rng = np.random.default_rng(0)
    check_contrast(rng.integers(0, 255, (8, 16, 16), dtype=np.uint8))
    check_contrast(rng.integers(30_000, 34_096, (8, 16, 16)).astype(np.uint16))  # 12 bits
    check_contrast((1000 + rng.normal(0, 1, (8, 16, 16))).astype(np.float32))
    flat = np.zeros((8, 16, 16), np.uint8)
    flat[0, 0, 0] = 1  # one grey level in 2048 pixels: no contrast to learn from
    with pytest.raises(ValueError, match=r"standard deviation of 0\.0221 for the uint8 range 255"):
        check_contrast(flat)


def test_train_cnn_command_refuses_a_blank_volume(tmp_path, capsys):
    group = zarr.open_group(str(tmp_path / "blank.zarr"), mode="w")
    lab = np.zeros((3, 72, 150), np.uint8)
    lab[:, :, :75], lab[:, :, 75:] = 1, 2
    group.create_array("image", data=np.zeros(lab.shape, np.uint8))
    group.create_array("areas", data=lab)
    out = tmp_path / "m.safetensors"
    argv = ["train-cnn", str(tmp_path / "blank.zarr" / "image"), "--out", str(out)]
    argv += "--patch-size 64 --per-class 4 --epochs 1 --device cpu --threads 1".split()
    argv += "--train-slice 0 --val-slice 1 --test-slice 2".split()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no contrast" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".m.*"))


def _recipe(**kw):
    return Recipe(**{"epochs": 1, "batch_size": 4, "lr": 1e-3, **kw})


@pytest.fixture(scope="module")
def data():
    img, lab = _volume()
    train, val = _sets()
    return img, lab, train, val


# (call(data), message): each value is refused with the range the command line has
API = [
    (lambda d: _recipe(epochs=0), r"epochs must be an integer in 1\.\.100000, got 0"),
    (lambda d: _recipe(epochs=10**30), "epochs must be"),
    (lambda d: _recipe(batch_size=2.5), "batch_size must be an integer"),
    (lambda d: _recipe(lr=float("nan")), r"lr must be a number > 0 and <= 10, got nan"),
    (lambda d: _recipe(lr=0), "lr must be"),
    (lambda d: _recipe(patience=-1), "patience must be"),
    (lambda d: _recipe(mix=2), "mix must be a number >= 0 and <= 1"),
    (lambda d: _recipe(seed=-1), "seed must be"),
    (lambda d: next(train_cnn(*d[2:], config=TINY2, num_threads=0)), "num_threads must be"),
    (lambda d: next(train_cnn(*d[2:], config=TINY2, epochs=0)), "epochs must be"),
    (lambda d: sample_patches(d[0], d[1], slices=0, patch_size=0), "patch_size must be"),
    (lambda d: sample_patches(d[0], d[1], slices=0, per_class=10**30), "per_class must be"),
    (lambda d: sample_patches(d[0], d[1], slices=0, seed=-1), "seed must be"),
    (lambda d: sample_patches(d[0], d[1], slices=[1.5]), "slices must be an integer"),
    (lambda d: sample_splits(d[0], d[1], eval_per_class=0), "eval_per_class must be"),
    (lambda d: sample_splits(d[0], d[1], patch_size=float("inf")), "patch_size must be"),
    (lambda d: spatial_split(d[1][0], patch_size=P, guard=-1), "guard must be"),
    (lambda d: spatial_split(d[1][0], patch_size=P, folds=2), r"folds an integer in 3\.\.100"),
    (lambda d: spatial_split(d[1][0], patch_size=P, block=1), "block must be"),
    (lambda d: spatial_split(d[1][0], patch_size=P, z=-1), "z must be"),
    (lambda d: plan_splits(d[0], d[1], split="blocks", split_slice=3), r"split_slice .*\(0\.\.2\)"),
    (lambda d: plan_splits(d[0], d[1], split="blocks", guard=10**30), "guard must be"),
    (lambda d: plan_splits(d[0], d[1], folds=0), "folds must be"),
    (lambda d: evaluate(tiny_cnn(2), d[2], batch_size=0), "batch_size must be"),
    (lambda d: run(predict_slice(tiny_cnn(2), d[0][0], stride=10**30)), "stride must be"),
    (lambda d: run(predict_slice(tiny_cnn(2), d[0][0], batch_size=-1)), "batch_size must be"),
]


@pytest.mark.parametrize(("call", "match"), API, ids=[m.split(" ")[0] for _, m in API])
def test_the_api_refuses_out_of_range_numbers(data, call, match):
    with pytest.raises(ValueError, match=match):
        call(data)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import save_cnn

    path = tmp_path_factory.mktemp("m") / "m"
    return save_cnn(path, tiny_cnn(2), classes=ClassTable.from_names(["a", "b"]))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sigmas": [0.0, float("nan")]}, "sigmas must be a number >= 0 and <= 10"),
        ({"sigmas": []}, "at least one noise level"),
        ({"random_seed": -1}, "random_seed must be"),
        ({"per_class": 0}, "per_class must be"),
        ({"train_slices": [5], "test_slices": 1}, r"train_slices must be in 0\.\.2"),
        ({"train_slices": 0, "test_slices": -1}, r"test_slices must be in 0\.\.2"),
    ],
)
def test_analyse_model_refuses_out_of_range_numbers(data, model_file, kw, match):
    from napari_brainfeatures.analyse.report import analyse_model

    with pytest.raises(ValueError, match=match):
        next(analyse_model(model_file, data[0], data[1], **kw))


def test_held_out_patches_refuse_slices_outside_the_volume(data, model_file):
    from napari_brainfeatures.models.cnn import load_cnn

    meta = load_cnn(model_file)[1]
    with pytest.raises(ValueError, match=r"slices must be in 0\.\.2, got \[7\]"):
        held_out_patches(meta, data[0], data[1], slices=[7], patch_size=P, per_class=2)


@pytest.mark.parametrize(
    ("command", "flag", "name"),
    [
        ("train-cnn", "--patch-size", "PATCH_SIZE"),
        ("train-cnn", "--epochs", "EPOCHS"),
        ("train-cnn", "--lr", "LR"),
        ("train-cnn", "--patience", "PATIENCE"),
        ("train-cnn", "--eval-per-class", "PER_CLASS"),
        ("train-cnn", "--guard", "GUARD"),
        ("train-cnn", "--folds", "FOLDS"),
        ("train-cnn", "--threads", "THREADS"),
        ("train-cnn", "--split-slice", "SLICE"),
        ("evaluate", "--batch-size", "BATCH_SIZE"),
        ("evaluate", "--predict-stride", "STRIDE"),
        ("analyse", "--sigmas", "SIGMA"),
        ("analyse", "--random-seed", "SEED"),
    ],
)
def test_the_command_line_uses_the_core_ranges(command, flag, name):
    parser = build_parser(only=command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    action = next(a for a in sub._actions if flag in a.option_strings)
    assert action.type is getattr(bounds, name)
