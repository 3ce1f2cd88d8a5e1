"""Damaged feature stores and factors results are refused naming the store and the part (#23)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from helpers import TINY_CNN
from napari_brainfeatures.factors.results import factorise, open_factors, open_map
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.features.store import FeatureStore, FeatureStoreError
from napari_brainfeatures.models.cnn import BrainAreaCNN
from napari_brainfeatures.progress import run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    torch.manual_seed(0)
    image = (np.random.default_rng(0).random((1, 24, 20)) * 255).astype(np.uint8)
    out = tmp_path_factory.mktemp("s") / "feat.zarr"
    run(compute_feature_map(image, BrainAreaCNN(TINY_CNN).eval(), out=out, stride=4, tile=8))
    return out


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit(path, change):
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("part", "change", "match"),
    [
        ("features", lambda m: m.update(data_type="int8"), r"array 'features'"),
        ("features", lambda m: m.update(fill_value="x"), r"array 'features'"),
        ("probs", lambda m: m.update(shape=[1, 3, 2]), r"array 'probs'"),
        ("areas", lambda m: m.update(data_type="float64"), r"array 'areas' is 3-D float64"),
        ("done", lambda m: m.pop("node_type"), r"array 'done'"),
        (".", lambda m: m["attributes"]["brainfeatures"].update(grid="x"), r"invalid 'grid'"),
        (".", lambda m: m["attributes"]["brainfeatures"].update(origin=[0, "a", 1]), "origin"),
        (".", lambda m: m["attributes"]["brainfeatures"].update(which=["x"]), "'which'"),
    ],
)
def test_damaged_store_is_a_value_error_naming_it(store, tmp_path, part, change, match):
    bad = _copy(store, tmp_path / "bad.zarr")
    _edit(bad / part / "zarr.json", change)
    with pytest.raises(FeatureStoreError, match=match) as err:
        FeatureStore(bad)
    assert str(bad) in str(err.value) and "compute it again" in str(err.value)
    with pytest.raises(ValueError, match=str(bad)):
        open_map(bad)
    assert FeatureStore(store).shape == (1, 6, 5)  # the intact one still opens


def test_damaged_array_json_is_refused(store, tmp_path):
    bad = _copy(store, tmp_path / "bad.zarr")
    (bad / "features" / "zarr.json").write_text("{")
    with pytest.raises(FeatureStoreError, match=r"metadata of its array 'features' is damaged"):
        FeatureStore(bad)


@pytest.fixture
def factors_path(tmp_path):
    rng = np.random.default_rng(0)
    grid = FeatureGrid.of(rng.random((6, 5, 4)).astype(np.float32), origin=(0, 0), step=(1, 1))
    return run(factorise(grid, 2, seed=0)).save(tmp_path / "factors.zarr")


@pytest.mark.parametrize(
    ("part", "change"),
    [
        ("maps", lambda m: m.update(data_type="int8")),
        ("maps", lambda m: m.update(fill_value=[1, 2])),
        ("components", lambda m: m.update(shape=[5, 4])),
        ("components", lambda m: m.pop("shape")),
        (".", lambda m: m["attributes"]["brainfeatures"].update(k=7)),
        (".", lambda m: m["attributes"]["brainfeatures"].update(step="x")),
    ],
)
def test_damaged_factors_result_is_a_value_error_naming_it(factors_path, part, change):
    assert open_factors(factors_path).k == 2
    _edit(factors_path / part / "zarr.json", change)
    for opener in (open_factors, open_map):
        with pytest.raises(ValueError, match="is damaged") as err:
            opener(factors_path)
        assert str(factors_path) in str(err.value)
