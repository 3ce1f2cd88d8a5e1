import numpy as np
import pytest
import torch

from napari_brainfeatures.latent.model import fit_latent_model, load_latent_model
from napari_brainfeatures.latent.pca import PCABaseline
from napari_brainfeatures.latent.population import (
    check_rois,
    preprocess,
    preprocess_for,
    read_population,
    roi_names_for,
)
from napari_brainfeatures.latent.train import VAELatentModel, fit_pca, torch_threads, train_vae
from napari_brainfeatures.models.checkpoint import ModelFileError, save_checkpoint
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig
from napari_brainfeatures.models.vae import VAEConfig, load_vae
from napari_brainfeatures.progress import run

TINY = {"image_shape": (32, 48), "n_down": 3, "channels": 8, "fc": (32, 32), "latent_dim": 3}


def toy_sections(n=24, shape=(32, 48), seed=0):
    """Blobs whose brightness and position vary: a stand-in population."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = []
    for _ in range(n):
        cy, cx = shape[0] / 2 + rng.normal(0, 2), shape[1] / 2 + rng.normal(0, 3)
        blob = np.exp(-(((yy - cy) / 8) ** 2 + ((xx - cx) / 12) ** 2))
        out.append(rng.uniform(50, 150) * (0.2 + blob) + rng.normal(0, 2, shape))
    return np.clip(np.stack(out), 0, None).astype(np.float32)


def test_preprocess_equalises_brightness_and_clips():
    imgs = toy_sections(6)
    imgs[2, 5, 5] = 1e6  # leakage spike
    scaled, info = preprocess(imgs)
    assert scaled.dtype == np.float32 and scaled.shape == imgs.shape
    assert scaled.min() >= 0 and scaled.max() <= 1
    assert scaled[2, 5, 5] == pytest.approx(1.0)  # clipped at 3.8x the mean
    # all but the spiked section have the same mean brightness after scaling
    means = scaled.reshape(6, -1).mean(1)
    keep = [0, 1, 3, 4, 5]
    assert np.allclose(means[keep], 1 / 3.8, rtol=1e-4)
    assert info["clip"] == 3.8 and info["mean"] > 0
    again, info2 = preprocess(imgs, mean=info["mean"])
    assert info2 == info and np.array_equal(again, scaled)


def test_preprocess_validation():
    with pytest.raises(ValueError, match="mixes section sizes"):
        preprocess([np.ones((4, 5)), np.ones((4, 6))])
    with pytest.raises(ValueError, match="empty"):
        preprocess([])
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        preprocess(np.ones((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="NaN"):
        preprocess(np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="blank"):
        preprocess(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="clip"):
        preprocess(np.ones((2, 4, 4)), clip=0)


def test_roi_names_for():
    assert roi_names_for([1, 2], ["a", "b"]) == ["a", "b"]
    assert roi_names_for([1, 3], ["bg", "a", "b", "c"]) == ["a", "c"]  # indexed by id
    assert roi_names_for([1, 2], None) == ["ROI 1", "ROI 2"]
    assert roi_names_for([1, 5], ["a"]) == ["ROI 1", "ROI 5"]


def test_check_rois():
    with pytest.raises(ValueError, match="does not match"):
        check_rois(np.zeros((4, 4), np.uint8), (4, 5))
    with pytest.raises(ValueError, match="integer"):
        check_rois(np.zeros((4, 5)), (4, 5))
    assert check_rois(np.zeros((4, 5), np.uint8), (4, 5)).shape == (4, 5)


def test_pca_baseline_round_trip(tmp_path):
    scaled, _ = preprocess(toy_sections(20))
    pca = PCABaseline(3).fit(scaled)
    z = pca.encode(scaled)
    assert z.shape == (20, 3)
    assert np.allclose(z.std(0, ddof=1), 1, atol=1e-3)  # whitened
    err = np.abs(pca.decode(z) - scaled).mean()
    assert err < np.abs(scaled - scaled.mean(0)).mean()  # better than the mean image
    path = pca.save(tmp_path / "pca", meta={"k": 1})
    back, meta = PCABaseline.load(path)
    assert meta == {"k": 1}
    assert np.allclose(back.decode(z), pca.decode(z), atol=1e-6)
    with pytest.raises(ValueError, match="more than 3"):
        PCABaseline(3).fit(scaled[:3])
    with pytest.raises(ValueError, match="1..64"):
        PCABaseline(0)


def test_train_vae_progress_checkpoint_and_best(tmp_path):
    imgs = toy_sections(24)
    path = tmp_path / "vae.safetensors"
    records = []
    gen = train_vae(
        imgs,
        config=VAEConfig(**TINY),
        epochs=3,
        batch_size=8,
        seed=0,
        checkpoint_path=path,
        roi_names=["a"],
    )
    result = run(gen, records.append)
    epoch_recs = [r for r in records if r.values]
    assert len(epoch_recs) == 3
    assert set(epoch_recs[0].values) == {"loss", "recon", "kl", "val_loss", "val_recon", "val_kl"}
    assert records[-1].step == records[-1].total
    hist = result.history
    assert hist[-1]["loss"] < hist[0]["loss"]  # it learns
    best = min(h["val_loss"] for h in hist)
    assert result.meta["training"]["best_val_loss"] == pytest.approx(best)
    model, meta = load_vae(path)
    assert meta["roi_names"] == ["a"] and meta["preprocessing"]["clip"] == 3.8
    assert meta["model_type"] == "beta-vae"
    x = torch.rand(2, 1, 32, 48)
    with torch.no_grad():
        assert torch.allclose(model.encode(x)[0], result.model.cpu().encode(x)[0])


def test_train_vae_is_seeded_and_cancel_keeps_best(tmp_path):
    imgs = toy_sections(12)
    cfg = VAEConfig(**TINY, beta=1.0)
    a = run(train_vae(imgs, config=cfg, epochs=1, batch_size=4, seed=3))
    b = run(train_vae(imgs, config=cfg, epochs=1, batch_size=4, seed=3))
    assert a.history == b.history
    assert a.meta["model_type"] == "vae"
    warm = run(train_vae(imgs, config=cfg, epochs=1, batch_size=4, seed=3, kl_warmup=2))
    assert warm.meta["training"]["kl_warmup"] == 2
    assert warm.history != a.history  # the KL weight ramps during the epoch
    path = tmp_path / "m.safetensors"
    gen = train_vae(imgs, config=cfg, epochs=5, batch_size=4, seed=3, checkpoint_path=path)
    for rec in gen:
        if rec.values:  # cancel after the first epoch, as the widget's Cancel does
            gen.close()
            break
    _, meta = load_vae(path)
    assert meta["training"]["epochs_run"] == 1  # no file before: the best so far is kept
    # a file before: a cancelled (or killed) run never puts its early model in its place
    before = path.read_bytes()
    gen = train_vae(imgs, config=cfg, epochs=5, batch_size=4, seed=4, checkpoint_path=path)
    for rec in gen:
        if rec.values:
            assert path.read_bytes() == before  # the best so far waits beside it
            assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
            gen.close()
            break
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left
    done = run(train_vae(imgs, config=cfg, epochs=2, batch_size=4, seed=4, checkpoint_path=path))
    assert done.path == path and path.read_bytes() != before  # a finished run replaces it


def test_larger_sections_are_centre_cropped_as_the_paper():
    """320×456 Allen sections get the paper's network on their 320×448 centre."""
    from napari_brainfeatures.latent.population import center_crop

    cfg = VAEConfig.for_shape((320, 456))
    assert (cfg.image_shape, cfg.n_down, cfg.flat_size) == ((320, 448), 6, 768)
    assert VAEConfig.for_shape((64, 96)).image_shape == (64, 96)  # small: fewer layers
    assert VAEConfig.for_shape((320, 456), n_down=3).image_shape == (320, 456)
    wide = np.concatenate([toy_sections(6)] * 2, axis=2)[:, :, :56]  # (6, 32, 56)
    result = run(train_vae(wide, config=VAEConfig(**TINY), epochs=1, batch_size=4))
    assert result.meta["image_shape"] == [32, 48] and result.meta["cropped_from"] == [32, 56]
    model = result.latent_model()
    scaled = preprocess(wide, mean=result.meta["preprocessing"]["mean"])[0]
    np.testing.assert_array_equal(model.encode(scaled), model.encode(scaled[:, :, 4:52]))
    assert center_crop(scaled, (32, 48)).base is not None  # a view, no copy
    with pytest.raises(ValueError, match="smaller than the model's 32×48"):
        model.encode(scaled[:, :, :40])


