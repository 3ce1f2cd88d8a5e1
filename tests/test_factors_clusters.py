"""Cluster maps: blobs recovered, masks, erosion, scores, layer profiles and matching."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from skimage.morphology import binary_erosion, disk
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from napari_brainfeatures.factors.clusters import (
    cluster_map,
    erode_mask,
    gmm_bic_curve,
    layer_profile,
    match_profiles,
    score_against,
    smooth_within,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with threadpool_limits(1):
        yield


def striped_map(h=30, w=40, d=6, seed=0, noise=0.3):
    """A map with 3 vertical stripes of distinct feature means; truth ids 1..3."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.repeat([[1, 2, 3]], h, axis=0), [10, 15, w - 25], axis=1)
    centres = rng.random((4, d)) * 4
    feats = centres[truth] + noise * rng.standard_normal((h, w, d))
    return feats.astype(np.float32), truth


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_blobs_are_recovered(method):
    feats, truth = striped_map()
    res = cluster_map(feats, method=method, k=3, seed=0)
    assert res.labels.shape == truth.shape and res.labels.dtype == np.int32
    assert set(np.unique(res.labels)) == {1, 2, 3}
    assert adjusted_rand_score(truth.ravel(), res.labels.ravel()) > 0.95
    assert (res.bic is None) == (method == "kmeans")
    # label 1 is the largest cluster (the widest stripe, 15 columns)
    assert np.bincount(res.labels.ravel()).argmax() == 1


def test_mask_pca_subsample_and_nan_rows():
    feats, truth = striped_map()
    feats[0, 0] = np.nan
    mask = np.zeros(truth.shape, bool)
    mask[5:25, 5:35] = True
    res = cluster_map(
        da.from_array(feats, chunks=(7, 40, 6)),
        k=2,
        pca_components=2,
        mask=mask,
        max_fit=100,
        seed=1,
        block_rows=97,
    )
    assert res.n_fit == 100 and res.pca is not None and res.pca.n_components_ == 2
    assert (res.labels[~mask] == 0).all() and (res.labels[mask] > 0).all()
    assert res.labels[0, 0] == 0 and res.n_labelled == mask.sum()
    nan_in_mask = feats.copy()
    nan_in_mask[10, 10] = np.nan
    res2 = cluster_map(nan_in_mask, k=2, mask=mask)
    assert res2.labels[10, 10] == 0 and res2.n_labelled == mask.sum() - 1


def test_rows_input_and_seeding():
    feats, _ = striped_map(seed=2)
    rows = feats.reshape(-1, feats.shape[-1])
    a = cluster_map(rows, method="gmm", k=3, seed=5, max_fit=300)
    b = cluster_map(rows, method="gmm", k=3, seed=5, max_fit=300)
    assert a.labels.shape == (rows.shape[0],)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_cluster_errors():
    feats, truth = striped_map()
    with pytest.raises(ValueError, match="no pixels"):
        cluster_map(feats, k=2, mask=np.zeros(truth.shape, bool))
    tiny = np.zeros(truth.shape, bool)
    tiny[0, :2] = True
    with pytest.raises(ValueError, match="fewer than k = 3"):
        cluster_map(feats, k=3, mask=tiny)
    with pytest.raises(ValueError, match=">= 1, got 0"):
        cluster_map(feats, k=0)
    with pytest.raises(ValueError, match="method"):
        cluster_map(feats, method="dbscan")
    with pytest.raises(ValueError, match="mask shape"):
        cluster_map(feats, mask=np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="pca_components"):
        cluster_map(feats, pca_components=10)


