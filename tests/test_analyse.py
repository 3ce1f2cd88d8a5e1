"""Paper-000 analyses: probes, V-measure, Gram distance, PCA, noise curve, extractors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from helpers import tiny_cnn, two_areas
from napari_brainfeatures.analyse import (
    compare_extractors,
    feature_extractor,
    gmm_vmeasure,
    gram_block_distance,
    gram_matrix,
    noise_robustness,
    pca_scatter,
    probe_scores,
    report_figure,
    report_json,
)
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig
from napari_brainfeatures.progress import Progress, run

SMALL = CNNConfig(patch_size=64, n_classes=3, channels=(4, 4, 4, 4), fc=(16, 8))


pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n_per=40, d=5, k=3, seed=0, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 3
    y = np.repeat(np.arange(k), n_per)
    return centres[y] + spread * rng.standard_normal((len(y), d)), y


def quadrant_patches(n_per=30, p=8, seed=0):
    """3 classes of patches: bright left half, bright top half, uniformly grey."""
    rng = np.random.default_rng(seed)
    base = np.full((3, p, p), 0.3, np.float32)
    base[0, :, : p // 2] = 0.8
    base[1, : p // 2] = 0.8
    base[2] = 0.55
    y = np.repeat(np.arange(3), n_per)
    return np.clip(base[y] + 0.05 * rng.standard_normal((len(y), p, p)), 0, 1), y


def quadrant_means(patches):
    p = np.asarray(patches)
    p = p / 255.0 if p.dtype == np.uint8 else p
    h = p.shape[-1] // 2
    q = [p[:, :h, :h], p[:, :h, h:], p[:, h:, :h], p[:, h:, h:]]
    return np.stack([x.mean(axis=(1, 2)) for x in q], axis=1)


# -- features ---------------------------------------------------------------------------------
def test_gram_distance_equals_the_naive_formula():
    X, y = blobs(n_per=15, seed=1)
    X[3] = 0  # a zero row stays zero
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    G = Xn @ Xn.T
    D = (y[:, None] == y[None, :]).astype(float)
    naive = np.linalg.norm(G - D) / len(y)
    assert gram_block_distance(X, y) == pytest.approx(naive, rel=1e-9)
    # ideal features: one orthogonal unit vector per class -> distance 0
    assert gram_block_distance(np.eye(3)[y] * 5, y) == pytest.approx(0, abs=1e-12)
    G2, y2 = gram_matrix(X, y, max_n=20, seed=0)
    assert G2.shape == (20, 20) and (np.diff(y2) >= 0).all()
    np.testing.assert_allclose(np.diag(G2)[np.linalg.norm(G2, axis=1) > 0], 1.0)


def test_probes_beat_chance_and_fail_on_shuffled_labels():
    X, y = blobs(seed=2)
    Xt, yt = blobs(seed=2, n_per=20)
    s = probe_scores(X, y, Xt, yt)
    assert set(s) == {"linear_svm", "rbf_svm", "logistic"}
    assert min(s.values()) > 0.9
    rng = np.random.default_rng(0)
    shuffled = probe_scores(X, rng.permutation(y), Xt, yt)
    assert max(shuffled.values()) < 0.75
    with pytest.raises(ValueError, match="two classes"):
        probe_scores(X, np.zeros_like(y), Xt, yt)
    with pytest.raises(ValueError, match="need X"):
        probe_scores(X, y[:5], Xt, yt)


def test_gmm_vmeasure():
    X, y = blobs(seed=3)
    Xt, yt = blobs(seed=3, n_per=25)
    assert gmm_vmeasure(X, Xt, yt, 3) > 0.9
    # scale-free: tiny features (a random network's) are not swamped by reg_covar
    assert gmm_vmeasure(X * 1e-4, Xt * 1e-4, yt, 3) == pytest.approx(gmm_vmeasure(X, Xt, yt, 3))
    noise = np.random.default_rng(0).standard_normal(X.shape)
    assert gmm_vmeasure(noise, noise, y, 3) < 0.2
    with pytest.raises(ValueError, match="n_components"):
        gmm_vmeasure(X, Xt, yt, 0)


def test_pca_scatter():
    X, _ = blobs(seed=4)
    coords, evr = pca_scatter(X, 3)
    assert coords.shape == (120, 3) and evr.shape == (3,)
    assert (np.diff(evr) <= 0).all() and evr.sum() <= 1 + 1e-9
    with pytest.raises(ValueError, match="n must be"):
        pca_scatter(X, 9)


# -- noise ------------------------------------------------------------------------------------
def test_noise_robustness_decreases():
    patches, y = quadrant_patches()
    curve = noise_robustness(quadrant_means, patches, y, [0.0, 0.3, 1.0, 3.0], seed=0)
    acc = curve["accuracy"]
    assert curve["sigmas"] == [0.0, 0.3, 1.0, 3.0]
    assert acc[0] > 0.95 and acc[-1] < 0.7
    assert all(b <= a + 0.05 for a, b in zip(acc, acc[1:], strict=False))
    u8 = (patches * 255).astype(np.uint8)  # uint8 input works the same
    te, yte = quadrant_patches(seed=1)
    c2 = noise_robustness(quadrant_means, u8, y, [0.0], test_patches=te, test_labels=yte)
    assert c2["accuracy"][0] > 0.95
    with pytest.raises(ValueError, match="sigmas"):
        noise_robustness(quadrant_means, patches, y, [-1.0])


def dtype_scaled_means(patches):
    """Like the CNN extractors: integers divided by their dtype's maximum, floats as they are."""
    p = np.asarray(patches)
    p = p / np.iinfo(p.dtype).max if p.dtype.kind in "ui" else p
    return quadrant_means(p.astype(np.float32))


