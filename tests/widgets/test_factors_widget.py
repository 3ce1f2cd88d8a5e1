import numpy as np
import pytest
import torch
from napari.layers import Image, Labels

from helpers import TINY_CNN
from napari_brainfeatures._widgets.factors import FactorsWidget
from napari_brainfeatures.classes import default_table
from napari_brainfeatures.factors.select import rgb_composite
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.models.cnn import BrainAreaCNN
from napari_brainfeatures.progress import run

TINY = TINY_CNN


@pytest.fixture
def scene(tmp_path):
    """A 2-area image, its feature store (stride 2) and ROI labels."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = (rng.random((40, 44)) * 120).astype(np.uint8)
    image[:, 22:] += 120
    store = tmp_path / "feat.zarr"
    run(compute_feature_map(image, BrainAreaCNN(TINY).eval(), out=store, stride=2, tile=8))
    rois = np.zeros((40, 44), np.uint8)
    rois[:, :22], rois[:, 22:] = 1, 2
    return image, store, rois


def test_nmf_selection_rgb_and_clusters(make_napari_viewer, qtbot, scene):
    image, store, rois = scene
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct", scale=(0.5, 0.5))
    viewer.add_labels(
        rois, name="rois", scale=(0.5, 0.5), metadata={"classes": default_table().to_dict()}
    )
    w = FactorsWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.store_path.value = store
    assert w.image.value is None  # placed on the store's image by default (same shape)
    w.k.value = 3
    w.nmf_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    assert w.image.value is viewer.layers["ct"]
    # heatmaps are added one per event-loop turn, so the viewer never freezes
    qtbot.waitUntil(lambda: "NMF factor 2" in viewer.layers, timeout=10_000)
    layers = [viewer.layers[f"NMF factor {i}"] for i in range(3)]
    assert all(isinstance(ly, Image) for ly in layers)
    assert layers[0].data.shape == (20, 22)
    np.testing.assert_allclose(layers[0].scale, (1.0, 1.0))  # stride 2 x image scale 0.5
    assert "relative error" in w.status.value and "(image slice 0)" in w.status.value
    assert viewer.layers["NMF RGB"].rgb  # factors 0, 1, 2 until a selection is made
    assert not any(ly.visible for ly in layers)  # the composite shows, not 3 blended heatmaps
    legend = viewer.canvas.overlays.text
    assert legend.visible and "R: F0" in legend.text and "B: F2" in legend.text
    layers[1].visible = True
    layers[0].visible = True  # one heatmap at a time: showing one hides the other
    assert [ly.visible for ly in layers] == [True, False, False]
    assert layers[0].colorbar.visible  # the shown map's colour bar
    layers[0].visible = False
    # selection against the two ROIs
    w.rois.value = viewer.layers["rois"]
    w.normalise.value = "area"
    w.select_button.clicked.emit()
    sel = w.selection
    assert sel is not None and sel.roi_ids == [1, 2] and len(sel.pairs) == 2
    assert w.table.shape == (3, 2) and w.table.column_headers == ("Ctx", "HypoTh")
    assert "→Ctx (" in w.status.value and "→HypoTh (" in w.status.value
    w.status.value += " " + "a long explanation " * 20  # wraps over many lines
    qtbot.wait(50)
    label = w.status.native
    assert label.minimumHeight() > 3 * label.fontMetrics().lineSpacing()
    assert label.parentWidget().height() >= label.minimumHeight()  # the row grew: no clipping
    picked = sel.pairs[0]
    item = w.table.native.item(picked[0], sel.roi_ids.index(picked[1]))
    assert item.background().color().name() in ("#2e7d32", "#b26a00")  # a pick, maybe weak
    assert item.toolTip().startswith(f"F{picked[0]} for ")  # counts and score in the tooltip
    assert w.table.data[0][0].endswith("%") and "%/" in w.table.data[0][0]  # fractions
    assert [wd.value for wd in w.rgb][:2] == sel.factors
    assert f"R: F{sel.factors[0]} " in legend.text  # the legend names the pick's ROI
    rgb = viewer.layers["NMF RGB"]
    np.testing.assert_allclose(
        rgb.data[..., 0], rgb_composite(w.maps, (sel.factors[0], 0, 1))[..., 0]
    )
    w.rgb_button.clicked.emit()
    rgb = viewer.layers["NMF RGB"]
    assert rgb.rgb and rgb.data.shape == (20, 22, 3) and 0 <= rgb.data.min() <= rgb.data.max() <= 1
    # clusters of the NMF coefficients inside ROI 2, scored against the ROIs
    w.mask.value = viewer.layers["rois"]
    w.mask_id.value = 2
    w.method.value = "kmeans"
    w.n_clusters.value = 2
    w.truth.value = viewer.layers["rois"]
    w.cluster_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    clusters = viewer.layers["clusters"]
    assert isinstance(clusters, Labels) and clusters.data.shape == (20, 22)
    assert (clusters.data[:, :11] == 0).all() and (clusters.data[:, 11:] > 0).all()
    assert "V-measure" in w.status.value and set(w.scores) >= {"v_measure", "ari"}
    assert clusters.visible and not rgb.visible and not legend.visible  # not drawn over it
    # smoothing inside the mask: σ = 4 image px = 2 steps of the stride-2 grid
    from napari_brainfeatures.factors.clusters import cluster_map

    raw = clusters.data.copy()
    w.smooth.value = 4
    w.cluster_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    smoothed = viewer.layers["clusters"].data
    expected = cluster_map(
        np.moveaxis(w.maps, 0, -1),
        method="kmeans",
        k=2,
        mask=rois[::2, ::2] == 2,
        smooth=(2.0, 2.0),
    )
    np.testing.assert_array_equal(smoothed, expected.labels)
    assert (smoothed[:, :11] == 0).all() and not np.array_equal(smoothed, raw)
    # sparse painting with raw counts: every score negative, and the status says what to try
    sparse = np.zeros((40, 44), np.uint8)
    sparse[4:8, 4:8], sparse[30:34, 30:34] = 1, 2
    viewer.add_labels(sparse, name="sparse", scale=(0.5, 0.5))
    w.rois.value = viewer.layers["sparse"]
    w.normalise.value = "none"
    w.select_button.clicked.emit()
    assert max(score for *_, score in w.selection.pairs) <= 0
    assert "Every score is negative" in w.status.value and "normalise = area" in w.status.value
    assert w.table.column_headers == ("ROI 1", "ROI 2")  # a layer without class names
    cover, leak = w.selection.fractions()
    assert w.table.shape[0] == 3 and w.table.data[0][0] == f"{cover[0, 0]:.0%}/" + (
        f"{leak[0, 0]:.0%}" if leak[0, 0] <= 2 else f"{leak[0, 0]:.0f}x"  # many times the ROI
    )
    assert "weak picks" in w.status.value  # negative scores are flagged, not shown as good
    first = viewer.layers["NMF factor 0"]
    w.nmf_button.clicked.emit()  # a new NMF: the old scores no longer apply
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.table.shape[0] == 0 and w.selection is None
    qtbot.wait(200)
    assert viewer.layers["NMF factor 0"] is first  # same k: layers reused, not re-created
    w.k.value = 2
    w.nmf_button.clicked.emit()
    qtbot.waitUntil(
        lambda: not w.runner.running and "NMF factor 2" not in viewer.layers, timeout=60_000
    )
    # factor 1's layer is updated in a later event-loop turn
    qtbot.waitUntil(
        lambda: np.array_equal(viewer.layers["NMF factor 1"].data, w.maps[1]), timeout=10_000
    )


def test_errors_become_notifications(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer = make_napari_viewer()
    w = FactorsWidget(viewer)
    shown = []
    monkeypatch.setattr("napari_brainfeatures._widgets.factors.show_error", shown.append)
    w.nmf_button.clicked.emit()  # no store
    w.select_button.clicked.emit()  # no NMF
    w.cluster_button.clicked.emit()
    assert len(shown) == 3 and "feature store" in shown[0]
    (tmp_path / "not_a_store.zarr").mkdir()
    w.store_path.value = tmp_path / "not_a_store.zarr"
    w.nmf_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=20_000)
    assert isinstance(w.runner.last_error, FileNotFoundError)


def test_store_box_takes_the_newest_finished_store_of_the_image(make_napari_viewer, tmp_path):
    import os
    from pathlib import Path

    import zarr

    from napari_brainfeatures._widgets._common import WORKSPACE_KEY
    from napari_brainfeatures.features.store import ATTR

    torch.manual_seed(0)
    image = (np.random.default_rng(0).random((40, 44)) * 200).astype(np.uint8)
    feats = tmp_path / "ws" / "features"
    net = BrainAreaCNN(TINY).eval()

    def age(name: str, t: float) -> None:
        os.utime(feats / name / "zarr.json", (t, t))

    for i, name in enumerate(["old.zarr", "new.zarr", "partial.zarr"]):
        run(compute_feature_map(image, net, out=feats / name, stride=4, tile=8))
        age(name, 1000 + i)
    group = zarr.open_group(feats / "partial.zarr", mode="r+")
    group.attrs[ATTR] = {**dict(group.attrs[ATTR]), "complete": False}
    age("partial.zarr", 5000)  # the newest, but unfinished
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct", metadata={WORKSPACE_KEY: str(tmp_path / "ws")})
    w = FactorsWidget(viewer)
    assert Path(str(w.store_path.value)) == feats / "new.zarr"
    assert "new.zarr" in w.status.value
    age("old.zarr", 9000)  # finished since: taken while the box holds the widget's own pick
    w._default_store()
    assert Path(str(w.store_path.value)) == feats / "old.zarr"
    w.store_path.value = feats / "new.zarr"  # the user's choice stays
    age("partial.zarr", 10_000)
    group.attrs[ATTR] = {**dict(group.attrs[ATTR]), "complete": True}
    w._default_store()
    assert Path(str(w.store_path.value)) == feats / "new.zarr"


def test_save_factors_writes_what_the_cluster_command_reads(
    make_napari_viewer, qtbot, scene, tmp_path, monkeypatch, capsys
):
    import json

    from napari_brainfeatures import cli
    from napari_brainfeatures._widgets._common import WORKSPACE_KEY
    from napari_brainfeatures.factors.results import open_factors

    image, store, rois = scene
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct", metadata={WORKSPACE_KEY: str(tmp_path / "ws")})
    viewer.add_labels(rois, name="rois")
    w = FactorsWidget(viewer)
    shown = []
    monkeypatch.setattr("napari_brainfeatures._widgets.factors.show_error", shown.append)
    w.save_button.clicked.emit()  # nothing to save yet
    assert len(shown) == 1 and "run the NMF first" in shown[0]
    w.store_path.value = store
    w.k.value = 3
    w.nmf_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    # λ < 0 is refused by the core (the spin box stops it too), the control named
    w.rois.value = viewer.layers["rois"]
    w.lam.min = -5
    w.lam.value = -1
    w.select_button.clicked.emit()
    assert "leakage λ must be >= 0, got -1.0" in shown[-1] and w.selection is None
    w.lam.value = 0.5
    w.normalise.value = "area"
    w.select_button.clicked.emit()
    assert w.selection is not None and len(w.selection.pairs) == 2
    # by default into the image's workspace results/
    expected = tmp_path / "ws" / "results" / "feat_z0_factors.zarr"
    assert str(w.save_path.value) == str(expected)
    w.save_button.clicked.emit()
    assert "factors saved to feat_z0_factors.zarr" in w.status.value
    saved = open_factors(expected)
    np.testing.assert_array_equal(np.asarray(saved.maps), w.maps)
    assert saved.selection.pairs == w.selection.pairs and saved.grid.step == (2, 2)
    assert saved.grid.source == str(store) and saved.info["k"] == 3
    # the command line clusters what the widget saved
    out = tmp_path / "clusters"
    argv = ["cluster", str(expected), "--k", "2", "--method", "kmeans", "--out", str(out)]
    assert cli.main(argv) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["n_labelled"] == int(np.isfinite(w.maps).all(0).sum())
    # a path the user picks stays; a folder of the user's is never replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    w.save_path.value = mine
    w.save_button.clicked.emit()
    assert "never deleted" in shown[-1] and (mine / "notes.txt").read_text() == "keep"
    w.save_path.value = tmp_path / "picked.zarr"
    w.save_button.clicked.emit()
    assert open_factors(tmp_path / "picked.zarr").k == 3


def test_tissue_mask_layer_restricts_nmf_and_clusters(make_napari_viewer, qtbot, scene):
    from napari_brainfeatures._widgets.tissue import TISSUE_KEY

    image, store, _ = scene
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct")
    tissue = np.ones((40, 44), np.uint8)
    tissue[:6] = 0  # background along the top: patches near it see it
    w = FactorsWidget(viewer)
    viewer.add_labels(tissue, name="ct tissue", metadata={TISSUE_KEY: True})
    assert w.tissue.layer.value is viewer.layers["ct tissue"]  # picked when it appears
    w.tissue.min_context.value = 0.75
    w.store_path.value = store
    w.k.value = 2
    w.nmf_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    fac = w.factors
    ctx = fac.grid.context_inside(tissue)
    np.testing.assert_array_equal(fac.mask, (tissue[::2, ::2] > 0) & (ctx >= 0.75))
    assert fac.info["min_context"] == 0.75 and not np.isfinite(w.maps[:, ~fac.used]).any()
    w.method.value, w.n_clusters.value = "kmeans", 2
    w.cluster_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    labels = viewer.layers["clusters"].data
    assert (labels[~fac.used] == 0).all() and (labels[fac.used] > 0).all()


def test_closing_the_dock_stops_adding_heatmaps(make_napari_viewer, qtbot, scene):
    image, store, _ = scene
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct", scale=(0.5, 0.5))
    w = FactorsWidget(viewer)
    dock = viewer.window.add_dock_widget(w)
    w.store_path.value = store
    w.k.value = 6
    w.nmf_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)
    assert w.runner.last_error is None, w.runner.last_error
    viewer.window.remove_dock_widget(dock)  # before the six layers are all added
    w.native.deleteLater()
    qtbot.wait(300)  # the layer chain would now touch deleted widgets and raise
    assert sum(name.startswith("NMF factor") for name in map(str, viewer.layers)) < 6
