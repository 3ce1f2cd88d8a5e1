"""Dock widget: open a volume lazily and show what it is."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import CheckBox, Container, FileEdit, FloatSpinBox, Label, PushButton
from napari.utils.notifications import show_info

from napari_brainfeatures._napari.reader import MICROMETRE, layer_data
from napari_brainfeatures._widgets._common import WORKSPACE_KEY
from napari_brainfeatures._widgets._display import follow_world_units
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures.io.volume import Volume, open_volume
from napari_brainfeatures.progress import Progress
from napari_brainfeatures.workspace import default_workspace_path

FILTER = "*.tif *.tiff *.png *.jpg *.jpeg *.bmp *.webp *.gif"


def _open(path: str) -> Generator[Progress, None, tuple[Volume, Any]]:
    yield Progress(0, 2, "opening")
    vol = open_volume(path)
    yield Progress(1, 2, "sampling contrast")
    return vol, layer_data(vol)  # contrast limits read a sample: done off the GUI thread


class LoadWidget(Container):
    """Open a zarr / OME-Zarr / TIFF / TIFF-folder volume or a 2-D image as a lazy layer.

    When the file gives no voxel size, the voxel-size fields (µm) are enabled and
    what is typed there becomes the layer's scale.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        follow_world_units(viewer)
        self.path = FileEdit(label="file", mode="r", filter=FILTER)
        self.is_folder = CheckBox(text="folder (zarr, OME-Zarr or TIFF slices)", value=True)
        self.open_button = PushButton(text="Open")
        self.info = Label(value="No volume opened.")
        self.info.native.setWordWrap(True)
        self.voxel = [
            FloatSpinBox(value=1.0, min=1e-4, max=1e6, step=0.01, label=f"voxel {ax} (µm)",
                         tooltip=f"{ax} voxel size in micrometres; set it when the file "
                         "gives none (it becomes the layer's scale)", enabled=False)
            for ax in "zyx"
        ]  # fmt: skip
        self.runner = TaskRunner()
        super().__init__(
            widgets=[self.is_folder, self.path, self.open_button, self.info, *self.voxel,
                     self.runner]
        )  # fmt: skip
        self.is_folder.changed.connect(self._on_folder)
        self._on_folder(self.is_folder.value)
        self.open_button.changed.connect(self.open)
        for box in self.voxel:
            box.changed.connect(self._on_voxel)
        self.volume: Volume | None = None
        self.layer: Any = None

    def _on_folder(self, value: bool) -> None:
        self.path.mode = "d" if value else "r"
        self.path.label = "folder" if value else "file"

    def open(self) -> None:
        """Open the chosen path in a worker; the layer appears when it is ready."""
        path = str(self.path.value)
        if not path or path == ".":
            show_info("Choose a file or folder to open first.")
            return
        self.info.value = f"opening {Path(path).name}…"  # a failure must not show the last one
        self.info.tooltip = path
        self.runner.start(
            _open(path), name="Open volume", on_done=self._show, on_finish=self._finished
        )

    def _finished(self) -> None:
        if self.info.value.startswith("opening "):  # failed or cancelled
            self.info.value = (
                f"not opened: {self.info.value[len('opening ') : -1]} (see the message)"
            )

    def _show(self, result: tuple[Volume, Any]) -> None:
        vol, (data, kwargs, _) = result
        self.volume = vol
        ws_root = default_workspace_path(vol.path)
        kwargs["metadata"][WORKSPACE_KEY] = str(ws_root)
        known = vol.voxel_size is not None
        if not known:  # the user's fields (µm) are the scale until the file says otherwise
            if not self.voxel[0].enabled:  # they show the last file's voxel size: start at 1
                for box in self.voxel:
                    box.value = 1.0
            kwargs["scale"] = tuple(box.value for box in self.voxel)
            kwargs["units"] = (MICROMETRE,) * len(kwargs["scale"])
        self.layer = None  # no field change applies to a layer while it is being added
        for box, v in zip(self.voxel, vol.voxel_size or kwargs["scale"], strict=True):
            box.enabled = not known
            box.value = v
        layer = self.viewer.add_image(data, **kwargs)
        self.layer = None if known else layer
        self.viewer.reset_view()  # show the new volume whole, not the last one's zoom
        d = vol.describe()
        lo, hi = kwargs["contrast_limits"]
        voxel = d["voxel_size"] if known else "unknown: set it in the fields below"
        self.info.value = (
            f"{layer.name}: {d['kind']}\n"
            f"shape (Z, Y, X): {tuple(d['shape'])}  dtype: {d['dtype']}\n"
            f"chunks: {tuple(d['chunks'])}  levels: {len(d['levels'])}\n"
            f"voxel size: {voxel}\n"
            f"size: {d['size_gb']} GB  contrast: {_level(lo)}–{_level(hi)}\n"
            + "".join(f"note: {n}\n" for n in d.get("notes", []))
            + f"workspace: {ws_root.name} (path in the tooltip)"
        )
        self.info.tooltip = str(ws_root)  # a full path here would widen the dock

    def _on_voxel(self, _: float) -> None:
        """Typed voxel sizes become the scale (and recorded voxel size) of an unknown one."""
        if self.layer is None or self.volume is None or self.layer not in self.viewer.layers:
            return
        voxel = tuple(float(box.value) for box in self.voxel)
        self.volume.set_voxel_size(voxel)
        self.layer.scale = voxel
        self.layer.units = (MICROMETRE,) * len(voxel)
        self.layer.metadata.setdefault("brainfeatures", {})["voxel_size_um"] = list(voxel)


def _level(v: float) -> str:
    """A grey level as a reader expects it: 48060, not 4.806e+04; 0.0123 as it is."""
    return f"{v:.0f}" if 1e3 <= abs(v) < 1e9 else f"{v:.4g}"
