import numpy as np
import zarr

from helpers import workspace_held_elsewhere
from napari_brainfeatures._widgets.annotate import AnnotateWidget
from napari_brainfeatures.workspace import Workspace


def _setup(make_napari_viewer, volume):
    viewer = make_napari_viewer()
    viewer.add_image(volume, name="ct", scale=(1.17, 1.17, 1.17))
    w = AnnotateWidget(viewer)
    viewer.window.add_dock_widget(w)
    return viewer, w


def test_paint_is_saved_in_workspace(make_napari_viewer, volume):
    viewer, w = _setup(make_napari_viewer, volume)
    layer = w.bind()
    assert layer is not None and layer.name == "ct areas"
    ws_root = viewer.layers["ct"].metadata["brainfeatures_workspace"]
    w.klass.value = 3
    assert layer.selected_label == 3
    layer.brush_size = 5
    layer.paint((2, 20, 20), 3)
    stored = np.asarray(zarr.open_array(f"{ws_root}/labels.zarr")[2])
    assert (stored == 3).sum() > 5  # on disk already, no save step
    # Reopening (a new viewer after closing napari) shows the same labels.
    viewer.layers.remove(layer)
    layer2 = w.bind()
    assert (np.asarray(layer2.data[2]) == 3).sum() == (stored == 3).sum()


def test_class_table_edits_follow_layer_and_disk(make_napari_viewer, volume):
    viewer, w = _setup(make_napari_viewer, volume)
    layer = w.bind()
    w.class_name.value = "CA1"
    w.class_colour.value = "#00ff00"
    w.add_class()
    ws = Workspace.open(w.workspace.root)
    assert ws.classes.by_name("CA1").colour == "#00ff00"
    assert w.klass.value == 7 and layer.selected_label == 7
    np.testing.assert_allclose(layer.colormap.map(np.array([7]))[0][:3], [0, 1, 0], atol=1e-6)
    w.class_colour.value = "#0000ff"
    w.recolour_class()
    np.testing.assert_allclose(layer.colormap.map(np.array([7]))[0][:3], [0, 0, 1], atol=1e-6)
    w.klass.value = 1
    w.class_name.value = "SSp"
    w.rename_class()
    assert Workspace.open(w.workspace.root).classes.by_id(1).name == "SSp"
    assert "SSp" in w.legend.value


def test_bad_edits_change_nothing(make_napari_viewer, volume):
    viewer, w = _setup(make_napari_viewer, volume)
    w.bind()
    before = w.table
    w.class_name.value = "Ctx"  # duplicate name
    w.add_class()
    w.class_colour.value = "purple"
    w.recolour_class()
    assert w.table == before


def test_paint_class_survives_layer_changes(make_napari_viewer, volume):
    # napari re-reads every ComboBox's choices when layers change; the class list must stay
    viewer, w = _setup(make_napari_viewer, volume)
    assert w.klass.choices == ()  # nothing to paint before the labels are bound
    w.bind()
    w.klass.value = 3
    viewer.add_points(np.zeros((1, 3)), name="other")
    viewer.layers.move(0, 2)
    w.reset_choices()  # what napari does for a docked container
    assert len(w.klass.choices) == 6 and w.klass.value == 3
    w.class_name.value = "CA1"
    w.add_class()
    w.reset_choices()
    assert len(w.klass.choices) == 7


def test_content_scrolls(make_napari_viewer, volume):
    from qtpy.QtWidgets import QScrollArea

    _, w = _setup(make_napari_viewer, volume)
    area = w.native.findChild(QScrollArea)
    assert area is not None and area.widget().isAncestorOf(w.legend.native)


def test_preset_that_renames_painted_ids_asks_first(make_napari_viewer, volume, monkeypatch):
    from napari_brainfeatures._widgets import annotate

    warned = []
    monkeypatch.setattr(annotate, "show_warning", warned.append)
    viewer, w = _setup(make_napari_viewer, volume)
    layer = w.bind()
    w.preset.value = "Prasad 2020 annotation ids"
    default_names = w.table.names
    layer.paint((2, 20, 20), 2)  # painted as the default table's id 2
    w.apply_preset()
    assert w.table.names == default_names and "2 HypoTh → " in warned[-1]
    w.apply_preset()  # pressed again: applied
    assert w.table.names != default_names
    assert Workspace.open(w.workspace.root).classes.names == w.table.names


