"""Every dock keeps what it shows in the workspace's results/, with provenance; the browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_cnn, two_areas
from napari_brainfeatures._widgets._common import workspace_root
from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.results.record import PROVENANCE, list_results
from widgets.test_factors_widget import scene  # noqa: F401 - the fixture: a store and ROIs


def _wait(qtbot, w, timeout=120_000):
    qtbot.waitUntil(lambda: not w.runner.running, timeout=timeout)
    assert w.runner.last_error is None, w.runner.last_error


def _kept(layer, kind):
    """The results of ``kind`` in the layer's workspace, each with its provenance checked."""
    found = list_results(workspace_root(layer), kind)
    for r in found:
        rec = json.loads((r.path / PROVENANCE).read_text())
        assert rec["kind"] == kind and rec["version"] and rec["machine"]["cpu"]
        assert all((r.path / f).exists() for f in rec["files"])
    return found


def test_factors_dock_keeps_nmf_selection_and_clusters(make_napari_viewer, qtbot, scene):  # noqa: F811
    from napari_brainfeatures._widgets.factors import FactorsWidget

    image, store, rois = scene
    viewer = make_napari_viewer()
    ct = viewer.add_image(image, name="ct", scale=(0.5, 0.5))
    viewer.add_labels(rois, name="rois", metadata={"classes": default_table().to_dict()})
    w = FactorsWidget(viewer)
    w.store_path.value, w.image.value, w.k.value = store, ct, 2
    w.nmf_button.clicked.emit()
    _wait(qtbot, w)
    (nmf,) = _kept(ct, "factors")
    assert "factors kept in results/factors/feat-z0-" in w.status.value
    rec = json.loads((nmf.path / PROVENANCE).read_text())
    assert rec["inputs"]["feature_store"] == str(store) and rec["parameters"]["k"] == 2
    assert "factor_maps.zarr" in rec["files"] and "factors.zarr" in rec["files"]
    w.rois.value = viewer.layers["rois"]
    w.select_button.clicked.emit()
    sel = _kept(ct, "factors")[-1]
    assert {"selection.csv", "mean_activity.csv", "roi_sizes.csv"} <= set(sel.files)
    w.truth.value = viewer.layers["rois"]
    w.n_clusters.value = 2
    w.cluster_button.clicked.emit()
    _wait(qtbot, w)
    (cl,) = _kept(ct, "clusters")
    assert {"clusters.zarr", "cluster_sizes.csv", "scores.json", "profile.csv"} <= set(cl.files)
    scores = json.loads((cl.path / "scores.json").read_text())
    assert scores["k"] == 2 and 0 <= scores["v_measure"] <= 1
    from napari_brainfeatures._widgets.results import ResultsWidget

    browser = ResultsWidget(viewer)  # the kept factors open with each map's own contrast
    browser.select(nmf.path)
    browser.open_button.clicked.emit()
    maps = [ly for ly in viewer.layers if ly.name.startswith(f"{nmf.path.name}: ")]
    assert len(maps) == 2
    for ly in maps:
        finite = np.asarray(ly.data)[np.isfinite(np.asarray(ly.data))]
        top = float(np.percentile(finite, 99.5))
        assert ly.contrast_limits == pytest.approx([0.0, top], rel=0.05)
    assert [ly.visible for ly in maps] == [True, False]  # one heatmap at a time, no wash-out
    maps[1].visible = True
    assert not maps[0].visible and maps[1].blending == "translucent"