def test_train_vae_validation():
    imgs = toy_sections(6)
    with pytest.raises(ValueError, match="does not fit the sections"):
        run(train_vae(imgs, config=VAEConfig(**{**TINY, "image_shape": (64, 64)}), epochs=1))
    with pytest.raises(ValueError, match="at least 2"):
        run(train_vae(imgs[:1], config=VAEConfig(**TINY), epochs=1))
    with pytest.raises(ValueError, match="epochs"):
        run(train_vae(imgs, config=VAEConfig(**TINY), epochs=0))
    with pytest.raises(ValueError, match="kl_warmup"):
        run(train_vae(imgs, config=VAEConfig(**TINY), epochs=1, kl_warmup=-1))
    with pytest.warns(UserWarning, match="batch_size 64 is larger"):
        result = run(train_vae(imgs, config=VAEConfig(**TINY), epochs=1))
    assert result.meta["training"]["batch_size"] == 5


def test_area_weight_keeps_the_papers_balance_on_small_sections():
    """BCE is linear in its target: block-constant reconstructions of a full section score
    ``area_weight`` times the cross-entropy of the block means."""
    from torch.nn import functional as F

    from napari_brainfeatures.latent.train import area_weight

    assert area_weight((320, 448)) == 1.0
    assert area_weight((64, 96)) == pytest.approx(320 * 448 / (64 * 96))
    rng = np.random.default_rng(0)
    full = torch.from_numpy(rng.random((1, 1, 320, 448), dtype=np.float32))  # (1, 1, H, W)
    small = F.avg_pool2d(full, 4)  # (1, 1, 80, 112): the block means
    p = torch.from_numpy(rng.uniform(0.05, 0.95, (1, 1, 80, 112)).astype(np.float32))
    bce_full = F.binary_cross_entropy(p.repeat_interleave(4, 2).repeat_interleave(4, 3), full,
                                      reduction="sum")  # fmt: skip
    bce_small = F.binary_cross_entropy(p, small, reduction="sum")
    assert float(bce_full) == pytest.approx(area_weight((80, 112)) * float(bce_small), rel=1e-4)
    with pytest.raises(ValueError, match="positive"):
        area_weight((0, 96))


