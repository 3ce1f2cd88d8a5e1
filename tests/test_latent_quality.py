import numpy as np
import pytest

from napari_brainfeatures.latent.metrics import (
    cw_ssim,
    frechet_distance,
    pca_frechet_distance,
    steerable_filters,
)


def textured(shape=(64, 96), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 0.5 + 0.2 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 0.1 * np.sin((xx + yy) / 7.0)
    img += 0.05 * rng.normal(size=shape)
    return np.clip(img, 0, 1)


def test_filters_are_one_sided_and_cover_the_bands():
    bank = steerable_filters((32, 32), 3, 4)
    assert bank.shape == (12, 32, 32)
    assert bank[:, 0, 0].max() == 0  # no DC
    f = np.fft.fftshift(bank[0])
    assert f.max() > 0.9
    # one-sided: a filter and its point reflection do not overlap
    reflected = np.roll(np.flip(bank[0], (0, 1)), 1, (0, 1))
    assert np.abs(bank[0] * reflected).max() < 1e-12


def test_cw_ssim_identical_noise_and_shift():
    x = textured()
    assert cw_ssim(x, x) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    little = cw_ssim(x, x + 0.02 * rng.normal(size=x.shape))
    much = cw_ssim(x, x + 0.2 * rng.normal(size=x.shape))
    assert 1 > little > much
    # CW-SSIM tolerates a one-pixel shift better than noise of the same energy
    shifted = np.roll(x, 1, axis=1)
    mse = np.mean((shifted - x) ** 2)
    noisy = x + np.sqrt(mse) * rng.normal(size=x.shape)
    assert cw_ssim(x, shifted) > cw_ssim(x, noisy)
    # and ignores a uniform brightness offset (no low-pass band)
    assert cw_ssim(x, x + 0.1) == pytest.approx(1.0)


def test_cw_ssim_batched_and_validation():
    a = np.stack([textured(seed=i) for i in range(3)])
    b = a.copy()
    b[1] = np.random.default_rng(0).uniform(size=a.shape[1:])
    s = cw_ssim(a, b)
    assert s.shape == (3,) and s[0] == pytest.approx(1) and s[1] < 0.5
    assert s[1] == pytest.approx(cw_ssim(a[1], b[1]))
    with pytest.raises(ValueError, match="same shape"):
        cw_ssim(a[0], a[0][:, :10])
    with pytest.raises(ValueError, match="too small"):
        cw_ssim(np.ones((16, 16)), np.ones((16, 16)), n_scales=4)
    assert cw_ssim(a[0][:16, :16], a[0][:16, :16]) == pytest.approx(1)  # fewer scales


def test_frechet_distance_closed_form():
    assert frechet_distance([0, 0], np.eye(2), [0, 0], np.eye(2)) == pytest.approx(0, abs=1e-9)
    assert frechet_distance([0, 0], np.eye(2), [3, 4], np.eye(2)) == pytest.approx(25)
    # 1-D: (m1-m2)^2 + (s1-s2)^2
    assert frechet_distance([1.0], [[4.0]], [0.0], [[1.0]]) == pytest.approx(1 + 1)


def test_pca_frechet_grows_with_shift():
    rng = np.random.default_rng(0)
    real = np.clip(0.5 + 0.1 * rng.normal(size=(40, 16, 24)), 0, 1)
    assert pca_frechet_distance(real, real, n_components=8) == pytest.approx(0, abs=1e-6)
    d = [
        pca_frechet_distance(real, real + shift, n_components=8) for shift in (0.0, 0.05, 0.1, 0.2)
    ]
    assert d[0] < d[1] < d[2] < d[3]
    with pytest.raises(ValueError, match="one section shape"):
        pca_frechet_distance(real, real[:, :5])
    with pytest.raises(ValueError, match="at least 2"):
        pca_frechet_distance(real[:1], real)


class _Copy:
    """A 'model' that reconstructs its input exactly (keeps every artifact)."""

    def __init__(self, shape):
        self.image_shape, self.latent_dim = shape, shape[0] * shape[1]

    def encode(self, x):
        x = np.asarray(x, np.float32)
        return x.reshape(len(x), -1)

    def decode(self, z):
        return np.asarray(z, np.float32).reshape(-1, *self.image_shape)


class _Clean(_Copy):
    """A 'model' that returns the clean version of each section it is shown (rejects all)."""

    def __init__(self, images, clean):
        super().__init__(clean.shape[1:])
        self.images, self.clean, self.latent_dim = images, clean, 1

    def encode(self, x):
        x = np.asarray(x, np.float32)
        return np.array([[np.flatnonzero((self.images == xi).all((1, 2)))[0]] for xi in x],
                        np.float32)  # fmt: skip

    def decode(self, z):
        idx = np.clip(np.rint(np.asarray(z)[:, 0]), 0, len(self.clean) - 1).astype(int)
        return self.clean[idx]


def _population(n=12, shape=(32, 48), seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    clean = np.stack([0.3 + 0.4 * np.exp(-(((yy - 16 - rng.normal(0, 3)) / 8) ** 2 +
                                           ((xx - 24 - rng.normal(0, 4)) / 12) ** 2))
                      for _ in range(n)]).astype(np.float32)  # fmt: skip
    images = clean.copy()
    artifact = np.zeros(n, np.int8)
    artifact[[3, 7]] = 2
    images[[3, 7], 10:16] = 0.0  # a missing stripe
    return images, clean, artifact


def test_model_quality_scores_artifact_rejection():
    from napari_brainfeatures.latent.quality import model_quality
    from napari_brainfeatures.progress import run

    images, clean, artifact = _population()
    copy = run(model_quality(_Copy(images.shape[1:]), images, clean=clean, artifact=artifact,
                             n_samples=4))  # fmt: skip
    assert copy["cwssim_recon"] == pytest.approx(1.0)
    # copying the input keeps the stripe: exactly the input's own score, a large penalty
    assert copy["cwssim_artifact"] == pytest.approx(copy["cwssim_artifact_input"])
    assert copy["artifact_penalty"] > 0.05
    assert copy["pca_fd_recon"] > 0
    rejecting = run(model_quality(_Clean(images, clean), images, clean=clean, artifact=artifact,
                                  n_samples=4))  # fmt: skip
    assert rejecting["cwssim_artifact"] == pytest.approx(1.0)
    assert rejecting["artifact_penalty"] == pytest.approx(0.0, abs=1e-9)
    # without clean sections there is nothing to reject towards: no artifact keys
    plain = run(model_quality(_Copy(images.shape[1:]), images, artifact=artifact, n_samples=4))
    assert "cwssim_artifact" not in plain and plain["cwssim_recon"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clean": np.zeros((12, 32, 40))}, "do not match the sections"),
        ({"artifact": np.zeros(5)}, "one entry per section"),
        ({"artifact": np.ones(12), "clean": "same"}, "every section has an artifact"),
    ],
)
def test_model_quality_bad_input(kwargs, match):
    from napari_brainfeatures.latent.quality import model_quality
    from napari_brainfeatures.progress import run

    images, clean, _ = _population()
    if isinstance(kwargs.get("clean"), str):
        kwargs["clean"] = clean
    with pytest.raises(ValueError, match=match):
        run(model_quality(_Copy(images.shape[1:]), images, **kwargs))


def test_quality_report_scores_and_pictures():
    from napari_brainfeatures.latent.quality import model_quality, quality_report
    from napari_brainfeatures.latent.quality import reconstruction_picture as picture_of
    from napari_brainfeatures.progress import run

    images, clean, artifact = _population()
    model = _Copy(images.shape[1:])
    records = []
    report = run(quality_report(model, images, clean=clean, artifact=artifact, n_samples=4,
                                pictures=1), records.append)  # fmt: skip
    expected = run(model_quality(model, images, clean=clean, artifact=artifact, n_samples=4))
    assert report.scores == pytest.approx(expected)
    assert records and records[-1].step == records[-1].total
    # the first corrupted section as input | reconstruction | clean
    assert report.sections.tolist() == [3]
    assert report.columns == ["input", "reconstruction", "clean"]
    assert report.caption == "input | reconstruction | clean of sections 3"
    picture, _, _ = picture_of(model, images, clean=clean, artifact=artifact, n=1)
    np.testing.assert_array_equal(report.picture, picture)
    h, w = images.shape[1:]
    np.testing.assert_array_equal(report.picture[:, :w], images[3])
    np.testing.assert_array_equal(report.picture[:, -w:], clean[3])
    # without clean sections: the first sections, input | reconstruction
    plain = run(quality_report(model, images, artifact=artifact, n_samples=4))
    assert plain.sections.tolist() == [0, 1, 2, 3] and plain.columns == ["input", "reconstruction"]
    assert plain.picture.shape[0] == 4 * h + 3 * 2 and "cwssim_artifact" not in plain.scores
