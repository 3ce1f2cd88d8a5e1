"""The CNN shipped for the sample: the file its record describes, for this sample, and good.

When the sample generator's version changes, these fail until the model is rebuilt:
``.venv/bin/python scripts/build_sample_model.py`` (about 10 min on 2 cores).
"""

import numpy as np
import pytest

from napari_brainfeatures.synthetic import VOXEL_SIZE_UM, weights
from napari_brainfeatures.synthetic.microct import GENERATOR_VERSION
from napari_brainfeatures.train.splits import split_slices


def test_the_shipped_file_is_the_recorded_one_for_this_sample():
    record = weights.check_sample_model()  # sha256 and generator version, or ValueError
    assert weights.sha256_of(weights.sample_model_path()) == record["sha256"]
    assert record["sample"]["generator_version"] == GENERATOR_VERSION
    assert record["sample"]["shape"] == [128, 1536, 1024] and record["seed"] == 0
    assert record["dtype"] == "float16" and record["bytes"] < 8 * 2**20
    assert record["test_accuracy"] >= 0.85 and record["chance_level"] == pytest.approx(1 / 6, 1e-3)
    assert record["macro_f1"] > 0.8 and record["recipe"]["patch_size"] == 128


def test_a_changed_file_or_sample_version_is_refused(tmp_path, monkeypatch):
    for name in (weights.MODEL_FILE, weights.RECORD_FILE):
        (tmp_path / name).write_bytes((weights.WEIGHTS_DIR / name).read_bytes())
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr("napari_brainfeatures.synthetic.microct.GENERATOR_VERSION", "999")
    with pytest.raises(ValueError, match="version '999'.*build_sample_model"):
        weights.check_sample_model()
    monkeypatch.undo()
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    with open(tmp_path / weights.MODEL_FILE, "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x01\x02\x03")  # one weight changed
    with pytest.raises(ValueError, match="sha256"):
        weights.check_sample_model()


def test_the_shipped_model_classifies_the_held_out_slice(one_thread):
    """The test slice, never trained on: well above chance (the threshold from the record)."""
    from napari_brainfeatures.synthetic import render_microct_box
    from napari_brainfeatures.train.evaluation import evaluate
    from napari_brainfeatures.train.patches import sample_patches

    record = weights.sample_model_record()
    model, meta = weights.load_sample_model()
    assert meta["sample_model"]["test_accuracy"] == record["test_accuracy"]
    z = record["slices"]["test"]
    shape = tuple(record["sample"]["shape"])
    box = render_microct_box(shape, (z, 0, 0), (z + 1, *shape[1:]), seed=record["seed"])
    kw = {"patch_size": 128, "per_class": 20, "interior": False, "classes": meta["class_table"]}
    patches = sample_patches(box["image"], box["areas"], slices=0, seed=7, **kw)
    assert len(set(patches.labels.tolist())) == 6
    ev = evaluate(model, patches, tta=False)  # one view: 120 patches, a few seconds
    chance = record["chance_level"]
    # the record's accuracy (8 views, 1500 patches) less a margin for one view of 120 patches
    floor = max(chance + 0.5, record["test_accuracy"] - 0.15)
    assert ev.accuracy >= floor, (ev.accuracy, floor, ev.confusion)
    assert np.trace(ev.confusion) == round(ev.accuracy * ev.n)


def test_sample_training_splits_render_per_slice_and_sample_the_given_slices():
    vol, slices, splits = weights.sample_training_splits(
        (8, 256, 256), patch_size=32, per_class=4, eval_per_class=3, slices=(1, 4, 6)
    )
    assert slices == (1, 4, 6) and vol.image.chunks[0] == (1,) * 8  # one slice a chunk
    assert splits.slices() == {"train": [1], "val": [4], "test": [6]}
    assert splits.train.counts == dict.fromkeys(vol.classes.ids, 4)
    assert (splits.val.centres[:, 0] == 4).all() and (splits.test.centres[:, 0] == 6).all()
    assert weights.sample_training_splits(
        (8, 256, 256), patch_size=32, per_class=4, eval_per_class=3, seed=1
    )[1] == split_slices(8, voxel_size=VOXEL_SIZE_UM[0])  # the paper's slices by default


def test_the_shipped_half_precision_files_load_as_they_are(tmp_path):
    """A dock or command given the shipped file itself (stored in float16) loads it as float32."""
    import torch

    from napari_brainfeatures.latent.model import load_latent_model
    from napari_brainfeatures.models.cnn import load_cnn

    shipped, meta = load_cnn(weights.sample_model_path())
    installed, _ = load_cnn(weights.install_sample_model(tmp_path))
    assert next(shipped.parameters()).dtype == torch.float32
    assert meta["class_table"].names == ["Ctx", "HypoTh", "Str", "VP", "WM", "ZI"]
    for a, b in zip(shipped.state_dict().values(), installed.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # float16 -> float32 is exact
    folder = weights.sample_model_path().parent
    for name in ("sample_beta_vae.safetensors", "sample_vae.safetensors"):
        load_latent_model(folder / name)
