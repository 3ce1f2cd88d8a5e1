"""Synthetic population of coronal sections (paper 004 stand-in)."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_brainfeatures.synthetic.population import (
    ARTIFACT_NAMES,
    FACTOR_NAMES,
    ROI_NAMES,
    make_population,
    render_sections,
)

SHAPE = (64, 96)


@pytest.fixture(scope="module")
def pop():
    return make_population(40, shape=SHAPE, seed=1, artifact_fraction=0.3)


def test_shapes_dtypes(pop):
    n, (h, w) = 40, SHAPE
    assert pop.images.shape == pop.clean.shape == pop.rois_individual.shape == (n, h, w)
    assert pop.images.dtype == pop.clean.dtype == np.float32
    assert pop.rois.shape == (h, w) and pop.rois.dtype == np.uint8
    assert pop.factors.shape == (n, len(FACTOR_NAMES)) and pop.factors.dtype == np.float32
    assert pop.artifact.shape == (n,) and pop.artifact.dtype == np.int8
    assert pop.roi_names == ROI_NAMES and pop.roi_names[0] == "background"
    assert pop.artifact_names == ARTIFACT_NAMES and len(pop) == n
    assert (pop.clean >= 0).all() and (pop.images >= 0).all() and np.isfinite(pop.images).all()


def test_deterministic():
    a = make_population(6, shape=(40, 56), seed=3)
    b = make_population(6, shape=(40, 56), seed=3)
    c = make_population(6, shape=(40, 56), seed=4)
    for key in ("images", "clean", "factors", "artifact", "rois_individual"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    assert not np.array_equal(a.clean, c.clean)
    np.testing.assert_array_equal(a.rois, c.rois)  # one template (atlas) for every seed


def test_factors_independent():
    f = make_population(256, shape=(32, 32), seed=0, artifact_fraction=0).factors
    corr = np.corrcoef(f, rowvar=False)
    assert np.abs(corr - np.eye(len(FACTOR_NAMES))).max() < 0.05
    assert np.allclose(f.std(0), 1, atol=0.1) and np.abs(f).max() <= 2.5


def test_artifacts_only_on_recorded_subset(pop):
    bad = pop.artifact > 0
    assert bad.sum() == 12 and set(np.unique(pop.artifact[bad])) == {1, 2, 3}
    np.testing.assert_array_equal(pop.images[~bad], pop.clean[~bad])
    assert all(not np.array_equal(pop.images[i], pop.clean[i]) for i in np.flatnonzero(bad))
    mean = pop.images.mean(axis=(1, 2)).mean()
    leak = pop.artifact == 1
    assert (pop.images[leak].max(axis=(1, 2)) > 3.8 * mean).all()  # clipped by pre-processing
    gone = pop.artifact == 2
    assert ((pop.images[gone] == 0).mean((1, 2)) > (pop.clean[gone] == 0).mean((1, 2)) + 0.02).all()
    assert make_population(8, shape=(32, 32), artifact_fraction=0).artifact.sum() == 0


def test_brightness_varies(pop):
    means = pop.clean.mean(axis=(1, 2))
    assert means.std() / means.mean() > 0.1


@pytest.mark.parametrize("shape", [(32, 32), SHAPE, (320, 448)])
def test_roi_map_covers_every_roi(shape):
    _, rois = render_sections(np.zeros((1, len(FACTOR_NAMES))), shape=shape)
    tpl = make_population(1, shape=shape, artifact_fraction=0).rois
    np.testing.assert_array_equal(rois[0], tpl)
    counts = np.bincount(tpl.ravel(), minlength=len(ROI_NAMES))
    assert len(counts) == len(ROI_NAMES) and (counts > 0).all()


@pytest.mark.parametrize(
    ("factor", "roi"),
    [("cortex_thickness", "CTX"), ("hpf_size", "HPF"), ("str_size", "STR"),
     ("th_brightness", "TH"), ("vl_size", "VL")],
)  # fmt: skip
def test_factor_changes_mainly_its_roi(factor, roi):
    f = np.zeros((2, len(FACTOR_NAMES)))
    f[1, FACTOR_NAMES.index(factor)] = 2.0
    imgs, rois = render_sections(f, shape=(96, 128))
    diff = np.abs(imgs[1] - imgs[0])
    rid = ROI_NAMES.index(roi)
    near = ndi.binary_dilation((rois == rid).any(0), iterations=3)
    assert diff.sum() > 0
    assert diff[near].sum() / diff.sum() > 0.6, (factor, diff[near].sum() / diff.sum())


def test_validation():
    with pytest.raises(ValueError, match="n must"):
        make_population(0)
    with pytest.raises(ValueError, match="shape"):
        make_population(2, shape=(10, 10))
    with pytest.raises(ValueError, match="artifact_fraction"):
        make_population(2, shape=(32, 32), artifact_fraction=1.5)
    with pytest.raises(ValueError, match="factors"):
        render_sections(np.zeros((2, 3)), shape=(32, 32))
