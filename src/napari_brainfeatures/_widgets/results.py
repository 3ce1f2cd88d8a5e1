"""Dock widget: what the image's workspace holds, each one click from being a layer or a table.

The list is :func:`napari_brainfeatures.workspace.inventory` of the chosen image's
workspace (models, feature stores with how many tiles are done, factor and cluster
results, evaluations, reports, latent results), so reopening a volume restores it;
results the docks keep appear as they are written.  **Open** shows the selected
entry: maps as layers placed as they were shown (scale, translate, label colours),
its table and figure below the list; a model goes into an open Train dock, a feature
store into an open Factors dock.  **Export** writes the selected result as OME-Zarr,
TIFF, CSV or PNG/SVG (:func:`napari_brainfeatures.results.export.export_result`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton, Table
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import QAbstractItemView, QLabel, QSizePolicy

from napari_brainfeatures._widgets import results_keep
from napari_brainfeatures._widgets._common import (
    OWNER_KEY,
    image_choices,
    insert_after,
    plain_numbers,
    refresh_choices_on_layer_change,
    say_file,
    scroll_body,
    status_label,
    workspace_root,
)
from napari_brainfeatures._widgets._display import channel_range, unit_kwargs
from napari_brainfeatures._widgets.factors_views import one_at_a_time
from napari_brainfeatures._widgets.train_views import score_row
from napari_brainfeatures.explore.live import KIND as LIVE_KIND
from napari_brainfeatures.factors.results import is_factors
from napari_brainfeatures.results.export import FORMATS, export_result
from napari_brainfeatures.results.maps import MapLayer, open_map_layer
from napari_brainfeatures.results.tables import read_table
from napari_brainfeatures.workspace import Entry, inventory

OWNER = "results"
PREVIEW_PX = 320  # width of the figure preview
# the table shown first for each kind of result (the others: Export as CSV)
FIRST_TABLE = {
    "evaluation": "per_class.csv",
    "report": "metrics.csv",
    "factors": "selection.csv",
    "clusters": "cluster_sizes.csv",
    "latent": "comparison.csv",
}


HEATMAP_KEY = "brainfeatures_result_heatmap"  # layer metadata: one of a result's channel maps


def _details(e: Entry) -> str:
    if e.kind == "features":
        done = f"{e.tiles[0]}/{e.tiles[1]} tiles" if e.tiles else ""
        return ("complete " if e.complete else "INCOMPLETE ") + done
    if e.kind == "model":
        meta = e.provenance.get("meta") or {}
        acc = (meta.get("training") or {}).get("best_val_acc")
        return f"{e.provenance.get('kind', '')} " + (f"val acc {acc:.1%}" if acc else "")
    files = e.provenance.get("files")
    if isinstance(files, list):
        return ", ".join(f for f in files if not f.endswith(".svg"))
    if "accuracy" in e.provenance:
        return f"accuracy {float(e.provenance['accuracy']):.1%}"
    return ""


def _fill(table: Table, columns: list[str], rows: list[list[Any]]) -> None:
    """Rows under ``columns``, numbered from 1 (magicgui needs an index to take the columns)."""
    index = [str(i + 1) for i in range(len(rows))]
    table.value = {"data": rows, "index": index, "columns": columns}
    table.native.resizeColumnsToContents()


def find_dock(viewer: napari.viewer.Viewer, kind: type) -> Any:
    """The open dock widget of class ``kind`` in the viewer's window, or None."""
    for widget in list(viewer.window.dock_widgets.values()):
        for w in (widget, getattr(getattr(widget, "native", widget), "_magic_widget", None)):
            if isinstance(w, kind):
                return w
    return None