def test_browser_opens_kept_factors_and_stores_in_their_docks(make_napari_viewer, qtbot, scene):  # noqa: F811
    """A later session: kept factors go back into the Factors dock, ready to use; a store
    shows its predicted areas."""
    import shutil

    from napari_brainfeatures._widgets.factors import FactorsWidget
    from napari_brainfeatures._widgets.features import FeatureMapWidget
    from napari_brainfeatures._widgets.results import ResultsWidget

    image, store, rois = scene
    meta = {"classes": default_table().to_dict()}
    viewer = make_napari_viewer()
    ct = viewer.add_image(image, name="ct", scale=(0.5, 0.5))
    w = FactorsWidget(viewer)
    w.store_path.value, w.image.value, w.k.value = store, ct, 2
    w.nmf_button.clicked.emit()
    _wait(qtbot, w)
    w.rois.value = viewer.add_labels(rois, name="rois", metadata=meta)
    w.select_button.clicked.emit()
    picked, sel = w.selection.pairs, _kept(ct, "factors")[-1]
    shutil.copytree(store, workspace_root(ct) / "features" / "feat.zarr")

    later = make_napari_viewer()
    later.add_image(image, name="ct", scale=(0.5, 0.5))
    rois_later = later.add_labels(rois, name="rois", metadata=meta)
    fac, maps = FactorsWidget(later), FeatureMapWidget(later)
    later.window.add_dock_widget(fac)
    later.window.add_dock_widget(maps)
    browser = ResultsWidget(later)
    browser.select(sel.path)
    browser.open_button.clicked.emit()
    _wait(qtbot, fac)
    assert fac.factors is not None and fac.selection.pairs == picked
    assert fac.table.shape == (2, 2) and "opened" in fac.status.value
    assert len(_kept(ct, "factors")) == 2  # opening keeps nothing again
    fac.rois.value, fac.truth.value, fac.n_clusters.value = rois_later, rois_later, 2
    fac.select_button.clicked.emit()  # selects again on the opened factors
    fac.cluster_button.clicked.emit()
    _wait(qtbot, fac)
    assert fac.scores["ari"] >= 0 and "clusters" in fac.status.value
    entry = next(i for i, e in enumerate(browser.entries) if e.kind == "features")
    browser.open(entry)
    assert "ct predicted areas" in later.layers and "predicted areas" in browser.status.value
    assert str(fac.store_path.value).endswith("feat.zarr")


def test_train_dock_keeps_its_evaluation(make_napari_viewer, qtbot, tmp_path):
    from napari_brainfeatures._widgets.train import TrainWidget
    from napari_brainfeatures.models.cnn import save_cnn

    rng = np.random.default_rng(0)
    areas = np.zeros((3, 48, 96), np.uint8)
    areas[:, :, :48], areas[:, :, 48:] = 1, 2
    img = np.clip(rng.normal(110, np.where(areas == 1, 8, 40)), 0, 255).astype(np.uint8)
    viewer = make_napari_viewer()
    ct = viewer.add_image(img, name="ct")
    viewer.add_labels(areas, name="areas", metadata={"classes": default_table().to_dict()})
    w = TrainWidget(viewer)
    w.patch_size.value, w.per_class.value, w.eval_per_class.value = 32, 4, 3
    w.train_slice.value, w.val_slice.value, w.test_slice.value = 0, 1, 2
    w.sample()
    _wait(qtbot, w)
    model = save_cnn(tmp_path / "m", tiny_cnn(2), classes=ClassTable.from_names(["Ctx", "HypoTh"]))
    w.model_path.value = model
    w.load()
    w.tta.value = False
    w.evaluate()
    _wait(qtbot, w)
    (ev,) = _kept(ct, "evaluation")
    rec = json.loads((ev.path / PROVENANCE).read_text())
    assert rec["inputs"]["model"] == str(model) and len(rec["inputs"]["model_sha256"]) == 64
    assert rec["parameters"]["tta"] is False and rec["inputs"]["labels"] == "areas"
    assert {"evaluation.json", "per_class.csv", "confusion.png", "confusion.svg"} <= set(ev.files)
    assert "evaluation kept in results/evaluation/" in w.scores.value


def test_analyse_dock_keeps_its_report(make_napari_viewer, qtbot, tmp_path):
    from napari_brainfeatures._widgets.analyse import AnalyseWidget
    from napari_brainfeatures.models.cnn import save_cnn

    image, areas = two_areas(64)
    viewer = make_napari_viewer()
    ct = viewer.add_image(image, name="ct")
    viewer.add_labels(areas, name="areas")
    w = AnalyseWidget(viewer)
    w.model_path.value = save_cnn(
        tmp_path / "m", tiny_cnn(2), classes=ClassTable.from_names(["a", "b"])
    )
    w.per_class.value, w.sigmas.value = 8, "0, 0.5"
    w.run_button.clicked.emit()
    _wait(qtbot, w)
    (rep,) = _kept(ct, "report")
    assert {"report.json", "metrics.csv", "report.png"} <= set(rep.files)
    rec = json.loads((rep.path / PROVENANCE).read_text())
    assert rec["parameters"]["sigmas"] == [0.0, 0.5] and rec["parameters"]["per_class"] == 8
    assert "report kept in results/report/" in w.status.value


