"""The tissue mask, the context fraction of patch windows, and edge-aware NMF / clusters."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_brainfeatures.factors.clusters import cluster_map, erode_mask
from napari_brainfeatures.factors.nmf import fit_nmf
from napari_brainfeatures.factors.results import factorise, open_factors
from napari_brainfeatures.factors.select import select_factors
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.progress import run
from napari_brainfeatures.tissue import (
    MIN_CONTEXT,
    TissueOptions,
    check_min_context,
    tissue_mask,
    window_fraction,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def section(seed: int = 0, n: int = 192, gradient: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A textured disc of tissue (dark cells) on flat background, a vessel and a speck."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:n, :n]
    r = np.hypot(yy - n / 2, xx - n / 2)
    disc = r < 0.4 * n
    cells = ndimage.gaussian_filter((rng.random((n, n)) < 0.03).astype(np.float32), 1.5) * 8
    img = np.full((n, n), 0.12, np.float32)
    img[disc] = (0.6 - np.clip(cells, 0, 0.4) + 0.06 * rng.standard_normal((n, n)))[disc]
    vessel = np.hypot(yy - n / 2 + 20, xx - n / 2) < 6  # a dark flat lumen inside
    img[vessel] = 0.12
    img[5:9, 5:9] = 0.6  # a speck of debris in the background
    img += 0.01 * rng.standard_normal((n, n)).astype(np.float32)
    img *= (1 + gradient * np.abs(yy - n / 2) / (n / 2)).astype(np.float32)  # brighter at ends
    return img, disc


# -- the mask ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["intensity", "texture"])
@pytest.mark.parametrize("gradient", [0.0, 0.6])
def test_tissue_mask_finds_the_section_fills_vessels_drops_debris(method, gradient):
    img, disc = section(gradient=gradient)
    m = tissue_mask(img, method=method)
    assert m.dtype == bool and m.shape == img.shape
    iou = (m & disc).sum() / (m | disc).sum()
    assert iou > (0.95 if method == "intensity" else 0.9), iou  # texture: a coarser outline
    assert m[96 - 20, 96] and not m[7, 7]  # the vessel filled, the speck gone


def test_tissue_mask_splits_off_a_background_as_noisy_as_the_tissue():
    """A scan's background has the same pixel noise as its tissue: the step decides."""
    img, disc = section()
    rng = np.random.default_rng(3)
    img = img + 0.05 * rng.standard_normal(img.shape).astype(np.float32)  # flat rule fails
    m = tissue_mask(img)
    assert (m & disc).sum() / (m | disc).sum() > 0.95
    assert tissue_mask(img, step_ratio=1e6).all()  # without the step rule: all of it tissue
    # two textured areas of about the same brightness still make no background
    half = 0.55 + 0.05 * (np.mgrid[:192, :192][1] > 96)
    full = half - 0.3 * rng.random((192, 192)).astype(np.float32)
    assert tissue_mask(full).all()


def test_tissue_mask_keeps_a_large_hole_and_fills_all_with_a_full_section():
    img, disc = section()
    yy, xx = np.mgrid[:192, :192]
    big = np.hypot(yy - 96, xx - 110) < 25  # ~1960 px: a ventricle, if max_hole is smaller
    img[big] = 0.12
    assert not tissue_mask(img, max_hole=1000)[96, 110]
    assert tissue_mask(img)[96, 110]  # 4096 px by default: filled
    rng = np.random.default_rng(1)  # textured everywhere: nothing is background
    full = 0.6 - 0.3 * rng.random((192, 192)).astype(np.float32)
    assert tissue_mask(full).all()


def test_tissue_mask_of_a_volume_is_slice_by_slice():
    img, _ = section()
    vol = np.stack([img, np.flip(img, 0)])
    m = tissue_mask(vol)
    np.testing.assert_array_equal(m[1], np.flip(tissue_mask(img), 0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sigma": 0}, "sigma must be a number of pixels > 0, got 0"),
        ({"method": "magic"}, "method must be one of .*got 'magic'"),
        ({"polarity": "up"}, "polarity must be one of"),
        ({"max_hole": -1}, "max_hole must be an integer >= 0 .*got -1"),
        ({"min_component": 2}, r"min_component must be in \[0, 1\], got 2"),
    ],
)
def test_tissue_options_quote_the_bad_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TissueOptions(**kwargs)