class ResultsWidget(Container):
    """Browse an image's workspace; open or export what it holds."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image = ComboBox(label="workspace of", choices=image_choices(viewer))
        self.refresh_button = PushButton(text="Refresh")
        self.table = plain_numbers(Table())
        self.open_button = PushButton(text="Open")
        self.format = ComboBox(label="format", choices=["all", *FORMATS], value="all")
        self.export_dir = FileEdit(label="export to", mode="d")
        self.export_button = PushButton(text="Export…")
        self.status = status_label("Pick an image: its workspace's models and results are listed.")
        self.preview = plain_numbers(Table())
        buttons = Container(widgets=[self.refresh_button, self.open_button], layout="horizontal")
        super().__init__(widgets=[
            self.image, self.table, buttons, self.format, self.export_dir, self.export_button,
            self.status, self.preview,
        ])  # fmt: skip
        policy = QSizePolicy.Policy
        self.status.native.setSizePolicy(policy.Expanding, policy.Preferred)  # full width
        self.figure = QLabel()
        self.figure.setAlignment(Qt.AlignmentFlag.AlignCenter)
        insert_after(self, self.preview, self.figure)
        scroll_body(self, {self.table.native: 200, self.preview.native: 120})
        view = self.table.native
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        view.cellDoubleClicked.connect(lambda row, _col: self.open(row))
        self.entries: list[Entry] = []
        refresh_choices_on_layer_change(viewer, self.image)
        self.image.changed.connect(self.refresh)
        self.refresh_button.changed.connect(self.refresh)
        self.open_button.changed.connect(lambda *_: self.open())
        self.export_button.changed.connect(lambda *_: self.export())
        results_keep.LISTENERS.append(self._kept)
        self.native.destroyed.connect(lambda *_: self._forget())
        self.refresh()

    def _forget(self) -> None:
        if self._kept in results_keep.LISTENERS:
            results_keep.LISTENERS.remove(self._kept)

    def _kept(self, path: Path) -> None:
        root = self.root
        if root is not None and root in path.parents:
            self.refresh()

    @property
    def root(self) -> Path | None:
        """The chosen image's workspace folder (None without an image)."""
        img = self.image.value
        return None if img is None else workspace_root(img)

    # -- the list ---------------------------------------------------------------------------
    def refresh(self, *_: Any) -> None:
        """List what the workspace holds, newest results last."""
        root = self.root
        self.entries = inventory(root) if root is not None and root.is_dir() else []
        rows = [
            [e.kind, e.name, e.created.replace("T", " ")[:19], _details(e)] for e in self.entries
        ]
        _fill(self.table, ["kind", "name", "created", "holds"], rows)
        if root is None:
            self.status.value = "Pick an image: its workspace's models and results are listed."
        elif not self.entries:
            say_file(self.status, "nothing kept yet in {}", root)
        else:
            say_file(self.status, f"{len(self.entries)} entries in {{}}", root)

    def selected(self) -> Entry | None:
        """The entry of the selected row (None when no row is selected)."""
        rows = {i.row() for i in self.table.native.selectedIndexes()}
        return self.entries[min(rows)] if rows and min(rows) < len(self.entries) else None

    def select(self, path: Path) -> None:
        """Select the row of the entry at ``path``."""
        for i, e in enumerate(self.entries):
            if e.path == Path(path):
                self.table.native.selectRow(i)
                return
        raise ValueError(f"{str(path)!r} is not listed; refresh, or choose its image")

    # -- open ---------------------------------------------------------------------------------
    def open(self, row: int | None = None) -> None:
        """Show the selected entry (or row ``row``): layers, table, figure, or a dock's input."""
        entry = self.entries[row] if row is not None else self.selected()
        if entry is None:
            show_error("Results: select an entry in the list first.")
            return
        try:
            self._open(entry)
        except (OSError, ValueError, KeyError) as err:
            show_error(f"Results: could not open {entry.name!r}: {err}")

    def _open(self, e: Entry) -> None:
        if e.kind == "model" and e.provenance.get("kind") == LIVE_KIND:
            self._show_live(e)
            return
        if e.kind == "model":
            self._to_dock(e, "train", "TrainWidget", "model_path", "load", "Train CNN")
            return
        if e.kind == "features":
            maps = self._dock("features", "FeatureMapWidget")
            self._to_dock(e, "factors", "FactorsWidget", "store_path", None, "NMF factors")
            if maps is not None and maps.show_store(e.path):
                say_file(self.status, "{}: predicted areas and confidence shown; the store is "
                         "in the NMF factors dock", e.path)  # fmt: skip
            return
        saved = e.path if e.path.suffix == ".zarr" else e.path / "factors.zarr"
        factors = self._dock("factors", "FactorsWidget") if e.kind == "factors" else None
        if factors is not None and is_factors(saved):  # ready to select and cluster again
            factors.open_saved(saved)
            say_file(self.status, "{} is in the NMF factors dock", e.path)
            return
        self.preview.clear()
        self.figure.clear()
        if (e.path / "provenance.json").exists():
            self._open_folder(e)
        elif e.path.suffix == ".zarr":
            self._open_store(e)
        elif "accuracy" in e.provenance:  # an evaluation JSON record
            per = e.provenance.get("per_class") or {}
            rows = [score_row(d) for d in per.values()]
            self.preview.value = {"data": rows, "index": list(per),
                                  "columns": ["precision", "recall", "F1", "n"]}  # fmt: skip
            self.status.value = f"{e.name}: accuracy {float(e.provenance['accuracy']):.1%}"

    def _show_live(self, e: Entry) -> None:
        """A live classifier saved by the Explore dock: its classes, and how to apply it."""
        meta = e.provenance.get("meta") or {}
        names = meta.get("names") or {}
        self.preview.clear()
        self.figure.clear()
        _fill(self.preview, ["id", "class"], [[k, v] for k, v in names.items()])
        grid = "x".join(str(n) for n in meta.get("grid_shape") or [])
        say_file(
            self.status,
            f"{{}}: a live classifier of {len(names)} classes (strokes on a {grid} feature "
            "grid); label whole slices with it: brainfeatures apply-live MODEL STORE",
            e.path,
        )

    def _open_folder(self, e: Entry) -> None:
        files = [str(f) for f in e.provenance.get("files", [])]
        shown = []
        for f in files:
            if f.endswith(".zarr"):
                try:
                    m = open_map_layer(e.path / f)
                except ValueError:
                    continue  # a stage's own store (factors.zarr): the maps beside it show it
                shown += self._add_map(m, e)
        first = FIRST_TABLE.get(e.kind)
        tables = [f for f in files if f.endswith(".csv")]
        table = first if first in tables else (tables[0] if tables else None)
        if table is not None:
            cols, rows = read_table(e.path / table)
            _fill(self.preview, cols, rows)
        png = next((f for f in files if f.endswith(".png")), None)
        if png is not None:
            pix = QPixmap(str(e.path / png))
            self.figure.setPixmap(
                pix.scaledToWidth(PREVIEW_PX, Qt.TransformationMode.SmoothTransformation)
            )
        what = f"{len(shown)} layer(s)" if shown else "no maps"
        self.status.value = f"{e.kind}: {what}" + (f"; table {table}" if table else "")
        self.status.tooltip = str(e.path)  # the folder: its name is long

    def _add_map(self, m: MapLayer, e: Entry) -> list[Any]:
        meta = {OWNER_KEY: OWNER, "brainfeatures_result": str(e.path)}
        name = f"{e.name}: {m.name}"
        geo = {"scale": m.scale, "translate": m.translate, "metadata": meta}
        geo.update(unit_kwargs(self.viewer, len(m.scale)))
        data = m.data
        names = (
            [f"{e.name}: {c}" for c in (m.channels or range(data.shape[0]))]
            if "c" in m.axes
            else []
        )
        for old in [name, *names]:  # opened again: replaced
            if old in self.viewer.layers and self.viewer.layers[old].metadata.get(OWNER_KEY):
                self.viewer.layers.remove(old)
        if m.layer == "labels":
            colours = {i: rgba for i, (_, rgba) in m.classes.items()}
            cmap = DirectLabelColormap(color_dict={None: (0, 0, 0, 0), 0: (0, 0, 0, 0), **colours})
            return [
                self.viewer.add_labels(
                    np.asarray(data), name=name, colormap=cmap, opacity=0.6, **geo
                )
            ]
        if "c" in m.axes:
            # each map from 0 to its 99.5th percentile (NaN off the tissue left out)
            limits = [channel_range(data[i]) for i in range(data.shape[0])]
            geo["metadata"] = {**meta, HEATMAP_KEY: True}
            layers = self.viewer.add_image(data, channel_axis=0, name=names, colormap="magma",
                                           blending="additive", contrast_limits=limits,
                                           **geo)  # fmt: skip
            for ly in layers:  # one heatmap at a time, over every result's maps
                ly.blending = "translucent"
                ly.visible = ly is layers[0]
                one_at_a_time(self._heatmaps, ly)
            return list(layers)
        return [self.viewer.add_image(data, name=name, colormap="magma",
                                      contrast_limits=channel_range(data), **geo)]  # fmt: skip

    def _heatmaps(self) -> list[Any]:
        """The channel maps this dock added (factor heatmaps of any result)."""
        return [ly for ly in self.viewer.layers if ly.metadata.get(HEATMAP_KEY)]

    def _open_store(self, e: Entry) -> None:
        """An earlier ``factors.zarr`` / ``clusters.zarr`` (no result folder), on the image."""
        import zarr

        from napari_brainfeatures.features.grid import FeatureGrid

        img = self.image.value
        group = zarr.open_group(str(e.path), mode="r")
        name = "maps" if e.kind == "factors" else "labels"
        arr = np.asarray(group[name])
        grid = FeatureGrid.from_attrs(e.provenance, tuple(arr.shape[-2:]))
        geo = grid.layer_kwargs(img.scale, img.translate)
        axes = ("c" if e.kind == "factors" else "") + ("zyx" if len(geo["scale"]) == 3 else "yx")
        if "z" in axes:
            arr = arr[:, None] if e.kind == "factors" else arr[None]
        channels = [f"F{i}" for i in range(len(arr))] if e.kind == "factors" else []
        layer = "labels" if e.kind == "clusters" else "image"
        m = MapLayer(name, arr, layer, axes, geo["scale"], geo["translate"], channels=channels)
        shown = self._add_map(m, e)
        say_file(self.status, f"{e.kind} {{}}: {len(shown)} layer(s)", e.path)

    def _dock(self, module: str, cls: str) -> Any:
        """The open dock of class ``cls`` in ``_widgets.<module>``, or None."""
        import importlib

        kind = getattr(importlib.import_module(f"napari_brainfeatures._widgets.{module}"), cls)
        return find_dock(self.viewer, kind)

    def _to_dock(
        self, e: Entry, module: str, cls: str, box: str, action: str | None, title: str
    ) -> None:
        dock = self._dock(module, cls)
        if dock is None:
            say_file(self.status, f"open the {title} dock, then Open {{}} again", e.path)
            return
        getattr(dock, box).value = e.path
        if action is not None:
            getattr(dock, action)()
        say_file(self.status, f"{{}} is in the {title} dock", e.path)

    # -- export --------------------------------------------------------------------------------
    def export(self) -> list[Path]:
        """Write the selected result into the chosen folder, in the chosen format(s)."""
        entry = self.selected()
        if entry is None or not (entry.path / "provenance.json").exists():
            show_error("Results: select a result (a kept folder, not a model or store) to export.")
            return []
        out = str(self.export_dir.value)
        if out in ("", "."):
            show_error("Results: choose a folder to export to.")
            return []
        formats = list(FORMATS) if self.format.value == "all" else [str(self.format.value)]
        try:
            written = export_result(entry.path, Path(out) / entry.path.name, formats)
        except (OSError, ValueError) as err:
            show_error(f"Results: export failed: {err}")
            return []
        say_file(
            self.status, f"{len(written)} file(s) written into {{}}", Path(out) / entry.path.name
        )
        return written
