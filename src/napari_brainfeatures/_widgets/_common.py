"""Small helpers shared by the dock widgets (layer lookups, workspaces)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QEvent, QObject, QRect, QSize, Qt, QTimer
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from napari_brainfeatures._napari.reader import TRUTH_KEY
from napari_brainfeatures._util.leftovers import is_leftover
from napari_brainfeatures._widgets._display import OWNER_KEY, follow_world_units, world_unit
from napari_brainfeatures.workspace import Workspace, default_workspace_path

WORKSPACE_KEY = "brainfeatures_workspace"


def image_shape(layer: Image) -> tuple[int, ...]:
    """Full-resolution shape of an image layer (multiscale aware)."""
    data = layer.data[0] if layer.multiscale else layer.data
    return tuple(int(s) for s in data.shape)


def source_path(layer: Any) -> str | None:
    """The file a layer was opened from, if any."""
    meta = layer.metadata.get("brainfeatures", {}) if hasattr(layer, "metadata") else {}
    return meta.get("path") or getattr(layer.source, "path", None)


def workspace_for(layer: Image) -> Workspace:
    """Open (or create) an image layer's workspace, remembered on the layer (2-D: one slice)."""
    from napari_brainfeatures._widgets._memory import same_image

    shape = image_shape(layer)
    shape = (1, *shape) if len(shape) == 2 else shape
    ws = Workspace.open(workspace_root(layer), shape=shape, data_path=source_path(layer))
    layer.metadata[WORKSPACE_KEY] = str(ws.root)
    return same_image(ws, layer, source_path(layer))  # in-memory: said if another image's


def workspace_root(layer: Image) -> Path:
    """Where an image layer's workspace is or would be (creates nothing)."""
    root = layer.metadata.get(WORKSPACE_KEY) or default_workspace_path(
        source_path(layer), name=layer.name
    )
    return Path(root)


def results_path(layer: Image, name: str) -> Path:
    """``<workspace>/results/<name>`` of an image layer (creates nothing; a save does)."""
    return workspace_root(layer) / "results" / name


def newest_model(layer: Image | None) -> Path | None:
    """The newest CNN model file in an image's workspace ``models/`` (creates nothing)."""
    if layer is None:
        return None
    models = workspace_root(layer) / "models"
    if not models.is_dir():
        return None
    files = [p for p in models.glob("cnn-*.safetensors") if p.is_file() and not is_leftover(p)]
    return max(files, key=lambda p: p.stat().st_mtime, default=None)


def newest_store(layers: list[Image]) -> Path | None:
    """The newest finished feature store in these images' workspaces (creates nothing).

    A store's age is that of its provenance record, which is rewritten when its
    last tile is done.
    """
    from napari_brainfeatures.features.store import FeatureStore

    found: list[tuple[float, Path]] = []
    for layer in layers:
        folder = workspace_root(layer) / "features"
        for path in folder.glob("*.zarr") if folder.is_dir() else ():
            if is_leftover(path):  # a killed writer's temporary: never a result
                continue
            try:
                if not FeatureStore(path).attrs.get("complete"):  # read once, just now
                    continue
                meta = path / "zarr.json"
                found.append(((meta if meta.exists() else path).stat().st_mtime, path))
            except (OSError, ValueError, KeyError):  # not a store, or unreadable
                continue
    return max(found, default=(0.0, None))[1]


def fill_model_path(edit: Any, layer: Image | None) -> None:
    """Set an empty model-file box to the image's newest trained model, if there is one."""
    if str(edit.value) in ("", "."):
        found = newest_model(layer)
        if found is not None:
            edit.value = found


def layers_of(viewer: napari.Viewer, kind: type) -> list[Any]:
    """Layers of one type, in viewer order."""
    return [layer for layer in viewer.layers if isinstance(layer, kind)]


def current_z(viewer: napari.Viewer, layer: Image) -> int:
    """The z index of ``layer``'s data at the viewer's current position (clipped; 0 in 2-D)."""
    if layer.ndim < 3:  # a single section added as a 2-D image
        return 0
    z = layer.world_to_data(viewer.dims.point)[-3]
    return int(np.clip(round(float(z)), 0, image_shape(layer)[0] - 1))


