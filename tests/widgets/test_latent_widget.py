import numpy as np
import pytest

from napari_brainfeatures._widgets.latent import DECODE_LAYER, LatentWidget
from napari_brainfeatures.latent.repeats import Spread
from napari_brainfeatures.latent.train import train_vae
from napari_brainfeatures.models.vae import VAEConfig
from napari_brainfeatures.progress import run

SHAPE = (32, 48)


def population(n=12, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    out = []
    for _ in range(n):
        cy, cx = 16 + rng.normal(0, 2), 24 + rng.normal(0, 3)
        blob = np.exp(-(((yy - cy) / 8) ** 2 + ((xx - cx) / 12) ** 2))
        out.append(rng.uniform(50, 150) * (0.2 + blob))
    return np.stack(out).astype(np.float32)


def rois():
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:14, 4:20] = 1
    lab[18:28, 26:44] = 2
    return lab


@pytest.fixture
def setup(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    clean = population()
    pop = clean.copy()
    pop[10:, 12:16] = 0  # sections 10 and 11 miss a stripe
    artifact = [0] * 10 + [2, 2]
    viewer.add_image(pop, name="population", metadata={"artifact": artifact})
    viewer.add_image(clean, name="clean", visible=False, metadata={"clean_of": "population"})
    viewer.add_labels(rois(), name="rois", metadata={"roi_names": ["Ctx", "TH"]})
    w = LatentWidget(viewer)
    w.population.value = viewer.layers["population"]
    w.rois.value = viewer.layers["rois"]
    cfg = VAEConfig(image_shape=SHAPE, n_down=3, channels=4, fc=(16,), latent_dim=3)
    path = tmp_path / "vae.safetensors"
    run(train_vae(pop, config=cfg, epochs=1, batch_size=4, checkpoint_path=path))
    return viewer, w, path


def test_load_sliders_decode_and_difference(setup, qtbot):
    viewer, w, path = setup
    assert [name for name, _ in w._population_choices()] == ["population", "clean"]
    w.preview_button.clicked.emit()
    assert viewer.layers["pre-processed"].data.max() <= 1
    mine = viewer.add_image(np.ones(SHAPE, np.float32), name=DECODE_LAYER)  # the user's
    w.model_path.value = path
    w.load_button.clicked.emit()
    assert w.runner.running  # the population is encoded in a worker, not the GUI thread
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    assert len(w.sliders) == 3 and w.status.value.startswith("loaded ")
    layer = viewer.layers[-1]
    assert layer is not mine and layer.name != DECODE_LAYER  # napari gave it a free name
    start = np.array(layer.data, copy=True)
    assert start.shape == SHAPE
    s0 = w.sliders[0]
    s0.value = s0.max  # moving a slider decodes at once, in the GUI thread
    moved = np.array(layer.data)
    assert not np.allclose(moved, start)
    assert np.allclose(moved, w.model.decode(w.z[None])[0])
    # the slider writes into the layer's array: what napari shows must follow
    assert np.allclose(np.asarray(layer._slice.image.view), moved)
    w.difference.value = True
    assert np.allclose(layer.data, moved - start, atol=1e-6)
    assert layer.colormap.name == "PiYG"
    w.difference.value = False
    assert layer.colormap.name == "magma" and np.allclose(layer.data, moved)
    assert np.array_equal(mine.data, np.ones(SHAPE)) and mine.colormap.name == "gray"
    w.reset_button.clicked.emit()
    assert w.sliders[0].value == pytest.approx(float(w.mean[0]), abs=1e-3)
    w.random_button.clicked.emit()
    assert all(s.min <= s.value <= s.max for s in w.sliders)
    w.start.value = "current section"
    viewer.dims.set_current_step(0, 5)
    w.reset()
    z5 = w.model.encode(w._scaled()[5][None])[0]
    assert np.allclose(
        w.z, np.clip(z5, [s.min for s in w.sliders], [s.max for s in w.sliders]), atol=1e-3
    )


def test_train_pca_projective_and_receptive(setup, qtbot, tmp_path, monkeypatch):
    viewer, w, _ = setup
    w.model_type.value = "pca"
    w.latent.value = 2
    w.train_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and w.model is not None, timeout=20000)
    assert len(w.sliders) == 2 and "PCA decode" in viewer.layers  # not called a β-VAE's
    lo, hi = viewer.layers["PCA decode"].contrast_limits  # the population's range, not (0, 1)
    assert "no epochs, no curves" in w.figure.texts[0].get_text()  # not an empty box
    assert lo == 0 and hi == pytest.approx(np.percentile(w._scaled(), 99.5), rel=1e-3) and hi < 1
    w.model_path.value = tmp_path / "pca.safetensors"
    w.save_button.clicked.emit()
    assert (tmp_path / "pca.safetensors").exists()
    w.save_button.clicked.emit()  # saving again replaces the same kind of model
    # a model of another kind, a non-model file and a folder are never replaced
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig, save_cnn

    cnn = save_cnn(
        tmp_path / "cnn.safetensors",
        BrainAreaCNN(CNNConfig(patch_size=64, n_classes=2, channels=(4, 4, 4, 4), fc=(8, 4))),
        classes=ClassTable.from_names(["a", "b"]),
    )
    notes = tmp_path / "notes.safetensors"
    notes.write_text("mine")
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    shown = []
    monkeypatch.setattr("napari_brainfeatures._widgets.latent.show_error", shown.append)
    for target in (cnn, notes, folder):
        before = target.read_bytes() if target.is_file() else None
        w.model_path.value = target
        w.save_button.clicked.emit()
        assert before is None or target.read_bytes() == before
    assert len(shown) == 3 and "holds a BrainAreaCNN" in shown[0]
    assert "not a model file" in shown[1] and "folder" in shown[2]
    assert (w.c_max.value, w.c_step.value) == (7.0, 0.05)
    w.c_max.value, w.c_step.value = 2.0, 0.005  # the paper's step shows as typed
    assert w.c_step.value == pytest.approx(0.005)
    w.c_step.value = 0.5
    w.projective_button.clicked.emit()
    assert "9 decodes per latent" in w.runner.status.value
    qtbot.waitUntil(lambda: "projective fields" in viewer.layers, timeout=60000)
    pf = viewer.layers["projective fields"]
    # both latents side by side in one picture, beside the sections (not one per section)
    assert pf.rgb and pf.data.shape == (SHAPE[0], 2 * SHAPE[1] + 4, 3)
    assert pf.translate[-1] > SHAPE[1] and "z0..z1" in w.status.value
    assert "c from −2 to 2" in w.status.value and "blue |c| ≥ 1" in w.status.value
    tags = viewer.layers["projective field labels"]
    assert [t.split()[0] for t in tags.features["latent"]] == ["z0", "z1"]
    assert tags.data[1, -1] > tags.data[0, -1] >= pf.translate[-1]  # one per tile, on the tiles
    w.receptive_button.clicked.emit()
    qtbot.waitUntil(lambda: "disentanglement" in w.status.value, timeout=60000)
    assert w.table.data.to_list() and "PCA L=2" in w.comparison
    assert w.receptive_result.impact.shape == (2, 2)
    assert w.receptive_result.roi_names == ["Ctx", "TH"]
    assert w.receptive_result.n_images == 10  # artifact sections left out
    w.set_model(w.model, w.meta)  # another model (here the same): the old pictures go
    assert "projective fields" not in viewer.layers
    assert "projective field labels" not in viewer.layers


