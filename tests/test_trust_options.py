"""Option dataclasses and generators have upper bounds and finite values; leftovers (#23)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_brainfeatures._util.leftovers import temp_path
from napari_brainfeatures.factors.options import NMFOptions, OptionError, SelectOptions
from napari_brainfeatures.features.options import DenseOptions


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"stride": 10**30}, r"stride must be a positive integer of at most 65536, got 1000"),
        ({"tile": 2**40}, "tile must be a positive integer of at most 65536"),
        ({"batch": 2**40}, "batch must be a positive integer of at most"),
        ({"memory_mb": 1e30}, "memory_mb must be a positive number of at most"),
        ({"memory_mb": float("inf")}, "memory_mb must be a positive number"),
        ({"input_scale": 1e300}, "input_scale must be a positive number of at most"),
    ],
)
def test_dense_options_have_upper_bounds(kw, match):
    with pytest.raises(ValueError, match=match):
        DenseOptions(**kw, device="cpu")


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (NMFOptions, {"seed": -1}, r"seed must be an integer in 0\.\.4294967295, got -1"),
        (NMFOptions, {"seed": 2**32}, "seed must be an integer in 0..4294967295"),
        (NMFOptions, {"max_iter": 10**30}, r"max_iter must be an integer in 1\.\.1000000"),
        (NMFOptions, {"n_components": 10**9}, "n_components must be an integer in 1..100000"),
        (NMFOptions, {"tol": float("inf")}, r"tol must be a finite number in \[0, 1\]"),
        (NMFOptions, {"tol": float("nan")}, "tol must be a number >= 0"),
        (NMFOptions, {"sweeps": (3, 10**9)}, "sweeps must be two integers >= 1 and <= 1000"),
        (SelectOptions, {"lam": 1e30}, r"lam must be >= 0 and <= 1e\+06, got 1e\+30"),
        (SelectOptions, {"lam": float("inf")}, "lam must be >= 0, got inf"),
        (SelectOptions, {"p": 10**30}, "p must be an integer in 1..100000"),
    ],
)
def test_factor_options_have_upper_bounds(cls, kw, match):
    with pytest.raises(OptionError, match=match):
        cls(**kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_down": 0}, r"n_down \(None: automatic\) must be an integer in 1\.\.12, got 0"),
        ({"lr": float("nan")}, "lr must be a number > 0 and <= 10, got nan"),
        ({"lr": 1e30}, "lr must be"),
        ({"kl_warmup": float("inf")}, "kl_warmup must be"),
        ({"kl_warmup": -1}, "kl_warmup must be"),
        ({"latent_dim": 0}, r"latent_dim must be an integer in 1\.\.64"),
        ({"epochs": 0}, "epochs must be"),
        ({"channels": 10**6}, "channels must be"),
        ({"batch_size": 2.5}, "batch_size must be"),
        ({"beta": 0}, "beta must be"),
        ({"seed": -1}, "seed must be"),
        ({"clip": float("nan")}, "clip must be"),
        ({"kind": "pca", "latent_dim": 10**30}, "latent_dim must be"),
    ],
)
def test_fit_latent_model_refuses_out_of_range_numbers_when_called(kw, match):
    from napari_brainfeatures.latent.model import fit_latent_model

    images = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match=match):
        fit_latent_model(images, **kw)  # before the first next: no work done


def test_train_vae_checks_the_same_ranges():
    from napari_brainfeatures.latent.train import train_vae

    images = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="batch_size must be an integer in 1..65536, got 0"):
        next(train_vae(images, batch_size=0))


def test_the_latent_command_line_uses_the_core_ranges():
    from napari_brainfeatures.cli import build_parser
    from napari_brainfeatures.latent import bounds

    for command, flag, name in (
        ("train-vae", "--n-down", "N_DOWN"),
        ("train-vae", "--kl-warmup", "KL_WARMUP"),
        ("train-vae", "--lr", "LR"),
        ("latent", "--step", "STEP"),
        ("latent", "--c-max", "C_MAX"),
        ("latent", "--n-images", "N_IMAGES"),
    ):
        parser = build_parser(only=command)
        sub = next(a for a in parser._actions if a.dest == "command").choices[command]
        action = next(a for a in sub._actions if flag in a.option_strings)
        assert action.type is getattr(bounds, name), flag


@pytest.fixture(scope="module")
def pca():
    from napari_brainfeatures.latent.pca import PCABaseline

    return PCABaseline(2).fit(np.random.default_rng(0).random((6, 16, 16)))


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"step": 0}, r"step \(None: the default\) must be"), ({"c_max": float("inf")}, "c_max")],
)
def test_projective_field_refuses_a_zero_step_and_an_infinite_range(pca, kw, match):
    from napari_brainfeatures.latent.explore import projective_field

    with pytest.raises(ValueError, match=match):
        projective_field(pca, np.zeros(2, np.float32), 0, **kw)


def test_receptive_fields_refuse_zero_images(pca):
    from napari_brainfeatures.latent.explore import receptive_fields

    rois = np.zeros((16, 16), np.int32)
    rois[:8] = 1
    clean = np.random.default_rng(1).random((4, 16, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"n_images \(None: all\) must be an integer in 1\.\."):
        next(receptive_fields(pca, clean, rois, n_images=0))


@pytest.mark.parametrize("shape", [(10**30, 64, 64), (4, 64, 10**30), (65_536, 65_536, 65_536)])
def test_microct_shapes_are_bounded(tmp_path, shape):
    from napari_brainfeatures.progress import run
    from napari_brainfeatures.synthetic.microct import iter_write_microct, make_microct_lazy

    with pytest.raises(ValueError, match="shape must have sides of at most 65536"):
        make_microct_lazy(shape)
    with pytest.raises(ValueError, match="shape must have sides of at most 65536"):
        run(iter_write_microct(tmp_path / "s.zarr", shape=shape))
    assert not list(tmp_path.iterdir())


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_write_json_atomic_cleans_a_killed_writers_temporary(tmp_path):
    from napari_brainfeatures.workspace import write_json_atomic

    target = tmp_path / "report.json"
    dead = target.with_name(f".report.json.tmp-{_dead_pid()}-abc123")
    dead.write_text("{half")
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    ours = temp_path(target)
    assert ours.name.startswith(f".report.json.tmp-{os.getpid()}-")


def test_the_labels_writer_cleans_leftovers_and_leaves_none(tmp_path):
    from napari_brainfeatures._napari.writer import write_labels

    target = tmp_path / "labels.tif"
    pid = _dead_pid()
    half = target.with_name(f".labels.tif.tmp-{pid}-abc123")
    half.mkdir()
    (half / "labels.tif").write_bytes(b"half")
    data = np.zeros((2, 8, 8), np.uint8)
    data[:, :4] = 1
    assert write_labels(str(target), data, {"name": "l"}) == [str(target)]
    write_labels(str(target), data * 2, {"name": "l"})  # replaces: the old one is swapped out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]
    import tifffile

    assert tifffile.imread(target).max() == 2


def test_newest_store_and_model_skip_leftovers(tmp_path, monkeypatch):
    """A workspace being built beside its place (or left so by a killed process) holds no result."""
    pytest.importorskip("napari")
    from napari_brainfeatures._widgets import _common

    root = tmp_path / f".brain.brainfeatures.tmp-{_dead_pid()}-abc123"
    (root / "models").mkdir(parents=True)
    (root / "models" / "cnn-1.safetensors").write_bytes(b"x")
    (root / "features" / "f.zarr").mkdir(parents=True)
    monkeypatch.setattr(_common, "workspace_root", lambda layer: root)
    assert _common.newest_model(object()) is None
    assert _common.newest_store([object()]) is None
    real = tmp_path / "brain.brainfeatures"
    (real / "models").mkdir(parents=True)
    (real / "models" / "cnn-1.safetensors").write_bytes(b"x")
    monkeypatch.setattr(_common, "workspace_root", lambda layer: real)
    assert _common.newest_model(object()) == real / "models" / "cnn-1.safetensors"