@pytest.mark.parametrize("units", ["uint16 12-bit", "float HU"])
def test_noise_curve_in_the_data_intensity_range(units):
    """Clean accuracy stays high for any dtype; noise is a share of the data's range."""
    patches, y = quadrant_patches()
    data = (
        (patches * 4000).astype(np.uint16)
        if units.startswith("uint16")
        else (patches * 3000 - 1000).astype(np.float32)
    )
    curve = noise_robustness(dtype_scaled_means, data, y, [0.0, 0.3, 3.0], seed=0)
    acc = curve["accuracy"]
    assert acc[0] > 0.95 and acc[-1] < 0.7, acc  # [0, 1] clipping gave chance even at σ = 0


# -- extractors -------------------------------------------------------------------------------
def test_random_baseline_shares_the_trained_input_standardisation(tmp_path):
    """A 12-bit scan reaches the random network standardised, as it reaches the trained one."""
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import save_cnn

    patches = np.random.default_rng(0).integers(900, 4000, (6, 64, 64)).astype(np.uint16)
    mean, std = 0.035, 0.012
    folded = feature_extractor("random", config=SMALL, seed=2, input_stats=(mean, std))
    plain = feature_extractor("random", config=SMALL, seed=2)
    z = (patches.astype(np.float32) / 65535 - mean) / std  # what the trained network sees
    np.testing.assert_allclose(folded(patches), plain(z), rtol=1e-3, atol=1e-4)
    path = save_cnn(
        tmp_path / "m",
        BrainAreaCNN(SMALL),
        classes=ClassTable.from_names("abc"),
        meta={"training_standardisation": {"applied": True, "mean": mean, "std": std}},
    )
    auto = feature_extractor("random", model=path, seed=2)  # from the file's training record
    np.testing.assert_allclose(auto(patches), folded(patches), rtol=1e-5)


def test_cnn_and_random_extractors():
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (5, 64, 64), dtype=np.uint8)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = BrainAreaCNN(SMALL)
    trained = feature_extractor("cnn", model=model, batch_size=2)
    f = trained(patches)
    assert f.shape == (5, 8) and f.dtype == np.float32
    with torch.no_grad():
        ref = model.eval().features(torch.from_numpy(patches[:, None] / 255).float(), relu=False)
    np.testing.assert_allclose(f, ref.numpy(), atol=1e-5)
    assert (feature_extractor("cnn", model=model, relu=True)(patches) >= 0).all()
    np.testing.assert_allclose(trained(patches / 255.0), f, atol=1e-5)  # float in [0, 1]
    r1 = feature_extractor("random", config=SMALL, seed=1)(patches)
    r1b = feature_extractor("random", model=model, seed=1)(patches)  # model's architecture
    r2 = feature_extractor("random", config=SMALL, seed=2)(patches)
    np.testing.assert_array_equal(r1, r1b)
    assert not np.allclose(r1, r2) and not np.allclose(r1, f)
    with pytest.raises(ValueError, match="64x64"):
        trained(patches[:, :32, :32])
    with pytest.raises(ValueError, match=r"\(N, P, P\)"):
        trained(patches[0])


def test_extractor_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="kind must be"):
        feature_extractor("vgg")
    with pytest.raises(ValueError, match="needs a BrainAreaCNN"):
        feature_extractor("cnn")
    with pytest.raises(ValueError, match="arch="):
        feature_extractor("torchvision", arch="resnet18")
    monkeypatch.setitem(sys.modules, "torchvision", None)  # as if not installed
    with pytest.raises(ImportError, match="torchvision"):
        feature_extractor("torchvision", arch="resnet18", weights=tmp_path / "w.pth")


