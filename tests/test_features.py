"""Dense feature maps equal per-patch evaluation (exactness, edge rules, strides, regions)."""

import dataclasses

import numpy as np
import pytest
import torch

from helpers import TINY_CNN
from napari_brainfeatures.features.fcn import DenseCNN, PatchCNN, estimate_bytes, make_evaluator
from napari_brainfeatures.features.options import DenseOptions
from napari_brainfeatures.features.run import compute_feature_map, measure_padding_deviation
from napari_brainfeatures.features.tile import pad_index
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig
from napari_brainfeatures.progress import run

# D = 8 (three pools) and D = 16 (the paper's four pools, smaller filters).
TINY = TINY_CNN
SMALL64 = CNNConfig(patch_size=64, channels=(4, 4, 8, 8), fc=(16, 8), n_classes=3)
# Patch sizes on offer (the paper's layout at 64 and 96 px) and multi-scale inputs: a 128 px
# window seen as its central 64 px and as 64 px of 2x2 averages; a 72 px window at 1/3.
P64 = CNNConfig(patch_size=64, n_classes=3)
P96 = CNNConfig(patch_size=96, fc=(32, 8), n_classes=3)
MS2 = CNNConfig(patch_size=128, channels=(4, 4, 8, 8), fc=(16, 8), n_classes=3, context=2)
MS3 = dataclasses.replace(TINY_CNN, patch_size=72, context=3)


def make_model(cfg: CNNConfig, seed: int = 0) -> BrainAreaCNN:
    torch.manual_seed(seed)
    return BrainAreaCNN(cfg).eval()


def reference(model, image, stride, edge="reflect", box=None):
    """Per-patch evaluation on the padded image: features, pre-ReLU features, probs, valid."""
    p = model.config.patch_size
    b = p // 2
    img = np.asarray(image, dtype=np.float32)
    img3 = img[None] if img.ndim == 2 else img
    h, w = img3.shape[1:]
    (y0, y1), (x0, x1) = box or ((0, h), (0, w))
    mode = "reflect" if edge == "reflect" else "constant"
    padded = np.pad(img3, ((0, 0), (b, p - 1 - b), (b, p - 1 - b)), mode=mode)
    ys, xs = np.arange(y0, y1, stride), np.arange(x0, x1, stride)
    outs = {"features": [], "features_pre": [], "probs": []}
    with torch.no_grad():
        for z in range(img3.shape[0]):
            patches = np.stack([padded[z, y : y + p, x : x + p] for y in ys for x in xs])
            x = torch.from_numpy(patches)[:, None].expand(-1, model.config.in_channels, p, p)
            a = model.conv_features(x).flatten(1)  # (N, flat): the model's own per-patch path
            for i, fc in enumerate(model.fcs):
                a = fc(torch.relu(a) if i else a)
            for key, val in (
                ("features", torch.relu(a)),
                ("features_pre", a),
                ("probs", torch.softmax(model.head(torch.relu(a)), dim=1)),
            ):
                outs[key].append(val.numpy().reshape(len(ys), len(xs), -1).transpose(2, 0, 1))
    res = {k: np.stack(v) for k, v in outs.items()}  # (Z, C, ny, nx)
    valid = ((ys - b >= 0) & (ys - b + p <= h))[:, None] & ((xs - b >= 0) & (xs - b + p <= w))
    res["valid"] = valid
    return res


def assert_close(got, want):
    scale = float(np.nanmax(np.abs(want)))
    err = float(np.nanmax(np.abs(got - want)))
    assert err <= 1e-4 * max(scale, 1e-6), (err, scale)


def _assert_dense_equals_patch(dense, patch, ny, nx):
    """Both evaluators on one random input: every output equal on the ``(ny, nx)`` grid."""
    side = [max(ev.input_length(n) for ev in (dense, patch)) for n in (ny, nx)]
    x = torch.rand(2, 1, *side)
    got = dense(x[:, :, : dense.input_length(ny), : dense.input_length(nx)], ny, nx)
    want = patch(x, ny, nx)
    for key in ("features", "features_pre", "probs"):
        assert got[key].shape == (2, want[key].shape[1], ny, nx)
        assert_close(got[key].numpy(), want[key].numpy())
    assert torch.equal(got["areas"], want["areas"])


@pytest.mark.parametrize("cfg", [TINY, SMALL64], ids=["tiny-D8", "small-D16"])
@pytest.mark.parametrize("stride", [1, 3, 4, 16])
def test_dense_evaluator_equals_patch_evaluator(cfg, stride):
    model = make_model(cfg)
    dense, patch = DenseCNN(model, stride=stride, fc_outputs=40), PatchCNN(model, stride=stride)
    _assert_dense_equals_patch(dense, patch, 11, 6)


