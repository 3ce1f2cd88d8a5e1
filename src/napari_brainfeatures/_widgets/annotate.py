"""Dock widget: paint area labels bound to the workspace class table.

The Labels layer's data *is* the workspace's labels zarr store, so every brush
stroke is written to disk as it happens (chunk by chunk, atomically): closing
napari or a crash loses no annotation, and huge volumes need no memory copy.
One process paints a workspace at a time (its write lease); a second napari
shows the labels read-only and says who is painting them.  **Tissue mask**
computes the tissue of the current slice (:mod:`napari_brainfeatures.tissue`) into
the workspace's ``tissue.zarr``, shown as an editable Labels layer that the Factors
dock uses.
"""

from __future__ import annotations

import re
from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, Label, LineEdit, PushButton
from napari.layers import Image, Labels
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_info, show_warning

from napari_brainfeatures._widgets._common import (
    image_choices,
    refresh_choices_on_layer_change,
    say_file,
    scroll_body,
    status_label,
    workspace_for,
    workspace_root,
)
from napari_brainfeatures._widgets.section import SectionArray
from napari_brainfeatures._widgets.tissue import corrected_slice, has_saved_tissue, show_tissue
from napari_brainfeatures.classes import ClassTable, default_table, prasad2020_table
from napari_brainfeatures.workspace import Workspace, WorkspaceBusyError

PRESETS = {"paper: six areas": default_table, "Prasad 2020 annotation ids": prasad2020_table}
_HEX = re.compile(r"^#?[0-9a-fA-F]{6}$")


def labels_colormap(table: ClassTable) -> DirectLabelColormap:
    """A napari colormap showing each class in its colour (unknown ids grey)."""
    return DirectLabelColormap(color_dict=table.color_dict())