def image_choices(viewer: napari.Viewer):  # type: ignore[no-untyped-def]
    """A magicgui `choices` callable listing image layers."""
    return lambda _w: [(layer.name, layer) for layer in layers_of(viewer, Image)]


def _labels_rank(layer: Any) -> int:
    """0: the user's painting, 1: a dock's output (predictions, clusters), 2: ground truth."""
    if layer.metadata.get(TRUTH_KEY):
        return 2
    return 1 if layer.metadata.get(OWNER_KEY) else 0


def labels_choices(viewer: napari.Viewer):  # type: ignore[no-untyped-def]
    """A magicgui `choices` callable listing labels layers, the user's painted ones first."""
    return lambda _w: [
        (layer.name, layer) for layer in sorted(layers_of(viewer, Labels), key=_labels_rank)
    ]


def class_names(layer: Any) -> dict[int, str]:
    """Class id -> name from a labels layer's ``classes`` metadata (empty without, or damaged)."""
    from napari_brainfeatures.classes import ClassTable

    raw = getattr(layer, "metadata", {}).get("classes")
    try:
        return {c.id: c.name for c in ClassTable.from_dict(raw)} if isinstance(raw, dict) else {}
    except (KeyError, TypeError, ValueError):
        return {}


def refresh_choices_on_layer_change(viewer: napari.Viewer, *combos: Any) -> None:
    """Keep layer pickers in sync with the layer list.

    Every dock calls this once, so it also connects the world's units and scale
    bar (:func:`_display.follow_world_units`).
    """
    follow_world_units(viewer)

    def _reset(_event: Any = None) -> None:
        for combo in combos:
            combo.reset_choices()

    def _inserted(event: Any) -> None:
        _reset()
        new = event.value
        if not isinstance(new, Labels) or _labels_rank(new) != 0:
            return
        for combo in combos:  # a picker showing ground truth moves to the user's new painting
            old = combo.value
            if isinstance(old, Labels) and _labels_rank(old) == 2 and new in combo.choices:
                combo.value = new

    viewer.layers.events.inserted.connect(_inserted)
    viewer.layers.events.removed.connect(_reset)
    viewer.layers.events.reordered.connect(_reset)


def follow_edits(combo: Any, callback: Callable[[], Any], delay_ms: int = 30) -> None:
    """Call ``callback`` when the layer picked in ``combo`` is edited (painted, a shape drawn).

    Labels layers report a brush stroke or a fill when it ends (``paint``), a new
    array as ``data``; Shapes layers a shape added, moved or removed as ``data``.
    Edits within ``delay_ms`` of each other give one call.
    """
    timer = QTimer(combo.native)
    timer.setSingleShot(True)
    timer.setInterval(delay_ms)
    timer.timeout.connect(callback)
    watched: list[Any] = []

    def _edited(*_: Any) -> None:
        timer.start()

    def _watch(layer: Any) -> None:
        for old in watched:
            for ev in _edit_events(old):
                ev.disconnect(_edited)
        watched.clear()
        if layer is not None:
            for ev in _edit_events(layer):
                ev.connect(_edited)
            watched.append(layer)

    combo.changed.connect(_watch)
    _watch(combo.value)


def _edit_events(layer: Any) -> list[Any]:
    return [e for e in (getattr(layer.events, n, None) for n in ("paint", "data")) if e is not None]


