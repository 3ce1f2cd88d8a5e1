"""Sample data v3: a section as a real scan shows it (cut faces, pia, gradient, thin WM, ...)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_brainfeatures import cli
from napari_brainfeatures.synthetic import (
    DEFAULT_SHAPE,
    make_microct,
    make_microct_lazy,
    render_microct_box,
)
from napari_brainfeatures.synthetic._geometry import CTX, STR, VP, WM, Geometry
from napari_brainfeatures.synthetic._geometry3 import Geometry3

SHAPE = (1, 768, 512)


@pytest.fixture(scope="module")
def v3():
    return make_microct(SHAPE, seed=5, version=3)


def _full_labels(geom: Geometry, z: float = 0.0) -> dict[str, np.ndarray]:
    h, w = geom.shape[1:]
    return geom.labels(np.float64(z), np.arange(h, dtype=float)[:, None], np.arange(w)[None, :])


def test_ground_truth_is_consistent(v3):
    areas, layers, tissue = v3.areas[0], v3.layers[0], v3.tissue[0]
    assert v3.version == 3 and v3.attrs()["generator_version"] == "3"
    assert set(np.unique(tissue)) == {0, 1}
    assert not areas[tissue == 0].any()  # no class outside the tissue
    assert set(np.unique(areas[tissue == 1])) == {0, 1, 2, 3, 4, 5, 6}  # six areas + no class
    assert ((layers > 0) == (areas == CTX)).all()  # layers exactly in cortex
    assert set(np.unique(layers)) == set(range(7))
    assert not v3.barrels[0][layers != 4].any()
    other = (tissue == 1) & (areas == 0)
    assert 0.01 < other.mean() < 0.06  # the territory of no class: a few % of the section
    # it is one piece, in the bottom-left corner, and the striatum's ground gives way to it
    lab, n = ndi.label(other)
    assert n == 1
    ys, xs = np.nonzero(other)
    assert ys.min() > 0.8 * SHAPE[1] and xs.max() < 0.25 * SHAPE[2]
    v2 = _full_labels(Geometry(SHAPE, 5))["areas"]
    assert (v2[other] == STR).all()


def test_deterministic_per_seed_and_lazy_equals_in_memory(v3):
    again = make_microct(SHAPE, seed=5, version=3)
    for k in ("image", "areas", "layers", "barrels", "tissue"):
        np.testing.assert_array_equal(getattr(v3, k), getattr(again, k), err_msg=k)
    other = make_microct(SHAPE, seed=6, version=3)
    assert (other.image != v3.image).mean() > 0.5
    lazy = make_microct_lazy(SHAPE, seed=5, version=3, chunks=(1, 200, 200))
    np.testing.assert_array_equal(np.asarray(lazy.tissue), v3.tissue)
    np.testing.assert_array_equal(np.asarray(lazy.image[:, 300:500, 100:300]),
                                  v3.image[:, 300:500, 100:300])  # fmt: skip
    box = render_microct_box(SHAPE, (0, 700, 0), (1, 768, 120), seed=5, version=3)
    np.testing.assert_array_equal(box["image"], v3.image[:, 700:, :120])
    # version 2 stays the default and has no tissue array
    assert make_microct((1, 64, 64), seed=5).tissue is None
    with pytest.raises(ValueError, match="version must be one of"):
        make_microct((1, 64, 64), seed=5, version=4)


def test_cut_faces_and_background(v3):
    img, tissue = v3.image[0].astype(float), v3.tissue[0]
    h, w = tissue.shape
    for edge in (tissue[:, :5], tissue[:, -5:], tissue[-5:, :]):  # left, right, bottom
        assert not edge.any()
    # background is dark and flat next to textured tissue
    back, inside = img[tissue == 0], img[ndi.binary_erosion(tissue, iterations=20)]
    assert back.mean() < 0.4 * inside.mean()
    # the cut lines are rough: the left face's column wanders by several px
    left = np.argmax(tissue[h // 2 :], axis=1)
    assert left.max() - left.min() >= 4


def test_pial_membrane_gradient_and_vessels(v3):
    img, areas = v3.image[0].astype(float), v3.areas[0]
    geom = Geometry3(SHAPE, 5)
    cols = np.arange(100, 400)
    pia = geom.curves(np.zeros(1), cols.astype(float))["pia"]
    top = np.ceil(pia).astype(int)
    ridge = np.mean([img[t + 1 : t + 5, c].max() for t, c in zip(top, cols, strict=True)])
    below = np.mean([img[t + 15 : t + 40, c].mean() for t, c in zip(top, cols, strict=True)])
    assert ridge > below + 25  # a bright membrane along the pia
    # brighter at the top than in the middle: cortex near the pia vs cortex 0.4 H down
    ctx = areas == CTX
    rows = np.arange(SHAPE[1])[:, None]
    near_top = img[ctx & (rows < 0.12 * SHAPE[1])].mean()
    middle = img[ctx & (rows > 0.36 * SHAPE[1])].mean()
    assert near_top > 1.04 * middle
    assert geom.gradient(np.array([0.0]))[0] > 1.1 and geom.gradient(np.array([384.0]))[0] == 1
    # dark vessel lumens inside the tissue
    dark = (ndi.uniform_filter(img, 3) < 60) & ndi.binary_erosion(v3.tissue[0], iterations=10)
    assert 5 <= ndi.label(dark)[1]


def test_thin_white_matter_band_at_the_default_size():
    geom = Geometry3(DEFAULT_SHAPE, 0)
    lab = _full_labels(geom)
    areas = lab["areas"]
    widths = []
    for x in range(600, 960, 40):  # right of the internal capsule: only the callosal band
        col = areas[:, x] == WM
        widths.append(int(col.sum()))
    assert 95 <= min(widths) and max(widths) <= 128  # narrower than a 128 px patch
    v2 = _full_labels(Geometry(DEFAULT_SHAPE, 0))["areas"]
    assert int((v2[:, 800] == WM).sum()) > 130


def test_fibre_fan_turns_across_vp():
    geom = Geometry3(DEFAULT_SHAPE, 0)
    areas = _full_labels(geom)["areas"]
    ys, xs = np.nonzero(areas == VP)
    angles = []
    for x in (xs.min() + 20, xs.max() - 20):  # the fibres' direction at VP's two ends
        y = float(np.median(ys[xs == x]))
        yy, xx = np.array([y, y + 1.0]), np.array([float(x), float(x)])
        p = geom.fan_coords(yy, xx)[0]
        pdx = geom.fan_coords(np.array([y]), np.array([x + 1.0]))[0][0] - p[0]
        angles.append(np.degrees(np.arctan2(p[1] - p[0], pdx)))  # normal of the fibres
    assert abs(angles[1] - angles[0]) > 30


def test_cli_sample_version_3(tmp_path):
    out = tmp_path / "v3.zarr"
    args = ["sample", "microct", str(out), "--version", "3", "--shape", "1", "128", "128"]
    assert cli.main(args) == 0
    import zarr

    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["generator_version"] == "3" and "tissue" in group
    ref = make_microct((1, 128, 128), seed=0, version=3)
    np.testing.assert_array_equal(group["tissue"][:], ref.tissue)