def test_latent_dock_keeps_fields_and_comparison(make_napari_viewer, qtbot):
    from napari_brainfeatures._widgets.latent import LatentWidget

    rng = np.random.default_rng(0)
    pop = rng.random((10, 32, 48)).astype(np.float32) * 100
    viewer = make_napari_viewer()
    layer = viewer.add_image(pop, name="population", metadata={"artifact": [0] * 10})
    lab = np.zeros((32, 48), np.uint8)
    lab[4:14, 4:20], lab[18:28, 26:44] = 1, 2
    viewer.add_labels(lab, name="rois")
    w = LatentWidget(viewer)
    w.population.value, w.rois.value = layer, viewer.layers["rois"]
    w.model_type.value, w.latent.value = "pca", 2
    w.train_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running and w.model is not None, timeout=30_000)
    w.c_max.value, w.c_step.value = 1.0, 0.5
    w.projective_button.clicked.emit()
    _wait(qtbot, w)
    (res,) = _kept(layer, "latent")
    assert {"comparison.csv", "projective_fields.zarr", "picture.png"} <= set(res.files)
    assert "latent result kept in results/latent/PCA_L_2-" in w.status.value
    w.receptive_button.clicked.emit()
    _wait(qtbot, w)
    assert "impact.csv" in _kept(layer, "latent")[-1].files


# -- the results browser --------------------------------------------------------------------------
@pytest.fixture
def kept(make_napari_viewer, tmp_path):
    """A viewer with a volume whose workspace holds a model, a cluster map and an evaluation."""
    from napari_brainfeatures._widgets._common import workspace_for
    from napari_brainfeatures.models.cnn import save_cnn
    from napari_brainfeatures.results.kinds import save_clusters_result, save_evaluation_result
    from napari_brainfeatures.train.evaluation import Evaluation

    viewer = make_napari_viewer()
    ct = viewer.add_image(np.zeros((4, 40, 50), np.uint8), name="ct", scale=(2.0, 0.5, 0.5))
    ws = workspace_for(ct)
    model = save_cnn(
        ws.path("models", "cnn-1"), tiny_cnn(2), classes=ClassTable.from_names(["a", "b"])
    )
    lab = np.zeros((10, 12), np.int32)
    lab[:5], lab[5:] = 1, 2
    clusters = save_clusters_result(ws.root, lab, scale=(2.0, 2.0, 2.0), translate=(4.0, 1.0, 1.0))
    ev = Evaluation.from_dict({
        "accuracy": 0.5, "macro_f1": 0.5, "class_names": ["a", "b"], "class_ids": [1, 2],
        "confusion": [[1, 1], [1, 1]],
        "per_class": {n: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for n in "ab"},
    })  # fmt: skip
    evaluation = save_evaluation_result(ws.root, ev)
    return viewer, ct, model, clusters, evaluation


def test_browser_lists_the_workspace_and_opens_maps_where_they_were(kept, qtbot):
    from napari.layers import Labels

    from napari_brainfeatures._widgets.results import ResultsWidget

    viewer, ct, model, clusters, evaluation = kept
    w = ResultsWidget(viewer)
    assert w.image.value is ct
    kinds = [e.kind for e in w.entries]
    assert kinds == ["model", "clusters", "evaluation"]
    assert w.table.shape == (3, 4) and "3 entries" in w.status.value
    w.select(clusters)
    w.open_button.clicked.emit()
    layer = viewer.layers[f"{clusters.name}: clusters"]
    assert isinstance(layer, Labels) and layer.data.shape == (1, 10, 12)
    np.testing.assert_allclose(layer.scale, (2.0, 2.0, 2.0))
    np.testing.assert_allclose(layer.translate, (4.0, 1.0, 1.0))
    assert w.preview.column_headers == ("id", "cluster", "pixels", "area_um2")
    w.open_button.clicked.emit()  # opened again: replaced, not a second copy
    assert [ly.name for ly in viewer.layers].count(f"{clusters.name}: clusters") == 1
    assert not any(ly.name.endswith("[1]") for ly in viewer.layers)
    w.select(evaluation)
    w.open_button.clicked.emit()
    assert w.preview.column_headers[0] == "class" and not w.figure.pixmap().isNull()
    assert w.status.value == "evaluation: no maps; table per_class.csv"


