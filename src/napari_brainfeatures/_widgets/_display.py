"""What every map says about itself: world units, a scale bar, colour bars on continuous maps.

napari draws every layer in one world.  When the volume's layer says its
scale is in micrometres, so is every layer aligned with it (feature maps,
factors, clusters, labels), whatever the code that made it passed as
``units``: :func:`follow_world_units` gives each new layer the world's units
and turns napari's scale bar on.  A continuous map that one of the docks made
(an image layer with a colormap other than grey: features, confidence,
factors, matrices) shows its colour bar, so that a colour reads as a value.
"""

from __future__ import annotations

import weakref
from typing import Any

import napari
import numpy as np
from napari.layers import Image, Layer

from napari_brainfeatures._napari.reader import MICROMETRE

__all__ = [
    "MICROMETRE",
    "OWNER_KEY",
    "follow_world_units",
    "length_units",
    "show_colorbar",
    "is_continuous_map",
    "world_unit",
]

_HOOKED: weakref.WeakSet[Any] = weakref.WeakSet()  # viewers whose hook is connected
OWNER_KEY = "brainfeatures_owner"  # layer metadata: the dock whose output a layer shows


def length_units(layer: Layer) -> tuple[str, ...] | None:
    """The layer's units when they are lengths (not napari's default ``pixel``), else None."""
    units = tuple(str(u) for u in getattr(layer, "units", ()) or ())
    if not units or any(u in ("pixel", "dimensionless", "") for u in units):
        return None
    return units


def is_continuous_map(layer: Layer) -> bool:
    """A dock's continuous map: an image layer it made with a colormap other than grey."""
    if not isinstance(layer, Image) or layer.rgb or not layer.metadata.get(OWNER_KEY):
        return False
    if getattr(layer, "colorbar", None) is None:
        return False
    return getattr(layer.colormap, "name", "gray") not in ("gray", "grey", "gray_r")


def show_colorbar(viewer: napari.Viewer) -> Layer | None:
    """Show the colour bar of the selected continuous map only; return that layer.

    One bar, for the layer chosen in the layer list when it is a shown map
    (else the topmost shown map): six unlabelled bars side by side say less
    than one that follows the selection.
    """
    maps = [layer for layer in viewer.layers if is_continuous_map(layer)]
    seen = [layer for layer in maps if layer.visible]
    active = viewer.layers.selection.active
    shown = active if active in seen else (seen[-1] if seen else None)
    if shown is not None and shown is not active and _covered(viewer, shown):
        shown = None  # a dock's RGB composite above it is what shows, and has no colour bar
    for layer in maps:
        layer.colorbar.visible = layer is shown
    return shown


def _covered(viewer: napari.Viewer, layer: Layer) -> bool:
    """Whether a shown RGB image a dock made (the NMF composite) lies above ``layer``."""
    above = list(viewer.layers)[list(viewer.layers).index(layer) + 1 :]
    return any(
        isinstance(ly, Image) and ly.rgb and ly.visible and ly.metadata.get(OWNER_KEY)
        for ly in above
    )


def world_unit(viewer: napari.Viewer) -> str | None:
    """The length unit of the viewer's world (the first layer's that has one), or None."""
    for layer in viewer.layers:
        units = length_units(layer)
        if units:
            return units[-1]
    return None


def _connect_before_canvas(emitter: Any, callback: Any) -> None:
    """Connect ``callback`` so that it runs before the canvas draws a new layer.

    The canvas draws a layer as soon as it is inserted, and warns ("Inconsistent
    units across layers") if its units differ from the others', so a layer made
    in pixels must get the world's unit first.
    """
    try:
        emitter.connect(callback, before="_on_add_layer_change")
    except (RuntimeError, ValueError, TypeError):  # no canvas (a headless viewer model)
        emitter.connect(callback, position="first")


def unit_kwargs(viewer: napari.Viewer, ndim: int) -> dict[str, Any]:
    """``{"units": ...}`` in the world's unit for a new ``ndim``-D layer (empty: none known).

    A layer born in the world's unit is drawn without napari's "inconsistent
    units" warning, which a layer made in pixels and converted later triggers.
    """
    unit = world_unit(viewer)
    return {} if unit is None else {"units": (unit,) * ndim}


def follow_world_units(viewer: napari.Viewer) -> None:
    """Give every layer of ``viewer`` the world's length unit and show the scale bar.

    Connected once per viewer (docks call it on creation; calling again is a
    no-op).  The world's unit is the unit of the first layer that has one
    (the reader gives a volume of known voxel size micrometres); a layer added
    later in pixels gets it too, since it is drawn in the same world.  The
    selected continuous map that a dock made shows its colour bar
    (:func:`show_colorbar`).
    """
    if viewer in _HOOKED:
        return

    def _apply(layer: Layer) -> None:
        unit = world_unit(viewer)
        if unit is not None and length_units(layer) is None:
            layer.units = (unit,) * layer.ndim
        if unit is not None:
            viewer.canvas.overlays.scale_bar.visible = True

    def _on_inserted(event: Any) -> None:
        layer = event.value
        layer.events.visible.connect(lambda _e: show_colorbar(viewer))
        _apply(layer)
        if length_units(layer):  # the first layer with units: the others follow it
            for other in viewer.layers:
                if other is not layer:
                    _apply(other)
        show_colorbar(viewer)

    _connect_before_canvas(viewer.layers.events.inserted, _on_inserted)
    viewer.layers.events.removed.connect(lambda _e: show_colorbar(viewer))
    viewer.layers.selection.events.active.connect(lambda _e: show_colorbar(viewer))
    _HOOKED.add(viewer)
    for layer in list(viewer.layers):
        layer.events.visible.connect(lambda _e: show_colorbar(viewer))
        _apply(layer)
    show_colorbar(viewer)


def channel_range(data: Any) -> tuple[float, float]:
    """Contrast for a feature channel: 0 to the 99.5th percentile of its first plane.

    A strided sample of about 256² values over the whole plane (not one corner).
    """
    plane = data[(0,) * (data.ndim - 2)]
    step = max(1, int(np.ceil(max(plane.shape) / 256)))
    sample = np.asarray(plane[::step, ::step], dtype=np.float64)
    finite = sample[np.isfinite(sample)]
    top = float(np.percentile(finite, 99.5)) if finite.size else 1.0
    return 0.0, max(top, 1e-6)