def dead_channel_map(seed=0, h=30, w=40, d=16, n_dead=20):
    """Like a raw dense store: 3 stripes in nearly collinear channels of large values,
    plus post-ReLU dead channels (all zero, or nonzero on only 3 pixels)."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.repeat([[1, 2, 3]], h, axis=0), [10, 15, w - 25], axis=1)
    centres = rng.random((4, d)) * 4
    live = centres[truth] + 0.3 * rng.standard_normal((h, w, 2)) @ rng.standard_normal((2, d))
    dead = np.zeros((h * w, n_dead))
    dead[rng.choice(h * w, 3, replace=False), : n_dead // 2] = rng.random((3, n_dead // 2))
    feats = np.concatenate([live, dead.reshape(h, w, n_dead)], axis=-1) * 10
    return np.maximum(feats, 0).astype(np.float32), truth


@pytest.mark.parametrize("seed", [0, 1])
def test_gmm_survives_dead_and_collinear_channels(seed):
    feats, truth = dead_channel_map(seed)
    res = cluster_map(feats, method="gmm", k=3, seed=0)
    assert adjusted_rand_score(truth.ravel(), res.labels.ravel()) > 0.95
    np.testing.assert_array_equal(res.columns, np.arange(26))  # the all-zero ones dropped
    assert np.isfinite(res.bic)
    bic = gmm_bic_curve(feats, [2, 3], seed=0)
    assert all(np.isfinite(v) for v in bic.values())


def test_collapsed_gmm_says_what_to_try(monkeypatch):
    import napari_brainfeatures.factors.clusters as clustering

    class Collapsing:
        def fit(self, z):
            raise ValueError(
                "Fitting the mixture model failed because some components have "
                "ill-defined empirical covariance (for instance caused by ...)"
            )

    monkeypatch.setattr(clustering, "_model", lambda *a: Collapsing())
    feats, _ = striped_map()
    with pytest.raises(ValueError, match=r"--pca N.*kmeans.*fewer clusters"):
        cluster_map(feats, method="gmm", k=3)
    with pytest.raises(ValueError, match="constant"):
        cluster_map(np.ones((5, 6, 3), np.float32), k=2)


def test_smooth_within_is_a_masked_gaussian_mean():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    feats = rng.random((40, 50, 3)).astype(np.float32)
    # all pixels valid: away from the border it is the plain Gaussian filter
    full = smooth_within(feats, 2.0)
    plain = ndimage.gaussian_filter(feats, (2, 2, 0))
    np.testing.assert_allclose(full[10:30, 10:40], plain[10:30, 10:40], rtol=1e-4, atol=1e-5)
    # a constant map stays constant up to the mask's edge (no dimming at borders)
    mask = np.zeros((40, 50), bool)
    mask[5:20, 5:45] = True
    const = np.full((40, 50, 2), 3.0, np.float32)
    np.testing.assert_allclose(smooth_within(const, 4.0, mask)[mask], 3.0, rtol=1e-5)
    # nothing leaks in from outside the mask or from NaN pixels
    outside = feats.copy()
    outside[~mask] = 1e6
    outside[10, 10] = np.nan
    sm = smooth_within(outside, 3.0, mask)
    assert np.isnan(sm[~mask]).all() and np.isnan(sm[10, 10]).all()
    inside = mask.copy()
    inside[10, 10] = False
    assert np.isfinite(sm[inside]).all() and sm[inside].max() < 1.0
    # sigma 0 copies the masked pixels; one sigma per axis; bad input
    np.testing.assert_array_equal(smooth_within(feats, 0, mask)[mask], feats[mask])
    along_x = smooth_within(feats, (0, 3))
    np.testing.assert_allclose(
        along_x[:, 20], ndimage.gaussian_filter1d(feats, 3, axis=1)[:, 20], rtol=1e-4, atol=1e-5
    )
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="sigma"):
            smooth_within(feats, bad)
    with pytest.raises(ValueError, match="mask shape"):
        smooth_within(feats, 1.0, np.ones((3, 3), bool))


def test_smoothing_recovers_bands_that_pixel_noise_hides():
    """Two bands whose feature means differ by much less than the per-pixel noise."""
    rng = np.random.default_rng(1)
    truth = np.repeat(np.array([1, 2]), 30)[:, None].repeat(60, axis=1)  # (60, 60)
    feats = (0.5 * (truth[..., None] == 2) + rng.standard_normal((60, 60, 4))).astype(np.float32)
    mask = np.ones(truth.shape, bool)
    mask[:, :5] = False
    raw = cluster_map(feats, method="gmm", k=2, mask=mask, seed=0)
    smoothed = cluster_map(
        da.from_array(feats, chunks=20), method="gmm", k=2, mask=mask, seed=0, smooth=4.0
    )
    assert adjusted_rand_score(truth[mask], raw.labels[mask]) < 0.3
    assert adjusted_rand_score(truth[mask], smoothed.labels[mask]) > 0.8
    assert (smoothed.labels[~mask] == 0).all()
    with pytest.raises(ValueError, match="sigma"):
        cluster_map(feats, k=2, smooth=-2)


def test_erode_mask_matches_skimage_disk():
    rng = np.random.default_rng(0)
    mask = np.zeros((60, 70), bool)
    mask[5:50, 8:65] = True
    mask[20:30, 30:40] = False
    mask |= rng.random(mask.shape) > 0.97
    for r in (0, 1, 3, 7):
        expected = binary_erosion(mask, disk(r)) if r else mask
        np.testing.assert_array_equal(erode_mask(mask, r), expected)
    with pytest.raises(ValueError, match="radius"):
        erode_mask(mask, -1)


def test_gmm_bic_prefers_the_true_k():
    feats, _ = striped_map(noise=0.2)
    bic = gmm_bic_curve(feats, [1, 2, 3, 4], seed=0)
    assert list(bic) == [1, 2, 3, 4]
    assert min(bic, key=bic.get) == 3


def test_score_against():
    truth = np.array([[1, 1, 2, 2], [0, 1, 2, 2]])
    perfect = np.array([[5, 5, 7, 7], [3, 5, 7, 7]])
    s = score_against(truth, perfect)
    assert s["v_measure"] == pytest.approx(1.0) and s["ari"] == pytest.approx(1.0)
    assert s["n"] == 7  # truth 0 ignored
    bad = np.array([[1, 2, 1, 2], [1, 2, 1, 2]])
    assert score_against(truth, bad)["v_measure"] < 0.2
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], bool)
    assert score_against(truth, perfect, mask)["n"] == 4
    with pytest.raises(ValueError, match="must match"):
        score_against(truth, perfect[:1])
    with pytest.raises(ValueError, match="no pixel"):
        score_against(truth, np.zeros_like(truth))


def test_layer_profile_and_js_matching():
    layers = np.repeat([[1, 2, 3, 4]], 5, axis=0)  # 4 layers, 5 px each
    c_a = np.where(layers <= 2, 1, 2)  # cluster 1: L1-L2, cluster 2: L3-L4
    c_a[0, 1] = 2
    prof_a = layer_profile(c_a, layers)
    assert prof_a.cluster_ids == [1, 2] and prof_a.layer_ids == [1, 2, 3, 4]
    np.testing.assert_allclose(prof_a.matrix.sum(axis=1), 1.0)
    np.testing.assert_allclose(prof_a.matrix[0], [5 / 9, 4 / 9, 0, 0])
    assert prof_a.counts.sum() == 20
    c_b = np.where(layers <= 2, 8, 3)  # the same two clusters, other ids
    m = match_profiles(prof_a, layer_profile(c_b, layers))
    assert [(a, b) for a, b, _ in m["pairs"]] == [(1, 8), (2, 3)]
    assert m["distance"].shape == (2, 2)
    assert m["pairs"][0][2] < 0.3 and m["distance"][0, 0] > 0.9  # matched vs crossed
    with pytest.raises(ValueError, match="no pixel"):
        layer_profile(np.zeros_like(layers), layers)


def test_cluster_cli_on_a_plain_array_with_mask_erosion_and_truth(tmp_path, capsys):
    import json

    import zarr

    from napari_brainfeatures import cli

    feats, truth = striped_map()
    zarr.create_array(str(tmp_path / "f.zarr"), data=feats)
    vol = zarr.create_array(str(tmp_path / "t.zarr"), data=truth[None].astype(np.uint8))
    assert vol.shape == (1, 30, 40)
    mask = np.zeros((1, 30, 40), np.uint8)
    mask[0, 2:28, 2:38] = 5
    zarr.create_array(str(tmp_path / "m.zarr"), data=mask)
    argv = [
        "cluster",
        str(tmp_path / "f.zarr"),
        "--k",
        "3",
        "--method",
        "gmm",
        "--mask",
        str(tmp_path / "m.zarr"),
        "--mask-id",
        "5",
        "--erode",
        "2",
        "--truth",
        str(tmp_path / "t.zarr"),
        "--out",
        str(tmp_path / "o"),
    ]
    assert cli.main(argv) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["n_labelled"] == erode_mask(mask[0] > 0, 2).sum() == 22 * 32
    assert rep["scores"]["ari"] > 0.95 and rep["bic"] is not None
    assert rep["layer_profile"]["layers"] == [1, 2, 3]
    assert (tmp_path / "o" / "clusters.png").exists()
    saved = json.loads((tmp_path / "o" / "clusters.json").read_text())
    assert saved["scores"] == rep["scores"]
    assert rep["smooth_px"] == 0
    assert cli.main([*argv, "--smooth", "1.5", "--overwrite"]) == 0  # into the same folder
    smoothed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    eroded = erode_mask(mask[0] > 0, 2)
    api = cluster_map(feats, method="gmm", k=3, mask=eroded, seed=0, smooth=1.5)
    assert smoothed["smooth_px"] == 1.5
    assert smoothed["scores"]["ari"] == pytest.approx(score_against(truth, api.labels)["ari"])
    assert smoothed["scores"]["ari"] != pytest.approx(rep["scores"]["ari"])  # it did smooth
    assert cli.main([*argv, "--smooth", "-1"]) == 2
    assert "--smooth must be a finite number of image px >= 0, got -1" in capsys.readouterr().err
    argv[argv.index("--erode") + 1] = "40"
    assert cli.main(argv) == 2
    assert "erode less" in capsys.readouterr().err
