"""The tissue mask in the viewer: computed by the Annotate dock, used by the Factors dock.

:func:`show_tissue` computes :func:`~napari_brainfeatures.tissue.tissue_mask` for the
current slice of a volume or for a single section added as a 2-D image, into the
workspace's ``tissue.zarr``, which the Labels layer shows and every brush stroke
edits on disk (a section's layer is 2-D: :class:`~.section.SectionArray`).
:class:`TissueControls` are the Factors dock's two controls: the tissue layer and
the least fraction of a patch window in tissue.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox
from napari.layers import Image, Labels

from napari_brainfeatures._widgets._common import current_z, labels_choices
from napari_brainfeatures._widgets.section import SectionArray
from napari_brainfeatures.tissue import (
    MIN_CONTEXT,
    edited_slices,
    tissue_mask,
    write_tissue_slice,
)
from napari_brainfeatures.workspace import Workspace

TISSUE_KEY = "brainfeatures_tissue"  # layer metadata: this Labels layer is a tissue mask


def show_tissue(
    viewer: napari.Viewer, image: Image, ws: Workspace, *, compute: bool = True
) -> tuple[Labels, str]:
    """Compute the tissue mask of the current slice (or 2-D image) into ``ws``; show it.

    ``compute=False`` only shows the mask the workspace holds (a later session's
    view of it, hand corrections included).  Returns the layer and a sentence for
    the status line.
    """
    data = image.data[0] if image.multiscale else image.data
    flat = image.ndim == 2  # a single section added as a 2-D image: a 2-D layer
    z = current_z(viewer, image)  # 0 for a 2-D image
    name = f"{image.name} tissue"
    meta = {TISSUE_KEY: True, "brainfeatures_workspace": str(ws.root)}
    layer = next(
        (ly for ly in viewer.layers if isinstance(ly, Labels) and ly.metadata.get(TISSUE_KEY)),
        None,
    )
    if layer is not None and layer.name != name:
        layer = None  # another image's mask
    same = layer is not None and layer.metadata.get("brainfeatures_workspace") == str(ws.root)
    mask = layer.data if same else ws.tissue()  # the store: painting edits it on disk
    if flat and not isinstance(mask, SectionArray):
        mask = SectionArray(mask)
    where = ("" if flat else f"slice z={z}, ") + f"saved in {ws.root.name}/tissue.zarr"
    if compute:
        computed = tissue_mask(np.asarray(data if flat else data[z]))
        write_tissue_slice(mask.volume if flat else mask, z, computed)  # recorded as computed
        text = f"Tissue mask: {float(np.mean(computed > 0)):.0%} tissue ({where})"
    else:
        text = f"Tissue mask as saved ({where})"
    if layer is not None and layer.data is mask:
        layer.refresh()
    else:
        if layer is not None:
            viewer.layers.remove(layer)
        layer = viewer.add_labels(
            mask,
            name=name,
            scale=image.scale,
            translate=image.translate,
            units=image.units,
            metadata=meta,
        )
        layer.opacity = 0.3
    return layer, f"{text}; to correct it, select its layer and paint 1 (tissue) or 0."


def corrected_slice(viewer: napari.Viewer, image: Image, ws: Workspace) -> int | None:
    """The current slice's z when the workspace's tissue mask there holds hand corrections."""
    if not ws.tissue_path.exists():
        return None
    z = current_z(viewer, image)
    return z if edited_slices(ws.tissue(mode="r"), [z]) else None


def has_saved_tissue(ws: Workspace) -> bool:
    """Whether the workspace holds a tissue mask with at least one slice written."""
    if not ws.tissue_path.exists():
        return False
    store = ws.tissue(mode="r")
    return bool(getattr(store, "nchunks_initialized", 1))


class TissueControls(Container):
    """The tissue layer and the least share of a patch in tissue (Factors dock)."""

    def __init__(
        self, viewer: napari.Viewer, *, least: float = MIN_CONTEXT, tooltip: str | None = None
    ) -> None:
        none = [("(none)", None)]
        self.layer = ComboBox(
            label="tissue mask", choices=lambda w: none + labels_choices(viewer)(w)
        )
        self.min_context = FloatSpinBox(
            label="patch in tissue ≥",
            min=0.0,
            max=1.0,
            step=0.05,
            value=least,
            tooltip=tooltip
            or (
                "With a tissue mask, NMF, factor selection and clustering use only pixels "
                "whose patch window has at least this share in tissue (1: the whole patch), "
                "so cut faces and the pial surface get no factor or cluster of their own. "
                "0: every pixel in tissue."
            ),
        )
        super().__init__(widgets=[self.layer, self.min_context])
        self.margins = (0, 0, 0, 0)
        viewer.layers.events.inserted.connect(self._pick)
        self._pick()

    def _pick(self, *_: Any) -> None:
        """Choose a tissue-mask layer (one the Annotate dock made) when none is chosen."""
        self.layer.reset_choices()
        if self.layer.value is None:
            found = [
                ly for ly in self.layer.choices if ly is not None and ly.metadata.get(TISSUE_KEY)
            ]
            if found:
                self.layer.value = found[-1]

    def values(self) -> dict[str, Any]:
        """``tissue`` (the layer's data or None) and ``min_context``, for ``factorise``."""
        ly = self.layer.value
        data = None if ly is None else ly.data
        if isinstance(data, SectionArray):  # a single section's mask: read it as it is now
            data = np.asarray(data)
        return {
            "tissue": data,
            "min_context": float(self.min_context.value),
        }
