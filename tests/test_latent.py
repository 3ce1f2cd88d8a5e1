import numpy as np
import pytest
import torch

from napari_brainfeatures.latent.codes import (
    active_units,
    display_range,
    factor_alignment,
    population_codes,
)
from napari_brainfeatures.latent.explore import (
    default_step,
    disentanglement_score,
    gaussian_kl,
    impact_covariance,
    projective_field,
    projective_fields,
    projective_rgb,
    receptive_fields,
    traverse,
)
from napari_brainfeatures.latent.model import as_latent_model
from napari_brainfeatures.latent.pca import PCABaseline
from napari_brainfeatures.latent.population import preprocess
from napari_brainfeatures.models.vae import BetaVAE, VAEConfig
from napari_brainfeatures.progress import run

SHAPE = (16, 24)


def sections(n=30, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 0.9, (n, *SHAPE)).astype(np.float32)


def rois():
    lab = np.zeros(SHAPE, np.uint8)
    lab[2:7, 2:10] = 1
    lab[9:14, 12:22] = 2
    return lab


class RoiMeanModel:
    """latent k = mean brightness of ROI k+1: a perfectly disentangled encoder."""

    latent_dim = 2
    image_shape = SHAPE

    def encode(self, images):
        lab = rois()
        x = np.asarray(images)
        return np.stack([x[:, lab == 1].mean(1), x[:, lab == 2].mean(1)], 1)

    def decode(self, z):
        z = np.atleast_2d(z)
        out = np.zeros((len(z), *SHAPE), np.float32)
        out[:, rois() == 1] = z[:, :1]
        out[:, rois() == 2] = z[:, 1:2]
        return out


def test_traverse_pca_is_linear():
    pca = PCABaseline(3).fit(sections())
    z0 = pca.encode(sections(1, seed=5))[0]
    imgs = traverse(pca, z0, 1, [0.0, 2.0])
    assert imgs.shape == (2, *SHAPE)
    assert np.allclose(imgs[0], pca.decode(z0[None])[0], atol=1e-5)
    step = (pca.scale_[1] * pca.components_[1]).reshape(SHAPE)
    assert np.allclose(imgs[1] - imgs[0], 2 * step, atol=1e-4)
    with pytest.raises(ValueError, match="latent index"):
        traverse(pca, z0, 3, [0.0])
    with pytest.raises(ValueError, match="z0 must have 3"):
        traverse(pca, z0[:2], 0, [0.0])


def test_projective_field_matches_closed_form_for_pca():
    pca = PCABaseline(2).fit(sections())
    z0 = np.zeros(2)
    pf = projective_field(pca, z0, 0, c_max=2.0, step=0.5)
    assert pf.shape == (*SHAPE, 3) and pf.dtype == np.float32
    v2 = ((pca.scale_[0] * pca.components_[0]).reshape(SHAPE)) ** 2
    neg, pos = np.array([-1.0, -0.5, 0.0]), np.array([0.0, 0.5, 1.0])
    big = np.array([-2, -1.5, -1, 1, 1.5, 2.0])
    assert np.allclose(pf[..., 0], neg.var() * v2, rtol=1e-3, atol=1e-9)
    assert np.allclose(pf[..., 1], pos.var() * v2, rtol=1e-3, atol=1e-9)
    assert np.allclose(pf[..., 2], big.var() * v2, rtol=1e-3, atol=1e-9)
    rgb = projective_rgb(pf)
    assert rgb.max() == pytest.approx(1.0) and rgb.min() >= 0
    with pytest.raises(ValueError, match="step"):
        projective_field(pca, z0, 0, step=0)


def test_projective_field_of_betavae_and_default_step():
    torch.manual_seed(0)
    vae = BetaVAE(VAEConfig(image_shape=SHAPE, n_down=3, channels=4, fc=(8,), latent_dim=2))
    model = as_latent_model(vae)
    assert default_step(model) == 0.05  # CPU
    pf = projective_field(vae, np.zeros(2), 1, c_max=1.0, step=0.25)
    assert pf.shape == (*SHAPE, 3) and np.isfinite(pf).all() and pf.max() > 0
    with pytest.raises(TypeError, match="latent model"):
        as_latent_model(object())