def test_train_vae_live_curves_and_bad_model_file(setup, qtbot, tmp_path):
    viewer, w, _ = setup
    w.latent.value = 2
    w.epochs.value = 2
    assert w.lr.value == pytest.approx(1e-3) and w.batch.value == 16
    w.batch.value = 4
    w.train_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    assert w.runner.last_error is None
    assert len(w.history) == 2 and len(w.sliders) == 2
    assert len(w.figure.axes) == 2  # recon and KL curves
    h, wd = w.model.image_shape  # the paper's balance of the loss on small sections, recorded
    assert w.meta["training"]["recon_weight"] == pytest.approx(320 * 448 / (h * wd), rel=0.2)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    w.model_path.value = bad
    w.load()
    assert len(w.sliders) == 2  # unchanged; the error became a notification


def test_a_volume_is_refused_as_a_population(setup, monkeypatch):
    """A multiscale volume or a stack too large for memory is named, not read or trained."""
    import dask.array as da

    viewer, w, _ = setup
    errors = []
    monkeypatch.setattr("napari_brainfeatures._widgets.latent.show_error", errors.append)
    big = da.zeros((4000, 1420, 5805), dtype=np.uint8, chunks=(1, 1420, 5805))  # 33 G voxels
    viewer.add_image(big, name="micro-CT")
    w.population.value = viewer.layers["micro-CT"]
    w.train_button.clicked.emit()
    assert not w.runner.running
    assert "would need about" in errors[-1] and "volume" in errors[-1]
    viewer.add_image([big, big[:, ::2, ::2]], name="pyramid", multiscale=True)
    w.population.value = viewer.layers["pyramid"]
    w.preview_button.clicked.emit()
    assert "multiscale" in errors[-1]
    assert "pre-processed" not in viewer.layers