class _VerticalScroll(QScrollArea):
    """A scroll area that scrolls vertically only and asks for its content's width."""

    def __init__(self, body: QWidget) -> None:
        super().__init__()
        self.setWidgetResizable(True)
        self.setFrameShape(QScrollArea.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setWidget(body)
        body.installEventFilter(self)

    def _width(self, content: int) -> int:
        return content + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:  # noqa: D102
        hint = super().minimumSizeHint()
        return QSize(self._width(self.widget().minimumSizeHint().width()), hint.height())

    def sizeHint(self) -> QSize:  # noqa: D102
        hint = super().sizeHint()
        return QSize(self._width(self.widget().sizeHint().width()), hint.height())

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: D102
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the content grew (e.g. a longer label): re-ask the dock
        return super().eventFilter(obj, event)


class _FitHeight(QObject):
    """Keeps a word-wrapped QLabel at least as tall as its text at its current width.

    magicgui's labelled rows inside a scroll area do not grow by themselves
    when a wrapped text needs another line, so the text would be clipped.
    """

    def __init__(self, label: Any, reserved: int) -> None:
        super().__init__(label)
        self.label, self.reserved = label, reserved
        label.installEventFilter(self)

    def fit(self) -> None:
        label = self.label
        metrics = label.fontMetrics()
        width = label.width() if label.width() > 50 else 200
        flags = int(Qt.TextFlag.TextWordWrap)
        need = metrics.boundingRect(QRect(0, 0, width, 100_000), flags, label.text()).height()
        height = max(self.reserved, need + metrics.descent())
        if label.minimumHeight() != height or label.maximumHeight() != height:
            label.setFixedHeight(height)  # as tall as its text: no more, no less
            row = label.parentWidget()  # magicgui's row keeps its height unless told
            if row is not None and row.layout() is not None:
                row.setMinimumHeight(row.layout().minimumSize().height())

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: D102
        if event.type() == QEvent.Type.Resize:
            self.fit()
        return False


def _no_height_for_width(label: Any) -> None:
    """Make a word-wrapped QLabel's row take the minimum height :class:`_FitHeight` sets.

    A word-wrapped QLabel reports a height-for-width (again after each ``setText``),
    which a box layout uses in place of the minimum height, computed for a wider
    width than the label gets: the rows after a long message would overlap it.
    """
    policy = label.sizePolicy()
    if policy.hasHeightForWidth():
        policy.setHeightForWidth(False)
        label.setSizePolicy(policy)


def status_label(text: str = "", lines: int = 2) -> Any:
    """A magicgui Label whose messages wrap instead of widening the dock.

    ``lines`` lines are reserved up front; a longer message gets the height it
    needs at the label's width (recomputed when the text or the width changes).
    """
    from magicgui.widgets import Label

    class StatusLabel(Label):
        fitter: _FitHeight | None = None

        @property
        def value(self) -> Any:  # noqa: D102
            return Label.value.fget(self)  # type: ignore[attr-defined]

        @value.setter
        def value(self, value: Any) -> None:
            Label.value.fset(self, value)  # type: ignore[attr-defined]
            _no_height_for_width(self.native)  # setText turns it on again
            if self.fitter is not None:  # a QLabel tells nobody that its text changed
                self.fitter.fit()

    label = StatusLabel(value=text)
    native = label.native
    native.setWordWrap(True)
    _no_height_for_width(native)
    metrics = native.fontMetrics()
    label.fitter = _FitHeight(native, lines * metrics.lineSpacing() + metrics.descent())
    label.fitter.fit()
    return label


def say_file(label: Any, message: str, path: Any) -> None:
    """Show ``message`` in ``label`` with ``{}`` as the file's name; its full path as tooltip.

    A full path in a status line would widen the dock and squeeze the canvas.
    """
    label.value = message.replace("{}", Path(str(path)).name, 1)  # not format: names with {}
    label.tooltip = str(path)


OWNER_TAG = "brainfeatures_output"  # ... and which of its outputs
_LIVE_KEYS = ("scale", "translate", "contrast_limits")


def put_layer(
    viewer: napari.Viewer,
    name: str,
    data: Any,
    kind: str,
    *,
    owner: str,
    in_place: bool = False,
    **kwargs: Any,
) -> Any:
    """Show ``data`` as the layer ``name`` that the widget ``owner`` made earlier, or a new one.

    Only the layer tagged as that output of ``owner`` is reused: its data, and the
    scale, translate and contrast limits given, are updated in place (the
    user's colour and visibility choices stay), or it is replaced when the data
    no longer fits it.  A layer of the user's with the same name (an annotation
    layer, say) is never touched: napari gives the new layer a free name.

    With ``in_place`` a numpy ``data`` of the layer's shape and dtype is copied
    into the layer's own array, which is then refreshed: about 3 ms for a
    320×448 image against 10 ms for a new ``data`` (napari re-derives its
    dimensions), the difference a slider feels.  The array the layer was made
    with is then overwritten, so pass a fresh one each time.
    """
    layer_type = {"image": Image, "labels": Labels}.get(kind)
    tag = f"{owner}: {name}"  # found by its tag, whatever napari or the user named it
    for layer in list(viewer.layers):
        if layer.metadata.get(OWNER_TAG) != tag:
            continue
        same = layer_type is not None and type(layer) is layer_type
        if same and np.ndim(layer.data) == np.ndim(data) and not kwargs.get("rgb"):
            old = layer.data
            copy = (
                in_place
                and isinstance(old, np.ndarray)
                and isinstance(data, np.ndarray)
                and old.shape == data.shape
                and old.dtype == data.dtype
                and old is not data
            )
            if copy:
                old[...] = data
            else:
                layer.data = data
            for key in _LIVE_KEYS:
                if key in kwargs and not np.array_equal(getattr(layer, key), kwargs[key]):
                    setattr(layer, key, kwargs[key])
            if copy:
                layer.refresh()
            return layer
        viewer.layers.remove(layer)
    meta = {**kwargs.pop("metadata", {}), OWNER_KEY: owner, OWNER_TAG: tag}
    unit = world_unit(viewer)
    if unit is not None and "units" not in kwargs:  # born in the world's unit, not pixels
        first = data[0] if kwargs.get("multiscale") else data
        kwargs["units"] = (unit,) * (np.ndim(first) - (1 if kwargs.get("rgb") else 0))
    return getattr(viewer, f"add_{kind}")(data, name=name, metadata=meta, **kwargs)


def plain_numbers(table: Any) -> Any:
    """Show a magicgui Table's numbers as Python writes them (0.055, not 5.500e-02)."""
    from qtpy.QtWidgets import QStyledItemDelegate

    table.native.setItemDelegate(QStyledItemDelegate(table.native))
    return table


def insert_after(container: Any, anchor: Any, widget: QWidget) -> None:
    """Put the Qt ``widget`` (e.g. a plot canvas) in ``container``'s layout after ``anchor``.

    ``anchor`` is a magicgui widget of the container; its row (labelled or
    not) is found in the layout.  Call before :func:`scroll_body`.
    """
    layout = container.native.layout()
    for i in range(layout.count()):
        row = layout.itemAt(i).widget()
        if row is not None and (row is anchor.native or row.isAncestorOf(anchor.native)):
            layout.insertWidget(i + 1, widget)
            return
    raise ValueError(f"{anchor!r} is not in the container")


def scroll_body(container: Any, min_heights: dict[Any, int] | None = None) -> QScrollArea:
    """Put a dock widget's content into a vertical scroll area; returns the area.

    napari docks do not scroll, so a tall widget (controls, tables, plots) in
    a short window squeezes its plots to a few pixels.  Call this last in
    ``__init__``: every widget in the container's layout moves into a
    scroll area that fills the container and is as wide as its content.
    ``min_heights`` maps Qt widgets (e.g. plot canvases) to the height they
    keep; the area scrolls instead.
    """
    outer = container.native.layout()
    body = QWidget()
    inner = QVBoxLayout(body)
    inner.setContentsMargins(outer.contentsMargins())
    inner.setSpacing(outer.spacing())
    while outer.count():
        item = outer.takeAt(0)
        if item.widget() is not None:
            inner.addWidget(item.widget())
        else:
            inner.addItem(item)
    inner.addStretch(1)
    for widget, height in (min_heights or {}).items():
        widget.setMinimumHeight(int(height))
    area = _VerticalScroll(body)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return area


def align_labels(container: Any) -> None:
    """Give the labels of a container's rows one width, measured in the font they are drawn in.

    magicgui measures labels in the application's default font, but napari's
    stylesheet draws them larger, so one longer label (``"z0 (inactive)"``)
    pushes its own row's widget right of the others.
    """
    rows = [getattr(w, "_labeled_widget", lambda: None)() for w in container]
    rows = [r for r in rows if r is not None]
    for r in rows:
        r._label_widget.native.ensurePolished()
    width = max((r._label_widget.native.sizeHint().width() for r in rows), default=0)
    for r in rows:
        r.label_width = width