class AnnotateWidget(Container):
    """Create or pick the labels of an image, edit the class table, pick the class to paint."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=image_choices(viewer))
        self.bind_button = PushButton(text="Create / open labels in workspace")
        # choices from a callable: napari re-reads every ComboBox's choices when layers
        # change, and a plain list would be reset to the empty one given here
        self.klass = ComboBox(label="paint class", choices=self._class_choices)
        self.class_name = LineEdit(label="name")
        self.class_colour = LineEdit(label="colour (#rrggbb)")
        self.add_button = PushButton(text="Add class")
        self.rename_button = PushButton(text="Rename")
        self.recolour_button = PushButton(text="Recolour")
        self.remove_button = PushButton(text="Remove class")
        self.preset = ComboBox(label="preset", choices=list(PRESETS))
        self.preset_button = PushButton(text="Use preset table")
        self.tissue_button = PushButton(text="Tissue mask")
        self.legend = Label(value="")
        self.status = status_label("Pick an image and create its labels.")
        edit_row = Container(
            widgets=[self.add_button, self.rename_button, self.recolour_button, self.remove_button],
            layout="horizontal",
            labels=False,
        )
        super().__init__(
            widgets=[
                self.image,
                self.bind_button,
                self.klass,
                self.class_name,
                self.class_colour,
                edit_row,
                self.preset,
                self.preset_button,
                self.tissue_button,
                self.legend,
                self.status,
            ]
        )
        self.workspace: Workspace | None = None
        self.labels_layer: Labels | None = None
        self._confirm_preset: str | None = None  # a preset whose renaming was announced
        self._confirm_tissue: tuple[str, int] | None = None  # a corrected slice, announced
        self.read_only = False  # the labels are painted by another process
        refresh_choices_on_layer_change(viewer, self.image)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self.bind_button.changed.connect(self.bind)
        self.klass.changed.connect(self._on_class)
        self.add_button.changed.connect(self.add_class)
        self.rename_button.changed.connect(self.rename_class)
        self.recolour_button.changed.connect(self.recolour_class)
        self.remove_button.changed.connect(self.remove_class)
        self.preset_button.changed.connect(self.apply_preset)
        self.tissue_button.changed.connect(self.compute_tissue)
        scroll_body(self)  # stacked with other docks, the legend scrolls instead of being cut

    # -- binding ----------------------------------------------------------
    def bind(self) -> Labels | None:
        """Open the workspace of the chosen image and show its labels as a layer."""
        image: Image | None = self.image.value
        if image is None:
            show_info("Open or choose an image layer first.")
            return None
        busy: WorkspaceBusyError | None = None
        try:
            ws = workspace_for(image)
            try:
                store = ws.labels()
            except WorkspaceBusyError as err:  # another process paints them: show, read-only
                busy, store = err, ws.labels(mode="r")
        except (ValueError, OSError) as err:
            show_error(f"Cannot open the labels workspace: {err}")
            return None
        if image.ndim == 2:  # a single section: 2-D labels on its grid, written into the store
            store = SectionArray(store)
        old, self.workspace, self.labels_layer = self.workspace, ws, None
        self.read_only = busy is not None
        if old is not None:
            old.close()  # after the new one took the lease: no gap for another process
        name = f"{image.name} areas"
        existing = next(
            (lay for lay in self.viewer.layers if isinstance(lay, Labels) and lay.name == name),
            None,
        )
        if existing is not None and existing.data is not store:
            self.viewer.layers.remove(existing)
        try:
            layer = self.viewer.add_labels(
                store,
                name=name,
                scale=image.scale,
                translate=image.translate,
                units=image.units,
                metadata={"brainfeatures_workspace": str(ws.root)},
            )
        except (ValueError, TypeError) as err:  # no layer: let another process paint them
            self.workspace = None
            ws.close()
            show_error(f"Cannot show the labels of {image.name!r}: {err}")
            return None
        self.labels_layer = layer
        self._apply_table(ws.classes, save=False)
        self.viewer.layers.selection.active = layer
        if busy is not None:
            layer.editable = False
            layer.events.editable.connect(lambda _e: setattr(layer, "editable", False))
            who = busy.holder.describe()
            show_warning(
                f"The labels of {image.name!r} are being painted by {who}; they are shown "
                "read-only here. Close them there, then press "
                f"'{self.bind_button.text}' again to paint."
            )
            self.status.value = f"Read-only: painted by {who}"
            return layer
        layer.mode = "paint"
        say_file(self.status, f"Labels saved as you paint in\n{ws.root.name}/{{}}", ws.labels_path)
        self._show_saved_tissue(image, ws)
        return layer

    def _show_saved_tissue(self, image: Image, ws: Workspace) -> None:
        """Show the tissue mask the workspace already holds, for the other docks to use."""
        try:
            if not has_saved_tissue(ws):
                return
            show_tissue(self.viewer, image, ws, compute=False)
        except (ValueError, OSError) as err:
            show_warning(f"The saved tissue mask of {image.name!r} cannot be shown: {err}")
            return
        self.viewer.layers.selection.active = self.labels_layer  # strokes still paint areas

    def compute_tissue(self) -> Labels | None:
        """Compute the tissue mask of the current slice and show it as an editable layer.

        The mask is written into the image's workspace (opened as by 'Create / open
        labels' when it is not yet), for a single 2-D section as for a volume.
        """
        image: Image | None = self.image.value
        if image is None:
            show_info("Open or choose an image layer first.")
            return None
        mine = self.workspace is not None and self.workspace.root == workspace_root(image)
        if not mine and self.bind() is None:
            return None
        ws = self.workspace
        if self.read_only or ws is None:
            show_error("The workspace is written by another process; close it there first.")
            return None
        try:
            z = corrected_slice(self.viewer, image, ws)
            keep = z is not None and self._confirm_tissue != (str(ws.root), z)
            layer, text = show_tissue(self.viewer, image, ws, compute=not keep)
        except (ValueError, OSError) as err:
            show_error(f"Tissue mask: {err}")
            return None
        self._confirm_tissue = (str(ws.root), z) if keep else None
        if keep:
            where = "This section's" if image.ndim == 2 else f"Slice z={z} of the"
            show_warning(
                f"{where} tissue mask holds your corrections: they are kept and shown. Press "
                f"'{self.tissue_button.text}' again to compute it anew (the corrections are lost)."
            )
        if self.labels_layer is not None:  # the next strokes still paint areas, not the mask
            self.viewer.layers.selection.active = self.labels_layer
        self.status.value = text
        return layer

    def _on_layer_removed(self, event: Any) -> None:
        """The labels layer is gone: let another process paint this workspace."""
        if event.value is self.labels_layer and self.workspace is not None:
            self.workspace.close()
            self.labels_layer = None

    # -- class table editing ------------------------------------------------
    @property
    def table(self) -> ClassTable:
        """The current class table (the workspace's, or the default before binding)."""
        return self.workspace.classes if self.workspace is not None else default_table()

    def _class_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        """The bound workspace's classes as ``("id: name", id)``; none before binding."""
        if getattr(self, "workspace", None) is None:
            return []
        return [(f"{c.id}: {c.name}", c.id) for c in self.table]

    def _apply_table(self, table: ClassTable, *, save: bool = True) -> None:
        if save:
            if self.workspace is None:
                show_info("Create the labels first: the class table lives in the workspace.")
                return
            self.workspace.save_classes(table)
        current = self.klass.value
        self.klass.reset_choices()
        if current in table.ids:
            self.klass.value = current
        if self.labels_layer is not None:
            self.labels_layer.colormap = labels_colormap(table)
            self.labels_layer.metadata["classes"] = table.to_dict()
        self.legend.value = "<br>".join(
            f"<span style='color:{c.colour}'>&#9632;</span> {c.id} {c.name}"
            + (f" — {c.long_name}" if c.long_name else "")
            for c in table
        )
        self._on_class(self.klass.value)

    def _on_class(self, class_id: Any) -> None:
        if class_id is None:
            return
        if self.labels_layer is not None:
            self.labels_layer.selected_label = int(class_id)
        c = self.table.by_id(int(class_id))
        self.class_name.value, self.class_colour.value = c.name, c.colour

    def _edit(self, fn: Any) -> None:
        try:
            self._apply_table(fn(self.table))
        except (ValueError, KeyError) as err:
            show_error(f"Class table unchanged: {err}")

    def _colour(self) -> str | None:
        value = self.class_colour.value.strip()
        if not _HEX.match(value):
            show_error(f"Colour must look like #rrggbb, got {value!r}")
            return None
        return value if value.startswith("#") else "#" + value

    def add_class(self) -> None:
        """Add a class named by the name box, with the colour box's colour if it is new."""
        name = self.class_name.value.strip()
        colour: str | None = self.class_colour.value.strip()
        taken = {c.colour.lower() for c in self.table}
        if not _HEX.match(colour) or ("#" + colour.lstrip("#")).lower() in taken:
            colour = None  # a fresh palette colour
        else:
            colour = "#" + colour.lstrip("#")
        self._edit(lambda t: t.add(name, colour))
        if name in self.table.names:
            self.klass.value = self.table.by_name(name).id

    def rename_class(self) -> None:
        """Rename the selected class to the name box."""
        cid = self.klass.value
        if cid is not None:
            self._edit(lambda t: t.rename(int(cid), self.class_name.value.strip()))

    def recolour_class(self) -> None:
        """Give the selected class the colour box's colour."""
        cid, colour = self.klass.value, self._colour()
        if cid is not None and colour is not None:
            self._edit(lambda t: t.recolour(int(cid), colour))

    def remove_class(self) -> None:
        """Remove the selected class from the table (painted pixels keep their id)."""
        cid = self.klass.value
        if cid is None:
            return
        self._edit(lambda t: t.remove(int(cid)))
        show_warning(
            f"Class {cid} removed from the table; pixels painted with it keep id {cid} "
            "(shown grey) until repainted."
        )

    def apply_preset(self) -> None:
        """Replace the class table with a preset.

        When labels are already painted and the preset gives their ids other
        names, the first press only says so; pressing again applies it.
        """
        preset = PRESETS[self.preset.value]()
        renamed = {
            c.id: (c.name, preset.by_id(c.id).name if c.id in preset.ids else None)
            for c in self.table
            if c.id not in preset.ids or preset.by_id(c.id).name != c.name
        }
        painted = self.labels_layer is not None and _has_paint(self.labels_layer.data)
        if renamed and painted and self._confirm_preset != self.preset.value:
            self._confirm_preset = self.preset.value
            what = ", ".join(f"{i} {a} → {b or '(no class)'}" for i, (a, b) in renamed.items())
            show_warning(
                f"Painted pixels keep their ids, so with the {self.preset.value!r} preset they "
                f"would mean something else: {what}. Press 'Use preset table' again to apply it."
            )
            return
        self._confirm_preset = None
        self._edit(lambda _t: preset)


def _has_paint(store: Any) -> bool:
    """Whether a labels store holds any written chunk (no pixel is read; True if unknown)."""
    n = getattr(store, "nchunks_initialized", None)
    return bool(n) if n is not None else True