def test_train_vae_recon_weight():
    imgs = toy_sections(16)
    cfg = VAEConfig(**TINY)
    plain = run(train_vae(imgs, config=cfg, epochs=2, batch_size=4, seed=1))
    heavy = run(train_vae(imgs, config=cfg, epochs=2, batch_size=4, seed=1, recon_weight=50))
    assert plain.meta["training"]["recon_weight"] == 1.0
    assert heavy.meta["training"]["recon_weight"] == 50.0
    for h in heavy.history:  # the loss trained and selected on is w·recon + β·kl
        assert h["loss"] == pytest.approx(50 * h["recon"] + 3.0 * h["kl"], rel=1e-5)
        assert h["val_loss"] == pytest.approx(50 * h["val_recon"] + 3.0 * h["val_kl"], rel=1e-5)
    # Adam ignores the loss's scale: weight 50 and β = 3 train as weight 1 and β = 3 / 50
    light = VAEConfig(**{**TINY, "beta": 3.0 / 50})
    same = run(train_vae(imgs, config=light, epochs=2, batch_size=4, seed=1))
    for key in ("recon", "kl", "val_recon", "val_kl"):
        assert heavy.history[-1][key] == pytest.approx(same.history[-1][key], rel=1e-3), key
    assert plain.history[-1]["val_kl"] != pytest.approx(heavy.history[-1]["val_kl"], rel=0.05)
    with pytest.raises(ValueError, match="recon_weight"):
        run(train_vae(imgs, config=cfg, epochs=1, recon_weight=0))