# -- all together -----------------------------------------------------------------------------
def test_compare_extractors_report_json_and_figure():
    train, test = quadrant_patches(n_per=20, seed=0), quadrant_patches(n_per=20, seed=1)
    rng = np.random.default_rng(0)

    def junk(p):
        return rng.standard_normal((len(p), 4))

    gen = compare_extractors(
        {"quadrants": quadrant_means, "junk": junk}, train, test, sigmas=[0.0, 1.0]
    )
    records = []
    report = run(gen, records.append)
    assert all(isinstance(r, Progress) for r in records) and records[-1].step == 8
    good, bad = report["quadrants"], report["junk"]
    assert good["probes"]["logistic"] > 0.9 and bad["probes"]["logistic"] < 0.6
    assert good["vmeasure"] > bad["vmeasure"]
    assert good["gram_distance"] < bad["gram_distance"]
    js = report_json(report)
    json.dumps(js)
    assert set(js["quadrants"]) == {"probes", "vmeasure", "gram_distance", "noise", "pca_explained"}
    fig = report_figure(report)
    assert len(fig.axes) == 2 * 2 + 2
    # narrow (the dock): extractors stacked, then the curves and bars full width below
    narrow = report_figure(report, narrow=True)
    assert len(narrow.axes) == 2 * 2 + 2
    spans = [ax.get_subplotspec() for ax in narrow.axes]
    assert [sp.rowspan.start for sp in spans] == [0, 0, 1, 1, 2, 3]
    assert [len(sp.colspan) for sp in spans[-2:]] == [2, 2]
    assert narrow.axes[0].get_position().x0 < narrow.axes[1].get_position().x0
    from matplotlib.colors import to_hex

    from napari_brainfeatures.classes import ClassTable

    table = ClassTable.from_names(["left", "top"])  # ids 1, 2; label 0 has no class
    fig = report_figure(report, classes=table)
    scatter = fig.axes[1]
    legend = [t.get_text() for t in scatter.get_legend().get_texts()]
    assert legend == ["0", "left", "top"]
    colours = [to_hex(c.get_facecolor()[0]) for c in scatter.collections]
    assert colours[1:] == [table.by_id(1).colour.lower(), table.by_id(2).colour.lower()]
    # the dock: 2-D scatters with their components' variance named, one legend below
    narrow = report_figure(report, classes=table, narrow=True)
    assert narrow.axes[1].name == "rectilinear" and narrow.axes[1].get_legend() is None
    assert narrow.axes[1].get_xlabel().startswith("PC1 (")
    assert [t.get_text() for t in narrow.legends[0].get_texts()] == ["0", "left", "top"]


def _cli_inputs(tmp_path, image, areas):
    """A two-class tiny model file and a zarr group holding ``image`` and ``areas``."""
    import zarr

    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import save_cnn

    model = save_cnn(tmp_path / "m", tiny_cnn(2), classes=ClassTable.from_names(["a", "b"]))
    g = zarr.open_group(str(tmp_path / "vol.zarr"), mode="w")
    g.create_array("image", data=image)
    g.create_array("areas", data=areas)
    return str(model), str(tmp_path / "vol.zarr")


def test_analyse_cli(tmp_path, capsys):
    from napari_brainfeatures import cli

    image, areas = two_areas()
    model_path, volume = _cli_inputs(tmp_path, image, areas)
    out = tmp_path / "an"
    options = "--train-slice 0 --test-slice 1 --per-class 15 --sigmas 0 0.5 --out"
    argv = ["analyse", model_path, volume, *options.split(), str(out)]
    assert cli.main(argv) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["n_train"] == rep["n_test"] == 30 and rep["classes"] == ["a", "b"]
    assert set(rep["results"]) == {"trained", "random"}
    trained = rep["results"]["trained"]
    assert trained["probes"]["logistic"] > 0.9  # brightness is easy even at random weights
    assert trained["noise"]["sigmas"] == [0.0, 0.5] and 0 <= trained["gram_distance"] <= 1
    assert (out / "analysis.png").exists() and json.loads((out / "analysis.json").read_text())
    # input errors are named before any patch is read or feature extracted
    for opt, z in (("--train-slice", "9"), ("--test-slice", "-1")):
        bad = [*argv]
        bad[bad.index(opt) + 1] = z
        assert cli.main(bad) == 2
        err = capsys.readouterr().err
        assert f"{opt} {z} is out of range" in err and "0..1" in err
    (out / "analysis.json").write_text("the user's notes")
    assert cli.main(argv) == 2  # an earlier analysis is not replaced unasked
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "analysis.json").read_text() == "the user's notes"