def test_quality_table_and_reconstructions(setup, qtbot):
    viewer, w, path = setup
    assert w.clean.value is viewer.layers["clean"]  # found by its clean_of metadata
    fresh = LatentWidget(viewer)  # a new dock finds the ROI labels and clean sections itself
    assert fresh.rois.value is viewer.layers["rois"] and fresh.clean.value is w.clean.value
    assert [n for n, _ in w._clean_choices()] == ["clean"]  # same shape, not the population
    w.model_path.value = path
    w.load_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    w.quality_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and "reconstructions" in viewer.layers,
                    timeout=60000)  # fmt: skip
    row = w.comparison["β-VAE L=3 β=3"]
    assert 0 < row["cwssim_artifact"] <= 1 and 0 < row["cwssim_recon"] <= 1
    assert row["artifact_penalty"] == pytest.approx(row["cwssim_recon"] - row["cwssim_artifact"])
    rec = viewer.layers["reconstructions"]
    # two corrupted sections, each as input | reconstruction | clean
    gap = 2
    assert rec.data.shape == (2 * SHAPE[0] + gap, 3 * SHAPE[1] + 2 * gap)
    assert np.allclose(rec.data[: SHAPE[0], : SHAPE[1]], w._scaled()[10])
    assert rec.translate[1] < -rec.data.shape[1] and "10, 11" in w.status.value  # at the left
    # a second model gets its own row beside the first
    w.model_type.value = "pca"
    w.latent.value = 2
    w.train_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and "PCA" in w.status.value, timeout=20000)
    w.quality_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and "cwssim_recon" in w.comparison["PCA L=2"],
                    timeout=60000)  # fmt: skip
    assert list(w.comparison) == ["β-VAE L=3 β=3", "PCA L=2"]
    assert len(w.table.data.to_list()) == 2
    # without clean sections: reconstructions against the input, no artifact score
    w.clean.value = None
    w.scores.clear()
    w.quality_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and "PCA L=2" in w.comparison, timeout=60000)
    assert "cwssim_artifact" not in w.comparison["PCA L=2"]
    assert viewer.layers["reconstructions"].data.shape[1] == 2 * SHAPE[1] + gap


def test_cancel_keeps_the_best_model(setup, qtbot):
    viewer, w, _ = setup
    w.latent.value, w.epochs.value, w.batch.value = 2, 10_000, 4
    w.train_button.clicked.emit()
    scratch = w._scratch
    assert scratch is not None
    qtbot.waitUntil(lambda: len(w.history) >= 2, timeout=60000)
    w.runner.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    assert w.model is not None and len(w.sliders) == 2  # the best epoch's model, in the dock
    assert "kept the best model" in w.status.value
    assert 1 <= w.meta["training"]["best_epoch"] <= len(w.history)
    assert not scratch.parent.exists()  # the scratch file is gone
    assert DECODE_LAYER in viewer.layers


