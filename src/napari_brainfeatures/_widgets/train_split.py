"""The Train dock's split controls: by slice, by spatial blocks of one section, or from a layer.

"from a layer" reads a Labels layer (pixels 1 / 2 / 3 = train / val / test) or a
Shapes layer (its first, second and third shapes).  The chosen regions are drawn
in the viewer as a Labels layer ("split regions") on the section.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, SpinBox

from napari_brainfeatures._widgets.train_views import on_slice, slice_data
from napari_brainfeatures.train.regions import SplitMap, default_split, spatial_split
from napari_brainfeatures.train.splits import painted_slices

MODES = {"by slice": "slices", "spatial blocks": "blocks", "from a layer": "mask"}
SPLIT_LAYER = "split regions"
SPLIT_NAMES = ("train", "validation", "test")  # region ids 1, 2, 3
SPLIT_COLOURS = {1: "#4363d8", 2: "#f58231", 3: "#f032e6"}  # blue, orange, magenta
#: What the split layer's colours mean, for status lines and tooltips.
SPLIT_KEY = "split regions: blue train, orange validation, magenta test"


class SplitControls(Container):
    """Split choice, the layer of a drawn split, the guard band (0: one patch)."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.mode = ComboBox(label="split", choices=list(MODES), value="by slice")
        self.layer = ComboBox(label="split layer", choices=self._layers)
        self.guard = SpinBox(label="guard px (0: 1 patch)", value=0, min=0, max=100_000)
        super().__init__(widgets=[self.mode, self.layer, self.guard], labels=True)
        viewer.layers.events.inserted.connect(lambda *_: self.layer.reset_choices())
        viewer.layers.events.removed.connect(lambda *_: self.layer.reset_choices())

    def _layers(self, *_: Any) -> list[Any]:
        return [
            (ly.name, ly)
            for ly in self.viewer.layers
            if isinstance(ly, napari.layers.Shapes | napari.layers.Labels)
            and ly.name != SPLIT_LAYER
        ]

    @property
    def by_region(self) -> bool:
        return MODES[self.mode.value] != "slices"

    def default_for(self, labels: Any, n_z: int) -> str:
        """Pick spatial blocks for a volume painted on one slice; the reason ("" otherwise)."""
        mode, why = default_split(painted_slices(labels), n_z)
        self.mode.value = "spatial blocks" if mode == "blocks" else "by slice"
        return why

    def split_map(
        self, image: Any, labels: Any, *, patch_size: int, z: int, centres: Any = None
    ) -> SplitMap:
        """The regions of slice ``z`` of the ``image`` layer (raises ValueError with the fix).

        ``centres``: where a patch may be centred (``plan.split_centres``: with
        enough tissue in the window); blocks are given to splits by the paint there.
        """
        lab = np.asarray(labels[z] if labels.ndim == 3 else labels)
        mask = None
        if MODES[self.mode.value] == "mask":
            mask = self._drawn(image, lab.shape, z)
        guard = self.guard.value or None
        mode = MODES[self.mode.value]
        return spatial_split(
            lab, patch_size=patch_size, mode=mode, mask=mask, guard=guard, z=z, centres=centres
        )

    def _drawn(self, image: Any, shape: tuple[int, int], z: int) -> np.ndarray:
        layer = self.layer.value
        if layer is None:
            raise ValueError("choose a split layer: Labels 1/2/3 = train/val/test, or 3 shapes")
        if isinstance(layer, napari.layers.Labels):
            data = np.asarray(layer.data[z] if layer.data.ndim == 3 else layer.data)
            return data
        from skimage.draw import polygon

        if len(layer.data) != 3:
            raise ValueError(
                f"the Shapes layer {layer.name!r} has {len(layer.data)} shapes; draw exactly 3 "
                "(first = train, second = validation, third = test)"
            )
        mask = np.zeros(shape, np.uint8)
        for i, verts in enumerate(layer.data):
            yx = np.array([image.world_to_data(layer.data_to_world(v)) for v in verts])[:, -2:]
            rr, cc = polygon(yx[:, 0], yx[:, 1], shape)
            mask[rr, cc] = i + 1
        return mask


def show_split(viewer: napari.viewer.Viewer, image: Any, sm: SplitMap) -> None:
    """The regions as a Labels layer on slice ``sm.z`` (1 train, 2 val, 3 test)."""
    from napari.utils.colormaps import DirectLabelColormap

    if SPLIT_LAYER in viewer.layers:
        viewer.layers.remove(SPLIT_LAYER)
    colours = {None: "transparent", 0: "transparent", **SPLIT_COLOURS}
    viewer.add_labels(
        slice_data(image, sm.regions), name=SPLIT_LAYER, opacity=0.3,
        colormap=DirectLabelColormap(color_dict=colours),
        features={"index": [0, 1, 2, 3], "split": ["", *SPLIT_NAMES]},  # shown on hover
        **on_slice(image, sm.z),
    )  # fmt: skip
