"""The synthetic micro-CT volume: determinism, chunk-exact writing, metadata, and honesty.

Honesty: areas must be told apart by their microstructure, not by brightness;
patch mean and standard deviation alone must classify poorly while a few
texture statistics classify well, on a section 43 voxels (50 µm) away.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi
from skimage.feature import local_binary_pattern
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from napari_brainfeatures import cli
from napari_brainfeatures.classes import default_table
from napari_brainfeatures.io.volume import open_volume
from napari_brainfeatures.synthetic import (
    DEFAULT_SHAPE,
    LAYER_GROUPS,
    LAYER_NAMES,
    TEST_SHAPE,
    make_microct,
    make_microct_lazy,
    render_microct_box,
    write_microct,
)

ARRAYS = ("image", "areas", "layers", "barrels")


@pytest.fixture(scope="module")
def small():
    return make_microct(TEST_SHAPE, seed=0)


def test_shapes_dtypes_metadata(small):
    for name in ARRAYS:
        arr = getattr(small, name)
        assert arr.shape == TEST_SHAPE and arr.dtype == np.uint8, name
    assert small.voxel_size_um == (1.17, 1.17, 1.17)
    assert small.classes == default_table()
    assert small.layer_names == LAYER_NAMES == ("L1", "L2", "L3", "L4", "L5", "L6")
    assert sorted(i for ids in LAYER_GROUPS.values() for i in ids) == [1, 2, 3, 4, 5, 6]
    attrs = small.attrs()
    json.dumps(attrs)  # JSON-ready
    assert attrs["seed"] == 0 and attrs["voxel_size_um"] == [1.17, 1.17, 1.17]
    assert attrs["classes"] == default_table().to_dict()


def test_every_area_and_layer_on_every_section(small):
    for z in range(TEST_SHAPE[0]):
        areas, layers = small.areas[z], small.layers[z]
        counts = np.bincount(areas.ravel(), minlength=7)
        assert set(np.unique(areas)) <= set(range(7))
        assert (counts[1:] / areas.size > 0.04).all(), counts  # each area has a real share
        assert set(np.unique(layers)) == set(range(7))
    # the clear medium above the pia stays a thin strip
    assert (small.areas == 0).mean() < 0.1


def test_layers_and_barrels_only_where_they_belong(small):
    np.testing.assert_array_equal(small.layers > 0, small.areas == 1)
    assert small.barrels.any()
    assert (small.layers[small.barrels > 0] == 4).all()
    # layers are ordered from the pia downwards in every column of cortex
    for x in (10, 128, 250):
        col = small.layers[3, :, x]
        col = col[col > 0]
        assert (np.diff(col.astype(int)) >= 0).all()


def test_deterministic_from_seed(small):
    again = make_microct(TEST_SHAPE, seed=0, workers=1)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(small, name), getattr(again, name))
    other = make_microct(TEST_SHAPE, seed=1)
    assert (other.image != small.image).mean() > 0.5
    # the seed moves boundaries a little, never the broad layout
    assert 0 < (other.areas != small.areas).mean() < 0.25
    share = [np.bincount(m.areas.ravel(), minlength=7) / m.areas.size for m in (small, other)]
    np.testing.assert_allclose(share[0], share[1], atol=0.05)


def test_sections_50um_apart_differ():
    shape = (64, 256, 256)
    a = render_microct_box(shape, (0, 0, 0), (1, 256, 256), seed=0)
    b = render_microct_box(shape, (43, 0, 0), (44, 256, 256), seed=0)
    moved = (a["areas"] != b["areas"]).mean()
    assert 0.005 < moved < 0.2
    assert np.corrcoef(a["image"].ravel(), b["image"].ravel())[0, 1] < 0.5


def test_chunked_write_and_lazy_equal_in_memory_bytes(small, tmp_path):
    path = write_microct(tmp_path / "v.zarr", shape=TEST_SHAPE, seed=0, chunks=(3, 100, 70))
    group = zarr.open_group(str(path), mode="r")
    for name in ARRAYS:
        np.testing.assert_array_equal(group[name][:], getattr(small, name))
        assert group[name].chunks == (3, 100, 70)
    attrs = dict(group.attrs)
    assert attrs["seed"] == 0 and attrs["generator_version"]
    assert attrs["shape"] == list(TEST_SHAPE)
    assert attrs["classes"] == default_table().to_dict()
    vol = open_volume(path)  # the plugin's reader picks the image and the voxel size
    assert vol.shape == TEST_SHAPE and vol.voxel_size == (1.17, 1.17, 1.17)
    lazy = make_microct_lazy(TEST_SHAPE, seed=0, chunks=(5, 64, 200))
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(lazy, name).compute(), getattr(small, name))
    box = render_microct_box(TEST_SHAPE, (2, 30, 40), (5, 90, 61), seed=0)
    np.testing.assert_array_equal(box["image"], small.image[2:5, 30:90, 40:61])


def test_write_refuses_to_overwrite(tmp_path):
    path = tmp_path / "v.zarr"
    write_microct(path, shape=(2, 64, 64), seed=0)
    with pytest.raises(FileExistsError, match="exists"):
        write_microct(path, shape=(2, 64, 64), seed=0)
    write_microct(path, shape=(2, 64, 64), seed=3, overwrite=True)
    assert zarr.open_group(str(path), mode="r").attrs["seed"] == 3


@pytest.mark.parametrize(
    "kwargs",
    [{"shape": (8, 32, 256)}, {"shape": (8, 256)}, {"shape": (0, 256, 256)}, {"seed": -1},
     {"seed": 1.5}],
)  # fmt: skip
def test_bad_arguments_are_explained(kwargs):
    args = {"shape": TEST_SHAPE, "seed": 0} | kwargs
    with pytest.raises(ValueError, match="got"):
        make_microct(args["shape"], seed=args["seed"])


def test_cli_writes_microct(tmp_path):
    out = tmp_path / "m.zarr"
    argv = ["sample", "microct", str(out), "--shape", "2", "64", "96", "--seed", "2"]
    assert cli.main([*argv, "--chunks", "1", "32", "32"]) == 0
    group = zarr.open_group(str(out), mode="r")
    ref = make_microct((2, 64, 96), seed=2)
    np.testing.assert_array_equal(group["image"][:], ref.image)
    assert group["image"].chunks == (1, 32, 32)
    assert cli.main(argv) == 2  # exists: refused
    assert cli.main([*argv, "--overwrite"]) == 0


# -- honesty: texture, not brightness --------------------------------------------------
def _inside_centres(areas, size, rng, per_class):
    """Centres of patches lying strictly inside one area (the paper's training patches)."""
    half, ys, xs, labels = size // 2, [], [], []
    for a in range(1, 7):
        inside = ndi.minimum_filter((areas == a).view(np.uint8), size, mode="constant") > 0
        cy, cx = np.nonzero(inside[half::8, half::8])
        pick = rng.permutation(len(cy))[:per_class]
        ys += list(cy[pick] * 8 + half)
        xs += list(cx[pick] * 8 + half)
        labels += [a] * len(pick)
    return (np.asarray(ys), np.asarray(xs)), np.asarray(labels)


def _texture_maps(image):
    """Per-pixel texture statistics; a patch's features are their means over the patch.

    Blob sizes (scale-normalised Laplacian of Gaussian), bright ridges (fibres)
    and their orientation (Hessian), local binary patterns -- all on the
    section standardised as a whole, so they carry no patch brightness.
    """
    z = (image - image.mean()) / image.std()
    maps = []
    for s in (1.5, 2.5, 3.5, 5.0, 7.0):
        log = s * s * ndi.gaussian_laplace(z, s)
        maps += [log > 0.6, log < -0.6]
    for s in (1.0, 2.0):
        hyy = ndi.gaussian_filter(z, s, order=(2, 0))
        hxx = ndi.gaussian_filter(z, s, order=(0, 2))
        hxy = ndi.gaussian_filter(z, s, order=(1, 1))
        half_tr = (hxx + hyy) / 2
        disc = np.sqrt(np.maximum(half_tr**2 - (hxx * hyy - hxy**2), 0))
        lo, hi = half_tr - disc, half_tr + disc
        ridge = (lo < -0.25 / s**2) & (np.abs(hi) < 0.3 * np.abs(lo))
        theta = 0.5 * np.arctan2(2 * hxy, hxx - hyy)
        maps += [ridge, ridge * np.cos(2 * theta), ridge * np.sin(2 * theta)]
    lbp = local_binary_pattern(image.astype(np.uint8), 8, 2, "uniform")
    maps += [lbp == k for k in range(10)]
    return maps


def _patch_features(image, centres, size):
    image = image.astype(np.float32)
    mean = ndi.uniform_filter(image, size)
    std = np.sqrt(np.maximum(ndi.uniform_filter(image * image, size) - mean**2, 0))
    brightness = np.stack([mean[centres], std[centres]], 1)
    maps = _texture_maps(image)
    texture = np.stack([ndi.uniform_filter(m.astype(np.float32), size)[centres] for m in maps], 1)
    return brightness, texture


def _runs(column: np.ndarray) -> list[tuple[int, int]]:
    """(value, length) of each run of equal values down a column."""
    edges = np.flatnonzero(np.diff(column)) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, column.size]
    return [(int(column[a]), int(b - a)) for a, b in zip(starts, ends, strict=True)]