def test_tissue_mask_refuses_labels_and_bad_shapes():
    with pytest.raises(ValueError, match="grey values"):
        tissue_mask(np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="2-D .* or 3-D"):
        tissue_mask(np.zeros(8))
    with pytest.raises(ValueError, match=r"min_context .*\[0, 1\].*got 1.5"):
        check_min_context(1.5)


# -- the context fraction -------------------------------------------------------------------
@pytest.mark.parametrize("patch", [4, 5, (3, 6)])
def test_window_fraction_is_a_box_filter_read_at_the_pixels(patch):
    rng = np.random.default_rng(0)
    m = rng.random((23, 17)) < 0.6
    rows, cols = np.array([0, 3, 11, 22]), np.array([0, 1, 8, 16])
    py, px = (patch, patch) if isinstance(patch, int) else patch
    want = np.zeros((4, 4))
    for a, y in enumerate(rows):
        for b, x in enumerate(cols):
            y0, x0 = y - py // 2, x - px // 2  # 64 before, 63 after for 128: the store's centring
            win = m[max(y0, 0) : max(y0 + py, 0), max(x0, 0) : max(x0 + px, 0)]
            want[a, b] = win.sum() / (py * px)
    np.testing.assert_allclose(window_fraction(m, rows, cols, patch), want, atol=1e-6)


def test_grid_context_inside_uses_its_geometry_and_patch():
    rng = np.random.default_rng(1)
    tissue = rng.random((3, 40, 30)) < 0.7
    grid = FeatureGrid((6, 5), origin=(4, 3), step=(5, 6), z=2, patch=8)
    ys, xs = grid.pixels()
    np.testing.assert_allclose(grid.context_inside(tissue), window_fraction(tissue[2], ys, xs, 8))
    assert FeatureGrid.from_attrs(grid.to_attrs(), grid.shape).patch == 8
    with pytest.raises(ValueError, match="patch size"):
        FeatureGrid((6, 5)).context_inside(tissue[0])


# -- edge-aware NMF, selection and clusters ---------------------------------------------------
P = 12