def test_analyse_cli_without_torchvision(tmp_path, capsys, monkeypatch):
    from napari_brainfeatures import cli

    monkeypatch.setitem(sys.modules, "torchvision", None)  # import torchvision -> ImportError
    areas = np.ones((2, 40, 40), np.uint8)
    areas[:, :, 20:] = 2
    model, volume = _cli_inputs(tmp_path, areas * 100, areas)
    options = "--train-slice 0 --test-slice 1 --torchvision resnet18"
    argv = [
        "analyse",
        str(model),
        str(tmp_path / "vol.zarr"),
        *options.split(),
        str(tmp_path / "r.pth"),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "torchvision is not installed; pip install torchvision" in err and "--torchvision" in err


def test_analyse_model_uses_the_classes_painted_on_both_slices(tmp_path):
    from napari_brainfeatures.analyse import analyse_model
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import save_cnn

    table = ClassTable.from_names(["a", "b", "c"])
    model = save_cnn(tmp_path / "m", tiny_cnn(3), classes=table)
    rng = np.random.default_rng(0)
    areas = np.ones((2, 64, 120), np.uint8)
    areas[:, :, 40:80], areas[:, :, 80:] = 2, 3
    areas[1][areas[1] == 3] = 0  # "c" is not painted on the test slice
    image = (rng.random(areas.shape) * 60 + 60 * areas).astype(np.uint8)
    kw = {"train_slices": 0, "test_slices": 1, "per_class": 10, "sigmas": [0.0]}
    with pytest.warns(UserWarning, match=r"\['c'\] are not painted on both"):
        result = run(analyse_model(model, image, areas, **kw))
    assert set(result.report) == {"trained", "random"} and result.classes.names == ["a", "b", "c"]
    assert result.train.class_ids == result.test.class_ids == [1, 2] and len(result.test) == 20
    summary = result.to_dict()
    assert summary["n_train"] == 20 and summary["test_slices"] == [1]
    assert json.dumps(summary) and set(summary["results"]["trained"]["probes"]) == {
        "linear_svm",
        "rbf_svm",
        "logistic",
    }
    areas[1][areas[1] == 2] = 0  # only "a" on both slices
    with pytest.raises(ValueError, match="fewer than two of the model's classes"):
        run(analyse_model(model, image, areas, **kw))


def test_analyse_model_defaults_to_the_models_own_regions_of_one_section(tmp_path):
    from helpers import one_section_split_model
    from napari_brainfeatures.analyse import analyse_model
    from napari_brainfeatures.train.recipe import overlapping_patches

    model, image, areas, sm = one_section_split_model(tmp_path)
    p = sm.patch_size
    result = run(analyse_model(model, image, areas, per_class=10, sigmas=[0.0]))
    assert result.train.slices == result.test.slices == [0]
    assert overlapping_patches(result.train, result.test) == 0
    for part, name in ((result.train, "train"), (result.test, "test")):
        for _, y, x in part.centres:
            assert sm.region(name)[y - p // 2 : y - p // 2 + p, x - p // 2 : x - p // 2 + p].all()


def test_one_section_without_the_models_regions_is_said_to_be_no_held_out_test(tmp_path):
    from napari_brainfeatures.analyse import analyse_model
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import save_cnn

    table = ClassTable.from_names(["a", "b"])
    model = save_cnn(tmp_path / "m", tiny_cnn(2), classes=table)
    areas = np.ones((64, 120), np.uint8)
    areas[:, 60:] = 2
    image = (np.random.default_rng(0).random(areas.shape) * 60 + 60 * areas).astype(np.uint8)
    kw = {"per_class": 6, "sigmas": [0.0]}
    with pytest.warns(UserWarning, match="trained and tested on patches of the same section"):
        run(analyse_model(model, image, areas, **kw))


def test_features_are_extracted_a_chunk_at_a_time_with_a_record_each():
    from napari_brainfeatures.analyse.report import _in_chunks

    patches = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    gen = _in_chunks(lambda p: p * 2, patches, "features", 0, 1, chunk=3)
    records = []
    try:
        while True:
            records.append(next(gen))
    except StopIteration as stop:
        out = stop.value
    np.testing.assert_array_equal(out, patches * 2)
    assert [r.message for r in records][-1] == "features 10/10" and len(records) == 4


def test_noise_robustness_uses_training_features_it_is_given():
    from napari_brainfeatures.analyse.probes import noise_robustness

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 10)
    patches = (rng.random((20, 8, 8)) * 60 + 100 * labels[:, None, None]).astype(np.uint8)
    seen = []

    def extract(p):
        seen.append(len(p))
        return np.asarray(p, np.float32).reshape(len(p), -1)[:, :4]

    kw = {"test_patches": patches, "test_labels": labels, "sigmas": [0.0]}
    plain = noise_robustness(extract, patches, labels, **kw)
    assert seen == [20, 20]  # the training features, then the test images
    seen.clear()
    given = noise_robustness(extract, patches, labels, train_features=extract(patches), **kw)
    assert seen == [20, 20] and given == plain  # one of those was the caller's
