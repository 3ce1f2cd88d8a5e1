"""`make demo`'s window: tabbed docks with whole titles, every dock full height, a wide canvas."""

from napari_brainfeatures._napari import sample_data as _sample_data
from napari_brainfeatures.progress import run


def _dock(viewer, name):
    inner = viewer.window.dock_widgets[f"{name} (napari-brainfeatures)"]
    return getattr(inner, "native", inner).parent()  # the QDockWidget around it


def test_demo_docks_are_tabbed_and_leave_the_canvas_the_larger_share(
    monkeypatch, make_napari_viewer, qtbot
):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication, QTabWidget

    from napari_brainfeatures._cli.demo import BESIDE_LAYERS, TAB_TITLES, open_demo_viewer

    monkeypatch.setattr(_sample_data, "MICROCT_SHAPE", (4, 160, 192))
    run(_sample_data.ensure_microct((4, 160, 192)))
    viewer = make_napari_viewer(show=True)
    window = viewer.window._qt_window
    window.resize(1600, 1000)
    QApplication.processEvents()
    open_demo_viewer(viewer=viewer)  # explore off: the Train dock in front
    qtbot.wait(50)

    right = Qt.DockWidgetArea.RightDockWidgetArea
    assert window.tabPosition(right) == QTabWidget.TabPosition.North
    stages = {name: _dock(viewer, name) for name in TAB_TITLES}
    train = stages["Train CNN"]
    assert all(window.dockWidgetArea(d) == right for d in stages.values())
    assert set(window.tabifiedDockWidgets(train)) == set(stages.values()) - {train}
    assert {d.windowTitle() for d in stages.values()} == set(TAB_TITLES.values())
    assert not train.visibleRegion().isEmpty()  # raised: its tab in front
    heights = {d.height() for d in stages.values() if not d.visibleRegion().isEmpty()}
    assert heights and min(heights) > 0.8 * window.height()  # one dock, the column's height

    files = [_dock(viewer, name) for name in BESIDE_LAYERS]
    left = Qt.DockWidgetArea.LeftDockWidgetArea
    assert all(window.dockWidgetArea(d) == left for d in files)
    tabbed = set(window.tabifiedDockWidgets(files[0])) | {files[0]}
    assert set(files) <= tabbed and len(tabbed) == len(files) + 1  # + napari's layer list

    canvas = viewer.window._qt_viewer.canvas.native.width()
    assert canvas > train.width() and canvas >= 0.45 * window.width(), (canvas, train.width())
