"""NMF (torch block HALS vs scikit-learn), validation, heatmaps and greedy factor selection."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
import torch

from helpers import TINY_CNN
from napari_brainfeatures.factors.select import (
    FeatureNMF,
    factor_maps,
    finite_rows,
    fit_nmf,
    rgb_composite,
    select_factors,
)
from napari_brainfeatures.progress import Progress, run

pytestmark = pytest.mark.usefixtures("one_thread")


def low_rank(n=300, d=12, k=4, seed=0, noise=0.0):
    rng = np.random.default_rng(seed)
    W = rng.random((n, k)) * (rng.random((n, k)) < 0.6)
    H = rng.random((k, d)) * (rng.random((k, d)) < 0.7) + 0.01
    X = W @ H + noise * rng.standard_normal((n, d))
    return np.clip(X, 0, None).astype(np.float32)


# -- NMF --------------------------------------------------------------------------------------
def test_exact_low_rank_is_recovered():
    X = low_rank()
    m = FeatureNMF(4, max_iter=500, tol=1e-8, block_rows=64).fit(X)  # several blocks
    assert m.components_.shape == (4, 12)
    assert m.rel_error_ < 1e-3
    W = m.fit_transform(X)
    assert W.shape == (300, 4) and W.dtype == np.float32 and (W >= 0).all()
    err = np.linalg.norm(X - W @ m.components_) / np.linalg.norm(X)
    assert err == pytest.approx(m.rel_error_, rel=1e-3, abs=1e-6)


def test_torch_agrees_with_sklearn_on_noisy_data():
    X = low_rank(n=400, d=16, k=6, seed=1, noise=0.05)
    torch_res = run(fit_nmf(X, 5, solver="torch"))
    sk_res = run(fit_nmf(X, 5, solver="sklearn"))
    assert sk_res.solver == "sklearn-NMF"
    assert abs(torch_res.rel_error - sk_res.rel_error) < 0.01
    # the reported error is the true error
    for res in (torch_res, sk_res):
        direct = np.linalg.norm(X - res.W @ res.H) / np.linalg.norm(X)
        assert res.rel_error == pytest.approx(direct, rel=1e-4)


def test_minibatch_solver_runs():
    X = low_rank(n=200, d=8, k=3, seed=2)
    res = run(fit_nmf(X, 3, solver="sklearn-minibatch", max_iter=50))
    assert res.W.shape == (200, 3) and res.rel_error < 0.5


def test_progress_is_yielded_per_iteration_and_error_falls():
    X = low_rank(n=200, d=10, k=5, seed=3, noise=0.02)
    gen = fit_nmf(X, 5, max_iter=30, tol=0)
    records = []
    res = run(gen, records.append)
    iters = [r for r in records if r.step > 0]
    assert all(isinstance(r, Progress) for r in records)
    assert len(iters) == res.n_iter == 30
    errs = [r.values["rel_error"] for r in iters]
    assert errs == pytest.approx(res.history)
    assert errs[-1] <= errs[0]
    assert all(b <= a + 1e-5 for a, b in zip(errs, errs[1:], strict=False))  # monotone


def test_image_shaped_and_dask_input():
    X = low_rank(n=12 * 10, d=8, k=3, seed=4).reshape(12, 10, 8)
    W = FeatureNMF(3, seed=0).fit_transform(X)
    assert W.shape == (12, 10, 3)
    Wd = FeatureNMF(3, seed=0).fit_transform(da.from_array(X, chunks=(5, 10, 8)))
    np.testing.assert_allclose(W, Wd, atol=1e-5)


def test_transform_new_rows_reproduces_coefficients():
    X = low_rank(n=300, d=12, k=4, seed=5)
    m = FeatureNMF(4, max_iter=500, tol=1e-8)
    W = m.fit_transform(X)
    W2 = m.transform(X[:50], sweeps=200)
    np.testing.assert_allclose(W2 @ m.components_, W[:50] @ m.components_, atol=2e-3)
    with pytest.raises(ValueError, match="12"):
        m.transform(np.ones((5, 7), np.float32))
    with pytest.raises(RuntimeError, match="not fitted"):
        FeatureNMF(2).transform(X)


def test_random_init_is_seeded():
    X = low_rank(n=100, d=8, k=3, seed=6, noise=0.05)
    a = run(fit_nmf(X, 3, init="random", seed=1, max_iter=20))
    b = run(fit_nmf(X, 3, init="random", seed=1, max_iter=20))
    np.testing.assert_array_equal(a.H, b.H)


@pytest.mark.parametrize(
    ("k", "shape", "match"),
    [
        (13, (50, 12), r"1\.\.12"),
        (6, (5, 12), r"1\.\.5"),
        (0, (50, 12), "got 0"),
        (2.5, (50, 12), "integer"),
    ],
)
def test_bad_component_counts(k, shape, match):
    with pytest.raises(ValueError, match=match):
        FeatureNMF(k).fit(np.ones(shape, np.float32))


def test_negative_and_nan_features_are_refused_with_counts():
    X = low_rank(n=50, d=6, k=2)
    neg = X.copy()
    neg[:3, 0] = -1.0
    with pytest.raises(ValueError, match=r"3 values .* negative.*post-ReLU"):
        FeatureNMF(2).fit(neg)
    bad = X.copy()
    bad[4, :2] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="3 NaN or infinite"):
        FeatureNMF(2, solver="sklearn").fit(bad)
    with pytest.raises(ValueError, match="all zero"):
        FeatureNMF(2).fit(np.zeros((10, 4), np.float32))


def test_bad_options():
    X = low_rank(n=50, d=6, k=2)
    with pytest.raises(ValueError, match="solver"):
        FeatureNMF(2, solver="magic").fit(X)
    with pytest.raises(ValueError, match="init"):
        FeatureNMF(2, init="svd").fit(X)
    with pytest.raises(ValueError, match="max_iter"):
        FeatureNMF(2, max_iter=0).fit(X)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        FeatureNMF(2).fit(np.ones(5, np.float32))


# -- heatmaps ---------------------------------------------------------------------------------
def test_factor_maps_and_valid_mask():
    U = np.arange(24, dtype=np.float32).reshape(12, 2)
    maps = factor_maps(U, (3, 4))
    assert maps.shape == (2, 3, 4)
    assert maps[1, 2, 3] == U[11, 1]
    valid = np.zeros((4, 5), bool)
    valid.flat[[0, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15, 19]] = True
    m2 = factor_maps(U, (4, 5), valid=valid)
    assert np.isnan(m2[0, 0, 1]) and m2[0, 0, 3] == U[1, 0]
    with pytest.raises(ValueError, match="do not fill"):
        factor_maps(U, (5, 5))
    with pytest.raises(ValueError, match="True entries"):
        factor_maps(U, (4, 5), valid=np.ones((4, 5), bool))


def test_finite_rows_round_trip_through_factor_maps():
    rng = np.random.default_rng(0)
    f = rng.random((7, 9, 3)).astype(np.float32)
    f[2, 3] = np.nan
    f[5, :, 1] = np.nan
    rows, valid = finite_rows(da.from_array(f, chunks=(2, 9, 3)))
    assert rows.shape == (7 * 9 - 1 - 9, 3) and valid.sum() == rows.shape[0]
    assert not valid[2, 3] and not valid[5].any()
    np.testing.assert_array_equal(rows, f[valid])
    back = factor_maps(rows, (7, 9), valid=valid)  # rows as "coefficients"
    np.testing.assert_array_equal(np.moveaxis(back, 0, -1)[valid], f[valid])
    with pytest.raises(ValueError, match="no computed"):
        finite_rows(np.full((2, 2, 3), np.nan))
    with pytest.raises(ValueError, match=r"\(H, W, D\)"):
        finite_rows(np.ones((4, 3)))


def test_rgb_composite_scales_each_channel():
    rng = np.random.default_rng(0)
    maps = rng.random((4, 20, 30)).astype(np.float32) * np.array([1, 10, 100, 1000])[:, None, None]
    maps[0, 0, 0] = np.nan
    rgb = rgb_composite(maps, (3, 1, 2))
    assert rgb.shape == (20, 30, 3) and rgb.dtype == np.float32
    assert rgb.min() >= 0 and rgb.max() <= 1
    for c in range(3):  # robust scaling makes every channel span [0, 1]
        assert rgb[..., c].max() == 1.0 and rgb[..., c].min() == 0.0
    assert rgb_composite(maps, (0, 1, 2))[0, 0, 0] == 0.0  # NaN is black
    with pytest.raises(ValueError, match="three factor indices"):
        rgb_composite(maps, (0, 1, 9))
    with pytest.raises(ValueError, match="percentiles"):
        rgb_composite(maps, percentiles=(50, 10))


# -- selection --------------------------------------------------------------------------------
def toy_selection_data():
    """4 factors on a 1-D strip of 100 points; ROI 1 = points 0..59, ROI 2 = 60..99.

    f0: active on 0..59 (ROI 1 exactly)      -> s(1) = 60,  s(2) = 40 - 0.5*60... etc.
    f1: active on 0..99 (everywhere)
    f2: active on 60..79 (half of ROI 2)
    f3: active on 50..99 (all ROI 2 + 10 of ROI 1)
    """
    U = np.zeros((100, 4), np.float32)
    U[:60, 0] = 1
    U[:, 1] = 0.5
    U[60:80, 2] = 2
    U[50:, 3] = 1
    rois = np.zeros(100, np.int32)
    rois[:60], rois[60:] = 1, 2
    return U, rois


def test_score_matrix_matches_the_formula():
    U, rois = toy_selection_data()
    sel = select_factors(U, rois, lam=0.5)
    # coverage / leakage counts, columns = ROIs 1, 2
    np.testing.assert_array_equal(sel.coverage, [[60, 0], [60, 40], [0, 20], [10, 40]])
    np.testing.assert_array_equal(sel.leakage, [[0, 60], [40, 60], [20, 0], [40, 10]])
    np.testing.assert_allclose(sel.scores, sel.coverage - 0.5 * sel.leakage)
    assert sel.roi_ids == [1, 2] and sel.roi_sizes == [60, 40]


def test_greedy_picks_skip_used_factors_and_rois():
    U, rois = toy_selection_data()
    sel = select_factors(U, rois, lam=0.5)
    # scores: f0 (60, -30), f1 (40, 10), f2 (-10, 20), f3 (-10, 35)
    # best is f0/ROI1 = 60; then f1/ROI1 = 40 is skipped (ROI 1 taken); f3/ROI2 = 35
    assert sel.pairs == [(0, 1, 60.0), (3, 2, 35.0)]
    assert sel.factors == [0, 3]
    assert sel.coverage_fraction == [1.0, 1.0]
    # with p = 1 only the best pair
    assert select_factors(U, rois, p=1).pairs == [(0, 1, 60.0)]


def test_fractions_of_the_roi_and_weak_picks():
    U, rois = toy_selection_data()
    sel = select_factors(U, rois, lam=0.5)
    cover, leak = sel.fractions()
    np.testing.assert_allclose(cover[:, 1], [0, 1, 0.5, 1])  # of ROI 2's 40 points
    np.testing.assert_allclose(leak[:, 0], [0, 40 / 60, 20 / 60, 40 / 60])
    assert sel.weak_picks() == []  # both picks cover their whole ROI with a positive score
    assert sel.weak_picks(min_coverage=1.01) == [
        (0, 1, "active on 100% of the ROI only"),
        (3, 2, "active on 100% of the ROI only"),
    ]
    harsh = select_factors(U, rois, lam=3.0)  # f0 for ROI 1 (60), f2 for ROI 2 (20 - 0)
    assert harsh.weak_picks(min_coverage=0.6) == [(2, 2, "active on 50% of the ROI only")]
    leaky = select_factors(U[:, [1]], rois, lam=2.0)  # one factor everywhere: 60 - 2*40 < 0
    assert [w[:2] for w in leaky.weak_picks()] == [(0, 1)] and "<= 0" in leaky.weak_picks()[0][2]
    # a small ROI (a stroke): its factor is active outside it on many times its size
    strokes = np.zeros_like(rois)
    strokes.flat[np.flatnonzero(rois == 1)[:10]] = 1
    sparse = select_factors(U, strokes, lam=0.01)
    (why,) = [w[2] for w in sparse.weak_picks()]
    assert "active outside the ROI on" in why and "strokes" in why
    assert sparse.weak_picks(max_leakage=1e9) == []


def test_lambda_trades_coverage_against_leakage():
    U, rois = toy_selection_data()
    # λ = 0: leakage is free, f1 covers ROI 2 fully as well as f3 does (tie: lower index)
    assert select_factors(U, rois, lam=0.0).pairs[1][:2] == (1, 2)
    # large λ: only localised factors; f2 (20 in ROI 2, 0 outside) beats f3 (leaks 10)
    assert select_factors(U, rois, lam=3.0).pairs[1][:2] == (2, 2)


def test_area_normalisation_stops_large_rois_dominating():
    U = np.zeros((1000, 2), np.float32)
    rois = np.zeros(1000, np.int32)
    rois[:900], rois[900:] = 1, 2  # a big ROI and a small one
    U[:500, 0] = 1  # f0: half of the big ROI
    U[900:, 1] = 1  # f1: exactly the small ROI
    U[:450, 1] = 1  # ... and half of the big one too
    raw = select_factors(U, rois, lam=0.5, p=1)
    assert raw.pairs[0][:2] == (0, 1)  # 500 raw points win
    area = select_factors(U, rois, lam=0.5, p=1, normalise="area")
    assert area.pairs[0][:2] == (1, 2)  # f1 covers 100 % of ROI 2 with 50 % leakage
    assert area.pairs[0][2] == pytest.approx(1.0 - 0.5 * 450 / 900)


def test_eps_threshold_ignores_faint_activity():
    U, rois = toy_selection_data()
    U = U + 1e-4  # dense coefficients: nothing exactly 0
    dense = select_factors(U, rois)
    assert (dense.coverage == np.array([60, 40])).all()  # every factor covers everything
    sel = select_factors(U, rois, eps=0.05)
    np.testing.assert_array_equal(sel.coverage, [[60, 0], [60, 40], [0, 20], [10, 40]])
    assert sel.thresholds[2] == pytest.approx(0.05 * (2 + 1e-4), rel=1e-3)


def test_outside_labelled_ignores_unlabelled_points_and_nan_rows():
    U, rois = toy_selection_data()
    rois = rois.copy()
    rois[90:] = 0  # unlabelled
    U[95:] = np.nan  # no data
    all_ = select_factors(U, rois, lam=1.0)
    lab = select_factors(U, rois, lam=1.0, outside="labelled")
    assert all_.leakage[1, 0] == 30 + 5  # f1 outside ROI 1: 30 labelled + 5 unlabelled finite
    assert lab.leakage[1, 0] == 30
    assert all_.roi_sizes == [60, 30]


def test_image_shaped_inputs_and_json():
    U, rois = toy_selection_data()
    sel = select_factors(U.reshape(10, 10, 4), rois.reshape(10, 10))
    d = sel.to_dict()
    assert d["pairs"][0] == {"factor": 0, "roi": 1, "score": 60.0, "coverage_fraction": 1.0}
    assert d["params"]["lam"] == 0.5


def test_selection_errors():
    U, rois = toy_selection_data()
    with pytest.raises(ValueError, match="all 0"):
        select_factors(U, np.zeros(100, int))
    with pytest.raises(ValueError, match="must match"):
        select_factors(U, rois[:50])
    with pytest.raises(ValueError, match=r"1\.\.2"):
        select_factors(U, rois, p=3)
    with pytest.raises(ValueError, match="normalise"):
        select_factors(U, rois, normalise="size")
    with pytest.raises(ValueError, match="lam"):
        select_factors(U, rois, lam=-1)
    with pytest.raises(ValueError, match="eps"):
        select_factors(U, rois, eps=1.0)
    with pytest.raises(ValueError, match="negative"):
        select_factors(U, -rois)
    with pytest.raises(ValueError, match="integer label ids, got dtype float32"):
        select_factors(U, rois.astype(np.float32) + 0.5)  # an image passed as ROIs


# -- command line -----------------------------------------------------------------------------
def test_factors_cli_on_a_feature_store(tmp_path, capsys):
    import json

    import zarr

    from napari_brainfeatures import cli
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.models.cnn import BrainAreaCNN

    cfg = TINY_CNN
    torch.manual_seed(0)
    model = BrainAreaCNN(cfg).eval()
    rng = np.random.default_rng(0)
    image = (rng.random((1, 40, 44)) * 120).astype(np.uint8)
    image[:, :, 22:] += 120  # two areas of different brightness
    store = tmp_path / "feat.zarr"
    run(compute_feature_map(image, model, out=store, stride=2, tile=8, edge="reflect"))
    rois = np.zeros((1, 40, 44), np.uint8)
    rois[:, :, :22], rois[:, :, 22:] = 1, 2
    zarr.create_array(str(tmp_path / "rois.zarr"), data=rois, chunks=(1, 40, 44))
    out = tmp_path / "res"
    argv = [
        "factors",
        str(store),
        "--k",
        "3",
        "--rois",
        str(tmp_path / "rois.zarr"),
        "--out",
        str(out),
        "--normalise",
        "area",
    ]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["k"] == 3 and summary["n_rows"] == 20 * 22
    assert len(summary["selected"]) == 2 and 0 < summary["rel_error"] < 1
    group = zarr.open_group(str(out / "factors.zarr"), mode="r")
    assert group["maps"].shape == (3, 20, 22) and group["components"].shape == (3, 8)
    assert group.attrs["brainfeatures"]["kind"] == "nmf-factors"
    assert group.attrs["brainfeatures"]["step"] == [2, 2]
    sel = json.loads((out / "selection.json").read_text())
    assert sel["roi_ids"] == [1, 2] and sel["roi_sizes"] == [220, 220]
    assert (out / "rgb.png").exists() and (out / "factor_02.png").exists()
    (out / "factor_07.png").write_bytes(b"from a run with k = 8")
    (out / "factor_notes.png").write_bytes(b"the user's")
    assert cli.main(argv) == 2  # again: the earlier result is not replaced unasked
    assert "already holds a result" in capsys.readouterr().err
    assert (out / "factor_07.png").read_bytes() == b"from a run with k = 8"
    assert cli.main([*argv, "--overwrite"]) == 0  # a result of a larger k leaves no stale file
    capsys.readouterr()
    assert not (out / "factor_07.png").exists() and (out / "factor_notes.png").exists()
    # then cluster the NMF coefficients inside ROI 2
    argv = [
        "cluster",
        str(out / "factors.zarr"),
        "--k",
        "2",
        "--method",
        "kmeans",
        "--mask",
        str(tmp_path / "rois.zarr"),
        "--mask-id",
        "2",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    rep = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rep["n_labelled"] == 220 and sum(rep["sizes"]) == 220
    labels = zarr.open_group(str(out / "clusters.zarr"), mode="r")["labels"][:]
    assert (labels[:, :11] == 0).all() and (labels[:, 11:] > 0).all()
    assert cli.main(argv) == 2  # a second run: refused unasked ...
    assert cli.main([*argv, "--overwrite"]) == 0  # ... replaces its own earlier result
    capsys.readouterr()
    # a folder of the user's under the result's name is never deleted
    import shutil

    shutil.rmtree(out / "clusters.zarr")
    (out / "clusters.zarr").mkdir()
    (out / "clusters.zarr" / "notes.txt").write_text("mine")
    assert cli.main([*argv, "--overwrite"]) == 2  # not even with --overwrite
    assert "never deleted" in capsys.readouterr().err
    assert (out / "clusters.zarr" / "notes.txt").read_text() == "mine"


def test_factors_cli_errors(tmp_path, capsys):
    import zarr

    from napari_brainfeatures import cli

    assert cli.main(["factors", str(tmp_path / "missing.zarr")]) == 2
    assert "no such feature store" in capsys.readouterr().err
    zarr.create_array(str(tmp_path / "neg.zarr"), data=-np.ones((4, 5, 6), np.float32))
    assert cli.main(["factors", str(tmp_path / "neg.zarr"), "--k", "2"]) == 2
    assert "post-ReLU" in capsys.readouterr().err
    zarr.create_array(str(tmp_path / "z.zarr"), data=np.ones((2, 4, 5, 6), np.float32))
    assert cli.main(["factors", str(tmp_path / "z.zarr"), "--k", "2"]) == 2
    assert "--z" in capsys.readouterr().err


def test_thread_pool_gives_the_serial_result_and_restores_threads():
    X = low_rank(n=500, d=10, k=4, seed=7, noise=0.05)
    serial = run(fit_nmf(X, 4, block_rows=64, max_iter=15))
    torch.set_num_threads(2)
    pooled = run(fit_nmf(X, 4, block_rows=64, max_iter=15))  # blocks on 2 threads
    assert torch.get_num_threads() == 2
    np.testing.assert_array_equal(serial.H, pooled.H)
    np.testing.assert_array_equal(serial.W, pooled.W)


def test_hals_keeps_a_row_whose_partner_is_dead():
    """A zero row of H must not zero the matching row of W (it would stay dead for good)."""
    from napari_brainfeatures.factors._hals import _hals_rows

    gen = torch.Generator().manual_seed(0)
    H = torch.rand(3, 6, generator=gen)
    H[1] = 0  # a dead factor
    X = torch.rand(20, 6, generator=gen)
    Wt = torch.rand(3, 20, generator=gen)
    before = Wt[1].clone()
    _hals_rows(Wt, H @ X.T, H @ H.T, 2)
    torch.testing.assert_close(Wt[1], before)
    assert (Wt >= 0).all()


def test_components_stay_alive_on_cnn_like_features():
    """ReLU of a linear map of class-clustered latents (like CNN features): all k factors
    stay alive (a bug once killed some: 14 of 15 here, 25 % worse error on real features)."""
    rng = np.random.default_rng(1)
    latent = (rng.standard_normal((6, 8)) * 2)[rng.integers(0, 6, 1000)]
    latent += rng.standard_normal((1000, 8))
    X = np.maximum(latent @ rng.standard_normal((8, 64)) + rng.standard_normal(64) * 2 - 2, 0)
    X = X.astype(np.float32)
    ours = run(fit_nmf(X, 15, seed=0))
    ref = run(fit_nmf(X, 15, solver="sklearn", seed=0))
    assert (ours.H.max(axis=1) > 0).all() and (ours.W.max(axis=0) > 0).all()
    assert ours.rel_error <= ref.rel_error * 1.02


def _tiny_map(tmp_path):
    """A plain (H, W, D) feature array and a two-ROI label volume on its pixels."""
    import zarr

    f = np.random.default_rng(0).random((20, 22, 4)).astype(np.float32)
    f[:, 11:, :2] += 2
    zarr.create_array(str(tmp_path / "feat.zarr"), data=f)
    rois = np.zeros((1, 20, 22), np.uint8)
    rois[:, :, :11], rois[:, :, 11:] = 1, 2
    zarr.create_array(str(tmp_path / "rois.zarr"), data=rois)
    return str(tmp_path / "feat.zarr"), str(tmp_path / "rois.zarr")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--roi-ids", "1", "9"], "--roi-ids [9] not found"),
        (["--p", "5"], "--p must be in 1..2"),
        (["--lam", "-1"], "--lam must be >= 0"),
    ],
)
def test_factors_cli_checks_the_selection_before_the_nmf(tmp_path, capsys, extra, expected):
    from napari_brainfeatures import cli

    feat, rois = _tiny_map(tmp_path)
    out = tmp_path / "out"
    argv = ["factors", feat, "--k", "2", "--rois", rois, "--out", str(out), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "iteration" not in err  # refused before the NMF ran
    assert not out.exists()  # and no empty output folder
    if "--roi-ids" in extra:
        assert "ids present are [1, 2]" in err


def test_factors_cli_names_a_folder_that_is_no_zarr(tmp_path, capsys):
    from napari_brainfeatures import cli

    (tmp_path / "empty").mkdir()
    assert cli.main(["factors", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "is not a feature store (no zarr group found)" in err and "No group" not in err


def test_cluster_cli_names_absent_mask_ids_and_max_fit_below_k(tmp_path, capsys):
    from napari_brainfeatures import cli

    feat, rois = _tiny_map(tmp_path)
    argv = ["cluster", feat, "--k", "2", "--mask", rois, "--mask-id", "9", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--mask-id [9] not present" in err and "ids present are [1, 2]" in err
    assert cli.main(["cluster", feat, "--k", "4", "--max-fit", "2"]) == 2
    assert "--max-fit must be >= --k" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"), [("--smooth", "-2"), ("--erode", "-5"), ("--smooth", "nan")]
)
def test_cluster_cli_quotes_a_bad_smooth_or_erode_as_typed(tmp_path, capsys, flag, value):
    from napari_brainfeatures import cli

    feat, rois = _tiny_map(tmp_path)
    argv = ["cluster", feat, "--k", "2", "--mask", rois, "--mask-id", "1", flag, value]
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{flag} must be a finite number of image px >= 0, got {value}" in err


def test_factors_cli_hints_outside_labelled_for_sparse_rois(tmp_path, capsys):
    import zarr

    from napari_brainfeatures import cli

    feat, _ = _tiny_map(tmp_path)
    sparse = np.zeros((1, 20, 22), np.uint8)
    sparse[:, 3:6, 2:9], sparse[:, 12:15, 13:20] = 1, 2  # two strokes: 10 % of the map
    zarr.create_array(str(tmp_path / "sparse.zarr"), data=sparse)
    argv = ["factors", feat, "--k", "2", "--rois", str(tmp_path / "sparse.zarr"), "--out"]
    assert cli.main([*argv, str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "warning: the ROIs cover 10% of the map" in err and "--outside labelled" in err
    assert cli.main([*argv, str(tmp_path / "b"), "--outside", "labelled"]) == 0
    assert "the ROIs cover" not in capsys.readouterr().err


def test_cli_solver_choices_are_the_cores():
    from napari_brainfeatures import cli
    from napari_brainfeatures.factors.options import SOLVERS

    parser = cli.build_parser(only="factors")
    sub = next(a for a in parser._actions if a.dest == "command").choices["factors"]
    assert tuple(next(a for a in sub._actions if a.dest == "solver").choices) == SOLVERS


def test_moved_names_still_import_from_select():
    from napari_brainfeatures.factors import maps, nmf, select

    assert select.fit_nmf is nmf.fit_nmf and select.FeatureNMF is nmf.FeatureNMF
    assert select.factor_maps is maps.factor_maps and select.rgb_composite is maps.rgb_composite


def test_factors_cli_tissue_mask_leaves_out_pixels_whose_patch_sees_background(tmp_path, capsys):

    import zarr

    from napari_brainfeatures import cli
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.models.cnn import BrainAreaCNN

    torch.manual_seed(0)
    model = BrainAreaCNN(TINY_CNN).eval()  # 32 px patches
    rng = np.random.default_rng(0)
    image = (rng.random((1, 40, 80)) * 120 + 60).astype(np.uint8)
    image[:, :, :20] = 5  # background on the left
    store = tmp_path / "feat.zarr"
    run(compute_feature_map(image, model, out=store, stride=2, tile=8, edge="reflect"))
    tissue = np.zeros((1, 40, 80), np.uint8)
    tissue[:, :, 20:] = 1
    zarr.create_array(str(tmp_path / "tissue.zarr"), data=tissue, chunks=(1, 40, 80))
    out = tmp_path / "res"
    argv = ["factors", str(store), "--k", "3", "--out", str(out)]
    assert cli.main([*argv, "--tissue-mask", str(tmp_path / "tissue.zarr")]) == 0
    capsys.readouterr()
    maps = np.asarray(zarr.open_group(str(out / "factors.zarr"), mode="r")["maps"])  # (3, 20, 40)
    used = np.isfinite(maps[0])
    xs = 2 * np.nonzero(used.any(axis=0))[0]  # image columns of the factorised pixels
    assert used.any() and xs.min() >= 20 + 16  # the whole 32 px patch inside tissue
    assert not used[:, : (20 + 16) // 2].any()
    assert cli.main([*argv, "--min-context", "0.5"]) == 2  # needs the mask
    assert "--min-context needs --tissue-mask" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: exit 2, the value quoted
        cli.main([*argv, "--tissue-mask", str(tmp_path / "tissue.zarr"), "--min-context", "2"])
    assert "--min-context: must be a number >= 0 and <= 1, got '2'" in capsys.readouterr().err


def test_factors_cli_finds_the_tissue_mask_of_the_stores_image(tmp_path, capsys):
    """Without --tissue-mask the image's workspace mask (brainfeatures tissue) is used."""
    import tifffile
    import zarr

    from napari_brainfeatures import cli
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.models.cnn import BrainAreaCNN

    torch.manual_seed(0)
    model = BrainAreaCNN(TINY_CNN).eval()  # 32 px patches
    rng = np.random.default_rng(0)
    image = (rng.random((80, 120)) * 120 + 60).astype(np.uint8)
    image[:, :30] = 5  # background on the left
    path = tmp_path / "section.tif"
    tifffile.imwrite(path, image)
    assert cli.main(["tissue", str(path)]) == 0
    store = tmp_path / "feat.zarr"
    run(compute_feature_map(image[None], model, out=store, stride=2, tile=8, image_name=str(path)))
    capsys.readouterr()
    for flag, masked in (([], True), (["--tissue-mask", "none"], False)):
        out = tmp_path / f"res{masked}"
        assert cli.main(["factors", str(store), "--k", "3", "--out", str(out), *flag]) == 0
        summary = json.loads(capsys.readouterr().out)
        found = summary["tissue_mask"] or ""
        assert found.endswith("section.brainfeatures/tissue.zarr") is masked
        maps = np.asarray(zarr.open_group(str(out / "factors.zarr"), mode="r")["maps"])
        used = np.isfinite(maps[0]).any(axis=0)  # (grid columns,)
        assert used[: 30 // 2].any() is not masked  # background columns only without the mask