@pytest.mark.parametrize("z", [20, 63, 106])  # the benchmarks' train, validation and test slices
def test_default_sample_has_patch_thick_layers_and_room_in_every_area(z):
    """As in real micro-CT at 1.17 µm, cortical layers are about as thick as a 128 px patch.

    (Version 1's cortex was 261 px, its layers 25-80 px: a patch spanned 2-4 of them.)
    """
    from napari_brainfeatures.synthetic._geometry import Geometry

    _, h, w = DEFAULT_SHAPE
    cols = np.arange(16, w, 64, dtype=float)
    lab = Geometry(DEFAULT_SHAPE, 0).labels(float(z), np.arange(h, dtype=float)[:, None], cols)
    group = np.zeros(7, np.uint8)
    for g, (_, ids) in enumerate(LAYER_GROUPS.items(), start=1):
        group[list(ids)] = g
    longest = dict.fromkeys(range(1, 7), 0)
    for c in range(cols.size):
        runs = _runs(lab["areas"][:, c])
        ctx = [n for a, n in runs if a == 1]
        assert len(ctx) == 1 and 560 <= ctx[0] <= 680, runs  # ~0.40 of 1536 px
        layer_runs = [(g, n) for g, n in _runs(group[lab["layers"][:, c]]) if g]
        assert [g for g, _ in layer_runs] == [1, 2, 3, 4, 5], layer_runs
        assert min(n for _, n in layer_runs) >= 40, layer_runs  # L1, the thinnest, ~55 px
        for a, n in runs:
            if a:
                longest[a] = max(longest[a], n)
    assert min(longest.values()) >= 140, longest  # a 128 px patch fits inside every area