def test_receptive_fields_of_a_disentangled_encoder():
    records = []
    rf = run(
        receptive_fields(RoiMeanModel(), sections(), rois(), weights=(-1, 0, 1)), records.append
    )
    assert records[0].message == "receptive field of ROI 1 (1/2 ROIs)"  # no "ROI ROI 1"
    assert rf.impact.shape == (2, 2)
    assert rf.roi_ids == [1, 2] and rf.roi_names == ["ROI 1", "ROI 2"]
    assert rf.means.shape == (2, 3, 2) and rf.n_images == 30
    off = rf.impact[0, 1] + rf.impact[1, 0]
    assert rf.impact[0, 0] > 10 and rf.impact[1, 1] > 10 and off < 1e-9
    # blanking ROI 1 (w = 1) sends latent 0 to zero
    assert rf.means[0, -1, 0] == pytest.approx(0.0, abs=1e-7)
    assert disentanglement_score(rf.impact) > 1e6


def test_receptive_fields_validation():
    model = RoiMeanModel()
    with pytest.raises(ValueError, match="does not match"):
        run(receptive_fields(model, sections(), np.zeros((3, 3), np.uint8)))
    with pytest.raises(ValueError, match="no labelled region"):
        run(receptive_fields(model, sections(), np.zeros(SHAPE, np.uint8)))
    with pytest.raises(ValueError, match="two different"):
        run(receptive_fields(model, sections(), rois(), weights=(1, 1)))
    with pytest.raises(ValueError, match="does not occur"):
        run(receptive_fields(model, sections(), rois(), roi_ids=[7]))
    rf = run(receptive_fields(model, sections(), rois(), n_images=5))
    assert rf.n_images == 5


def test_gaussian_kl():
    assert gaussian_kl(0, 1, 0, 1) == pytest.approx(0)
    assert gaussian_kl(1, 1, 0, 1) == pytest.approx(0.5)
    assert gaussian_kl(0, 1, 0, 2) == pytest.approx(0.5 * (np.log(2) + 0.5 - 1))


def test_disentanglement_score_definitions():
    diag = np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]])
    assert disentanglement_score(diag) == float("inf")
    flat = np.ones((3, 4))
    assert disentanglement_score(flat) == pytest.approx(1 / 3)  # L / (L^2 - L)
    mixed = diag + 0.5
    assert 1 / 3 < disentanglement_score(mixed) < float("inf")
    a = impact_covariance(diag, centered=True)
    assert a.shape == (3, 3) and np.allclose(a, np.cov(diag, rowvar=False))
    assert np.isfinite(disentanglement_score(mixed, centered=True))
    with pytest.raises(ValueError, match="matrix"):
        impact_covariance(np.ones(3))


def test_factor_alignment():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(200, 3))
    codes = np.stack([np.exp(f[:, 2]), -f[:, 0], rng.normal(size=200), f[:, 1] ** 3], 1)
    res = factor_alignment(codes, f, factor_names=["a", "b", "c"])
    assert res["corr"].shape == (4, 3)
    assert res["score"] == pytest.approx(1.0)
    assert res["best_latent"] == {"a": 1, "b": 3, "c": 0}
    assert res["gap"] > 0.8
    noise = factor_alignment(rng.normal(size=(200, 4)), f)
    assert noise["score"] < 0.3
    with pytest.raises(ValueError, match="share N"):
        factor_alignment(codes[:5], f)


def test_active_units():
    rng = np.random.default_rng(0)
    codes = np.stack([rng.normal(size=100), 0.01 * rng.normal(size=100), np.full(100, 3.0),
                      0.3 * rng.normal(size=100)], 1)  # fmt: skip
    assert active_units(codes).tolist() == [True, False, False, True]
    assert active_units(codes, threshold=0.5).tolist() == [True, False, False, False]
    pca = PCABaseline(3).fit(rng.random((20, 8, 8)))  # whitened: every component varies
    assert active_units(pca.encode(rng.random((20, 8, 8)))).all()
    with pytest.raises(ValueError, match="N >= 2"):
        active_units(codes[:1])