def test_load_latent_model_dispatch(tmp_path):
    imgs = toy_sections(12)
    pca, meta = fit_pca(imgs, latent_dim=2)
    p = pca.save(tmp_path / "pca", meta=meta)
    model, meta2 = load_latent_model(p)
    assert isinstance(model, PCABaseline) and meta2["model_type"] == "pca"
    cnn = save_checkpoint(
        tmp_path / "cnn", BrainAreaCNN(), kind="BrainAreaCNN", config=CNNConfig().to_dict()
    )
    with pytest.raises(ModelFileError, match="latent model"):
        load_latent_model(cnn)


def write_population(path, n=16, seed=0):
    import zarr

    imgs = toy_sections(n, seed=seed)
    rng = np.random.default_rng(seed)
    g = zarr.open_group(str(path), mode="w")
    g.create_array("images", data=imgs)
    g.create_array("clean", data=imgs)
    rois = np.zeros(imgs.shape[1:], np.uint8)
    rois[4:14, 4:20] = 1
    rois[18:28, 26:44] = 2
    g.create_array("rois", data=rois)
    g.create_array("factors", data=rng.normal(size=(n, 2)).astype(np.float32))
    g.create_array("artifact", data=(np.arange(n) % 4).astype(np.uint8))
    g.attrs["roi_names"] = ["A", "B"]
    return path


def test_read_population(tmp_path):
    pop = read_population(write_population(tmp_path / "pop.zarr"))
    assert pop["images"].shape == (16, 32, 48) and pop["roi_names"] == ["A", "B"]
    assert pop["factor_names"] == ["factor 0", "factor 1"]
    with pytest.raises(FileNotFoundError):
        read_population(tmp_path / "nope.zarr")
    import zarr

    zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    with pytest.raises(ValueError, match="no 'images'"):
        read_population(tmp_path / "empty.zarr")


