import numpy as np
import pytest
import torch

from napari_brainfeatures.models import vae as vae_module
from napari_brainfeatures.models.checkpoint import ModelFileError, save_checkpoint
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig
from napari_brainfeatures.models.vae import BetaVAE, VAEConfig, load_vae, save_vae, vae_loss

TINY = {"image_shape": (32, 48), "n_down": 3, "channels": 8, "fc": (32, 32), "latent_dim": 4}


def test_default_matches_authors_network():
    cfg = VAEConfig()
    assert cfg.final_shape == (4, 6)  # 320x448 -> 5x7 after six stride-2 convs -> 4x6
    assert cfg.flat_size == 768
    model = BetaVAE(cfg)
    convs = [m for m in model.encoder_convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 7
    assert [c.stride[0] for c in convs] == [2] * 6 + [1]
    assert all(c.kernel_size == (4, 4) and c.out_channels == 32 for c in convs)
    fcs = [model.encoder_fc[0], model.encoder_fc[1], model.to_stats]
    assert [(f.in_features, f.out_features) for f in fcs] == [(768, 256), (256, 256), (256, 16)]


def test_full_size_shapes_and_sigmoid_range():
    torch.manual_seed(0)
    model = BetaVAE(VAEConfig()).eval()
    x = torch.rand(1, 1, 320, 448)
    with torch.no_grad():
        mu, logvar = model.encode(x)
        out = model.decode(mu)
    assert mu.shape == logvar.shape == (1, 8)
    assert out.shape == (1, 1, 320, 448)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_decode_runs_channels_last_with_the_same_values():
    """The decoder works on a channels-last map (fast on CPU) and equals the plain layout."""
    torch.manual_seed(0)
    model = BetaVAE(VAEConfig(**TINY)).eval()
    z = torch.randn(3, 4)
    with torch.no_grad():
        out = model.decode(z)
        h = z
        for fc in model.decoder_fc:
            h = torch.relu(fc(h))
        h = h.view(3, model.config.channels, *model.config.final_shape)  # plain NCHW
        assert h.is_contiguous()
        plain = torch.sigmoid(model.decoder_convs(h))
    assert out.shape == plain.shape == (3, 1, 32, 48)
    torch.testing.assert_close(out, plain)  # the inference path (in-place ReLUs, fold)
    with torch.enable_grad():
        torch.testing.assert_close(model.decode(z), plain)  # the training path
    full = BetaVAE(VAEConfig()).eval()  # the paper's network, as the slider decodes it
    with torch.inference_mode():
        h = torch.relu(torch.randn(1, 32, 160, 224)).contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(
            vae_module._one_channel_transposed(h, full.decoder_convs[-1]),
            full.decoder_convs[-1](h),
        )
    assert next(model.parameters()).is_contiguous()  # the weights keep their layout


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"latent_dim": 65}, "latent_dim"),
        ({"beta": 0.0}, "beta"),
        ({"beta": -1.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"image_shape": (100, 448)}, "multiples of 64"),
        ({"image_shape": (64, 448)}, "at least 128"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAEConfig(**kwargs)


def test_configurable_small_network_round_trip_shape():
    model = BetaVAE(VAEConfig(**TINY))
    x = torch.rand(3, 1, 32, 48)
    logits, mu, logvar = model(x)
    assert logits.shape == x.shape and mu.shape == (3, 4)


def test_vae_loss_terms():
    x = torch.full((2, 1, 4, 4), 0.5)
    mu = torch.zeros(2, 3)
    logvar = torch.zeros(2, 3)
    total, recon, kl = vae_loss(x, torch.full_like(x, 0.5), mu, logvar, 3.0)
    assert float(kl) == pytest.approx(0.0, abs=1e-7)
    assert float(recon) == pytest.approx(16 * np.log(2), rel=1e-5)  # BCE(0.5, 0.5) per pixel
    mu2 = torch.ones(2, 3)
    total2, recon2, kl2 = vae_loss(x, torch.zeros_like(x), mu2, logvar, 3.0, from_logits=True)
    assert float(kl2) == pytest.approx(1.5)  # 0.5 * sum(mu^2) per section
    assert float(total2) == pytest.approx(float(recon2) + 3.0 * 1.5)
    assert float(recon2) == pytest.approx(float(recon), rel=1e-5)  # logit 0 == p 0.5
    total3, recon3, kl3 = vae_loss(x, torch.zeros_like(x), mu2, logvar, 3.0, from_logits=True,
                                   recon_weight=10.0)  # fmt: skip
    assert (float(recon3), float(kl3)) == (float(recon2), float(kl2))  # the terms unweighted
    assert float(total3) == pytest.approx(10 * float(recon2) + 3.0 * 1.5)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = BetaVAE(VAEConfig(**TINY, beta=1.0))
    path = save_vae(tmp_path / "m", model, meta={"preprocessing": {"mean": 0.3, "clip": 3.8}})
    loaded, meta = load_vae(path)
    assert meta["preprocessing"]["mean"] == 0.3
    assert loaded.config == model.config
    z = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(loaded.decode(z), model.eval().decode(z))


def test_loading_another_architecture_is_refused(tmp_path):
    cnn = BrainAreaCNN(CNNConfig())
    path = save_checkpoint(tmp_path / "cnn", cnn, kind="BrainAreaCNN", config=CNNConfig().to_dict())
    with pytest.raises(ModelFileError, match="expected a 'BetaVAE'"):
        load_vae(path)
    # right kind, wrong weights
    other = BetaVAE(VAEConfig(**TINY))
    bad = save_checkpoint(tmp_path / "bad", other, kind="BetaVAE", config=VAEConfig().to_dict())
    with pytest.raises(ModelFileError, match="does not match"):
        load_vae(bad)
