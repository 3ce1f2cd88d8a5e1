"""Dock widget: dense feature maps of a trained CNN, shown live while they are written.

One core call (:func:`napari_brainfeatures.features.run.compute_feature_map`) run by a
:class:`TaskRunner`; the store's arrays are added as lazy layers (area labels in
the class colours, confidence, one feature channel) at the first finished tile
and refreshed as tiles arrive.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton, SpinBox
from napari.layers import Image, Shapes
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_error, show_warning

from napari_brainfeatures._widgets._common import (
    current_z,
    fill_model_path,
    image_choices,
    layers_of,
    put_layer,
    refresh_choices_on_layer_change,
    say_file,
    scroll_body,
    status_label,
    workspace_root,
)
from napari_brainfeatures._widgets._display import channel_range
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures.features.network import load_model
from napari_brainfeatures.features.options import DenseOptions
from napari_brainfeatures.features.plan import store_name
from napari_brainfeatures.features.run import compute_feature_map, measure_padding_deviation
from napari_brainfeatures.features.store import (
    FeatureStore,
    FeatureStoreError,
    StoreMismatchError,
)
from napari_brainfeatures.models.cnn import input_scale_for
from napari_brainfeatures.progress import Progress
from napari_brainfeatures.train.recorded import model_warnings, pixel_size_warning

REGIONS = ("current slice", "z-range", "all slices", "box of a Shapes layer")


class FeatureMapWidget(Container):
    """Pick image, model, stride and region; compute the feature map into the workspace."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=image_choices(viewer))
        self.model_path = FileEdit(label="model file", mode="r", filter="*.safetensors")
        self.model_info = status_label("Pick a trained model file.", lines=3)
        self.exact = CheckBox(text="exact per-patch evaluation (slow; for padded networks)")
        self.stride = SpinBox(label="stride (px)", min=1, max=512, value=4)
        self.region = ComboBox(label="region", choices=list(REGIONS), value=REGIONS[0])
        self.z_start = SpinBox(label="z from", min=0, max=1_000_000, value=0)
        self.z_stop = SpinBox(label="z to (excl.)", min=1, max=1_000_000, value=1)
        self.shapes = ComboBox(
            label="box layer",
            choices=lambda _w: [(s.name, s) for s in layers_of(viewer, Shapes)],
        )
        self.out = FileEdit(label="output store", mode="w", filter="*.zarr")
        self.overwrite = CheckBox(text="replace a store made by another job")
        self.run_button = PushButton(text="Compute feature map")
        self.runner = TaskRunner()
        self.channel = SpinBox(label="feature channel", min=0, max=63, value=0)
        self.channel_button = PushButton(text="Show channel")
        self.status = status_label("")
        super().__init__(widgets=[
            self.image, self.model_path, self.model_info, self.exact, self.stride, self.region,
            self.z_start, self.z_stop, self.shapes, self.out, self.overwrite, self.run_button,
            self.runner, self.channel, self.channel_button, self.status,
        ])  # fmt: skip
        scroll_body(self)  # stacked with other docks it scrolls instead of keeping its height
        refresh_choices_on_layer_change(viewer, self.image, self.shapes)
        self.model_path.changed.connect(self.load_model)
        for w in (self.image, self.model_path, self.stride):
            w.changed.connect(self._default_out)
        self.run_button.changed.connect(self.run)
        self.channel_button.changed.connect(self.show_channel)
        self.model: Any = None
        self.model_meta: dict[str, Any] = {}  # the loaded model's header meta
        self.store: FeatureStore | None = None
        self._auto_out = ""
        self._live: Path | None = None
        self._target: Image | None = None
        self._last_refresh = 0.0
        self.image.changed.connect(lambda *_: fill_model_path(self.model_path, self.image.value))
        fill_model_path(self.model_path, self.image.value)  # the model trained on this image
        self._default_out()

    # -- model and output path ------------------------------------------
    def load_model(self, *_: Any) -> None:
        """Read the model file; show its classes and patch size (and deviation if padded)."""
        path = Path(str(self.model_path.value))
        self.model, self.model_meta = None, {}
        if not path.is_file():
            self.model_info.value = "Pick a trained model file."
            return
        try:
            self.model, header, _ = load_model(path)
            self.model_meta = header["meta"]
        except (ValueError, OSError) as err:
            self.model_info.value = f"cannot load: {err}"
            show_error(f"Feature map: cannot load {path.name}: {err}")
            return
        cfg = self.model.config
        names = [c["name"] for c in header["meta"].get("classes", {}).get("classes", [])]
        text = f"{cfg.n_classes} classes ({', '.join(names) or '?'}); {cfg.patch_size} px patches"
        self.channel.max = cfg.n_features - 1
        if cfg.is_padded:
            dev = measure_padding_deviation(self.model, self._sample(cfg.patch_size), n=8)
            text += (
                f"\npadded network: dense evaluation deviates by {dev['rel_deviation']:.2%} "
                f"(cosine {dev['cosine']:.4f}); exact per-patch evaluation is on"
            )
            self.exact.value = True
        else:
            text += "; dense evaluation is exact"
            self.exact.value = False
        for warning in model_warnings(header["meta"]):  # said beside every map it makes
            text += f"\nWARNING: {warning}"
            show_warning(f"Feature map: {warning}")
        self.model_info.value = text

    def _sample(self, patch: int) -> np.ndarray:
        """A central 2-D crop of the current image slice (noise when there is none)."""
        layer = self.image.value
        if layer is None:
            return np.random.default_rng(0).random((2 * patch, 2 * patch)).astype(np.float32)
        data = layer.data[0] if layer.multiscale else layer.data
        plane = data[current_z(self.viewer, layer)] if data.ndim == 3 else data
        h, w = plane.shape
        y0, x0 = max(h // 2 - patch, 0), max(w // 2 - patch, 0)
        crop = np.asarray(plane[y0 : y0 + 2 * patch, x0 : x0 + 2 * patch], dtype=np.float32)
        return crop * np.float32(input_scale_for(data.dtype)[0])  # as the network reads it

    def _default_out(self, *_: Any, region: Any = None) -> None:
        """``<workspace>/features/<model>-s<stride>-z<lo>_<hi>[-r<box>].zarr`` (unless chosen).

        Named by model, stride and region (:func:`~napari_brainfeatures.features.plan.store_name`),
        so jobs over other regions never collide; ``region`` is the run's (default:
        the current choice, or the current slice while the box layer is unset).
        """
        layer = self.image.value
        if layer is None or str(self.out.value) not in ("", ".", self._auto_out):
            return
        shape = (layer.data[0] if layer.multiscale else layer.data).shape
        if region is None:
            try:
                region = self.region_value(layer, len(shape))
            except ValueError:  # no box drawn yet
                region = current_z(self.viewer, layer) if len(shape) == 3 else None
        model = Path(str(self.model_path.value))
        try:
            name = store_name(model, stride=int(self.stride.value), region=region, shape=shape)
        except ValueError:  # a region outside the image: the run says so
            return
        # The workspace rule, without creating anything until a run writes the store.
        path = workspace_root(layer) / "features" / name
        self._auto_out = str(path)
        self.out.value = path

    # -- region ----------------------------------------------------------
    def region_value(self, layer: Image, ndim: int) -> Any:
        """The ``region=`` argument for the chosen region kind."""
        kind = self.region.value
        z = current_z(self.viewer, layer) if ndim == 3 else None
        if kind == "current slice":
            return z
        if kind == "z-range":
            return (int(self.z_start.value), int(self.z_stop.value)) if ndim == 3 else None
        if kind == "all slices":
            return None
        shapes = self.shapes.value
        if shapes is None or len(shapes.data) == 0:
            raise ValueError("draw a rectangle in a Shapes layer and pick it as 'box layer'")
        world = np.asarray([shapes.data_to_world(v) for v in shapes.data[0]])
        pts = np.asarray([layer.world_to_data(p) for p in world])[:, -2:]
        shape = (layer.data[0] if layer.multiscale else layer.data).shape[-2:]
        lo = np.clip(np.floor(pts.min(axis=0)), 0, np.asarray(shape) - 1).astype(int)
        hi = np.clip(np.ceil(pts.max(axis=0)) + 1, lo + 1, shape).astype(int)
        return {"z": z, "y": (lo[0], hi[0]), "x": (lo[1], hi[1])}

    # -- running ---------------------------------------------------------
    def run(self, *_: Any) -> None:
        """Start the computation in a worker; layers appear as tiles are written."""
        layer = self.image.value
        path = Path(str(self.model_path.value))
        if layer is None or not path.is_file():
            show_error("Feature map: pick an image layer and a model file first.")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        try:
            options = DenseOptions(
                stride=int(self.stride.value),
                region=self.region_value(layer, data.ndim),
                overwrite=bool(self.overwrite.value),
                image_name=layer.name,
                **({"method": "patch"} if self.exact.value else {}),  # else the automatic rule
            )
        except ValueError as err:
            show_error(f"Feature map: {err}")
            return
        voxel = layer.metadata.get("brainfeatures", {}).get("voxel_size_um")
        said = pixel_size_warning(self.model_meta, voxel)  # read when the model was loaded
        if said:  # said, not refused: the user may mean it
            show_warning(f"Feature map: {said}")
        self.store, self._target, self._live = None, layer, None
        self._default_out(region=options.region)  # the run's region names the store
        self._out_path = Path(str(self.out.value))
        gen = compute_feature_map(data, path, out=self._out_path, options=options)
        say_file(self.status, "{}: computing (progress above)", self._out_path)  # not stale
        self.runner.start(
            _in_gui_words(gen),
            name="Feature map",
            on_progress=self._on_progress,
            on_done=self._on_done,
        )

    def _on_progress(self, rec: Progress) -> None:
        self._live = getattr(rec.payload, "store", None)  # where the tiles go now
        now = time.monotonic()
        if self.store is None or now - self._last_refresh > 0.5:
            self._last_refresh = now
            self.refresh_layers()

    def _on_done(self, store: FeatureStore) -> None:
        self.store, self._live, self._out_path = store, None, store.path
        self.refresh_layers()
        done, total = store.progress()
        self.status.value = f"{store.path.name}: {done}/{total} tiles"

    def show_store(self, path: Any) -> bool:
        """Show a store written earlier (the Results dock opens one here): areas, confidence."""
        self.store, self._target, self._live = None, self.image.value, None
        self._out_path = Path(str(path))
        self.refresh_layers()
        if self.store is None:
            show_error(f"Feature map: {self._out_path.name} is not a readable feature store.")
            return False
        done, total = self.store.progress()
        say_file(self.status, f"{{}}: {done}/{total} tiles (opened)", self._out_path)
        return True

    def _geometry(self, store: FeatureStore) -> dict[str, tuple[float, ...]]:
        img = self._target
        kw = store.layer_kwargs()
        if img is None or len(img.scale) != len(kw["scale"]):
            return kw
        scale = tuple(float(a * b) for a, b in zip(img.scale, kw["scale"], strict=True))
        translate = tuple(
            float(t + a * o)
            for t, a, o in zip(img.translate, img.scale, kw["translate"], strict=True)
        )
        return {"scale": scale, "translate": translate}

    def _put(self, name: str, data: Any, kind: str, **kwargs: Any) -> None:
        put_layer(self.viewer, name, data, kind, owner="feature maps", **kwargs)

    def refresh_layers(self) -> None:
        """Add (or refresh) the lazy layers of the store being written."""
        try:  # the store being written (a replacement is built beside the old one)
            self.store = FeatureStore(self._live or self._out_path)
        except (FileNotFoundError, FeatureStoreError):
            # a record that arrives after the replacement was swapped in (or before its arrays
            # exist) names a store in passing: the next record, or the end, shows the layers
            return
        st, base = self.store, self._target.name if self._target else "image"
        geo = self._geometry(st)
        if "areas" in st.attrs["which"]:
            cmap = DirectLabelColormap(color_dict=st.classes.color_dict())
            self._put(
                f"{base} predicted areas", st.areas, "labels", colormap=cmap, opacity=0.5, **geo
            )
        if "probs" in st.attrs["which"]:
            self._put(
                f"{base} confidence",
                st.confidence(),
                "image",
                colormap="viridis",
                contrast_limits=(0.0, 1.0),
                visible=False,
                **geo,
            )
        for layer in list(self.viewer.layers):
            if layer.metadata.get("brainfeatures_channel") is not None and layer.name.startswith(
                f"{base} feature "
            ):
                layer.data = self._channel(st, layer.metadata["brainfeatures_channel"])
                layer.scale, layer.translate = geo["scale"], geo["translate"]
                if self.runner.worker is None:  # the finished store: contrast from all of it
                    layer.contrast_limits = channel_range(layer.data)

    @staticmethod
    def _channel(st: FeatureStore, c: int) -> Any:
        f = st.features()
        return f[:, c] if f.ndim == 4 else f[c]

    def show_channel(self, *_: Any) -> None:
        """Add the chosen feature channel as an Image layer."""
        if self.store is None:
            show_error("Feature map: compute (or wait for) a feature map first.")
            return
        c = int(self.channel.value)
        base = self._target.name if self._target else "image"
        data = self._channel(self.store, c)
        self._put(
            f"{base} feature {c}",
            data,
            "image",
            colormap="magma",
            contrast_limits=channel_range(data),
            metadata={"brainfeatures_channel": c},
            **self._geometry(self.store),
        )


def _in_gui_words(gen: Any) -> Any:
    """``gen``, with the core's headless advice on a mismatched store told for this dock."""
    try:
        return (yield from gen)
    except StoreMismatchError as err:
        text = str(err).replace(
            "pass overwrite=True (--overwrite)", "tick 'replace a store made by another job'"
        )
        raise StoreMismatchError(text) from None
