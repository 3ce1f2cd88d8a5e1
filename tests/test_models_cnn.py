"""The patch CNN: shapes of both variants, features, and its model files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.models.checkpoint import ModelFileError, save_checkpoint
from napari_brainfeatures.models.cnn import (
    BrainAreaCNN,
    CNNConfig,
    ModelMismatchError,
    check_image_dtype,
    fold_batch_norm,
    fold_input_normalisation,
    input_scale_for,
    load_cnn,
    save_cnn,
    to_input,
)


def test_default_network_shapes():
    cfg = CNNConfig()
    assert (cfg.final_size, cfg.flat_size, cfg.n_features) == (5, 3200, 64)
    torch.manual_seed(0)
    model = BrainAreaCNN(cfg).eval()
    x = torch.rand(2, 1, 128, 128)
    assert model.conv_features(x).shape == (2, 128, 5, 5)
    assert model.fcs[0].in_features == 3200
    assert model(x).shape == (2, 6)
    assert model.features(x).shape == (2, 64)


def test_authors_variant_shapes():
    cfg = CNNConfig.authors()
    assert (cfg.in_channels, cfg.paddings, cfg.flat_size, cfg.is_padded) == (
        3,
        (1, 1, 0, 0),
        4608,
        True,
    )
    model = BrainAreaCNN(cfg).eval()
    x = torch.rand(2, 3, 128, 128)
    assert model.conv_features(x).shape == (2, 128, 6, 6)
    assert model(x).shape == (2, 6)


def test_features_relu_and_pre_relu():
    torch.manual_seed(1)
    model = BrainAreaCNN().eval()
    x = torch.rand(4, 1, 128, 128)
    with torch.no_grad():
        post, pre = model.features(x, relu=True), model.features(x, relu=False)
    assert (post >= 0).all()
    assert (pre < 0).any()  # pre-ReLU features can be negative (the authors' choice)
    torch.testing.assert_close(post, pre.clamp(min=0))


def test_config_rejects_too_small_patch():
    with pytest.raises(ValueError, match="too small.*smallest patch_size it takes is 54"):
        CNNConfig(patch_size=32)
    with pytest.raises(ValueError, match="views of 32 px with context 2.*takes is 108"):
        CNNConfig(patch_size=64, context=2)


@pytest.mark.parametrize("context", [1, 2, 3, 4])
def test_the_smallest_patch_named_is_the_smallest_that_works(context):
    p = CNNConfig(patch_size=128 * context, context=context).smallest_patch()
    assert CNNConfig(patch_size=p, context=context).final_size == 1
    for q in range(context, p, context):  # every smaller multiple of the context is refused
        with pytest.raises(ValueError):
            CNNConfig(patch_size=q, context=context)
    assert CNNConfig.authors(patch_size=128).smallest_patch() == 48
    CNNConfig.authors(patch_size=48)


def test_to_input_scales_and_repeats():
    raw = np.array([[[0, 255], [51, 102]]], np.uint8)  # (1, 2, 2)
    x = to_input(raw, in_channels=3)
    assert x.shape == (1, 3, 2, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, 2], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert input_scale_for(np.uint8) == (1 / 255, "uint8/255")
    assert input_scale_for(np.float32)[0] == 1.0


def test_fold_input_normalisation_is_exact():
    torch.manual_seed(3)
    model = BrainAreaCNN().eval()
    folded = fold_input_normalisation(model, 0.45, 0.07)
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        want = model((x - 0.45) / 0.07)
        torch.testing.assert_close(folded(x), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(
            folded.features(x), model.features((x - 0.45) / 0.07), rtol=1e-4, atol=1e-4
        )
    assert model.convs[0].weight.abs().max() < folded.convs[0].weight.abs().max()  # a copy
    with pytest.raises(ValueError, match="padding 1"):
        fold_input_normalisation(BrainAreaCNN(CNNConfig.authors()), 0.5, 0.1)


@pytest.mark.parametrize("context", [1, 2])
def test_fold_batch_norm_is_exact_and_leaves_a_plain_network(tmp_path, context):
    torch.manual_seed(4)
    model = BrainAreaCNN(CNNConfig(patch_size=128, context=context), batch_norm=True)
    x = torch.rand(6, 1, 128, 128)
    with torch.no_grad():
        model.train()
        model(x)  # running statistics of one batch
        for bn in [*model.norms, *(model.ctx_norms or [])]:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
    model.eval()
    folded = fold_batch_norm(model)
    assert folded.norms is None and folded.ctx_norms is None and model.norms is not None
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="fold_batch_norm"):
        save_cnn(tmp_path / "m", model, classes=default_table())
    path = save_cnn(tmp_path / "m", folded, classes=default_table())
    plain = BrainAreaCNN(folded.config).state_dict().keys()
    assert load_cnn(path)[0].state_dict().keys() == plain  # the same file as ever


def _small_config(**kw):
    return CNNConfig(
        patch_size=32,
        n_classes=2,
        channels=(4, 8, 8),
        kernels=(3, 3, 3),
        paddings=(0, 0, 0),
        fc=(16, 8),
        **kw,
    )


def _two_classes():
    return ClassTable(tuple(default_table().by_id(i) for i in (1, 3)))


def test_model_round_trip(tmp_path):
    torch.manual_seed(2)
    model = BrainAreaCNN(_small_config()).eval()
    meta = {"voxel_size_um": [1.17] * 3}
    path = save_cnn(tmp_path / "m", model, classes=_two_classes(), meta=meta)
    assert path.suffix == ".safetensors"
    loaded, meta = load_cnn(path, expect_classes=_two_classes(), expect_patch_size=32)
    assert loaded.config == model.config
    assert meta["class_table"] == _two_classes()
    assert meta["patch_size"] == 32 and meta["normalisation"] == "uint8/255"
    assert meta["voxel_size_um"] == [1.17] * 3
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_save_refuses_class_count_mismatch(tmp_path):
    with pytest.raises(ValueError, match="2 outputs"):
        save_cnn(tmp_path / "m", BrainAreaCNN(_small_config()), classes=default_table())


def test_save_refuses_overwrite_when_asked(tmp_path):
    model = BrainAreaCNN(_small_config())
    path = save_cnn(tmp_path / "m.safetensors", model, classes=_two_classes())
    with pytest.raises(FileExistsError):
        save_cnn(path, model, classes=_two_classes(), overwrite=False)


@pytest.fixture
def model_file(tmp_path):
    model = BrainAreaCNN(_small_config())
    return save_cnn(tmp_path / "m.safetensors", model, classes=_two_classes())


def test_load_refuses_other_classes(model_file):
    with pytest.raises(ModelMismatchError, match="trained for classes"):
        load_cnn(model_file, expect_classes=default_table())
    with pytest.raises(ModelMismatchError, match="trained for classes"):
        load_cnn(model_file, expect_classes=["Str", "Ctx"])  # order is the output order
    load_cnn(model_file, expect_classes=["Ctx", "Str"])


def test_load_refuses_other_patch_size(model_file):
    with pytest.raises(ModelMismatchError, match="32 px patches, not 128 px"):
        load_cnn(model_file, expect_patch_size=128)


def test_image_dtype_must_match_the_training_dtype(model_file, tmp_path):
    _, bare = load_cnn(model_file)
    check_image_dtype(bare, np.float32)  # no training record: "uint8/255" is only a default
    model_file = save_cnn(
        tmp_path / "trained.safetensors",
        BrainAreaCNN(_small_config()),
        classes=_two_classes(),
        meta={"normalisation": "uint8/255", "input_scale": 1 / 255},
    )
    _, meta = load_cnn(model_file)
    check_image_dtype(meta, np.uint8)
    for other in (np.uint16, np.float32):
        with pytest.raises(ModelMismatchError, match=r"trained on uint8 images .* is "):
            check_image_dtype(meta, other)
    check_image_dtype(
        {"normalisation": "float (as is, expected in [0, 1])", "input_scale": 1.0}, np.float64
    )
    check_image_dtype({}, np.int16)  # nothing recorded: not checked
    # the dense maps refuse a model file that does not match the image
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.progress import run

    image = np.zeros((40, 40), np.uint16)
    with pytest.raises(ModelMismatchError, match="uint16"):
        run(compute_feature_map(image, model_file, out=tmp_path / "f.zarr"))
    assert not (tmp_path / "f.zarr").exists()
    run(compute_feature_map(image.astype(np.uint8), model_file, out=tmp_path / "f.zarr"))


def test_truncated_file(model_file, tmp_path):
    data = model_file.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelFileError, match="truncated|corrupt"):
        load_cnn(bad)
    bad.write_bytes(data[:20])
    with pytest.raises(ModelFileError):
        load_cnn(bad)


def test_pickle_file_refused(tmp_path):
    pt = tmp_path / "model.pt"
    torch.save(BrainAreaCNN(_small_config()).state_dict(), pt)
    with pytest.raises(ModelFileError, match="pickled"):
        load_cnn(pt)
    raw = tmp_path / "model.pkl"
    raw.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelFileError):
        load_cnn(raw)


def test_other_architecture_refused(tmp_path):
    other = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "lin", other, kind="Linear", config={})
    with pytest.raises(ModelFileError, match="expected a 'BrainAreaCNN'"):
        load_cnn(path)
    # right kind, but weights of another shape than the config says
    wrong = BrainAreaCNN(_small_config(in_channels=3))
    path = save_checkpoint(
        tmp_path / "w", wrong, kind="BrainAreaCNN", config=_small_config().to_dict()
    )
    with pytest.raises(ModelFileError, match="does not match"):
        load_cnn(path)


def test_bad_config_and_missing_file(tmp_path):
    model = BrainAreaCNN(_small_config())
    cfg = {**_small_config().to_dict(), "bogus": 1}
    path = save_checkpoint(tmp_path / "c", model, kind="BrainAreaCNN", config=cfg)
    with pytest.raises(ModelFileError, match="invalid CNN config"):
        load_cnn(path)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_cnn(tmp_path / "nope.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2)}, str(foreign), metadata={"x": json.dumps(1)})
    with pytest.raises(ModelFileError, match="not a napari-brainfeatures model"):
        load_cnn(foreign)


@pytest.mark.parametrize("patch", [64, 96, 128])
def test_patch_sizes_on_offer(patch):
    model = BrainAreaCNN(CNNConfig(patch_size=patch, n_classes=3)).eval()
    assert model.config.final_size >= 1 and model.config.context == 1
    with torch.no_grad():
        assert model(torch.rand(2, 1, patch, patch)).shape == (2, 3)


def test_multiscale_input_sees_a_fine_and_a_context_view(tmp_path):
    cfg = CNNConfig(patch_size=128, n_classes=2, channels=(4, 4, 8, 8), fc=(16, 8), context=2)
    assert (cfg.view_size, cfg.view_offset, cfg.final_size) == (64, 32, 1)
    assert cfg.flat_size == 2 * 8 * 1 * 1
    torch.manual_seed(4)
    model = BrainAreaCNN(cfg).eval()
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        base = model(x)
        rim = x.clone()
        rim[..., :8, :] = 0.0  # outside the fine view: only the context view sees it
        assert not torch.allclose(model(rim), base)
        # the context view is the 2x2 block average: changes inside a block that keep its
        # mean, outside the fine view, change nothing
        swap = x.clone()
        swap[..., 0, :] , swap[..., 1, :] = x[..., 1, :], x[..., 0, :]  # fmt: skip
        torch.testing.assert_close(model(swap), base, rtol=0, atol=1e-6)
        folded = fold_input_normalisation(model, 0.4, 0.1)  # both trunks fold
        torch.testing.assert_close(folded(x), model((x - 0.4) / 0.1), rtol=1e-4, atol=1e-4)
    path = save_cnn(tmp_path / "ms", model, classes=_two_classes())
    loaded, _ = load_cnn(path)
    assert loaded.config.context == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), base, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of context"):
        CNNConfig(patch_size=129, context=2)
    with pytest.raises(ValueError, match="unpadded"):
        CNNConfig.authors(patch_size=256, context=2)
    old = CNNConfig().to_dict()
    del old["context"]  # a model file from before the multi-scale input
    assert CNNConfig.from_dict(old).context == 1
