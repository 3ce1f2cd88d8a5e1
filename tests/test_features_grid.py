"""FeatureGrid: one slice of a feature store on the image grid (open, labels, place, layers)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from helpers import tiny_cnn
from napari_brainfeatures.factors.clusters import on_grid
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.progress import run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def box_store(tmp_path_factory):
    """A store of z 1..2 of a (4, 40, 44) image, stride 3, box from (5, 7): grid 9 x 11."""
    img = (np.random.default_rng(0).random((4, 40, 44)) * 200).astype(np.uint8)
    out = tmp_path_factory.mktemp("grid") / "box.zarr"
    region = {"z": (1, 3), "y": (5, 30), "x": (7, 40)}
    return run(compute_feature_map(img, tiny_cnn(), out=out, stride=3, tile=8, region=region))


def test_from_store_reads_one_slice_and_where_it_lies(box_store):
    grid = FeatureGrid.from_store(box_store.path, 1)
    assert grid.shape == (9, 11) and grid.origin == (5, 7) and grid.step == (3, 3)
    assert grid.z == 2 and grid.index == 1 and grid.image_shape == (4, 40, 44)
    assert grid.source == str(box_store.path)
    assert isinstance(grid.features, da.Array) and grid.features.shape == (9, 11, 8)
    want = np.moveaxis(np.asarray(box_store.features()[1]), 0, -1)
    np.testing.assert_array_equal(np.asarray(grid.features), want)
    assert FeatureGrid.from_store(box_store, 0).z == 1  # an open FeatureStore works too
    assert FeatureGrid.open(box_store.path, 1) == grid  # the general opener: same grid


@pytest.mark.parametrize(
    ("z", "flag", "match"),
    [
        (None, "--z", r"holds 2 z-slices; choose one with --z 0\.\.1"),
        (2, "store z index", r"store z index must be in 0\.\.1 for .*, got 2"),
        (-1, "z", r"z must be in 0\.\.1 .*got -1"),
    ],
)
def test_one_rule_for_z(box_store, z, flag, match):
    with pytest.raises(ValueError, match=match):
        FeatureGrid.from_store(box_store.path, z, flag=flag)


def test_store_of_a_2d_image_has_one_slice(tmp_path):
    img = (np.random.default_rng(1).random((40, 44)) * 200).astype(np.uint8)
    store = run(compute_feature_map(img, tiny_cnn(), out=tmp_path / "s.zarr", stride=4, tile=8))
    grid = FeatureGrid.from_store(store.path)
    assert grid.index is None and grid.z == 0 and grid.image_shape == (40, 44)
    assert FeatureGrid.from_store(store.path, 0) == grid
    with pytest.raises(ValueError, match=r"0\.\.0"):
        FeatureGrid.from_store(store.path, 1)
    with pytest.raises(FileNotFoundError, match="not a dense feature store"):
        FeatureGrid.from_store(tmp_path)


def test_open_plain_arrays_and_errors(tmp_path):
    f = np.random.default_rng(0).random((2, 5, 6, 3)).astype(np.float32)
    zarr.create_array(str(tmp_path / "f4.zarr"), data=f)
    zarr.create_array(str(tmp_path / "f3.zarr"), data=f[1])
    g4 = FeatureGrid.open(tmp_path / "f4.zarr", 1, flag="--z")
    assert g4.shape == (5, 6) and g4.z == 1 and g4.index == 1 and g4.step == (1, 1)
    np.testing.assert_array_equal(np.asarray(g4.features), f[1])
    g3 = FeatureGrid.open(tmp_path / "f3.zarr")
    assert g3.index is None and g3.image_shape == (5, 6)
    with pytest.raises(ValueError, match="choose one with --z"):
        FeatureGrid.open(tmp_path / "f4.zarr", flag="--z")
    with pytest.raises(FileNotFoundError, match="no such feature store"):
        FeatureGrid.open(tmp_path / "missing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a feature store \(no zarr group found\)"):
        FeatureGrid.open(tmp_path / "empty")
    zarr.create_array(str(tmp_path / "flat.zarr"), data=np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match=r"neither a feature store nor .*\(H, W, D\)"):
        FeatureGrid.open(tmp_path / "flat.zarr")


def test_labels_on_reads_the_grid_pixels_of_2d_and_3d_labels():
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 9, (4, 40, 44)).astype(np.uint16)
    grid = FeatureGrid((9, 11), origin=(5, 7), step=(3, 3), z=2)
    want = vol[2, 5::3, 7::3][:9, :11]
    np.testing.assert_array_equal(grid.labels_on(vol), want)
    np.testing.assert_array_equal(grid.labels_on(vol[2]), want)
    lazy = grid.labels_on(da.from_array(vol, chunks=(1, 16, 16)))
    assert isinstance(lazy, np.ndarray) and lazy.dtype == np.uint16
    np.testing.assert_array_equal(lazy, want)
    # the old helper is the same rule
    np.testing.assert_array_equal(on_grid(vol[2], (9, 11), origin=(5, 7), step=(3, 3)), want)
    with pytest.raises(ValueError, match="labels 'x.zarr' have 4 slices; the features are at z=5"):
        FeatureGrid((9, 11), origin=(5, 7), step=(3, 3), z=5).labels_on(vol, what="labels 'x.zarr'")
    with pytest.raises(ValueError, match=r"do not cover a 9x11 grid at origin \(5, 7\)"):
        grid.labels_on(vol[2, :20])
    with pytest.raises(ValueError, match="do not cover"):
        on_grid(vol[2, :, :30], (9, 11), origin=(5, 7), step=(3, 3))
    with pytest.raises(ValueError, match="do not cover"):
        grid.labels_on(np.zeros(10, np.uint8))


@pytest.mark.parametrize(("origin", "step"), [((5, 7), (3, 3)), ((1, 0), (2, 4)), ((0, 0), (1, 1))])
def test_place_paints_each_grid_point_where_napari_draws_it(origin, step):
    grid = FeatureGrid((6, 5), origin=origin, step=step, image_shape=(2, 30, 33))
    values = np.arange(30, dtype=np.float32).reshape(6, 5) + 1
    full = grid.place(values, fill=-1)
    assert full.shape == (30, 33) and full.dtype == np.float32
    # napari draws data pixel i over world [t + s (i - 1/2), t + s (i + 1/2)), with t and s
    # from layer_kwargs; image pixel p sits at world p (ties go to the later point)
    geo = grid.layer_kwargs()
    (ty, tx), (sy, sx) = geo["translate"], geo["scale"]
    ys = np.floor((np.arange(30) - ty) / sy + 0.5).astype(int)
    xs = np.floor((np.arange(33) - tx) / sx + 0.5).astype(int)
    ok = ((ys >= 0) & (ys < 6))[:, None] & ((xs >= 0) & (xs < 5))[None]
    want = np.where(ok, values[np.clip(ys, 0, 5)[:, None], np.clip(xs, 0, 4)[None]], -1)
    np.testing.assert_array_equal(full, want)
    py, px = grid.pixels()  # at the grid points themselves: the grid's value
    np.testing.assert_array_equal(full[np.ix_(py, px)], values)
    stack = grid.place(np.stack([values, 2 * values]))  # (k, H', W') -> (k, Y, X)
    assert stack.shape == (2, 30, 33)
    np.testing.assert_array_equal(stack[1], 2 * grid.place(values))


def test_place_errors():
    grid = FeatureGrid((6, 5))
    with pytest.raises(ValueError, match=r"end in the grid's shape \(6, 5\)"):
        grid.place(np.zeros((5, 6)))
    with pytest.raises(ValueError, match="pass shape="):
        grid.place(np.zeros((6, 5)))
    assert grid.place(np.ones((6, 5)), shape=(8, 8)).sum() == 30


def test_layer_kwargs_follow_the_image_layer():
    grid = FeatureGrid((9, 11), origin=(5, 7), step=(3, 2), z=4)
    assert grid.layer_kwargs() == {"scale": (3.0, 2.0), "translate": (5.0, 7.0)}
    geo = grid.layer_kwargs((0.5, 0.25), (10, 20))
    assert geo == {"scale": (1.5, 0.5), "translate": (12.5, 21.75)}
    geo3 = grid.layer_kwargs((2.0, 0.5, 0.5), (1.0, 0.0, 0.0))
    assert geo3 == {"scale": (2.0, 1.5, 1.0), "translate": (9.0, 2.5, 3.5)}  # z 4 -> 1 + 2*4
    with pytest.raises(ValueError, match="2 or 3 numbers"):
        grid.layer_kwargs((1, 1, 1, 1))


def test_attrs_round_trip_and_validation():
    grid = FeatureGrid((9, 11), origin=(5, 7), step=(3, 3), z=2, image_shape=(4, 40, 44), index=1)
    back = FeatureGrid.from_attrs(grid.to_attrs(), (9, 11))
    assert back == grid
    old = {"origin": [5, 7], "step": [3, 3], "z_image": 2}  # factors.zarr before image_shape
    assert FeatureGrid.from_attrs(old, (9, 11)).image_shape is None
    with pytest.raises(ValueError, match=r"step must be two integers >= 1 \(y, x\), got \(0, 3\)"):
        FeatureGrid((9, 11), step=(0, 3))
    with pytest.raises(ValueError, match="origin must be two integers >= 0"):
        FeatureGrid((9, 11), origin=(1.5, 0))
    with pytest.raises(ValueError, match=r"\(H', W'\) = \(9, 11\), got \(9, 10, 4\)"):
        FeatureGrid((9, 11), features=np.zeros((9, 10, 4)))
    with pytest.raises(ValueError, match=r"shape \(H', W', D\)"):
        FeatureGrid.of(np.zeros((9, 10)))
    g = FeatureGrid.of(np.zeros((9, 10, 4)), step=(2, 2))
    assert g.shape == (9, 10) and g.radius(8) == 4.0 and g.sigma(3) == (1.5, 1.5)
    assert g.with_features(np.ones((9, 10, 2))).features.shape == (9, 10, 2)