def test_labels_painted_by_another_process_are_read_only(make_napari_viewer, volume, monkeypatch):
    """A second napari (here: another process holding the lease) is told, and cannot paint."""

    from napari_brainfeatures._widgets import annotate
    from napari_brainfeatures._widgets._common import workspace_root

    warned, errors = [], []
    monkeypatch.setattr(annotate, "show_warning", warned.append)
    monkeypatch.setattr(annotate, "show_error", errors.append)
    viewer, w = _setup(make_napari_viewer, volume)
    root = workspace_root(viewer.layers["ct"])
    with Workspace.open(root, shape=volume.shape) as ws:
        ws.labels()[2, 5:8, 5:8] = 4
    with workspace_held_elsewhere(root) as holder:
        layer = w.bind()
        assert layer is not None and w.read_only and not layer.editable
        assert f"process {holder.pid}" in warned[-1] and "read-only" in warned[-1]
        assert (np.asarray(layer.data[2]) == 4).sum() == 9  # shown
        layer.editable = True  # napari resets it on some changes: it stays read-only
        assert not layer.editable
        w.class_name.value = "CA1"
        w.add_class()  # the class table is the writer's too
        assert "CA1" not in w.table.names and f"process {holder.pid}" in errors[-1]
    viewer.layers.remove(layer)
    layer = w.bind()  # the other one closed: this one paints now
    assert not w.read_only and layer.editable
    layer.paint((2, 20, 20), 3)
    assert int((np.asarray(Workspace.open(root, mode="r").labels()[2]) == 3).sum()) > 0


def test_removing_the_labels_layer_lets_another_process_paint(make_napari_viewer, volume):
    from napari_brainfeatures._util import lease

    viewer, w = _setup(make_napari_viewer, volume)
    layer = w.bind()
    root = w.workspace.root
    assert (root / ".writer.json").exists()  # this process holds the lease
    viewer.layers.remove(layer)
    assert not (root / ".writer.json").exists() and lease.holder(root) is None


def test_tissue_mask_of_the_current_slice_is_an_editable_layer_on_disk(make_napari_viewer):
    rng = np.random.default_rng(0)
    vol = np.full((3, 64, 64), 20, np.uint8)
    vol[:, 12:52, 12:52] = rng.integers(90, 250, (3, 40, 40), dtype=np.uint8)  # textured tissue
    viewer = make_napari_viewer()
    viewer.add_image(vol, name="ct")
    w = AnnotateWidget(viewer)
    viewer.dims.set_current_step(0, 1)
    layer = w.compute_tissue()  # binds the workspace first
    assert layer is not None and layer.name == "ct tissue" and w.labels_layer is not None
    root = viewer.layers["ct"].metadata["brainfeatures_workspace"]
    stored = np.asarray(zarr.open_array(f"{root}/tissue.zarr"))
    assert stored.shape == (3, 64, 64) and not stored[0].any() and not stored[2].any()
    assert stored[1, 20:44, 20:44].all() and not stored[1, :8].any()
    assert "tissue" in w.status.value and "z=1" in w.status.value
    layer.paint((1, 30, 30), 0)  # corrections are written as painted
    assert zarr.open_array(f"{root}/tissue.zarr")[1, 30, 30] == 0
    assert w.compute_tissue() is layer  # the corrections are kept, and the user told
    assert zarr.open_array(f"{root}/tissue.zarr")[1, 30, 30] == 0
    assert "as saved" in w.status.value
    assert w.compute_tissue() is layer  # pressed again: recomputed in place
    assert zarr.open_array(f"{root}/tissue.zarr")[1, 30, 30] == 1


