import shutil
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import tiny_cnn, two_area_store
from napari_brainfeatures._widgets.explore import SELECTION, ExploreWidget
from napari_brainfeatures._widgets.explore_live import PREDICTION, STROKES, UNCERTAINTY
from napari_brainfeatures.classes import default_table
from napari_brainfeatures.explore.live import load_live_model
from napari_brainfeatures.explore.selection import mask_bins
from napari_brainfeatures.factors.results import factorise
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.run import compute_feature_map
from napari_brainfeatures.progress import run


@pytest.fixture
def scene(tmp_path):
    """A two-area image, its feature store (stride 2), NMF factors saved, and area labels."""
    store, image = two_area_store(tmp_path)
    factors = run(factorise(FeatureGrid.from_store(store), 3, seed=0)).save(tmp_path / "f.zarr")
    areas = np.zeros((40, 44), np.uint8)
    areas[:, :22], areas[:, 22:] = 1, 2
    return image, store, factors, areas


def _viewer(make_napari_viewer, image, areas):
    viewer = make_napari_viewer()
    viewer.add_image(image, name="ct")
    viewer.add_labels(areas, name="areas", metadata={"classes": default_table().to_dict()})
    w = ExploreWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.image.value = viewer.layers["ct"]
    return viewer, w


def _plot(w, qtbot, path, **options):
    w.source_path.value = path
    for key, value in options.items():
        getattr(w, key).value = value
    w.plot_button.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60_000)


def test_plot_select_highlight_keep_readout_and_tables(make_napari_viewer, qtbot, scene):
    image, store, factors, areas = scene
    viewer, w = _viewer(make_napari_viewer, image, areas)
    _plot(w, qtbot, factors, bins=32, colour="factor", factor=1)
    assert w.runner.last_error is None, w.runner.last_error
    dens = w.density
    assert dens.counts.sum() == len(dens.points) > 0 and dens.points.axes == (
        "factor 0",
        "factor 1",
    )
    # plot -> image: a rectangle over the left half of the plot
    x0, x1, y0, y1 = dens.extent
    w._selected("rectangle", ((x0 - 1, 0.5 * (x0 + x1)), (y0 - 1, y1 + 1)))
    layer = viewer.layers[SELECTION]
    assert layer.data.shape == w.grid.shape and layer.data.sum() == w.selected.sum() > 0
    np.testing.assert_allclose(layer.scale, (2, 2))  # the stride
    # image -> plot: the same pixels as a Labels layer select the same points
    w.from_layer.reset_choices()
    w.from_layer.value = layer
    w.highlight_button.clicked.emit()
    assert w.plot._overlay is not None
    np.testing.assert_array_equal(w.plot._overlay.get_array() > 0, mask_bins(dens, w.selected) > 0)
    # drawing in the image highlights as it happens, no button
    drawn = np.zeros_like(layer.data)
    drawn[:4, :6] = 1
    layer.data = drawn
    qtbot.waitUntil(lambda: w.selected.sum() == (drawn > 0).sum(), timeout=5_000)
    np.testing.assert_array_equal(w.plot._overlay.get_array() > 0, mask_bins(dens, drawn) > 0)
    # keep as class: added where unpainted, painted pixels kept
    w.target_labels.value = viewer.layers["areas"]
    areas_layer = viewer.layers["areas"]
    areas_layer.data[:20] = 0  # the top half unpainted
    w.class_name.value = "low F0"
    w.keep_button.clicked.emit()
    new = areas_layer.data
    assert 7 in areas_layer.metadata["classes"]["classes"][-1].values()
    assert set(np.unique(new[20:])) <= {1, 2} and (new[:20] == 7).any()
    assert "pixels added" in w.status.value
    # readout under the cursor
    w._hover(viewer, SimpleNamespace(position=(10.0, 30.0)))
    assert "top F" in w.readout_text.value and "%" in w.readout_text.value
    w._hover(viewer, SimpleNamespace(position=(-100.0, 30.0)))
    assert w.readout_text.value == ""
    # factor x label and cluster x label tables
    w.profile_labels.value = viewer.layers["areas"]
    w.profile_button.clicked.emit()
    assert len(w.table.row_headers) == 3 and w.table.column_headers[0] == "Ctx"
    w.clusters.value = viewer.layers["areas"]  # any labels serve as clusters here
    w.cluster_button.clicked.emit()
    assert w.table.row_headers[0] == "cluster 1"
    # clusters matched across slices: a cluster volume whose slice 1 swaps the ids
    w.match.button.clicked.emit()  # one slice only: says to pick the other slice's layer
    assert w.match.result is None
    halves = np.ones((40, 44), np.uint8)
    halves[:, 22:] = 2
    two = np.stack([halves, 3 - halves])
    w.clusters.value = viewer.add_labels(two, name="clusters z")
    w.match.other_z.value = 1
    w.match.button.clicked.emit()
    pairs = {(a, b): d for a, b, d in w.match.result["pairs"]}
    assert pairs[(1, 2)] == pytest.approx(0.0, abs=1e-6) and (2, 1) in pairs
    assert w.table.row_headers == ("cluster 1", "cluster 2")
    assert w.table.column_headers[:2] == ("match (z 1)", "JS distance")
    # UMAP axes of the store's features
    _plot(w, qtbot, store, method="UMAP", colour="density")
    assert w.runner.last_error is None, w.runner.last_error
    assert w.density.points.axes == ("UMAP 1", "UMAP 2") and w.density.counts.sum() > 0


