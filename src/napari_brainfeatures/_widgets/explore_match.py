"""The Explore dock's cross-slice match: the explored slice's clusters against another slice's.

Each slice's clusters are profiled as distributions over the labels (areas or
layers) and paired by Jensen–Shannon distance (:func:`~..explore.profiles.match_slices`,
the comparison paper 002 used to follow cell-density clusters across sections).
The explored slice's clusters and labels are the dock's "cluster layer" and
"areas / layers"; the other slice's are picked here (the same layers by default),
read at "other z" where they are volumes.  The result fills the dock's table:
one row per cluster of this slice, its match on the other, the distance, and the
label each is mostly made of.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, PushButton, SpinBox
from napari.utils.notifications import show_error

from napari_brainfeatures._widgets._common import (
    class_names,
    labels_choices,
    refresh_choices_on_layer_change,
)
from napari_brainfeatures.explore.profiles import match_slices

SAME = "(same as above)"


class MatchPanel(Container):
    """Other slice's cluster layer, labels layer and z; a button; results to ``show``.

    ``source`` returns the explored grid (or None), this slice's cluster layer and its
    labels layer; ``on_grid(layer, grid)`` reads a layer on a grid; ``show(values,
    rows, columns)`` puts a table in the dock.
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        source: Callable[[], tuple[Any, Any, Any]],
        on_grid: Callable[[Any, Any], np.ndarray],
        show: Callable[[list[list[str]], list[str], list[str]], None],
    ) -> None:
        same = [(SAME, None)]
        self.source, self.on_grid, self.show = source, on_grid, show
        self.other_clusters = ComboBox(
            label="other clusters", choices=lambda w: same + labels_choices(viewer)(w)
        )
        self.other_labels = ComboBox(
            label="other labels", choices=lambda w: same + labels_choices(viewer)(w)
        )
        self.other_z = SpinBox(
            label="other z", min=0, max=100_000, value=0,
            tooltip="The other slice's index in the layers that are volumes.",
        )  # fmt: skip
        self.button = PushButton(text="Match clusters across slices")
        super().__init__(
            widgets=[self.other_clusters, self.other_labels, self.other_z, self.button]
        )
        self.margins = (0, 0, 0, 0)
        refresh_choices_on_layer_change(viewer, self.other_clusters, self.other_labels)
        self.button.changed.connect(self.match)
        self.result: dict[str, Any] | None = None

    def match(self, *_: Any) -> None:
        """Profile both slices' clusters over their labels; pair them by JS distance."""
        grid, clusters, labels = self.source()
        if grid is None or clusters is None or labels is None:
            show_error(
                "Explore: plot first, and pick a cluster layer and an areas / layers labels "
                "layer (this slice's); then the other slice's layers here."
            )
            return
        other_c = self.other_clusters.value or clusters
        other_l = self.other_labels.value or labels
        z = int(self.other_z.value)
        if other_c is clusters and other_l is labels and not _volume(clusters):
            show_error(
                f"Explore: {clusters.name!r} holds one slice; pick the other slice's cluster "
                "layer (e.g. the Factors dock's clusters of another z) to match against."
            )
            return
        other = dataclasses.replace(grid, z=z)
        try:
            res = match_slices(
                self.on_grid(clusters, grid), self.on_grid(labels, grid),
                self.on_grid(other_c, other), self.on_grid(other_l, other),
            )  # fmt: skip
        except ValueError as err:
            show_error(f"Explore: {err}")
            return
        self.result = res
        names = class_names(labels) | class_names(other_l)
        pa, pb = res["profile_a"], res["profile_b"]
        top_a = _top(pa, names)
        top_b = _top(pb, names)
        rows, data = [], []
        for ca, cb, dist in sorted(res["pairs"]):
            rows.append(f"cluster {ca}")
            data.append([f"{cb}", f"{dist:.3f}", top_a[ca], top_b[cb]])
        here = "this slice" if grid.z is None else f"z {grid.z}"
        columns = [f"match (z {z})", "JS distance", f"mostly ({here})", f"mostly (z {z})"]
        self.show(data, rows, columns)


def _volume(layer: Any) -> bool:
    """Whether ``layer`` holds several slices."""
    data = layer.data
    return getattr(data, "ndim", 2) == 3 and data.shape[0] > 1


def _top(profile: Any, names: dict[int, str]) -> dict[int, str]:
    """Each cluster's largest label and its share, as text."""
    out = {}
    for c, row in zip(profile.cluster_ids, profile.matrix, strict=True):
        j = int(np.argmax(row))
        lid = profile.layer_ids[j]
        out[c] = f"{names.get(lid, str(lid))} {row[j]:.0%}"
    return out
