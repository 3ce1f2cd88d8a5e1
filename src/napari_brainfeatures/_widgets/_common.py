"""Small helpers shared by the dock widgets (layer lookups, workspaces)."""

from __future__ import annotations

from typing import Any

import napari
from napari.layers import Image, Labels

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
    """Open (or create) the workspace of an image layer and remember it on the layer."""
    root = layer.metadata.get(WORKSPACE_KEY)
    if root is None:
        root = default_workspace_path(source_path(layer), name=layer.name)
    ws = Workspace.open(root, shape=image_shape(layer), data_path=source_path(layer))
    layer.metadata[WORKSPACE_KEY] = str(ws.root)
    return ws


def layers_of(viewer: napari.Viewer, kind: type) -> list[Any]:
    """Layers of one type, in viewer order."""
    return [layer for layer in viewer.layers if isinstance(layer, kind)]


def image_choices(viewer: napari.Viewer):  # type: ignore[no-untyped-def]
    """A magicgui `choices` callable listing image layers."""
    return lambda _w: [(layer.name, layer) for layer in layers_of(viewer, Image)]


def labels_choices(viewer: napari.Viewer):  # type: ignore[no-untyped-def]
    """A magicgui `choices` callable listing labels layers."""
    return lambda _w: [(layer.name, layer) for layer in layers_of(viewer, Labels)]


def refresh_choices_on_layer_change(viewer: napari.Viewer, *combos: Any) -> None:
    """Keep layer pickers in sync with the layer list."""

    def _reset(_event: Any = None) -> None:
        for combo in combos:
            combo.reset_choices()

    viewer.layers.events.inserted.connect(_reset)
    viewer.layers.events.removed.connect(_reset)
    viewer.layers.events.reordered.connect(_reset)