def test_live_classifier_follows_strokes_and_saves(make_napari_viewer, qtbot, scene, tmp_path):
    image, store, _, areas = scene
    viewer, w = _viewer(make_napari_viewer, image, areas)
    _plot(w, qtbot, store, method="PCA", colour="predicted area")
    assert w.runner.last_error is None, w.runner.last_error
    # a key: the predicted areas' names, each in its class colour
    legend = w.plot.ax.get_legend()
    names = {c.id: c for c in w.readout.classes}
    shown = [t.get_text() for t in legend.get_texts()]
    assert shown and set(shown) <= {c.name for c in names.values()}
    first = next(c for c in names.values() if c.name == shown[0])
    from matplotlib.colors import to_rgba

    assert legend.legend_handles[0].get_facecolor() == pytest.approx(to_rgba(first.colour))
    live = w.live
    live.start_button.clicked.emit()
    strokes = viewer.layers[STROKES]
    assert strokes.data.shape == (40, 44) and strokes.mode == "paint"
    made = viewer.layers[PREDICTION].data  # at Start, as the first prediction will fill it
    strokes.data[10:30, 4:8] = 1  # one class only: says what to paint next, no error
    live.request()
    qtbot.waitUntil(lambda: "paint a second class" in live.status.value, timeout=30_000)
    qtbot.waitUntil(lambda: not live.runner.running, timeout=30_000)
    assert live.runner.last_error is None
    assert not viewer.layers[PREDICTION].data.any() and live.result is None  # made at Start, empty
    live.keep_button.clicked.emit()  # nothing predicted yet: nothing kept
    assert f"{PREDICTION} (kept)" not in viewer.layers and live.stop_button.enabled
    # an edit outside a brush stroke (fill, a script): napari emits `paint` before it
    # writes, and the update still takes the new class
    rr, cc = np.mgrid[10:30, 34:38]
    strokes.data_setitem((rr.ravel(), cc.ravel()), 2)
    qtbot.waitUntil(lambda: live.result is not None, timeout=30_000)
    qtbot.waitUntil(lambda: not live.runner.running, timeout=30_000)
    # the layers are filled at the event loop's turn after the result (then the latency is known)
    qtbot.waitUntil(lambda: bool(live.latency_s), timeout=30_000)
    pred = viewer.layers[PREDICTION].data
    assert pred is made  # filled in place: no new layer data, no new texture
    assert pred.shape == live.result.labels.shape and set(np.unique(pred)) <= {0, 1, 2}
    assert UNCERTAINTY in viewer.layers
    unc = viewer.layers[UNCERTAINTY]  # hidden: filled when shown
    unc.visible = True
    np.testing.assert_array_equal(unc.data, live.result.uncertainty)
    assert (pred[5:15, 2:5] == 1).mean() > 0.5 and (pred[5:15, 18:21] == 2).mean() > 0.5
    live.image = None  # saved beside the store (no workspace for an in-memory image)
    live.save_button.clicked.emit()
    saved = list(store.parent.glob("feat_live-*.safetensors"))
    assert len(saved) == 1
    _, meta = load_live_model(saved[0])
    assert set(meta["strokes"][1].tolist()) == {1, 2}
    live.keep_button.clicked.emit()
    assert f"{PREDICTION} (kept)" in viewer.layers and not live.stop_button.enabled
    kept = viewer.layers[f"{UNCERTAINTY} (kept)"]
    np.testing.assert_array_equal(kept.data, live.result.uncertainty)  # the last one, filled
    live.start_button.clicked.emit()  # a new run gets layers of its own
    assert viewer.layers[UNCERTAINTY] is not kept and live.stop_button.enabled
    live.stop_button.clicked.emit()


def test_bad_sources_say_so(make_napari_viewer, qtbot, scene, tmp_path):
    image, store, factors, areas = scene
    viewer, w = _viewer(make_napari_viewer, image, areas)
    part = tmp_path / "part.zarr"
    gen = compute_feature_map(image, tiny_cnn(), out=part, stride=2, tile=8)
    next(gen)
    gen.close()
    _plot(w, qtbot, part, method="PCA")
    assert "still being written" in str(w.runner.last_error) and w.density is None
    _plot(w, qtbot, store, method="NMF factors")
    assert "choose axes = PCA" in str(w.runner.last_error)
    shutil.rmtree(store)
    _plot(w, qtbot, factors, method="NMF factors")
    assert w.runner.last_error is None and "is gone" in w.status.value
    w.live.start_button.clicked.emit()  # no features: refused, nothing added
    assert STROKES not in viewer.layers


def test_the_maps_go_on_the_features_own_image(make_napari_viewer, qtbot, scene, monkeypatch):
    import napari_brainfeatures._widgets.explore as mod

    said = []
    monkeypatch.setattr(mod, "show_warning", said.append)
    image, store, _, areas = scene
    viewer, w = _viewer(make_napari_viewer, image, areas)
    crop = viewer.add_image(image[:30, :30], name="crop")
    w.image.value = None  # not chosen: the image of the features' shape is taken
    _plot(w, qtbot, store, method="PCA")
    assert w.image.value is viewer.layers["ct"] and not said
    w.image.value = crop  # another image: said, not silently misplaced
    _plot(w, qtbot, store, method="PCA")
    assert said and "computed on an image of 40x44 px, not on 'crop'" in said[-1]


def test_the_same_axis_twice_is_said(make_napari_viewer, qtbot, scene, monkeypatch):
    import napari_brainfeatures._widgets.explore as mod

    said = []
    monkeypatch.setattr(mod, "show_error", said.append)
    image, store, _, areas = scene
    _, w = _viewer(make_napari_viewer, image, areas)
    _plot(w, qtbot, store, method="PCA", x=1, y=1)
    assert said and "both axis 1" in said[-1] and w.density is None
