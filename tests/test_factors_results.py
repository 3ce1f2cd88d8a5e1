"""Options declared once, Factors from a feature grid, and factors.zarr saved and reopened."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import zarr

from napari_brainfeatures.factors import nmf as nmf_module
from napari_brainfeatures.factors.nmf import FeatureNMF, fit_nmf
from napari_brainfeatures.factors.options import NMFOptions, OptionError, SelectOptions
from napari_brainfeatures.factors.results import (
    Factors,
    factorise,
    is_factors,
    open_factors,
    open_map,
    save_clusters,
)
from napari_brainfeatures.factors.select import Selection, select_factors
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.progress import run

pytestmark = pytest.mark.usefixtures("one_thread")


def grid_with_holes(seed: int = 0) -> FeatureGrid:
    """A (12, 10, 6) non-negative map, two areas, NaN where 'not computed'."""
    rng = np.random.default_rng(seed)
    f = rng.random((12, 10, 6)).astype(np.float32)
    f[:, 5:, :3] += 2.0  # right half: another area
    f[0, :4] = np.nan
    f[7, 7] = np.nan
    return FeatureGrid.of(
        f, origin=(3, 1), step=(2, 2), z=4, image_shape=(6, 30, 24), index=2, source=None
    )


# -- options ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("n_components", 0, "n_components must be an integer >= 1, got 0"),
        ("n_components", True, "got True"),
        ("solver", "magic", "solver must be one of .*, got 'magic'"),
        ("init", "svd", "init must be one of"),
        ("max_iter", 2.5, "max_iter must be an integer >= 1, got 2.5"),
        ("tol", -1e-3, r"tol must be a number >= 0 .*got -0\.001"),
        ("block_rows", 0, "block_rows must be an integer >= 1, got 0"),
        ("sweeps", (3,), r"sweeps must be two integers >= 1 .*got \(3,\)"),
        ("sweeps", (0, 2), r"got \(0, 2\)"),
    ],
)
def test_nmf_options_quote_the_bad_value(field, value, match):
    with pytest.raises(OptionError, match=match) as err:
        NMFOptions(**{field: value})
    assert err.value.option == field and isinstance(err.value, ValueError)
    with pytest.raises(ValueError, match=match):  # the estimator checks when it is made
        FeatureNMF(**{field: value})
    with pytest.raises(ValueError, match=match):  # and fit_nmf before it reads X
        next(fit_nmf(None, **{field: value}))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("lam", -1, "lam must be >= 0, got -1"),
        ("lam", float("nan"), "lam must be >= 0, got nan"),
        ("eps", 1.0, r"eps must be in \[0, 1\), got 1\.0"),
        ("p", 0, "p must be an integer >= 1, got 0"),
        ("normalise", "size", "normalise must be one of"),
        ("outside", "some", "outside must be one of"),
    ],
)
def test_select_options_quote_the_bad_value(field, value, match):
    with pytest.raises(OptionError, match=match):
        SelectOptions(**{field: value})
    U, rois = np.ones((4, 2), np.float32), np.array([1, 1, 2, 2])
    with pytest.raises(ValueError, match=match):
        select_factors(U, rois, **{field: value})


def test_errors_can_name_the_option_as_an_interface_does():
    with pytest.raises(OptionError, match=r"^--lam must be >= 0, got -1\.0$"):
        SelectOptions.named({"lam": "--lam"}, lam=-1.0)
    with pytest.raises(OptionError, match=r"^--k must be an integer >= 1, got 0$"):
        NMFOptions.named({"n_components": "--k"}, n_components=0)
    with pytest.raises(OptionError, match=r"^picks p must be in 1\.\.2 .*got 3$"):
        try:
            SelectOptions(p=3).check_p(5, 2)
        except OptionError as err:
            raise err.named({"p": "picks p"}) from None
    assert SelectOptions().check_p(5, 2) == 2 and SelectOptions(p=1).check_p(5, 2) == 1


def test_every_nmf_option_reaches_fit_nmf_and_the_estimator(monkeypatch):
    values = {
        "n_components": 3,
        "solver": "torch",
        "init": "random",
        "max_iter": 7,
        "tol": 0.0,
        "seed": 5,
        "device": "cpu",
        "block_rows": 40,
        "sweeps": (1, 2),
    }
    assert set(values) == {f.name for f in dataclasses.fields(NMFOptions)}
    seen = []
    real = nmf_module._fit_torch

    def spy(rows, k, **kw):
        seen.append((k, kw))
        return real(rows, k, **kw)

    monkeypatch.setattr(nmf_module, "_fit_torch", spy)
    X = np.random.default_rng(0).random((90, 6)).astype(np.float32)
    a = run(fit_nmf(X, options=NMFOptions(**values)))
    est = FeatureNMF(**values).fit(X)
    assert est.options == NMFOptions(**values) and est.n_components == 3
    expected = {
        "max_iter": 7,
        "tol": 0.0,
        "seed": 5,
        "device": "cpu",
        "block": 40,
        "inner": (1, 2),
        "init": "random",
    }
    assert seen == [(3, expected), (3, expected)]
    np.testing.assert_array_equal(a.H, est.components_)
    other = run(fit_nmf(X, options=NMFOptions(**values), sweeps=(3, 6)))  # keyword on top
    assert not np.array_equal(a.H, other.H)


# -- factors of a grid ------------------------------------------------------------------------
def test_factorise_leaves_out_uncomputed_pixels():
    grid = grid_with_holes()
    fac = run(factorise(grid, 3, seed=0))
    assert isinstance(fac, Factors) and fac.k == 3 and fac.maps.shape == (3, 12, 10)
    assert fac.valid.sum() == 120 - 5 and not fac.valid[0, :4].any() and not fac.valid[7, 7]
    assert np.isnan(fac.maps[:, ~fac.valid]).all() and (fac.maps[:, fac.valid] >= 0).all()
    np.testing.assert_array_equal(fac.coefficients, fac.maps[:, fac.valid].T)
    assert fac.components.shape == (3, 6) and fac.grid is grid
    assert set(fac.info) == {"k", "solver", "n_rows", "rel_error", "n_iter", "wall_s"}
    assert fac.info["n_rows"] == 115 and 0 < fac.info["rel_error"] < 1
    coef = fac.coefficient_grid()
    assert coef.features.shape == (12, 10, 3) and coef.origin == (3, 1)
    with pytest.raises(OptionError, match="solver"):
        run(factorise(grid, 3, solver="magic"))
    with pytest.raises(ValueError, match="holds no features"):
        run(factorise(FeatureGrid((12, 10)), 3))


def test_select_on_the_grid():
    grid = grid_with_holes()
    fac = run(factorise(grid, 3, seed=0))
    rois = np.zeros((12, 10), np.uint8)
    rois[:, :5], rois[:, 5:] = 1, 2
    rois[0, :2] = 3  # only where no feature was computed
    sel = fac.select(rois, lam=0.5)
    assert sel.roi_ids == [1, 2] and len(sel.pairs) == 2  # ROI 3 has no coefficients
    direct = select_factors(fac.coefficients, rois[fac.valid], lam=0.5)
    np.testing.assert_array_equal(sel.scores, direct.scores)
    with pytest.raises(ValueError, match=r"ROI id\(s\) \[3\] lie only where no feature"):
        fac.select(rois, roi_ids=[1, 3])
    with pytest.raises(ValueError, match="lam must be >= 0, got -1"):
        fac.select(rois, lam=-1)
    with pytest.raises(ValueError, match=r"on the factors' grid \(12, 10\)"):
        fac.select(rois[:5])
    kept = fac.with_selection(sel)
    assert kept.selection is sel and fac.selection is None and kept.maps is fac.maps


def test_selection_dict_round_trip():
    U = np.zeros((100, 3), np.float32)
    U[:60, 0], U[60:, 1], U[:, 2] = 1, 1, 0.2
    rois = np.repeat([1, 2], [60, 40])
    sel = select_factors(U, rois, lam=0.3, normalise="area")
    back = Selection.from_dict(json.loads(json.dumps(sel.to_dict())))
    assert back.pairs == sel.pairs and back.roi_ids == sel.roi_ids and back.params == sel.params
    np.testing.assert_array_equal(back.scores, sel.scores)
    np.testing.assert_array_equal(back.coverage, sel.coverage)
    assert back.coverage_fraction == sel.coverage_fraction and back.factors == sel.factors


# -- on disk ----------------------------------------------------------------------------------
def test_save_and_open_round_trip(tmp_path):
    fac = run(factorise(grid_with_holes(), 3, seed=0))
    rois = np.repeat([[1] * 5 + [2] * 5], 12, axis=0).astype(np.uint8)
    fac = fac.with_selection(fac.select(rois))
    path = fac.save(tmp_path / "res" / "factors.zarr")  # the parent folder is made
    assert path == tmp_path / "res" / "factors.zarr" and is_factors(path)
    assert [p.name for p in (tmp_path / "res").iterdir()] == ["factors.zarr"]  # no temp left
    back = open_factors(path)
    np.testing.assert_array_equal(np.asarray(back.maps), fac.maps)  # NaN where fac has NaN
    np.testing.assert_array_equal(back.components, fac.components)
    assert back.grid == fac.grid and back.grid.features is None
    assert back.info == {k: fac.info[k] for k in back.info}
    assert back.selection.pairs == fac.selection.pairs and back.path == path
    np.testing.assert_array_equal(back.valid, fac.valid)
    attrs = zarr.open_group(path, mode="r").attrs["brainfeatures"]
    assert attrs["kind"] == "nmf-factors" and attrs["step"] == [2, 2] and attrs["z_image"] == 4
    assert zarr.open_group(path, mode="r")["maps"].dtype == np.float32
    # what `cluster` reads: the coefficients on the grid
    coef = open_map(path)
    assert coef.shape == (12, 10) and coef.origin == (3, 1) and coef.features.shape[-1] == 3
    # a second save replaces the first
    again = dataclasses.replace(fac, selection=None).save(path)
    assert open_factors(again).selection is None


def test_save_refuses_what_it_may_not_replace_and_keeps_the_old_result(tmp_path, monkeypatch):
    src = tmp_path / "store.zarr"
    zarr.create_array(str(src), data=np.ones((12, 10, 6), np.float32))
    fac = run(factorise(FeatureGrid.open(src), 2, seed=0))
    with pytest.raises(FileExistsError, match="lies inside the input store"):
        fac.save(src / "factors.zarr")
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "a.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="never deleted"):
        fac.save(mine)
    assert (mine / "a.txt").read_text() == "mine"
    good = fac.save(tmp_path / "f.zarr")
    before = np.asarray(open_factors(good).maps)

    def broken(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zarr.Group, "create_array", broken)
    with pytest.raises(OSError, match="No space"):
        fac.save(good)
    monkeypatch.undo()
    np.testing.assert_array_equal(np.asarray(open_factors(good).maps), before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.zarr", "notes", "store.zarr"]


def test_open_errors_and_cluster_maps(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such factors result"):
        open_factors(tmp_path / "nope.zarr")
    zarr.create_array(str(tmp_path / "plain.zarr"), data=np.ones((4, 5, 2), np.float32))
    with pytest.raises(ValueError, match="is not a factors result"):
        open_factors(tmp_path / "plain.zarr")
    assert not is_factors(tmp_path / "plain.zarr") and not is_factors(tmp_path / "nope")
    assert open_map(tmp_path / "plain.zarr").shape == (4, 5)  # features: as FeatureGrid.open
    grid = FeatureGrid((4, 5), step=(2, 2))
    out = save_clusters(tmp_path / "c.zarr", np.ones((4, 5), np.int32), grid, {"k": 1})
    attrs = zarr.open_group(out, mode="r").attrs["brainfeatures"]
    assert attrs["kind"] == "cluster-map" and attrs["k"] == 1 and attrs["step"] == [2, 2]
    with pytest.raises(FileExistsError, match="is or contains the input"):
        save_clusters(
            tmp_path / "plain.zarr",
            np.ones((4, 5), np.int32),
            grid,
            {},
            inputs=[tmp_path / "plain.zarr"],
        )