def test_a_later_session_finds_the_saved_tissue_mask_and_keeps_its_corrections(
    make_napari_viewer,
):
    from napari_brainfeatures._widgets.tissue import TISSUE_KEY, TissueControls

    rng = np.random.default_rng(0)
    vol = np.full((2, 64, 64), 20, np.uint8)
    vol[:, 12:52, 12:52] = rng.integers(90, 250, (2, 40, 40), dtype=np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(vol, name="ct")
    w = AnnotateWidget(viewer)
    layer = w.compute_tissue()
    layer.paint((0, 30, 30), 0)  # a correction, then the viewer is closed
    root = viewer.layers["ct"].metadata["brainfeatures_workspace"]
    for ly in list(viewer.layers):
        viewer.layers.remove(ly)
    w.workspace.close()

    later = make_napari_viewer()
    later.add_image(vol, name="ct")
    controls = TissueControls(later)  # as in the Train and Factors docks
    w2 = AnnotateWidget(later)
    assert w2.bind() is not None
    shown = [ly for ly in later.layers if ly.metadata.get(TISSUE_KEY)]
    assert len(shown) == 1 and controls.layer.value is shown[0]  # the docks use it
    assert shown[0].data[0, 30, 30] == 0 and shown[0].data[0, 20, 20] == 1
    assert later.layers.selection.active is w2.labels_layer  # strokes still paint areas
    assert w2.compute_tissue() is shown[0]  # first press: the correction is kept
    assert zarr.open_array(f"{root}/tissue.zarr")[0, 30, 30] == 0


def test_a_2d_section_gets_2d_labels_that_paint_into_its_workspace(make_napari_viewer):
    """A section added as a 2-D image (napari's own TIFF reader) gets 2-D labels on its grid."""
    section = np.random.default_rng(1).integers(60, 200, (48, 64), dtype=np.uint8)
    viewer = make_napari_viewer()
    viewer.add_image(section, name="ct", scale=(1.17, 1.17), translate=(100, 50))
    w = AnnotateWidget(viewer)
    layer = w.bind()
    assert layer is not None and layer.ndim == 2 and layer.data.shape == (48, 64)
    np.testing.assert_allclose(layer.scale, (1.17, 1.17))
    np.testing.assert_allclose(layer.translate, (100, 50))
    assert viewer.dims.ndim == 2  # no one-step z slider
    layer.brush_size = 5
    layer.paint((8, 17), 3)  # data coordinates
    layer.fill((40, 60), 2)  # the unpainted rest of the section
    root = viewer.layers["ct"].metadata["brainfeatures_workspace"]
    stored = np.asarray(zarr.open_array(f"{root}/labels.zarr"))
    assert stored.shape == (1, 48, 64) and stored[0, 8, 17] == 3  # on disk at once
    assert (stored == 3).sum() > 5 and (stored == 2).sum() + (stored == 3).sum() == 48 * 64
    viewer.layers.remove(layer)  # the lease goes with the layer
    assert not (w.workspace.root / ".writer.json").exists()
    again = w.bind()
    np.testing.assert_array_equal(np.asarray(again.data), stored[0])
    tissue = w.compute_tissue()  # kept in the workspace too, as a 2-D layer on the grid
    assert tissue is not None and tissue.data.shape == (48, 64) and viewer.dims.ndim == 2
    assert viewer.layers.selection.active is again  # strokes still paint the areas
    np.testing.assert_allclose(tissue.translate, (100, 50))
    assert "saved in ct.brainfeatures/tissue.zarr" in w.status.value
    assert np.asarray(zarr.open_array(f"{root}/tissue.zarr")).shape == (1, 48, 64)


def test_another_in_memory_image_of_the_same_name_is_told_whose_workspace_it_is(
    make_napari_viewer, monkeypatch
):
    import napari_brainfeatures._widgets._memory as memory

    said = []
    monkeypatch.setattr(memory, "show_warning", said.append)
    rng = np.random.default_rng(0)
    first, other = (rng.integers(0, 255, (2, 40, 40), dtype=np.uint8) for _ in range(2))
    for data, warned in ((first, 0), (first.copy(), 0), (other, 1)):
        viewer = make_napari_viewer()
        viewer.add_image(data, name="scan")
        w = AnnotateWidget(viewer)
        assert w.bind() is not None
        assert len(said) == warned
        w.bind()  # once per layer
        assert len(said) == warned
        viewer.layers.remove(w.labels_layer)
    assert "was made for another image of that name" in said[0] and "Rename" in said[0]