@pytest.mark.parametrize("cfg", [P64, P96, MS2, MS3], ids=["p64", "p96", "ms128x2", "ms72x3"])
@pytest.mark.parametrize("stride", [1, 3, 4, 16])
def test_every_patch_size_and_multiscale_input_is_exact(cfg, stride):
    """Dense maps equal per-patch evaluation for every configuration offered."""
    model = make_model(cfg, seed=stride)
    dense, patch = make_evaluator(model, "dense", stride, 40), PatchCNN(model, stride=stride)
    assert dense.exact and dense.before == cfg.patch_size // 2
    _assert_dense_equals_patch(dense, patch, 7, 5)


@pytest.mark.parametrize(
    ("cfg", "stride", "shape", "edge"),
    [
        (MS2, 2, (45, 52), "reflect"),  # multi-scale, through the whole dense-map pipeline
        (MS3, 4, (80, 90), "invalid"),
        (TINY, 1, (37, 45), "reflect"),
        (TINY, 3, (2, 23, 30), "reflect"),
        (TINY, 4, (29, 26), "zero"),
        (TINY, 16, (50, 61), "reflect"),
        (SMALL64, 1, (21, 33), "reflect"),  # image smaller than a patch: repeated mirroring
        (SMALL64, 3, (40, 35), "zero"),
        (SMALL64, 4, (70, 70), "invalid"),
        (TINY, 1, (40, 44), "invalid"),
    ],
)
def test_feature_map_equals_per_patch_including_borders(tmp_path, cfg, stride, shape, edge):
    model = make_model(cfg, seed=stride)
    rng = np.random.default_rng(stride)
    image = (rng.random(shape) * 255).astype(np.uint8)
    which = ("features", "features_pre", "probs", "areas")
    store = run(
        compute_feature_map(
            image, model, out=tmp_path / "f.zarr", stride=stride, tile=8, edge=edge, which=which
        )
    )
    want = reference(model, image / 255.0, stride, edge)
    got = {k: np.asarray(store.features(pre_relu=k == "features_pre")) for k in which[:2]}
    got["probs"] = np.asarray(store.probs)
    if len(shape) == 2:
        got = {k: v[None] for k, v in got.items()}
    valid = want["valid"] if edge == "invalid" else np.ones_like(want["valid"])
    for key in ("features", "features_pre", "probs"):
        assert got[key].shape == want[key].shape
        if edge == "invalid":
            assert np.isnan(got[key][:, :, ~valid]).all()
            assert_close(got[key][:, :, valid], want[key][:, :, valid])
        else:
            assert_close(got[key], want[key])
    areas = np.asarray(store.areas).reshape(want["probs"][:, 0].shape)
    best = np.sort(want["probs"], axis=1)
    clear = (best[:, -1] - best[:, -2] > 1e-4) & valid  # skip near-ties
    assert np.array_equal(areas[clear], want["probs"].argmax(axis=1)[clear] + 1)
    assert (areas[:, ~valid] == 0).all()


def test_true_128_config_on_a_small_image(tmp_path):
    model = make_model(CNNConfig())
    rng = np.random.default_rng(1)
    image = rng.random((30, 26)).astype(np.float32)
    box = {"y": (10, 22), "x": (5, 17)}
    store = run(compute_feature_map(image, model, out=tmp_path / "a.zarr", region=box))
    want = reference(model, image, 1, box=(box["y"], box["x"]))
    assert store.features().shape == (64, 12, 12)
    assert_close(np.asarray(store.features())[None], want["features"])
    assert_close(np.asarray(store.probs)[None], want["probs"])
    assert store.layer_kwargs() == {"scale": (1.0, 1.0), "translate": (10.0, 5.0)}
    for stride in (3, 16):
        s = run(compute_feature_map(image, model, out=tmp_path / f"s{stride}.zarr", stride=stride))
        assert_close(np.asarray(s.features())[None], reference(model, image, stride)["features"])


def test_pad_index_matches_numpy_pad():
    for n in (1, 2, 5):
        for edge, mode in (("reflect", "reflect"), ("zero", "constant")):
            row = np.arange(n) + 1.0
            want = np.pad(row, (23, 19), mode=mode)
            idx = pad_index(np.arange(-23, n + 19), n, edge)
            got = np.where(idx >= 0, row[np.clip(idx, 0, None)], 0.0)
            assert np.array_equal(got, want), (n, edge)


