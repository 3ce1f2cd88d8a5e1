import numpy as np
import pytest
import torch

from napari_brainfeatures.latent.explore import (
    active_units,
    as_latent_model,
    default_step,
    disentanglement_score,
    factor_alignment,
    gaussian_kl,
    impact_covariance,
    projective_field,
    projective_rgb,
    receptive_fields,
    traverse,
)
from napari_brainfeatures.latent.population import PCABaseline
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
