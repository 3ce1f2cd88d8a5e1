"""CNN training: learns an easy task, checkpoints the best model, cancels cleanly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import TINY_CNN, textures
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig, load_cnn
from napari_brainfeatures.progress import run
from napari_brainfeatures.train import (
    augment_batch,
    border_mix,
    evaluate,
    init_weights,
    intensity_range,
    make_config,
    random_rotation,
    sample_splits,
    train_cnn,
    training_history,
    value_range,
)

P = 32


def small_config(**kw):
    return CNNConfig(
        patch_size=P,
        n_classes=2,
        channels=(8, 16, 16),
        kernels=(5, 3, 3),
        paddings=(0, 0, 0),
        fc=(32, 16),
        **kw,
    )


@pytest.fixture(scope="module")
def splits():
    img, lab = textures()
    return sample_splits(img, lab, slices=(0, 2, 4), patch_size=P, per_class=60)


KW = {"batch_size": 16, "lr": 3e-3, "device": "cpu", "num_threads": 1}


def test_tiny_training_beats_chance(splits, tmp_path):
    path = tmp_path / "cnn.safetensors"
    records = []
    result = run(
        train_cnn(
            splits.train,
            splits.val,
            config=small_config(dropout=0.0),
            epochs=10,
            schedule="constant",
            checkpoint_path=path,
            voxel_size=1.17,
            **KW,
        ),
        records.append,
    )
    epoch_ends = [r for r in records if r.values]
    assert [int(r.values["epoch"]) for r in epoch_ends] == list(range(1, len(epoch_ends) + 1))
    assert set(epoch_ends[0].values) >= {"train_loss", "train_acc", "val_loss", "val_acc"}
    assert records[-1].step == records[-1].total or result.stopped_early
    assert result.best_val_acc == max(h["val_acc"] for h in result.history)
    ev = evaluate(result.model, splits.test)
    assert ev.accuracy >= 0.8, ev.to_dict()  # chance is 0.5
    # the file holds the best model and a full description
    model, meta = load_cnn(path, expect_classes=splits.train.classes, expect_patch_size=P)
    assert meta["normalisation"] == "uint8/255" and meta["voxel_size_um"] == [1.17] * 3
    assert meta["training_standardisation"]["folded_into_first_conv"]
    tr = meta["training"]
    assert tr["best_epoch"] == result.best_epoch and tr["seed"] == 0
    assert tr["slices"] == {"train": [0], "val": [2]}
    assert {"date", "package_version", "epochs", "best_val_acc"} <= set(tr)
    x = torch.rand(4, 1, P, P)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model(x))


def test_cancel_keeps_best_model_on_disk(splits, tmp_path):
    path = tmp_path / "cnn.safetensors"
    gen = train_cnn(
        splits.train, splits.val, config=small_config(), epochs=50, checkpoint_path=path, **KW
    )
    threads = torch.get_num_threads()
    for rec in gen:
        if rec.values.get("epoch") == 2:
            break
    gen.close()  # what the widget's Cancel does
    _, meta = load_cnn(path)
    assert meta["training"]["epochs_run"] in (1, 2)
    assert torch.get_num_threads() == threads


def test_same_seed_same_history(splits):
    def hist(seed):
        res = run(
            train_cnn(splits.train, splits.val, config=small_config(), epochs=2, seed=seed, **KW)
        )
        return [(h["train_loss"], h["val_acc"]) for h in res.history]

    assert hist(3) == hist(3)
    assert hist(3) != hist(4)


def test_early_stopping(splits):
    res = run(
        train_cnn(
            splits.train,
            splits.val,
            config=small_config(),
            epochs=20,
            patience=2,
            **{**KW, "lr": 1e-12},
        )
    )
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1


def test_authors_variant_trains_without_standardisation(splits):
    # the authors' variant (padded, 3-channel input) of the tiny network
    cfg = dataclasses.replace(TINY_CNN, n_classes=2, in_channels=3, paddings=(1, 1, 0))
    assert cfg.is_padded and P == TINY_CNN.patch_size
    res = run(train_cnn(splits.train, splits.val, config=cfg, epochs=1, **KW))
    assert res.meta["variant"] == "authors" and res.model.config.in_channels == 3
    assert not res.meta["training_standardisation"]["applied"]


def test_standardised_training_gives_a_raw_input_model(splits):
    """Validation accuracy during training equals that of the returned (folded) model."""
    res = run(train_cnn(splits.train, splits.val, config=small_config(), epochs=1, **KW))
    st = res.meta["training_standardisation"]
    assert st["applied"] and 0.2 < st["mean"] < 0.6 and 0 < st["std"] < 0.3
    ev = evaluate(res.model, splits.val)
    assert ev.accuracy == pytest.approx(res.best_val_acc)
    # the curves read back from the model file's record (as the Train dock shows them)
    assert training_history(res.meta) == res.history and len(res.history) == 1
    assert training_history({}) == [] and training_history({"training": {"history": [{}]}}) == []


def test_batch_norm_training_gives_a_plain_model(splits):
    """Trained with batch normalisation, the model keeps its validation accuracy folded."""
    res = run(
        train_cnn(splits.train, splits.val, config=small_config(), epochs=2, batch_norm=True, **KW)
    )
    assert res.model.norms is None and res.meta["batch_norm_folded"]
    assert evaluate(res.model, splits.val, tta=False).accuracy == pytest.approx(res.best_val_acc)
    plain = run(train_cnn(splits.train, splits.val, config=small_config(), epochs=1, **KW))
    assert plain.meta["batch_norm_folded"] is False


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_precision_is_recorded_and_the_model_stays_float32(splits, precision):
    """bfloat16 steps (autocast) train as well here; the saved network is float32 either way."""
    res = run(
        train_cnn(splits.train, splits.val, config=small_config(dropout=0.0), epochs=10,
                  schedule="constant", precision=precision, **KW)
    )  # fmt: skip
    assert res.meta["training_precision"] == precision
    assert all(p.dtype == torch.float32 for p in res.model.parameters())
    assert res.best_val_acc > 0.8  # two textures: chance is 0.5
    # the recorded accuracy is that of the float32 model the file holds
    assert evaluate(res.model, splits.val, tta=False).accuracy == pytest.approx(res.best_val_acc)


def test_precision_auto_follows_the_device():
    from napari_brainfeatures._util.device import native_bf16_cpu, training_autocast

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert training_autocast("float32", cpu) is None
    assert training_autocast("bfloat16", cpu) is torch.bfloat16
    assert training_autocast("auto", cuda) is None  # GPUs train in float32 unless asked
    assert training_autocast("auto", cpu) is (torch.bfloat16 if native_bf16_cpu() else None)
    with pytest.raises(ValueError, match="precision must be one of"):
        training_autocast("half", cpu)


@pytest.mark.parametrize(
    "kind", ["uint16 12-bit", "uint16 offset", "uint16 hot pixels", "float HU-like"]
)
def test_training_works_at_the_data_intensity_scale(kind):
    """12-bit data in uint16 (also offset, or with hot pixels) and floats in their own units.

    Jitter and clipping used to assume [0, 1]: 12-bit data spans 0.06 of it and
    was swamped by the noise; floats outside [0, 1] were clipped flat.  A range
    from the dtype or the maximum fails on an offset or a few saturated pixels.
    """
    img, lab = textures()
    if kind.startswith("uint16"):
        img = img.astype(np.uint16) * 2 + (30000 if kind.endswith("offset") else 1000)
        if kind.endswith("hot pixels"):
            img.reshape(-1)[::9973] = 65535  # 0.01 % saturated
    else:
        img = img.astype(np.float32) * 13.0 - 500.0
    sp = sample_splits(img, lab, slices=(0, 2, 4), patch_size=P, per_class=60)
    val_before = sp.val.patches.copy()
    result = run(
        train_cnn(
            sp.train, sp.val, config=small_config(dropout=0.0), epochs=10, schedule="constant", **KW
        )
    )
    np.testing.assert_array_equal(sp.val.patches, val_before)  # inputs never written to
    assert evaluate(result.model, sp.test).accuracy >= 0.9  # chance 0.5; [0, 1] jitter: 0.5-0.75


def test_intensity_range_and_augmentation_follow_the_data_scale():
    assert intensity_range(np.array([0, 246], np.uint8), 1 / 255) == (0.0, 1.0)
    assert intensity_range(np.array([3, 90], np.uint8), 1 / 255) == (0.0, 1.0)  # bytes: as paper
    rng = np.random.default_rng(0)
    signal = rng.integers(30923, 33812, (8, 32, 32)).astype(np.uint16)
    signal.reshape(-1)[::5000] = 65535  # a few hot pixels do not set the scale
    lo, hi = intensity_range(signal, 1 / 65535)
    assert 30923 / 65535 <= lo < 31000 / 65535 and 33700 / 65535 < hi <= 33812 / 65535
    assert value_range(signal, 1 / 65535) == (signal.min() / 65535, 1.0)  # clipping: min..max
    hu = rng.uniform(-517.0, 2786.0, (8, 32, 32)).astype(np.float32)
    lo, hi = intensity_range(hu, 1.0)
    assert -517 <= lo < -500 and 2770 < hi <= 2786
    with pytest.raises(ValueError, match="NaN"):
        intensity_range(np.array([0.0, np.nan], np.float32), 1.0)
    # jitter is equivariant under an affine change of intensity units
    x = torch.rand(16, 1, 32, 32)
    a, b = 2500.0, -400.0
    y = augment_batch(x, torch.Generator().manual_seed(3), mix=0.5, rotate=0.5)
    ya = augment_batch(
        a * x + b, torch.Generator().manual_seed(3), mix=0.5, rotate=0.5, intensity=(b, a + b)
    )
    torch.testing.assert_close(ya, a * y + b, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="lo < hi"):
        augment_batch(x, torch.Generator(), intensity=(1.0, 1.0))


def test_augment_batch_is_a_symmetry_with_mild_jitter():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8)
    y = augment_batch(x, g, mix=0.0)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    syms = []
    for t in (x, x.transpose(-1, -2)):
        for k in range(4):
            syms.append(torch.rot90(t, k, (-2, -1)))
    # every output is close to one of the 8 symmetries of its input, not all the same one
    err = torch.stack([(y - s).abs().mean((1, 2, 3)) for s in syms])  # (8, B)
    assert (err.min(0).values < 0.1).all()
    assert len(set(err.argmin(0).tolist())) > 4


def test_border_mix_keeps_the_centre_and_the_majority():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(64, dtype=torch.float32)[:, None, None, None].expand(64, 1, 32, 32)
    y = border_mix(x, g, p=0.5)
    own = (y == x).float().mean((1, 2, 3))  # (B,)
    assert (y[:, :, 15:17, 15:17] == x[:, :, 15:17, 15:17]).all()  # centre untouched
    assert (own > 0.5).all()
    assert 16 < int((own < 1).sum()) < 48  # about half of the patches were mixed
    # the far sides come from other patches of the batch, along lines of any orientation
    changed = y[y != x]
    assert set(changed.unique().tolist()) <= set(range(64))
    # oblique boundaries too: some mixed patch changes neither whole rows nor whole columns
    diff = (y != x)[:, 0]  # (B, P, P)
    rows_or_cols = [
        bool((d.all(1) | ~d.any(1)).all() or (d.all(0) | ~d.any(0)).all()) for d in diff
    ]
    assert not all(rows_or_cols)
    assert torch.equal(border_mix(x, g, p=0.0), x)


def test_random_rotation_turns_structure_and_fills_corners():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((16, 1, 32, 32), 0.7)
    torch.testing.assert_close(random_rotation(flat, g, p=1.0), flat)  # corners mirrored, not 0
    stripes = (torch.arange(32)[None, None, :, None] % 8 < 4).float().expand(16, 1, 32, 32)
    out = random_rotation(stripes, g, p=1.0)
    # horizontal stripes are constant along rows; rotated ones are not
    assert (out.std(-1).mean((1, 2)) > 0.05).sum() >= 12
    half = random_rotation(stripes, g, p=0.5)
    kept = [torch.equal(h, s) for h, s in zip(half, stripes, strict=True)]
    assert 3 <= sum(kept) <= 13  # about half untouched, exactly
    assert torch.equal(random_rotation(stripes, g, p=0.0), stripes)


def test_he_init_keeps_activations_at_unit_scale():
    x = torch.randn(8, 1, 128, 128)
    torch.manual_seed(0)
    default = BrainAreaCNN().eval()
    he = init_weights(BrainAreaCNN().eval(), seed=1)
    with torch.no_grad():
        assert default.features(x).std() < 0.1 < 0.5 < he.features(x).std() < 10
    again = init_weights(BrainAreaCNN(), seed=1)
    torch.testing.assert_close(again.convs[0].weight, he.convs[0].weight)
    assert (he.fcs[0].bias == 0).all()


def test_input_checks(splits):
    with pytest.raises(ValueError, match="network 128"):
        next(train_cnn(splits.train, splits.val, config=make_config(n_classes=2)))
    with pytest.raises(ValueError, match="n_classes"):
        next(
            train_cnn(
                splits.train,
                splits.val,
                config=TINY_CNN,  # 3 outputs for 2 classes
            )
        )
    other = splits.val.subset(splits.val.labels == 1)
    other.classes = other.classes.remove(2)
    with pytest.raises(ValueError, match="differ from validation classes"):
        next(train_cnn(splits.train, other, config=small_config()))
    with pytest.raises(ValueError, match="share slices"):
        next(train_cnn(splits.train, splits.train, config=small_config()))
    with pytest.raises(ValueError, match="variant"):
        make_config("resnet")
    with pytest.raises(ValueError, match="init"):
        next(train_cnn(splits.train, splits.val, config=small_config(), init="xavier"))
    with pytest.raises(ValueError, match="schedule"):
        next(train_cnn(splits.train, splits.val, config=small_config(), schedule="step"))
    with pytest.raises(ValueError, match="precision must be one of"):
        next(train_cnn(splits.train, splits.val, config=small_config(), precision="float16"))
