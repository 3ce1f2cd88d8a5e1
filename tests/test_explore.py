"""Explore core: density, selections both ways, readouts, profiles, and what it opens."""

import shutil
import sys

import numpy as np
import pytest

from helpers import tiny_cnn, two_area_store
from napari_brainfeatures.classes import default_table
from napari_brainfeatures.explore.density import FeaturePoints, density, factor_points, pca_points
from napari_brainfeatures.explore.embed import umap_points
from napari_brainfeatures.explore.profiles import factor_profile, match_slices
from napari_brainfeatures.explore.readout import Readout
from napari_brainfeatures.explore.selection import (
    bins_mask,
    from_mask,
    keep_as_class,
    mask_bins,
    polygon_bins,
    rectangle_bins,
    select_polygon,
    select_rectangle,
    to_mask,
)
from napari_brainfeatures.explore.sources import open_sources
from napari_brainfeatures.factors.results import factorise
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.features.store import FeatureStore
from napari_brainfeatures.progress import run


def two_sides(h=48, w=60, d=8, seed=0):
    """Features whose channel 0 is high on the left half; NaN in the top-left corner."""
    rng = np.random.default_rng(seed)
    f = rng.random((h, w, d), dtype=np.float32)
    f[:, : w // 2, 0] += 4
    f[:4, :4] = np.nan
    return FeatureGrid.of(f, origin=(1, 2), step=(2, 2), image_shape=(2 * h + 2, 2 * w + 3))


def test_pca_points_skip_nan_and_split_the_halves():
    grid = two_sides()
    pts, proj = pca_points(grid, sample=1000)
    assert len(pts) == 48 * 60 - 16 and pts.xy.shape == (len(pts), 2)
    assert proj.explained[0] > 0.5 and pts.axes[0].startswith("PC1")
    left = (pts.pixels % 60) < 30
    pc1 = pts.xy[:, 0] * np.sign(pts.xy[left, 0].mean())  # sign of a PCA is arbitrary
    assert pc1[left].min() > pc1[~left].max()


def test_umap_points_place_every_pixel_beside_its_own_kind(monkeypatch):
    grid = two_sides()
    pts, proj = umap_points(grid, sample=600, seed=0)
    assert len(pts) == 48 * 60 - 16 and pts.axes == ("UMAP 1", "UMAP 2")
    assert proj.embedding.shape == (proj.sample.shape[0], 2) and np.isfinite(pts.xy).all()
    left = (pts.pixels % 60) < 30
    centres = pts.xy[left].mean(0), pts.xy[~left].mean(0)
    nearer_left = np.linalg.norm(pts.xy - centres[0], axis=1) < np.linalg.norm(
        pts.xy - centres[1], axis=1
    )
    assert (nearer_left == left).mean() > 0.95  # the two halves are two groups
    again, _ = umap_points(grid, sample=600, seed=0)
    np.testing.assert_array_equal(again.xy, pts.xy)  # seeded: the same picture
    monkeypatch.setitem(sys.modules, "umap", None)  # not installed
    with pytest.raises(ValueError, match="umap-learn"):
        umap_points(grid)


def test_density_counts_and_bins():
    grid = two_sides()
    pts, _ = pca_points(grid)
    d = density(pts, bins=32)
    assert d.counts.sum() == len(pts) and d.bin_of.max() < 32 * 32
    np.testing.assert_array_equal(d.histogram(), d.counts)
    assert np.nanmax(d.mean_of(pts.xy[:, 0])) <= pts.xy[:, 0].max() + 1e-5
    with pytest.raises(ValueError, match="bins must be"):
        density(pts, bins=3)


def test_selection_round_trip_plot_to_image_and_back():
    grid = two_sides()
    pts, _ = pca_points(grid)
    d = density(pts, bins=64)
    x0, x1, y0, y1 = d.extent
    xm = 0.5 * (x0 + x1)
    side = select_rectangle(d, (x0 - 1, xm), (y0 - 1, y1 + 1))
    lasso = select_polygon(d, [(x0 - 1, y0 - 1), (xm, y0 - 1), (xm, y1 + 1), (x0 - 1, y1 + 1)])
    np.testing.assert_array_equal(side, lasso)  # the same region drawn two ways
    mask = to_mask(d, side)
    assert mask.shape == grid.shape and mask.sum() == side.sum()
    left = mask[:, :30].sum()
    assert left in (0, mask.sum())  # one whole half of the image, whichever sign PC1 has
    back = from_mask(d, mask)
    np.testing.assert_array_equal(back, side)
    assert d.histogram(back).sum() == side.sum()
    empty = np.zeros(grid.shape, bool)
    empty[:4, :4] = True  # only NaN pixels
    with pytest.raises(ValueError, match="outside the feature store"):
        from_mask(d, empty)
    with pytest.raises(ValueError, match="at least 3"):
        select_polygon(d, [(0, 0), (1, 1)])


def test_bin_paths_match_the_point_paths():
    grid = two_sides()
    pts, _ = pca_points(grid)
    d = density(pts, bins=16)
    x0, x1, y0, y1 = d.extent
    chosen = polygon_bins(d, [(x0, y0), (x1, y0), (0.5 * (x0 + x1), y1)])
    assert chosen.any() and not chosen.all()
    points = chosen.reshape(-1)[d.bin_of]
    np.testing.assert_array_equal(bins_mask(d, chosen), to_mask(d, points))
    region = np.zeros(grid.shape, bool)
    region[10:30, 20:50] = True
    np.testing.assert_array_equal(mask_bins(d, region), d.histogram(from_mask(d, region)))
    np.testing.assert_array_equal(
        rectangle_bins(d, (x0, x1), (y0, y1)).reshape(-1)[d.bin_of],
        select_rectangle(d, (x0, x1), (y0, y1)),
    )
    assert (d.grid_bins[~to_mask(d, np.ones(len(pts), bool))] == 16 * 16).all()  # no point
    with pytest.raises(ValueError, match="one bool per bin"):
        bins_mask(d, chosen[:4])
    corner = np.zeros(grid.shape, bool)
    corner[:4, :4] = True  # only NaN pixels
    with pytest.raises(ValueError, match="outside the feature store"):
        mask_bins(d, corner)


def test_keep_as_class_never_overwrites_painted_labels():
    labels = np.zeros((10, 10), np.uint8)
    labels[:, :3] = 2  # painted by the user
    mask = np.zeros((10, 10), bool)
    mask[:, :5] = True
    table, cid, written, kept = keep_as_class(labels, mask, default_table(), "barrels")
    assert cid == 7 and table.by_id(7).name == "barrels"
    assert (written, kept) == (20, 30)
    assert (labels[:, :3] == 2).all() and (labels[:, 3:5] == 7).all() and (labels[:, 5:] == 0).all()
    with pytest.raises(ValueError, match="exists already"):
        keep_as_class(labels, mask, table, "barrels")
    with pytest.raises(ValueError, match="empty"):
        keep_as_class(labels, mask & False, table, "septa")


@pytest.fixture
def store(tmp_path):
    """A two-area image's feature store (stride 2) and its image."""
    return two_area_store(tmp_path)


def test_factor_points_readout_and_profiles(store, tmp_path):
    path, _ = store
    grid = FeatureGrid.from_store(path)
    fac = run(factorise(grid, 3, seed=0))
    pts = factor_points(fac, (0, 2))
    assert pts.axes == ("factor 0", "factor 2") and len(pts) == int(fac.used.sum())
    with pytest.raises(ValueError, match="two indices in 0..2"):
        factor_points(fac, (0, 3))
    maps = np.asarray(fac.maps)
    clusters = np.where(np.arange(grid.shape[1]) < grid.shape[1] // 2, 1, 2)[None].repeat(
        grid.shape[0], 0
    )
    r = Readout.of_store(path, maps=maps, clusters=clusters)
    (y0, x0), (sy, sx) = grid.origin, grid.step
    out = r.at(y0 + sy * 3, x0 + sx * 4)
    assert out["grid"] == (3, 4) and out["cluster"] == 1
    assert out["factors"][0][1] == maps[:, 3, 4].max() and len(out["factors"]) == 3
    names = FeatureStore(path).classes.names  # the tiny model's generic classes
    assert out["area_name"] in names and 0 < out["confidence"] <= 1
    assert r.at(-50, 5) is None and r.text(-50, 5) == ""
    assert "cluster 1" in r.text(y0 + sy * 3, x0 + sx * 4)
    with pytest.raises(ValueError, match="not on the grid"):
        Readout(grid, clusters=clusters[:-1])
    # factor x area table: the factor most active on the right half is most active in area 2
    areas = clusters
    prof = factor_profile(maps, areas)
    assert prof.mean.shape == (3, 2) and prof.label_ids == [1, 2]
    right = np.nanmean(maps[:, :, grid.shape[1] // 2 :], axis=(1, 2))
    left = np.nanmean(maps[:, :, : grid.shape[1] // 2], axis=(1, 2))
    np.testing.assert_allclose(prof.mean[:, 1], right, rtol=1e-5)
    assert prof.top_label() == [1 if a > b else 2 for a, b in zip(left, right, strict=True)]
    # clusters matched across two slices: b's ids swapped, so 1 <-> 2 at distance 0
    m = match_slices(clusters, areas, 3 - clusters, areas)
    assert sorted(m["pairs"]) == [(1, 2, 0.0), (2, 1, 0.0)]


def test_open_sources_refuses_a_store_being_written_and_notes_a_deleted_store(store, tmp_path):
    path, image = store
    src = open_sources(path)
    assert src.store is not None and src.grid.features is not None and src.note == ""
    part = tmp_path / "part.zarr"
    gen = compute_feature_map(image, tiny_cnn(), out=part, stride=2, tile=8)
    next(gen)  # one tile written, then the run stops
    gen.close()
    with pytest.raises(ValueError, match=r"still being written \(\d+/\d+ tiles"):
        open_sources(part)
    fac = run(factorise(FeatureGrid.from_store(path), 2, seed=0))
    saved = fac.save(tmp_path / "f.zarr")
    both = open_sources(saved)
    assert both.factors is not None and both.grid.features is not None
    shutil.rmtree(path)
    alone = open_sources(saved)
    assert alone.grid.features is None and "is gone" in alone.note
    assert len(factor_points(alone.factors)) > 0  # the factor plot still works
    with pytest.raises(FileNotFoundError, match="neither"):
        open_sources(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such"):
        open_sources(tmp_path / "nope.zarr")


def test_feature_points_on_and_of_grid():
    pts = FeaturePoints(np.zeros((3, 2), np.float32), np.array([0, 4, 5]), (2, 3), ("a", "b"))
    np.testing.assert_array_equal(pts.on_grid(np.array([1, 2, 3])), [[1, 0, 0], [0, 2, 3]])
    np.testing.assert_array_equal(pts.of_grid(np.arange(6).reshape(2, 3)), [0, 4, 5])
    with pytest.raises(ValueError, match="on the grid"):
        pts.of_grid(np.zeros((3, 3)))