def test_wider_sections_use_their_centre(make_napari_viewer, qtbot):
    """A population wider than the model (Allen 320×456 -> 320×448) is cropped, not refused."""
    viewer = make_napari_viewer()
    pop = np.concatenate([population(), population(seed=1)[:, :, :8]], axis=2)  # (12, 32, 56)
    viewer.add_image(pop, name="wide")
    w = LatentWidget(viewer)
    cfg = VAEConfig(image_shape=SHAPE, n_down=3, channels=4, fc=(16,), latent_dim=2)
    result = run(train_vae(pop, config=cfg, epochs=1, batch_size=4))
    assert result.meta["cropped_from"] == [32, 56]
    w.set_model(result.latent_model(), result.meta)
    assert w.codes is not None and "32×48 centre of the 32×56" in w.status.value
    layer = viewer.layers[DECODE_LAYER]
    assert layer.data.shape == SHAPE and tuple(layer.translate) == (0, 4)  # over the centre
    w.clean.value = None
    w.quality_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and "reconstructions" in viewer.layers,
                    timeout=60000)  # fmt: skip
    assert 0 < w.comparison["β-VAE L=2 β=3"]["cwssim_recon"] <= 1


def test_a_population_store_opens_ready_for_the_dock(make_napari_viewer, tmp_path):
    from napari_brainfeatures.cli import main

    store = tmp_path / "pop.zarr"
    small = ["--n", "6", "--section-shape", "64", "96"]
    assert main(["sample", "population", str(store), *small]) == 0
    viewer = make_napari_viewer()
    viewer.open(str(store), plugin="napari-brainfeatures")
    assert [la.name for la in viewer.layers] == ["pop", "pop without artifacts", "pop ROIs"]
    w = LatentWidget(viewer)
    assert w.population.value is viewer.layers["pop"]
    assert w.rois.value is viewer.layers["pop ROIs"]
    assert w.clean.value is viewer.layers["pop without artifacts"]


def test_default_population_is_never_the_micro_ct(make_napari_viewer):
    viewer = make_napari_viewer()
    # the micro-CT sample opened first, then the population: the dock picks the population
    viewer.add_image(
        np.zeros((6, 40, 40), np.uint8),
        name="micro-CT (synthetic)",
        metadata={"brainfeatures": {"sample": "microct"}},
    )
    viewer.add_image(
        np.zeros((4, *SHAPE), np.float32), name="sections clean", metadata={"clean_of": "sections"}
    )
    viewer.add_image(
        np.zeros((4, *SHAPE), np.float32), name="sections", metadata={"artifact": [0, 0, 0, 1]}
    )
    w = LatentWidget(viewer)
    assert w.population.value is viewer.layers["sections"]
    assert [name for name, _ in w._population_choices()][-1] in (
        "micro-CT (synthetic)",
        "sections clean",
    )


class _OneLatentOff:
    """The loaded model with latent 1 switched off (its code never varies)."""

    def __init__(self, model):
        self.model, self.latent_dim, self.image_shape = model, model.latent_dim, model.image_shape

    def encode(self, images):
        z = 100 * self.model.encode(images)  # the others clearly vary (1 epoch of training)
        z[:, 1] = 0.0
        return z

    def decode(self, z):
        return self.model.decode(z)