def test_areas_differ_by_texture_not_brightness():
    """Train on one section, test on one 43 voxels (50 µm) away, 128-px patches as in the paper."""
    shape, size, rng = (64, 1024, 1024), 128, np.random.default_rng(0)
    data = {}
    for z in (0, 43):
        sec = render_microct_box(shape, (z, 0, 0), (z + 1, 1024, 1024), seed=0)
        centres, labels = _inside_centres(sec["areas"][0], size, rng, 80)
        data[z] = (*_patch_features(sec["image"][0], centres, size), labels)
        assert set(labels) == {1, 2, 3, 4, 5, 6}
        assert np.bincount(labels)[1:].min() >= 30  # every area fits many interior patches

    def accuracy(i):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        return model.fit(data[0][i], data[0][2]).score(data[43][i], data[43][2])

    brightness, texture = accuracy(0), accuracy(1)
    assert brightness < 0.5, (brightness, texture)  # chance is 1/6
    assert texture > 0.85, (brightness, texture)
    # per area, the mean grey value is the same within a few levels
    sec = render_microct_box(shape, (43, 0, 0), (44, 1024, 1024), seed=0)
    means = [sec["image"][0][sec["areas"][0] == a].mean() for a in range(1, 7)]
    assert np.ptp(means) < 6, means