def test_browser_restores_the_list_for_a_reopened_volume_and_follows_new_results(kept, qtbot):
    from napari_brainfeatures._widgets import results_keep
    from napari_brainfeatures._widgets.results import ResultsWidget
    from napari_brainfeatures.results.kinds import save_clusters_result

    viewer, ct, *_ = kept
    viewer.layers.remove(ct)
    w = ResultsWidget(viewer)
    assert w.entries == []
    again = viewer.add_image(np.zeros((4, 40, 50), np.uint8), name="ct", scale=(2.0, 0.5, 0.5))
    w.image.value = again
    assert len(w.entries) == 3  # the same workspace, read back from disk
    lab = np.ones((3, 3), np.int32)

    def write(ws):
        return save_clusters_result(ws, lab, scale=(1.0, 1.0), translate=(0.0, 0.0))

    results_keep.keep(w.status, again, write, what="clusters")
    assert len(w.entries) == 4  # told by the dock that kept it


def test_browser_loads_a_model_into_the_train_dock_and_exports(kept, qtbot, tmp_path):
    from napari_brainfeatures._widgets.results import ResultsWidget
    from napari_brainfeatures._widgets.train import TrainWidget
    from napari_brainfeatures.results.export import validate_ome_zarr

    viewer, ct, model, clusters, _ = kept
    w = ResultsWidget(viewer)
    w.select(model)
    w.open_button.clicked.emit()
    assert "open the Train CNN dock" in w.status.value
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train CNN")
    w.open_button.clicked.emit()
    assert train.model is not None and train.model_file == model
    assert "is in the Train CNN dock" in w.status.value
    w.select(clusters)
    w.export_dir.value = tmp_path / "exports"
    w.format.value = "ome-zarr"
    written = w.export()
    assert [p.name for p in written] == ["clusters.ome.zarr"]
    validate_ome_zarr(written[0])


def test_browser_opens_a_saved_factors_store_on_its_image(make_napari_viewer):
    from napari_brainfeatures._widgets._common import workspace_for
    from napari_brainfeatures._widgets.results import ResultsWidget
    from napari_brainfeatures.factors.results import Factors, save_factors
    from napari_brainfeatures.features.grid import FeatureGrid

    viewer = make_napari_viewer()
    ct = viewer.add_image(np.zeros((3, 24, 32), np.uint8), name="ct", scale=(2.0, 0.5, 0.5))
    root = workspace_for(ct).root
    rng = np.random.default_rng(0)
    grid = FeatureGrid((6, 8), origin=(2, 2), step=(4, 4), z=1, image_shape=(3, 24, 32))
    fac = Factors(rng.random((2, 6, 8)).astype(np.float32), rng.random((2, 4)), grid)
    save_factors(root / "results" / "feat_z1_factors.zarr", fac)  # what "Save factors…" writes
    w = ResultsWidget(viewer)
    assert [e.kind for e in w.entries] == ["factors"]
    w.open(0)
    layer = viewer.layers["feat_z1_factors: F1"]
    assert layer.data.shape == (1, 6, 8)
    np.testing.assert_allclose(layer.scale, (2.0, 2.0, 2.0))  # stride 4 x 0.5 µm
    np.testing.assert_allclose(layer.translate, (2.0, 1.0, 1.0))  # z = 1, origin 2 px


def test_browser_shows_a_live_classifier_and_how_to_apply_it(kept, qtbot):
    """A live classifier is not a CNN: it is described, not handed to the Train dock."""
    from napari_brainfeatures._widgets.results import ResultsWidget
    from napari_brainfeatures._widgets.train import TrainWidget
    from napari_brainfeatures.explore.live import LiveSession, save_live_model
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.workspace import Workspace

    viewer, ct, *_ = kept
    rng = np.random.default_rng(0)
    f = rng.normal(size=(20, 25, 4)).astype(np.float32)
    f[:, 12:, 0] += 5.0
    s = LiveSession(FeatureGrid.of(f, origin=(0, 0), step=(2, 2), image_shape=(40, 50)))
    s.view(s.box_of(0, 39, 0, 49))
    strokes = np.zeros((40, 50), np.uint8)
    strokes[10:30, 4:8], strokes[10:30, 40:44] = 1, 2
    s.update(strokes)
    root = Path(ct.metadata["brainfeatures_workspace"])
    live = save_live_model(
        Workspace.open(root).path("models", "live-1"), s, names={1: "L4", 2: "L5"}
    )
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train CNN")
    w = ResultsWidget(viewer)
    w.select(live)
    w.open_button.clicked.emit()
    assert train.model is None  # not refused by the Train dock: never sent there
    assert "a live classifier of 2 classes" in w.status.value
    assert "brainfeatures apply-live" in w.status.value
    assert w.preview.column_headers == ("id", "class") and w.preview.data.to_list() == [
        ["1", "L4"], ["2", "L5"]
    ]  # fmt: skip