def test_inactive_latents_are_marked(setup, qtbot):
    viewer, w, path = setup
    from napari_brainfeatures.latent.model import load_latent_model

    model, meta = load_latent_model(path)
    w.set_model(_OneLatentOff(model), meta)
    assert [s.label for s in w.sliders] == ["z0", "z1 (inactive)", "z2"]
    assert "does not use" in w.sliders[1].tooltip and "±3 std" in w.sliders[0].tooltip
    # the longer label does not push its slider out of line with the others
    labels = [s._labeled_widget()._label_widget.native for s in w.sliders]
    assert len({q.minimumWidth() for q in labels}) == 1
    assert labels[0].minimumWidth() >= labels[1].sizeHint().width()
    assert ", 2 active:" in w.status.value
    assert w.table.data.to_list()[0][0] == "2"  # active latents: the table's first column
    w.receptive_button.clicked.emit()
    qtbot.waitUntil(lambda: "disentanglement" in w.status.value, timeout=60000)
    ax = w.figure.axes[0]
    colours = [t.get_color() for t in ax.get_xticklabels()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["z0", "z1", "z2"]
    assert colours[1] == "0.6" and colours[0] != "0.6" and "inactive" in ax.get_title()
    # one section has no spread to judge activity from: no marks, no error
    w.population.value = viewer.add_image(population(1), name="one section")
    w.set_model(model, meta)
    assert w.active is None and not any("inactive" in s.label for s in w.sliders)
    assert "active" not in w.status.value


def test_repeats_train_every_seed_and_the_table_shows_median_and_range(setup, qtbot):
    viewer, w, _ = setup
    w.latent.value, w.epochs.value, w.batch.value, w.repeats.value = 2, 1, 4, 3
    w.train_button.clicked.emit()
    assert "×3 (seeds 0–2)" in w.runner.status.value or w.runner.running
    qtbot.waitUntil(lambda: not w.runner.running and w.model is not None, timeout=90000)
    assert w.runner.last_error is None
    assert [s for s, *_ in w.runs] == [0, 1, 2] and w.runs[0][1] is w.model
    assert [m["training"]["seed"] for *_, m in w.runs] == [0, 1, 2]  # recorded
    assert "3 runs, seeds 0, 1, 2" in w.status.value and len(w.history) == 1  # the last run's
    w.receptive_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and "disentanglement" in w.status.value,
                    timeout=90000)  # fmt: skip
    runs = w.scores["β-VAE L=2 β=3"]
    assert sorted(runs) == [0, 1, 2] and all("disentanglement" in r for r in runs.values())
    (line,) = w.table.data.to_list()  # one row: the three runs summarised
    assert w.table.row_headers == ("β-VAE L=2 β=3 ×3",)
    column = w.table.column_headers.index("disentangl.")
    values = sorted(r["disentanglement"] for r in runs.values())
    assert line[column] == str(Spread(values[1], values[0], values[2], tuple(values)))
    assert line[column].count("[") == 1
    w.each_run.value = True  # the individual runs, one click away
    assert w.table.row_headers == tuple(f"β-VAE L=2 β=3 seed {s}" for s in (0, 1, 2))
    assert set(w.comparison) == set(w.table.row_headers)  # kept results: one row per run


def test_impact_notes_name_the_rois_and_a_dead_latents_impact():
    from napari_brainfeatures._widgets.latent_panels import impact_notes

    impact = np.array([[0.1, 0.9], [0.2, 0.3]])  # (ROI, latent): the largest on z1
    text = impact_notes(impact, ["HPF", "VL"], np.array([True, False]))
    assert text.startswith("ROIs: HPF hippocampal formation, VL lateral ventricle")
    assert "largest impact is on z1, an inactive latent" in text
    assert "inactive" not in impact_notes(impact, ["HPF", "VL"], np.array([True, True]))


def test_comparison_headers_say_what_each_score_is(qtbot):
    from magicgui.widgets import Table

    from napari_brainfeatures._widgets.latent_panels import fill_comparison

    table = Table()
    rows = {"β-VAE L=8": {0: {"artifact_penalty": 0.01, "pca_fd_recon": 3.2}}}
    fill_comparison(table, rows)
    assert table.column_headers == ("penalty", "FD recon")
    header = table.native.horizontalHeaderItem(1).toolTip()
    assert header.startswith("PCA-Fréchet distance") and "penalty: " in table.native.toolTip()


def test_a_model_of_other_sections_is_said_to_be_so(make_napari_viewer, monkeypatch):
    """A model trained on 32×48 sections shown 32×56 ones it was not cropped from: said."""
    import napari_brainfeatures._widgets.latent as mod

    said = []
    monkeypatch.setattr(mod, "show_warning", said.append)
    viewer = make_napari_viewer()
    cfg = VAEConfig(image_shape=SHAPE, n_down=3, channels=4, fc=(16,), latent_dim=2)
    result = run(train_vae(population(), config=cfg, epochs=1, batch_size=4))  # 32×48 itself
    wide = np.concatenate([population(), population(seed=1)[:, :, :8]], axis=2)  # (12, 32, 56)
    viewer.add_image(wide, name="wide")
    w = LatentWidget(viewer)
    w.set_model(result.latent_model(), result.meta)
    assert said and "trained on 32×48 sections, these are 32×56" in said[0]