def test_projective_fields_stack_every_latent():
    pca = PCABaseline(2).fit(sections())
    z0 = np.array([0.3, -0.2])
    records = []
    fields = run(projective_fields(pca, z0, c_max=2.0, step=0.5), records.append)
    assert fields.shape == (2, *SHAPE, 3) and fields.dtype == np.float32
    for k in range(2):
        np.testing.assert_array_equal(fields[k], projective_field(pca, z0, k, c_max=2.0, step=0.5))
    assert [(r.step, r.total) for r in records] == [(1, 2), (2, 2)]
    # a stack scales like its fields one by one, each channel of each field on its own
    rgb = projective_rgb(fields)
    np.testing.assert_allclose(rgb[1], projective_rgb(fields[1]))
    assert np.allclose(rgb.max(axis=(1, 2)), 1.0)
    shared = projective_rgb(fields, shared=True)
    np.testing.assert_allclose(shared[0], projective_rgb(fields[0], shared=True))
    assert np.allclose(shared.max(axis=(1, 2, 3)), 1.0)
    with pytest.raises(ValueError, match="z0 must have 2"):
        run(projective_fields(pca, np.zeros(3)))


def _raw_population(n=12, seed=0):
    """Raw sections (brightness ~100) with a known pre-processing."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(50, 150, (n, 1, 1)) * (0.5 + sections(n, seed))).astype(np.float32)


def test_population_codes_fields():
    raw = _raw_population()
    meta = {"preprocessing": {"mean": 80.0, "clip": 3.0}}
    scaled = preprocess(raw, mean=80.0, clip=3.0)[0]
    records = []
    pc = run(population_codes(RoiMeanModel(), raw, meta=meta, chunk=5), records.append)
    expected = RoiMeanModel().encode(scaled)  # (N, L), with the model's constants
    assert pc.codes.shape == (12, 2)
    np.testing.assert_allclose(pc.codes, expected, rtol=1e-6)
    np.testing.assert_allclose(pc.mean, expected.mean(0), rtol=1e-5)
    np.testing.assert_allclose(pc.std, expected.std(0), rtol=1e-5)
    assert pc.mean.shape == pc.std.shape == (2,)
    assert pc.active.dtype == bool and pc.active.shape == (2,)
    assert pc.offset == (0, 0) and pc.section_shape == SHAPE
    assert pc.clim == display_range(scaled) and 0 == pc.clim[0] < pc.clim[1] <= 1
    assert [r.step for r in records] == [5, 10, 12] and records[-1].total == 12
    lo, hi = pc.bounds()
    np.testing.assert_allclose(hi - lo, 6 * pc.std, rtol=1e-5)
    # without the model's constants: the population's own brightness, as preprocess does
    own = run(population_codes(RoiMeanModel(), raw))
    np.testing.assert_allclose(own.codes, RoiMeanModel().encode(preprocess(raw)[0]), rtol=1e-6)


def test_population_codes_of_larger_smaller_and_no_sections():
    raw = _raw_population()
    wide = np.concatenate([raw, raw[:, :, :6]], axis=2)  # (12, 16, 30): centre 16×24 at 3
    pc = run(population_codes(RoiMeanModel(), wide))
    assert pc.offset == (0, 3) and pc.section_shape == (16, 30)
    np.testing.assert_allclose(pc.codes, RoiMeanModel().encode(preprocess(wide)[0][:, :, 3:27]))
    model = PCABaseline(2).fit(sections())
    for images in (None, raw[:, :, :20]):  # no population, or one smaller than the input
        neutral = run(population_codes(model, images))
        assert neutral.codes is None and neutral.active is None and neutral.offset is None
        np.testing.assert_array_equal(neutral.mean, np.zeros(2))
        lo, hi = neutral.bounds()
        np.testing.assert_allclose(hi, [7, 7], rtol=1e-6)  # the paper's ±7
        assert neutral.clim == display_range(model.decode(np.zeros((1, 2))))
    one = run(population_codes(RoiMeanModel(), raw[:1]))  # no spread to judge activity from
    assert one.codes.shape == (1, 2) and one.active is None
    lo, hi = one.bounds()
    np.testing.assert_allclose(hi - lo, [6e-3, 6e-3], rtol=1e-5)  # std 0, floored


def test_display_range():
    img = np.linspace(0, 1, 1001, dtype=np.float32)
    assert display_range(img) == (0.0, pytest.approx(0.995, abs=1e-3))
    assert display_range(np.full(4, np.nan)) == (0.0, 1.0)
    assert display_range(np.zeros(4)) == (0.0, 1e-6)