def test_region_mask_z_range_and_per_patch_method(tmp_path):
    model = make_model(TINY)
    rng = np.random.default_rng(2)
    vol = rng.random((4, 30, 30)).astype(np.float32)
    mask = np.zeros((30, 30), bool)
    mask[5:12, 8:20] = True
    a = run(compute_feature_map(vol, model, out=tmp_path / "m.zarr", region=mask, tile=4))
    assert a.attrs["origin"] == [0, 5, 8]
    assert a.features().shape == (4, 8, 7, 12)
    b = run(
        compute_feature_map(
            vol, model, out=tmp_path / "z.zarr", region=(1, 3), method="patch", tile=5
        )
    )
    assert b.shape == (2, 30, 30)
    assert b.attrs["method"] == "patch"
    want = reference(model, vol[1:3], 1)
    assert_close(np.asarray(b.features()), want["features"])
    assert_close(np.asarray(a.features()), reference(model, vol, 1)["features"][:, :, 5:12, 8:20])


def test_mask_outside_pixels_are_nan_and_zero(tmp_path):
    model = make_model(TINY)
    image = np.random.default_rng(3).random((24, 24)).astype(np.float32)
    mask = np.zeros((24, 24), bool)
    mask[3, 4] = mask[10, 15] = True
    store = run(compute_feature_map(image, model, out=tmp_path / "m.zarr", region=mask, tile=4))
    areas = np.asarray(store.areas)
    feats = np.asarray(store.features())
    sub = mask[3:11, 4:16]
    assert (areas[sub] > 0).all() and (areas[~sub] == 0).all()
    assert np.array_equal(np.asarray(store.valid()), sub)
    assert np.isnan(feats[:, ~sub]).all() and not np.isnan(feats[:, sub]).any()


@pytest.mark.parametrize("method", ["dense", "patch"])
def test_nan_pixels_give_no_area(tmp_path, method):
    """Outputs whose patch holds a NaN pixel: NaN features and area 0, not a class id."""
    model = make_model(TINY)
    image = np.random.default_rng(5).random((80, 80)).astype(np.float32)
    image[4, 4] = np.nan
    store = run(
        compute_feature_map(
            image, model, out=tmp_path / f"{method}.zarr", tile=8, stride=4, method=method
        )
    )
    feats, areas = np.asarray(store.features()), np.asarray(store.areas)
    bad = np.isnan(feats).any(axis=0)
    assert bad.any() and not bad.all()
    assert (areas[bad] == 0).all() and (areas[~bad] > 0).all()


def test_padded_network_deviation_and_exact_patch_path(tmp_path):
    cfg = CNNConfig.authors(patch_size=64, channels=(4, 4, 8, 8), fc=(16, 8), n_classes=3)
    model = make_model(cfg)
    image = np.random.default_rng(4).random((40, 40)).astype(np.float32)
    dev = measure_padding_deviation(model, image, n=8)
    assert 1e-4 < dev["rel_deviation"] < 1.0
    assert dev["max_abs"] > 0 and 0 < dev["cosine"] <= 1
    store = run(compute_feature_map(image, model, out=tmp_path / "p.zarr", stride=5))
    assert store.attrs["method"] == "patch"  # auto: exact per-patch for a padded net
    assert_close(np.asarray(store.features())[None], reference(model, image, 5)["features"])
    unpadded = measure_padding_deviation(make_model(TINY), image, n=8)
    assert unpadded["max_rel"] < 1e-5


def test_mixed_precision_error_is_small(tmp_path):
    model = make_model(TINY)
    image = np.random.default_rng(5).random((20, 20)).astype(np.float32)
    f32 = run(compute_feature_map(image, model, out=tmp_path / "a.zarr"))
    mix = run(compute_feature_map(image, model, out=tmp_path / "b.zarr", precision="mixed"))
    a, b = np.asarray(f32.features()), np.asarray(mix.features())
    rel = np.abs(a - b).max() / np.abs(a).max()
    assert 0 < rel < 5e-2
    assert mix.attrs["precision"] == "mixed"