@pytest.mark.parametrize("kind", ["pca", "vae"])
def test_cli_train_and_latent(tmp_path, kind, capsys):
    import json

    from napari_brainfeatures import cli

    pop = write_population(tmp_path / "pop.zarr")
    model = tmp_path / "m.safetensors"
    args = ["train-vae", str(pop), "--out", str(model), "--model", kind, "--latent", "2"]
    small = ["--n-down", "3", "--channels", "4", "--epochs", "1", "--batch-size", "4"]
    assert cli.main([*args, *small, "--recon-weight", "2.5"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == kind
    if kind == "vae":
        assert load_latent_model(model)[1]["training"]["recon_weight"] == 2.5
    out = tmp_path / "out"
    argv = ["latent", str(model), str(pop), "--out", str(out), "--step", "1", "--n-images", "8"]
    assert cli.main(argv) == 0
    report = json.loads((out / "latent.json").read_text())
    assert {"traversal", "projective", "receptive", "quality"} <= set(report)
    assert np.shape(report["receptive"]["impact"]) == (2, 2)
    assert report["receptive"]["roi_names"] == ["A", "B"]
    assert 0 < report["quality"]["cwssim_artifact"] <= 1
    rec = report["quality"]["reconstructions"]
    assert rec["columns"] == ["input", "reconstruction", "clean"]
    assert rec["sections"] == [1, 2, 3, 5]  # the first corrupted sections
    for f in ["traversal.png", "projective_0.png", "projective_1.png", "impact.png",
              "reconstructions.png"]:  # fmt: skip
        assert (out / f).stat().st_size > 0
    assert (
        cli.main(
            [
                "latent",
                str(model),
                str(pop),
                "--out",
                str(out),
                "--section",
                "99",
                "--what",
                "traversal",
            ]
        )
        == 2
    )
    assert "--section" in capsys.readouterr().err
    # a population without ROIs: refused before anything is written
    import zarr

    g = zarr.open_group(str(pop), mode="a")
    del g["rois"]
    fresh = tmp_path / "fresh"
    assert cli.main(["latent", str(model), str(pop), "--out", str(fresh), "--step", "1"]) == 2
    assert "no 'rois' array" in capsys.readouterr().err and not fresh.exists()


def test_cli_latent_compares_several_models(tmp_path, capsys):
    import json

    from napari_brainfeatures import cli

    pop = write_population(tmp_path / "pop.zarr")
    small = ["--n-down", "3", "--channels", "4", "--epochs", "1", "--batch-size", "4"]
    models = []
    for kind, latent in (("pca", 2), ("vae", 2), ("beta-vae", 3)):
        models.append(tmp_path / kind / "m.safetensors")  # two files of the same name
        argv = ["train-vae", str(pop), "--out", str(models[-1]), "--model", kind]
        assert cli.main([*argv, "--latent", str(latent), *small]) == 0
    capsys.readouterr()
    out = tmp_path / "cmp"
    argv = ["latent", *map(str, models), str(pop), "--out", str(out), "--what", "quality",
            "receptive", "--n-images", "8"]  # fmt: skip
    assert cli.main(argv) == 0
    table = json.loads((out / "comparison.json").read_text())
    rows = table["comparison"]
    assert [r["label"] for r in rows] == ["PCA L=2", "VAE L=2", "β-VAE L=3 β=3"]
    assert [g["runs"] for g in table["repeats"]] == [1, 1, 1]  # three models, no repeats
    for row in rows:
        assert {"disentanglement", "cwssim_recon", "cwssim_artifact", "pca_fd_samples",
                "active_latents"} <= set(row)  # fmt: skip
    assert rows[0]["active_latents"] == 2  # PCA's whitened components all vary
    first = json.loads((out / "0_m" / "latent.json").read_text())
    assert first["active_latents"] == [0, 1]
    assert json.loads(capsys.readouterr().out)["comparison"] == rows
    for i in range(3):  # one folder per model, numbered as the names clash
        folder = out / f"{i}_m"
        assert (folder / "latent.json").exists() and (folder / "impact.png").exists()
    # sections smaller than a model are refused, naming it, before anything is written
    import zarr

    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w").create_array("images", data=np.ones((4, 16, 64)))
    fresh = tmp_path / "fresh"
    argv = ["latent", *map(str, models), str(other), "--out", str(fresh), "--what", "quality"]
    assert cli.main(argv) == 2
    assert str(models[0]) in capsys.readouterr().err and not fresh.exists()


def test_cli_train_vae_refuses_to_overwrite(tmp_path, capsys):
    from napari_brainfeatures import cli

    pop = write_population(tmp_path / "pop.zarr")
    model = tmp_path / "cnn.safetensors"
    model.write_bytes(b"a trained CNN")
    for out in (model, tmp_path / "cnn"):  # .safetensors is appended on saving
        argv = ["train-vae", str(pop), "--out", str(out), "--model", "pca", "--latent", "2"]
        assert cli.main(argv) == 2
        assert "pass --overwrite" in capsys.readouterr().err
    assert model.read_bytes() == b"a trained CNN"
    assert cli.main([*argv, "--overwrite"]) == 0
    assert load_latent_model(model)[1]["model_type"] == "pca"


def test_torch_threads_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("command", ["train-vae", "latent"])
def test_cli_names_a_folder_that_is_no_population(tmp_path, capsys, command):
    from napari_brainfeatures import cli

    (tmp_path / "empty").mkdir()
    argv = [str(tmp_path / "empty"), "--out", str(tmp_path / "m")]
    if command == "latent":
        argv = [str(tmp_path / "m.safetensors"), *argv]
    assert cli.main([command, *argv]) == 2
    err = capsys.readouterr().err
    assert "is not a population (no zarr group found)" in err and "No group" not in err


def test_check_population_size_names_a_volume():
    from napari_brainfeatures.latent.population import check_population_size

    check_population_size((256, 320, 448), memory=2**30)  # 0.4 GiB of copies: fine
    with pytest.raises(ValueError, match=r"720 sections of 1420×5805\).* more than half"):
        check_population_size((720, 1420, 5805), memory=24 * 2**30)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        check_population_size((2, 3, 4, 5))


def test_preprocess_for_uses_the_model_constants():
    imgs = toy_sections(6)
    meta = {"preprocessing": {"mean": 30.0, "clip": 2.0}}
    np.testing.assert_array_equal(
        preprocess_for(imgs, meta), preprocess(imgs, mean=30.0, clip=2.0)[0]
    )
    for bare in (None, {}, {"model_type": "pca"}):  # no constants: the sections' own
        np.testing.assert_array_equal(preprocess_for(imgs, bare), preprocess(imgs)[0])


def test_fit_latent_model_by_kind(tmp_path):
    imgs = toy_sections(12)
    small = {"n_down": 3, "channels": 8, "epochs": 2, "batch_size": 4}
    pca = run(fit_latent_model(imgs, kind="pca", latent_dim=2, checkpoint_path=tmp_path / "p"))
    assert isinstance(pca.model, PCABaseline) and pca.model.latent_dim == 2
    assert pca.meta["model_type"] == "pca" and pca.path.exists()
    assert isinstance(load_latent_model(pca.path)[0], PCABaseline)
    np.testing.assert_allclose(pca.model.mean_, fit_pca(imgs, latent_dim=2)[0].mean_)
    records = []
    vae = run(fit_latent_model(imgs, kind="vae", latent_dim=3, beta=5.0, **small), records.append)
    assert isinstance(vae.model, VAELatentModel) and vae.path is None
    assert vae.model.model.config.beta == 1.0 and vae.meta["model_type"] == "vae"  # β ignored
    assert (vae.model.latent_dim, vae.model.model.config.n_down) == (3, 3)
    assert len([r for r in records if r.values]) == 2  # the epochs, with their losses
    assert len(vae.meta["training"]["history"]) == 2
    beta = run(fit_latent_model(imgs, latent_dim=2, beta=5.0, seed=1, **small))
    assert beta.model.model.config.beta == 5.0 and beta.meta["model_type"] == "beta-vae"
    assert beta.meta["training"]["seed"] == 1
    # the options are checked on the call, before any work
    with pytest.raises(ValueError, match="kind must be one of"):
        fit_latent_model(imgs, kind="gan")
    with pytest.raises(ValueError, match="does not fit 3 stride-2 layers"):
        fit_latent_model(imgs[:, :3, :3], kind="vae", n_down=3)


def test_train_vae_records_the_run():
    result = run(train_vae(toy_sections(8), config=VAEConfig(**TINY), epochs=2, batch_size=4))
    tr = result.meta["training"]
    assert set(tr) == {"kl_warmup", "recon_weight", "epochs_run", "best_epoch",
                       "best_val_loss", "lr", "batch_size", "seed", "n_train", "n_val",
                       "device", "wall_s", "history"}  # fmt: skip
    assert tr["epochs_run"] == 2 and tr["history"] == result.history
    assert tr["best_val_loss"] == min(h["val_loss"] for h in result.history)
    assert result.history[tr["best_epoch"] - 1]["val_loss"] == tr["best_val_loss"]
    assert (tr["n_train"], tr["n_val"], tr["batch_size"]) == (7, 1, 4)