def window_features(seed: int = 0, *, split: bool = True) -> tuple[FeatureGrid, np.ndarray]:
    """Features that average per-pixel descriptors over the patch window (as a CNN sees it).

    A square of tissue (one or two areas) in background; pixels near the edge mix
    background into their window.
    """
    rng = np.random.default_rng(seed)
    n, d = 128, 8
    tissue = np.zeros((n, n), bool)
    tissue[8:-8, 8:-8] = True
    area = tissue.astype(int)
    if split:
        area[:, n // 2 :][tissue[:, n // 2 :]] = 2
    means = {
        0: np.eye(d)[7] * 2.0,
        1: np.r_[1, 1, 0.2, 0, 0, 0, 0, 0],
        2: np.r_[0, 0.2, 1, 1, 0.3, 0, 0, 0],
    }
    desc = np.zeros((n, n, d), np.float32)
    for a, m in means.items():
        k = int((area == a).sum())
        desc[area == a] = m * rng.gamma(4.0, 0.25, (k, d)) + 0.02 * rng.random((k, d))
    f = np.stack([ndimage.uniform_filter(desc[..., c], P, mode="constant") for c in range(d)], -1)
    grid = FeatureGrid.of(f.astype(np.float32), patch=P, image_shape=(n, n))
    return grid, tissue


def rim_share(active: np.ndarray, tissue: np.ndarray) -> float:
    """Share of ``active`` pixels in tissue lying within half a patch of the tissue edge."""
    near = tissue & (ndimage.distance_transform_edt(tissue) <= P / 2)
    a = active & tissue
    return float(near[a].mean()) if a.any() else 0.0


def factor_rim_shares(fac, tissue):
    maps = np.asarray(fac.maps)
    shares = []
    for m in maps:
        ok = np.isfinite(m)
        shares.append(rim_share(ok & (m > 0.1 * np.percentile(m[ok], 99)), tissue))
    return shares


@pytest.mark.parametrize("seed", [0, 1])
def test_no_factor_of_its_own_for_the_edges(seed):
    grid, tissue = window_features(seed)
    plain = run(factorise(grid, 4, seed=0))
    assert max(factor_rim_shares(plain, tissue)) > 0.9  # an edge factor: what #19 saw
    fac = run(factorise(grid, 4, seed=0, tissue=tissue))
    assert fac.info["min_context"] == MIN_CONTEXT and fac.info["n_edge"] > 0
    assert max(factor_rim_shares(fac, tissue)) < 0.2
    assert not np.isfinite(np.asarray(fac.maps)[:, ~tissue]).any()  # background: NaN
    ctx = grid.context_inside(tissue)
    np.testing.assert_array_equal(fac.used, tissue & (ctx >= MIN_CONTEXT))
    # the selection counts only used pixels: both areas still get their factor
    areas = np.where(tissue, 1 + (np.arange(128) >= 64)[None, :], 0).astype(np.uint8)
    sel = fac.select(areas)
    assert sorted(a for _, a, _ in sel.pairs) == [1, 2]
    assert sum(sel.roi_sizes) == int(fac.used.sum())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("erode", [0, P // 4])
def test_cluster_map_of_uniform_tissue_makes_no_ring(seed, erode):
    grid, tissue = window_features(seed, split=False)
    mask = erode_mask(tissue, erode)
    plain = run(factorise(grid, 4, seed=0))
    ring = cluster_map(plain.coefficient_grid().features, method="gmm", k=3, mask=mask)
    shares = [rim_share(ring.labels == c, tissue) for c in range(1, 4)]
    assert max(shares) > 0.9  # without the edge handling: a ring along the outline
    fac = run(factorise(grid, 4, seed=0, tissue=tissue))
    res = cluster_map(fac.coefficient_grid().features, method="gmm", k=3, mask=mask)
    assert (res.labels[~fac.used] == 0).all()
    assert max(rim_share(res.labels == c, tissue) for c in range(1, 4)) < 0.5


def test_fit_nmf_and_select_factors_take_a_mask():
    rng = np.random.default_rng(0)
    X = rng.random((10, 9, 5)).astype(np.float32)
    mask = rng.random((10, 9)) < 0.6
    a = run(fit_nmf(X, 3, seed=0, mask=mask))
    b = run(fit_nmf(X[mask], 3, seed=0))
    assert a.W.shape == (int(mask.sum()), 3)
    np.testing.assert_allclose(a.W, b.W, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="mask has 4 pixels but X has 90 rows"):
        run(fit_nmf(X, 3, mask=np.ones(4, bool)))
    U = rng.random((90, 3))
    rois = rng.integers(0, 3, 90)
    m = mask.reshape(-1)
    got = select_factors(U, rois, mask=m)
    want = select_factors(U[m], rois[m])
    np.testing.assert_array_equal(got.scores, want.scores)
    assert got.pairs == want.pairs


def test_factors_with_a_tissue_mask_round_trip(tmp_path):
    grid, tissue = window_features(0)
    fac = run(factorise(grid, 3, seed=0, tissue=tissue, min_context=0.5))
    assert fac.info["min_context"] == 0.5
    back = open_factors(fac.save(tmp_path / "factors.zarr"))
    np.testing.assert_array_equal(back.mask, fac.mask)
    np.testing.assert_array_equal(back.used, fac.used)
    assert back.info["n_edge"] == fac.info["n_edge"]
    with pytest.raises(ValueError, match="min_context must be"):
        run(factorise(grid, 3, tissue=tissue, min_context=-0.1))
    with pytest.raises(ValueError, match="no computed pixel lies in tissue"):
        run(factorise(grid, 3, tissue=np.zeros_like(tissue)))


def test_workspace_keeps_the_tissue_mask(tmp_path):
    from napari_brainfeatures.workspace import Workspace, WorkspaceError

    with Workspace.open(tmp_path / "ws", shape=(2, 16, 12)) as ws:
        with pytest.raises(WorkspaceError, match="no tissue mask in"):
            ws.tissue(mode="r")
        store = ws.tissue()
        assert store.dtype == np.uint8 and store.shape == (2, 16, 12) and not store[:].any()
        store[1] = 1
    back = Workspace.open(tmp_path / "ws", mode="r").tissue(mode="r")
    assert back[1].all() and not back[0].any()


def test_tissue_mask_leaves_unmeasured_pixels_out():
    """NaN (a scan's unmeasured corners, a masked export) is never tissue, nor an error."""
    img, disc = section()
    img[:, :30] = np.nan  # a band outside the measured field
    img[100, 100] = np.inf
    m = tissue_mask(img)
    assert not m[:, :30].any() and not m[100, 100]
    keep = disc.copy()
    keep[:, :30] = False
    assert (m & keep).sum() / (m | keep).sum() > 0.9
    assert not tissue_mask(np.full((8, 8), np.nan, np.float32)).any()


def test_a_section_of_one_grey_value_is_said_to_be_so():
    with pytest.warns(UserWarning, match=r"one grey value \(7\) only"):
        assert tissue_mask(np.full((16, 16), 7, np.uint8)).all()
