"""Dock widget: explore a slice's feature space linked to the image, and correct it live.

**Plot** opens a feature store or a factors result (:func:`~..explore.sources.open_sources`)
and shows a density of two NMF factors or two principal components (fitted on a
sample, applied to every pixel; :mod:`~..explore.density`), coloured by density,
predicted area, a cluster layer or a factor.  A lasso or rectangle drawn on it
becomes the "explore selection" Labels layer; **Highlight in plot** does the reverse
for a Shapes or Labels layer; **Keep as class** writes the selection into the user's
labels as a new class (painted pixels stay).  Hovering over the image shows the
pixel's area and confidence, top factors and cluster (:class:`~..explore.readout.Readout`).
**Factor × label** and **cluster × label** tables profile the slice; the live
classifier panel is :class:`~.explore_live.LivePanel`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    LineEdit,
    PushButton,
    SpinBox,
    Table,
)
from napari.layers import Image, Labels, Shapes
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning

from napari_brainfeatures._widgets._common import (
    class_names,
    follow_edits,
    image_choices,
    image_shape,
    insert_after,
    labels_choices,
    plain_numbers,
    put_layer,
    refresh_choices_on_layer_change,
    scroll_body,
    status_label,
)
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.explore_live import LivePanel
from napari_brainfeatures._widgets.explore_match import MatchPanel
from napari_brainfeatures._widgets.explore_plot import TOOLS, DensityPlot
from napari_brainfeatures.classes import ClassTable, default_table
from napari_brainfeatures.explore import density as dens_mod
from napari_brainfeatures.explore.embed import umap_points
from napari_brainfeatures.explore.profiles import factor_profile
from napari_brainfeatures.explore.readout import Readout
from napari_brainfeatures.explore.selection import (
    bins_mask,
    keep_as_class,
    mask_bins,
    polygon_bins,
    rectangle_bins,
)
from napari_brainfeatures.explore.sources import Sources, open_sources
from napari_brainfeatures.factors.scores import layer_profile
from napari_brainfeatures.progress import Progress, ProgressGen

AXES = ("NMF factors", "PCA", "UMAP")  # UMAP: two axes, x and y indices unused
COLOURS = ("density", "predicted area", "cluster layer", "factor")
# the selection in the image in the plot's highlight colour
_CYAN = {"colormap": DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 1: (0, 1, 1, 1)})}
SELECTION = "explore selection"


def on_grid(layer: Any, grid: Any) -> np.ndarray:
    """A Labels (or Shapes) layer as a label map on the grid ``(H', W')``.

    A layer already on the grid (the Factors dock's cluster map) is taken as it is;
    one on the image is read at the grid's pixels.
    """
    if isinstance(layer, Shapes):
        plane = grid.image_shape[-2:] if grid.image_shape else None
        if plane is None:
            raise ValueError("the slice does not know its image's shape; use a Labels layer")
        data = layer.to_labels(labels_shape=tuple(plane))
    else:
        data = layer.data
    if tuple(data.shape[-2:]) == grid.shape:  # a volume of grid maps: the grid's slice
        z = grid.z if data.ndim == 3 and data.shape[0] > 1 and grid.z is not None else 0
        return np.asarray(data[z] if data.ndim == 3 else data)
    return grid.labels_on(data, what=f"the layer {layer.name!r}")


class ExploreWidget(Container):
    """A density plot of the feature space linked to the image, readouts, profiles, live classes."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        none = [("(none)", None)]
        labels_or_none = lambda w: none + labels_choices(viewer)(w)  # noqa: E731
        self.source_path = FileEdit(label="store or factors", mode="d")
        self.z = SpinBox(label="store z index", min=0, max=100_000, value=0)
        self.image = ComboBox(label="image", choices=lambda w: none + image_choices(viewer)(w))
        self.method = ComboBox(label="axes", choices=list(AXES), value=AXES[0])
        self.x = SpinBox(label="x axis (index)", min=0, max=63, value=0)
        self.y = SpinBox(label="y axis (index)", min=0, max=63, value=1)
        self.bins = SpinBox(label="bins", min=16, max=1024, value=256)
        self.colour = ComboBox(label="colour by", choices=list(COLOURS), value="density")
        self.factor = SpinBox(label="factor", min=0, max=63, value=0)
        self.clusters = ComboBox(label="cluster layer", choices=labels_or_none)
        self.plot_button = PushButton(text="Plot")
        self.tool = ComboBox(label="select with", choices=list(TOOLS), value="lasso")
        self.from_layer = ComboBox(label="from layer", choices=self._region_layers)
        self.highlight_button = PushButton(text="Highlight in plot")
        self.target_labels = ComboBox(label="add to labels", choices=labels_or_none)
        self.class_name = LineEdit(label="new class", value="selection")
        self.keep_button = PushButton(text="Keep selection as class")
        self.readout_on = CheckBox(text="readout under the cursor", value=True)
        self.readout_text = status_label("", lines=1)
        self.profile_labels = ComboBox(label="areas / layers", choices=labels_or_none)
        self.profile_button = PushButton(text="Factor × label table")
        self.cluster_button = PushButton(text="Cluster × label table")
        self.table = plain_numbers(Table())
        self.status = status_label("Pick a feature store or a factors result, then Plot.")
        self.runner = TaskRunner()
        self.within = ComboBox(label="live: within area", choices=self._area_choices)
        self.live = LivePanel(viewer, lambda: (self.grid, self.image.value, self._within()))
        self.match = MatchPanel(
            viewer,
            lambda: (self.grid, self.clusters.value, self.profile_labels.value),
            on_grid,
            self._put_table,
        )
        super().__init__(widgets=[
            self.source_path, self.z, self.image, self.method, self.x, self.y, self.bins,
            self.colour, self.factor, self.clusters, self.plot_button, self.tool,
            self.from_layer, self.highlight_button, self.target_labels, self.class_name,
            self.keep_button, self.readout_on, self.readout_text, self.profile_labels,
            self.profile_button, self.cluster_button, self.match, self.table, self.status,
            self.runner,
            self.within, self.live,
        ])  # fmt: skip
        self.plot = DensityPlot(self._selected)
        insert_after(self, self.tool, self.plot)
        scroll_body(self, {self.plot: 340, self.table.native: 140})
        refresh_choices_on_layer_change(
            viewer,
            self.image,
            self.clusters,
            self.from_layer,
            self.target_labels,
            self.profile_labels,
        )
        self.plot_button.changed.connect(self.run_plot)
        self.method.changed.connect(lambda m: setattr(self.x, "enabled", m != "UMAP"))
        self.method.changed.connect(lambda m: setattr(self.y, "enabled", m != "UMAP"))
        self.tool.changed.connect(lambda t: self.plot.set_tool(str(t)))
        self.highlight_button.changed.connect(self.highlight)
        follow_edits(self.from_layer, self._follow)  # drawing in the image highlights at once
        self.keep_button.changed.connect(self.keep)
        self.profile_button.changed.connect(self.factor_table)
        self.cluster_button.changed.connect(self.cluster_table)
        self.sources: Sources | None = None
        self.density: dens_mod.Density | None = None
        self.readout: Readout | None = None
        self.selected: np.ndarray | None = None  # bool (H', W'): grid pixels of the selected points
        self.timings_ms: dict[str, list[float]] = {"select": [], "highlight": [], "readout": []}
        viewer.mouse_move_callbacks.append(self._hover)
        self.native.destroyed.connect(lambda *_: self._unhook())

    def _region_layers(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(ly.name, ly) for ly in self.viewer.layers if isinstance(ly, Shapes | Labels)]

    def _area_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        ro = getattr(self, "readout", None)
        if ro is None or ro.areas is None or ro.classes is None:
            return [("(anywhere)", None)]
        return [("(anywhere)", None)] + [(c.name, c.id) for c in ro.classes]

    def _within(self) -> np.ndarray | None:
        aid = self.within.value
        if aid is None or self.readout is None or self.readout.areas is None:
            return None
        return self.readout.areas == aid

    @property
    def grid(self) -> Any:
        """The explored slice's grid (with features when its store is at hand)."""
        return None if self.sources is None else self.sources.grid

    def _unhook(self) -> None:
        if self._hover in self.viewer.mouse_move_callbacks:
            self.viewer.mouse_move_callbacks.remove(self._hover)

    def _put(self, name: str, data: np.ndarray, kind: str, **kwargs: Any) -> Any:
        img = self.image.value
        geo = self.grid.layer_kwargs(
            None if img is None else img.scale, None if img is None else img.translate
        )
        if len(geo["scale"]) == 3:
            data = data[None]
        return put_layer(self.viewer, name, data, kind, owner="explore", **geo, **kwargs)

    # -- plotting ----------------------------------------------------------------------------
    def run_plot(self, *_: Any) -> None:
        """Open the source and bin its points in a worker; show the plot."""
        path = str(self.source_path.value)
        if path in ("", ".") or not Path(path).exists():
            show_error("Explore: pick a feature store or a factors result (a .zarr folder).")
            return
        z, pair = int(self.z.value), (int(self.x.value), int(self.y.value))
        method, bins, colour = str(self.method.value), int(self.bins.value), str(self.colour.value)
        if pair[0] == pair[1] and method != "UMAP":
            show_error(f"Explore: x and y are both axis {pair[0]}; pick two different axes.")
            return
        self.status.value = "plotting… (progress below)"  # not the last plot's line
        factor = int(self.factor.value)
        clusters_layer = self.clusters.value

        def job() -> ProgressGen[tuple[Any, ...]]:
            yield Progress(0, 3, "opening")
            src = open_sources(path, None if _is_factors(path) else z)
            yield Progress(1, 3, f"{method}: every pixel")
            if method == "NMF factors":
                if src.factors is None:
                    raise ValueError(
                        f"{path!r} is a feature store: choose axes = PCA, or open factors"
                    )
                pts = dens_mod.factor_points(src.factors, pair)
            elif src.grid.features is None:
                raise ValueError(src.note or "no features to project")
            elif method == "UMAP":  # fitted on a sample, every pixel placed by its neighbours
                pts, _ = umap_points(src.grid)
            else:
                pts, _ = dens_mod.pca_points(src.grid, pair)
            dens = dens_mod.density(pts, bins=bins)
            yield Progress(2, 3, "readouts and colours")
            maps = None if src.factors is None else np.asarray(src.factors.maps)
            clusters = None if clusters_layer is None else on_grid(clusters_layer, src.grid)
            if src.store is not None:
                ro = Readout.of_store(src.store, src.grid.index, maps=maps, clusters=clusters)
            else:
                ro = Readout(src.grid, maps=maps, clusters=clusters)
            return src, dens, ro, _colour(dens, ro, colour, factor)

        self.runner.start(job(), name="Explore plot", on_done=self._plotted)

    def _place(self) -> None:
        """Maps go on the features' own image: picked when none is chosen, else checked."""
        want = tuple(self.grid.image_shape or ())[-2:]
        if not want:
            return
        img = self.image.value
        if img is None:
            fits = [ly for ly in self.viewer.layers if isinstance(ly, Image) and not ly.rgb
                    and image_shape(ly)[-2:] == want]  # fmt: skip
            if fits:
                self.image.value = fits[0]
        elif image_shape(img)[-2:] != want:
            show_warning(
                f"Explore: the features were computed on an image of {want[0]}x{want[1]} px, "
                f"not on {img.name!r} ({image_shape(img)[-2]}x{image_shape(img)[-1]} px); "
                "choose the image they belong to, or the maps land in the wrong place"
            )

    def _plotted(self, out: tuple[Any, ...]) -> None:
        self.sources, self.density, self.readout, (colour, kind) = out
        self.selected = None
        self._place()
        self.within.reset_choices()
        classes = self.readout.classes if self.colour.value == "predicted area" else None
        key = {c.id: (c.name, c.colour) for c in classes} if classes is not None else None
        self.plot.show(self.density, colour, kind=kind, key=key)
        empty = np.zeros(self.grid.shape, np.uint8)  # the selection's layer now, not at a lasso
        self._put(SELECTION, empty, "labels", opacity=0.6, in_place=True, **_CYAN)
        self.status.value = f"{len(self.density.points):,} points" + (
            f"\n{self.sources.note}" if self.sources.note else ""
        )
        if self.sources.note:
            show_warning(f"Explore: {self.sources.note}")

    # -- selections --------------------------------------------------------------------------
    def _selected(self, how: str, shape: Any) -> None:
        """A lasso or rectangle was drawn: its pixels become the selection layer."""
        if self.density is None:
            return
        t0 = time.perf_counter()
        dens = self.density
        chosen = polygon_bins(dens, shape) if how == "lasso" else rectangle_bins(dens, *shape)
        chosen &= dens.counts > 0
        self.selected = bins_mask(dens, chosen)
        mask = self.selected.astype(np.uint8)  # the layer's own array: painting it is harmless
        self._put(SELECTION, mask, "labels", opacity=0.6, in_place=True, **_CYAN)
        self.plot.highlight(chosen)
        self.timings_ms["select"].append((time.perf_counter() - t0) * 1e3)
        n = int(dens.counts[chosen].sum())
        self.status.value = f"selected {n:,} of {len(dens.points):,} points"

    def highlight(self, *_: Any, quiet: bool = False) -> None:
        """Highlight in the plot the points of the chosen Shapes or Labels layer."""
        layer = self.from_layer.value
        if self.density is None or layer is None:
            show_error("Explore: plot first, and pick a Shapes or Labels layer to highlight.")
            return
        t0 = time.perf_counter()
        try:
            region = on_grid(layer, self.grid) != 0
            counts = mask_bins(self.density, region)
        except ValueError as err:
            if quiet:  # an edit followed as it happens: the status line says it
                self.status.value = f"{layer.name}: {err}"
            else:
                show_error(f"Explore: {err}")
            return
        self.selected = region & (self.density.grid_bins < self.density.counts.size)
        self.plot.highlight(counts)
        self.timings_ms["highlight"].append((time.perf_counter() - t0) * 1e3)
        self.status.value = f"{layer.name}: {int(counts.sum()):,} points highlighted"

    def _follow(self) -> None:
        if self.density is not None and self.from_layer.value is not None:
            self.highlight(quiet=True)

    def keep(self, *_: Any) -> None:
        """Write the selection into the chosen labels as a new class (painted pixels stay)."""
        layer, name = self.target_labels.value, str(self.class_name.value)
        if self.selected is None or self.density is None or layer is None or layer.ndim > 3:
            show_error("Explore: select points first, and pick the Labels layer to add them to.")
            return
        data = layer.data
        z = (self.grid.z if data.shape[0] > 1 else 0) if data.ndim == 3 else None
        plane = np.array(data[z] if z is not None else data)
        raw = layer.metadata.get("classes")
        table = ClassTable.from_dict(raw) if isinstance(raw, dict) else default_table()
        try:
            mask = self.grid.place(self.selected, shape=plane.shape)
            table, cid, written, kept = keep_as_class(plane, mask, table, name)
        except ValueError as err:
            show_error(f"Explore: {err}")
            return
        if z is not None:
            data[z] = plane
        else:
            data[...] = plane
        layer.metadata["classes"] = table.to_dict()
        layer.refresh()
        _save_classes(layer, table)
        text = f"class {cid} {name!r}: {written:,} pixels added"
        if kept:
            text += f"; {kept:,} painted pixels kept their class"
            show_info(f"Explore: {text}")
        self.status.value = text

    # -- readouts and profiles ------------------------------------------------------------------
    def _hover(self, viewer: Any, event: Any) -> None:
        if self.readout is None or not self.readout_on.value:
            return
        t0 = time.perf_counter()
        img = self.image.value
        pos = img.world_to_data(event.position) if img is not None else event.position
        text = self.readout.text(float(pos[-2]), float(pos[-1]))
        if text != self.readout_text.value:
            self.readout_text.value = text
        self.timings_ms["readout"].append((time.perf_counter() - t0) * 1e3)

    def factor_table(self, *_: Any) -> None:
        """Mean NMF coefficient per factor (rows) and label (columns)."""
        src, layer = self.sources, self.profile_labels.value
        if src is None or src.factors is None or layer is None:
            show_error(
                "Explore: plot NMF factors first and pick a labels layer of areas or layers."
            )
            return
        try:
            prof = factor_profile(np.asarray(src.factors.maps), on_grid(layer, src.grid))
        except ValueError as err:
            show_error(f"Explore: {err}")
            return
        self._table(prof.mean, [f"F{i}" for i in range(prof.mean.shape[0])], prof.label_ids, layer)
        self.status.value = "mean coefficient of each factor per label"

    def cluster_table(self, *_: Any) -> None:
        """P(label | cluster): each cluster as a distribution over labels."""
        src, layer, cl = self.sources, self.profile_labels.value, self.clusters.value
        if src is None or layer is None or cl is None:
            show_error("Explore: plot first; pick a cluster layer and a labels layer.")
            return
        try:
            prof = layer_profile(on_grid(cl, src.grid), on_grid(layer, src.grid))
        except ValueError as err:
            show_error(f"Explore: {err}")
            return
        rows = [f"cluster {c}" for c in prof.cluster_ids]
        self._table(prof.matrix, rows, prof.layer_ids, layer)
        self.status.value = "share of each cluster's pixels per label"

    def _table(self, values: np.ndarray, rows: list[str], ids: list[int], layer: Any) -> None:
        names = class_names(layer)
        data = [[f"{v:.3g}" for v in row] for row in values]
        self._put_table(data, rows, [names.get(i, str(i)) for i in ids])

    def _put_table(self, data: list[list[str]], rows: list[str], columns: list[str]) -> None:
        self.table.value = {"data": data, "index": rows, "columns": columns}
        self.table.native.resizeColumnsToContents()


def _is_factors(path: str) -> bool:
    from napari_brainfeatures.factors.results import is_factors

    return is_factors(path)


def _colour(dens: Any, ro: Readout, how: str, factor: int) -> tuple[np.ndarray | None, str]:
    """The plot's colour per bin: None (density), ids ("labels") or values."""
    pts = dens.points
    if how == "predicted area":
        if ro.areas is None:
            raise ValueError("the store holds no predicted areas (or is gone); colour by density")
        return dens.majority_of(pts.of_grid(ro.areas)), "labels"
    if how == "cluster layer":
        if ro.clusters is None:
            raise ValueError("pick a cluster layer (the Factors dock's clusters) to colour by")
        return dens.majority_of(pts.of_grid(ro.clusters)), "labels"
    if how == "factor":
        if ro.maps is None or not 0 <= factor < ro.maps.shape[0]:
            raise ValueError(f"no factor {factor}: open a factors result with more factors")
        return dens.mean_of(pts.of_grid(ro.maps[factor])), "values"
    return None, ""


def _save_classes(layer: Any, table: ClassTable) -> None:
    """The new class table into the labels' workspace, when they have one."""
    root = layer.metadata.get("brainfeatures_workspace")
    if not root:
        return
    from napari_brainfeatures.workspace import Workspace, WorkspaceError

    try:
        Workspace.open(root).save_classes(table)
    except (OSError, WorkspaceError) as err:
        show_warning(f"Explore: the class was added to the layer but not to the workspace: {err}")