class RecordingArray:
    """An image that records the size of every read."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads = []

    def __getitem__(self, key):
        block = self.data[key]
        self.reads.append(block.size)
        return block


def test_tile_working_set_does_not_grow_with_the_image(tmp_path):
    model = make_model(TINY)
    rng = np.random.default_rng(6)
    reads, tiles = [], []
    for side in (40, 80):  # 1x and 4x the pixels
        img = RecordingArray(rng.random((side, side)).astype(np.float32))
        store = run(compute_feature_map(img, model, out=tmp_path / f"{side}.zarr", memory_mb=1))
        reads.append(max(img.reads))
        tiles.append(store.attrs["tile"])
    ev = make_evaluator(model, "dense", 1, 8192)
    assert tiles[0] == tiles[1] == 24  # chosen from the memory budget, not the image
    assert max(reads) <= ev.input_length(tiles[0]) ** 2  # one tile with its halo, at most
    assert estimate_bytes(ev, TINY, tiles[0]) <= 2**20
    big = make_evaluator(make_model(CNNConfig()), "dense", 1, 8192)
    assert estimate_bytes(big, CNNConfig(), 256) < 1024 * 2**20  # the default CPU budget


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": 0}, "stride must be a positive integer, got 0"),
        ({"edge": "wrap"}, "edge must be one of"),
        ({"which": ("feature",)}, "which must be a non-empty subset"),
        ({"region": (3, 9)}, "region z"),
        ({"region": {"y": (0, 99)}}, "region y"),
        ({"precision": "half"}, "precision must be one of"),
        ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "tpu"}, "device"),
    ],
)
def test_bad_options_are_refused_with_clear_messages(tmp_path, kwargs, match):
    image = np.zeros((3, 20, 20), np.float32)
    with pytest.raises(ValueError, match=match):
        run(compute_feature_map(image, make_model(TINY), out=tmp_path / "x.zarr", **kwargs))
    assert not (tmp_path / "x.zarr").exists()


def test_3d_mask_with_a_z_range(tmp_path):
    model = make_model(TINY)
    vol = np.random.default_rng(7).random((4, 20, 22)).astype(np.float32)
    mask = np.zeros(vol.shape, bool)
    mask[1, 2:5, 3:9] = mask[2, 10:14, 6:8] = mask[3, 0:20, 0:22] = True  # z=3 is outside
    region = {"z": (1, 3), "mask": mask}
    store = run(compute_feature_map(vol, model, out=tmp_path / "m.zarr", region=region, tile=4))
    assert store.attrs["origin"] == [1, 2, 3] and store.shape == (2, 12, 6)
    assert np.array_equal(np.asarray(store.valid()), mask[1:3, 2:14, 3:9])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tile": 0}, "tile must be a positive integer .*got 0"),
        ({"tile": -8}, "tile must be a positive integer .*got -8"),
        ({"tile": 8.5}, "tile must be a positive integer .*got 8.5"),
        ({"batch": 0}, "batch must be a positive integer, got 0"),
        ({"stride": True}, "stride must be a positive integer, got True"),
        ({"memory_mb": 0}, r"memory_mb must be a positive number \(MiB\).*got 0"),
        ({"memory_mb": -1.5}, "memory_mb must be .*got -1.5"),
        ({"memory_mb": float("nan")}, "memory_mb must be .*got nan"),
        ({"input_scale": 0.0}, "input_scale must be .*got 0.0"),
        ({"method": "fast"}, "method must be one of .*got 'fast'"),
        ({"edge": "wrap"}, "edge must be one of .*got 'wrap'"),
        ({"which": ()}, r"which must be a non-empty subset .*got \(\)"),
        ({"which": ("features", "logits")}, "which must be .*'logits'"),
    ],
)
def test_dense_options_refuse_bad_values_quoting_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DenseOptions(**kwargs)


def test_dense_options_normalise_and_merge():
    opts = DenseOptions(tile=np.int64(8), which=("probs", "probs", "areas"), memory_mb=2)
    assert opts.tile == 8 and type(opts.tile) is int
    assert opts.which == ("probs", "areas") and opts.memory_mb == 2.0
    assert opts.device in ("cpu", "cuda") and opts.method == "auto"
    assert DenseOptions(which="areas").which == ("areas",)
    merged = DenseOptions.of(opts, stride=3)
    assert merged.stride == 3 and merged.tile == 8 and opts.stride == 1
    assert DenseOptions.of(None, tile=4) == DenseOptions(tile=4)
    with pytest.raises(TypeError, match="unknown option.*'strid'"):
        DenseOptions.of(opts, strid=3)
    with pytest.raises(ValueError, match="tile must be a positive integer"):
        DenseOptions.of(opts, tile=0)  # a change is checked too


def test_tile_zero_and_zero_memory_are_refused_before_any_store(tmp_path):
    image = np.zeros((20, 20), np.float32)
    for kwargs in ({"tile": 0}, {"memory_mb": 0}):
        with pytest.raises(ValueError, match="got 0"):
            run(compute_feature_map(image, make_model(TINY), out=tmp_path / "x.zarr", **kwargs))
    assert not (tmp_path / "x.zarr").exists()
