"""Dock widget: NMF factor heatmaps, ROI-aligned factor selection and cluster maps (paper 001).

One core call per action: :func:`factorise` of one z-slice of a dense feature store (a
:class:`FeatureGrid`; with a tissue mask layer only pixels whose patch lies in tissue;
layers "NMF factor i", hidden except the selected ones, plus an RGB composite),
:meth:`Factors.select` against a Labels layer of ROIs (a score table), :meth:`Factors.save`
(**Save factors…**: the ``factors.zarr`` that ``brainfeatures cluster`` reads) and
:func:`cluster_map` of the NMF coefficients or features inside an (eroded) mask and the
factors' usable pixels (a Labels layer, scored against a ground-truth layer).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, PushButton, SpinBox, Table
from napari.layers import Image, Labels
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from napari_brainfeatures._widgets._common import (
    OWNER_KEY,
    OWNER_TAG,
    image_choices,
    image_shape,
    labels_choices,
    layers_of,
    newest_store,
    plain_numbers,
    put_layer,
    refresh_choices_on_layer_change,
    results_path,
    say_file,
    scroll_body,
    status_label,
)
from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures._widgets.factors_views import (
    fill_scores,
    one_at_a_time,
    rgb_legend,
    roi_names,
)
from napari_brainfeatures._widgets.results_keep import keep_clusters, keep_factors
from napari_brainfeatures._widgets.tissue import TissueControls
from napari_brainfeatures.factors.clusters import cluster_map, erode_mask
from napari_brainfeatures.factors.maps import rgb_composite, robust_max
from napari_brainfeatures.factors.options import SOLVERS, SelectOptions
from napari_brainfeatures.factors.results import Factors, factorise, open_factors
from napari_brainfeatures.factors.scores import score_against
from napari_brainfeatures.features.grid import FeatureGrid
from napari_brainfeatures.features.store import FeatureStore
from napari_brainfeatures.progress import Progress, ProgressGen
from napari_brainfeatures.train.recorded import model_warnings

PREFIX = "NMF factor "
# core option -> this widget's label for it (errors name the control)
LABELS = {"lam": "leakage λ", "eps": "activity threshold", "p": "picks p"}


class FactorsWidget(Container):
    """NMF of a feature store, factor selection against ROIs, and cluster maps."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self.viewer = viewer
        none = [("(none)", None)]
        self.store_path = FileEdit(label="feature store", mode="d")
        self.z = SpinBox(label="store z index", min=0, max=100_000, value=0)
        self.image = ComboBox(
            label="placed on image", choices=lambda w: none + image_choices(viewer)(w)
        )
        self.k = SpinBox(label="factors k", min=1, max=64, value=15)
        self.solver = ComboBox(label="solver", choices=list(SOLVERS), value="auto")
        self.tissue = TissueControls(viewer)
        self.nmf_button = PushButton(text="Run NMF")
        self.rois = ComboBox(label="ROI labels", choices=labels_choices(viewer))
        self.lam = FloatSpinBox(label="leakage λ", min=0.0, max=100.0, step=0.05, value=0.5)
        self.normalise = ComboBox(label="normalise", choices=["none", "area"], value="none")
        self.eps = FloatSpinBox(label="activity threshold", min=0.0, max=0.99, step=0.01, value=0.0)
        self.p = SpinBox(label="picks p (0: all)", min=0, max=64, value=0)
        self.select_button = PushButton(text="Select factors")
        self.table = plain_numbers(Table())
        self.rgb = Container(
            layout="horizontal",
            widgets=[SpinBox(label=c, min=0, max=63, value=i) for i, c in enumerate("RGB")],
        )
        self.rgb_button = PushButton(text="Show RGB composite")
        self.save_path = FileEdit(label="factors file", mode="w", filter="*.zarr")
        self.save_button = PushButton(text="Save factors…")
        self.method = ComboBox(label="cluster method", choices=["gmm", "kmeans"], value="gmm")
        self.on = ComboBox(label="cluster on", choices=["NMF coefficients", "features"])
        self.n_clusters = SpinBox(label="clusters", min=1, max=64, value=4)
        self.mask = ComboBox(
            label="mask labels", choices=lambda w: none + labels_choices(viewer)(w)
        )
        self.mask_id = SpinBox(label="mask id", min=1, max=65535, value=1)
        self.erode = SpinBox(label="erode (image px)", min=0, max=10_000, value=0)
        self.smooth = SpinBox(
            label="smooth (image px)",
            min=0,
            max=10_000,
            value=0,
            tooltip="Average the map over the mask with a Gaussian of this σ before "
            "clustering (0: the papers' recipe); layers thinner than about 2σ merge.",
        )
        self.truth = ComboBox(
            label="ground truth", choices=lambda w: none + labels_choices(viewer)(w)
        )
        self.cluster_button = PushButton(text="Cluster")
        self.status = status_label("Pick a feature store written by the Feature maps widget.")
        self.runner = TaskRunner()
        super().__init__(widgets=[
            self.store_path, self.z, self.image, self.k, self.solver, self.tissue, self.nmf_button,
            self.rois, self.lam, self.normalise, self.eps, self.p, self.select_button,
            self.table, self.rgb, self.rgb_button, self.save_path, self.save_button,
            self.method, self.on, self.n_clusters, self.mask, self.mask_id, self.erode,
            self.smooth, self.truth, self.cluster_button, self.status, self.runner,
        ])  # fmt: skip
        scroll_body(self, {self.table.native: 160})
        refresh_choices_on_layer_change(viewer, self.image, self.rois, self.mask, self.truth)
        self.nmf_button.changed.connect(self.run_nmf)
        self.select_button.changed.connect(self.select)
        self.rgb_button.changed.connect(self.show_rgb)
        self.save_button.changed.connect(self.save)
        self.cluster_button.changed.connect(self.cluster)
        self.factors: Factors | None = None
        self._layer_run = 0  # which NMF result the heatmap layers being added belong to
        self.native.destroyed.connect(self._stop_adding)  # a closed dock adds no more layers
        self.scores: dict[str, float] = {}
        self._roi_names: dict[int, str] | None = None  # ROI id -> name of the last selection
        self._auto_store = ""  # the store box's value when this widget filled it
        self._auto_save = ""  # the same for the factors file box
        self.image.changed.connect(self._default_store)
        self._default_store()

    # -- the NMF result, as the tests and layers see it ---------------------------------------
    @property
    def maps(self) -> np.ndarray | None:
        """The factor heatmaps ``(k, H, W)`` of the last NMF."""
        return None if self.factors is None else self.factors.maps

    @property
    def grid(self) -> FeatureGrid | None:
        """Where the last NMF's slice lies on the image."""
        return None if self.factors is None else self.factors.grid

    @property
    def selection(self) -> Any:
        """The last factor selection on the current factors (None before one is made)."""
        return None if self.factors is None else self.factors.selection

    def _default_store(self, *_: Any) -> None:
        """Fill the store box with the newest finished store of the chosen image (or any image).

        Only while the box is empty or still holds what this widget put there; a
        path the user chose stays.
        """
        if str(self.store_path.value) not in ("", ".", self._auto_store):
            return
        img = self.image.value
        found = newest_store([img] if img is not None else layers_of(self.viewer, Image))
        if found is not None and str(found) != str(self.store_path.value):
            self._auto_store = str(found)
            self.store_path.value = found
            self.status.value = f"feature store: {found.name} (the newest in the workspace)"

    def _default_image(self) -> None:
        """Place the maps on the store's own image layer when none is chosen."""
        if self.image.value is not None:
            return
        try:
            attrs = FeatureStore(Path(str(self.store_path.value))).attrs
        except (FileNotFoundError, OSError, ValueError):
            return
        images = [ly for ly in self.viewer.layers if isinstance(ly, Image)]
        shape = tuple(attrs.get("image", {}).get("shape", ()))
        match = [ly for ly in images if ly.name == attrs.get("image_name")] or [
            ly for ly in images if not ly.rgb and shape and image_shape(ly) == shape
        ]
        if match:
            self.image.value = match[0]

    def _put(self, name: str, data: np.ndarray, kind: str = "image", **kwargs: Any) -> Any:
        """A 2-D map of the grid as a layer over the chosen image (at the slice's z)."""
        img = self.image.value
        geo = self.grid.layer_kwargs(  # type: ignore[union-attr]
            None if img is None else img.scale, None if img is None else img.translate
        )
        if len(geo["scale"]) == 3:
            data = data[None]  # (1, H, W): one slice of the volume
        return put_layer(self.viewer, name, data, kind, owner="factors", **geo, **kwargs)

    def _on_grid(self, layer: Labels) -> np.ndarray:
        return self.grid.labels_on(layer.data, what=f"the layer {layer.name!r}")  # type: ignore[union-attr]

    # -- NMF --------------------------------------------------------------------------------
    def run_nmf(self, *_: Any) -> None:
        """Factorise the chosen slice of the store in a worker."""
        self._default_store()  # a store finished since the box was filled
        path = str(self.store_path.value)
        if path in ("", ".") or not Path(path).is_dir():
            show_error(
                "Factors: pick a feature store (a .zarr folder) first, or compute one in the "
                "Feature maps widget."
            )
            return
        self._default_image()
        z, k, solver = int(self.z.value), int(self.k.value), str(self.solver.value)
        edges = self.tissue.values()  # tissue mask and min_context

        def job() -> ProgressGen[tuple[Factors, list[float]]]:
            grid = FeatureGrid.from_store(path, z, flag="store z index")
            fac = yield from factorise(grid, k, solver=solver, **edges)
            return fac, [robust_max(m, floor=1e-6) for m in fac.maps]  # here, not in the GUI

        self.runner.start(job(), name="NMF", on_done=self._nmf_done)

    def open_saved(self, path: Any) -> None:
        """Factors saved earlier (a ``factors.zarr``): shown as after an NMF, ready to use."""

        def job() -> ProgressGen[tuple[Factors, list[float]]]:
            yield Progress(0, None, "reading the factors")
            fac = open_factors(path)
            fac = replace(fac, maps=np.asarray(fac.maps))  # in memory: select, cluster
            return fac, [robust_max(m, floor=1e-6) for m in fac.maps]

        self.runner.start(job(), name="Open factors", on_done=self._opened)

    def _opened(self, out: tuple[Factors, list[float]]) -> None:
        fac: Any = out[0]
        if Path(str(fac.grid.source)).is_dir():  # its feature store: NMF again, or features
            self.store_path.value = fac.grid.source
            self._default_image()  # the maps go on the store's image
        self._nmf_done(out, keep=False)  # kept already: the file is a result
        where = fac.path.parent if fac.path.name == "factors.zarr" else fac.path
        text = f"factors {where.name} opened (k={fac.k}); select, cluster or run the NMF again"
        if fac.selection is not None:
            names = self._roi_names = roi_names(self.rois.value, fac.selection.roi_ids)
            text += "\n" + fill_scores(self.table, fac.selection, names)
        self.status.value, self.status.tooltip = text, str(fac.path)

    def _nmf_done(self, out: tuple[Factors, list[float]], keep: bool = True) -> None:
        self.factors, tops = out
        self.table.clear()  # the previous run's scores no longer apply
        k = self.factors.k
        for layer in [
            ly
            for ly in self.viewer.layers
            if ly.metadata.get(OWNER_KEY) == "factors"
            and ly.name.startswith(PREFIX)
            and int(ly.name[len(PREFIX) :]) >= k
        ]:
            self.viewer.layers.remove(layer)  # factors of a larger k; the others are reused
        for i, w in enumerate(self.rgb):
            w.max, w.value = k - 1, min(i, k - 1)
        self.show_rgb()
        self._default_save()
        info = self.factors.info
        self.status.value = (
            f"NMF k={k} of store z index {self.z.value} (image slice {self.grid.z}): "  # type: ignore[union-attr]
            f"relative error {info['rel_error']:.4f} after {info['n_iter']} iterations "
            f"({info['wall_s']:.1f} s); the RGB composite shows; show one factor's heatmap "
            "alone by its eye in the layer list"
        )
        store = self.grid.store  # type: ignore[union-attr]  # opened by the NMF job
        meta = ((store.attrs.get("model") or {}).get("meta") or {}) if store is not None else {}
        for warning in model_warnings(meta):  # the model's weakness, beside its factors
            self.status.value += f"\nWARNING: {warning}"
        if keep:
            keep_factors(self)
        # One heatmap layer per event-loop turn: napari needs ~0.2 s to create a layer,
        # so k of them at once would freeze the viewer for seconds.
        self._layer_run += 1
        run = self._layer_run

        def add(i: int) -> None:
            if run != self._layer_run or i >= k:  # a newer NMF took over, or all done
                return
            layer = self._put(
                f"{PREFIX}{i}",
                self.maps[i],  # type: ignore[index]
                colormap="magma",
                contrast_limits=(0.0, tops[i]),
                visible=False,  # the composite shows; a heatmap shown alone hides the others
            )
            one_at_a_time(self._heatmaps, layer)
            QTimer.singleShot(0, lambda: add(i + 1))

        add(0)

    def _stop_adding(self, *_: Any) -> None:  # noqa: D102
        self._layer_run += 1

    def _heatmaps(self) -> list[Any]:
        return [
            ly
            for ly in self.viewer.layers
            if ly.metadata.get(OWNER_KEY) == "factors" and ly.name.startswith(PREFIX)
        ]

    def _own(self, name: str) -> Any:
        """The dock's own output layer ``name`` (found by its tag), or None."""
        tag = f"factors: {name}"
        return next((ly for ly in self.viewer.layers if ly.metadata.get(OWNER_TAG) == tag), None)

    def show_rgb(self, *_: Any) -> None:
        """Add the three chosen factors as one RGB layer."""
        if self.maps is None:
            show_error("Factors: run the NMF first.")
            return
        idx = tuple(int(w.value) for w in self.rgb)
        layer = self._put("NMF RGB", rgb_composite(self.maps, idx), rgb=True)  # type: ignore[arg-type]
        layer.visible = True
        picked = {} if self.selection is None else {f: a for f, a, _ in self.selection.pairs}
        names = self._roi_names or {}
        rgb_legend(
            self.viewer,
            layer,
            [f"F{f}" + (f" {names.get(picked[f], '')}" if f in picked else "") for f in idx],
        )
        clusters = self._own("clusters")
        if clusters is not None:  # not drawn over the composite
            clusters.visible = False

    # -- selection --------------------------------------------------------------------------
    def select(self, *_: Any) -> None:
        """Score factors against the ROIs, pick pairs greedily, show the table."""
        if self.factors is None or self.rois.value is None:
            show_error("Factors: run the NMF and pick a Labels layer of ROIs first.")
            return
        try:
            opts = SelectOptions.named(
                LABELS,
                lam=float(self.lam.value),
                p=int(self.p.value) or None,
                normalise=str(self.normalise.value),
                eps=float(self.eps.value),
            )
            sel = self.factors.select(self._on_grid(self.rois.value), options=opts)
        except ValueError as err:  # an option out of range, or ROIs that do not fit
            show_error(f"Factors: {err}")
            return
        self.factors = self.factors.with_selection(sel)
        names = self._roi_names = roi_names(self.rois.value, sel.roi_ids)
        self.status.value = fill_scores(self.table, sel, names)
        for w, f in zip(self.rgb, sel.factors[:3], strict=False):
            w.value = f
        self.show_rgb()  # the top three selected factors
        if sel.pairs and max(score for *_, score in sel.pairs) <= 0:
            self.status.value += (
                "\nEvery score is negative: leakage outweighs coverage (raw pixel counts; "
                "sparse painting leaves most pixels outside the ROIs). Try normalise = area, "
                "a smaller λ or an activity threshold."
            )
        keep_factors(self)

    # -- saving -----------------------------------------------------------------------------
    def _default_save(self) -> None:
        """``<workspace>/results/<store>_z<z>_factors.zarr`` unless the user chose a path.

        Without an image: ``STORE_factors/factors.zarr`` beside the store, as the
        ``factors`` command writes.
        """
        if self.grid is None or str(self.save_path.value) not in ("", ".", self._auto_save):
            return
        store = Path(str(self.grid.source))
        img = self.image.value
        if img is None:
            path = store.with_name(store.stem + "_factors") / "factors.zarr"
        else:
            path = results_path(img, f"{store.stem}_z{self.grid.z}_factors.zarr")
        self._auto_save = str(path)
        self.save_path.value = path

    def save(self, *_: Any) -> None:
        """Write the factors (and the selection, if one was made) as ``factors.zarr``."""
        if self.factors is None:
            show_error("Factors: run the NMF first; then save its factors.")
            return
        self._default_save()
        path = str(self.save_path.value)
        if path in ("", "."):
            show_error("Factors: choose where to save the factors (a .zarr folder).")
            return
        try:
            out = self.factors.save(path)
        except (OSError, ValueError) as err:
            show_error(f"Factors: could not save the factors: {err}")
            return
        say_file(self.status, "factors saved to {} (brainfeatures cluster reads it)", out)

    # -- clustering -------------------------------------------------------------------------
    def cluster(self, *_: Any) -> None:
        """Cluster inside the (eroded) mask; add a Labels layer; score against the truth."""
        fac = self.factors
        if fac is None:
            show_error("Factors: run the NMF first (it also sets the store slice).")
            return
        mask = None
        if self.mask.value is not None:
            mask = self._on_grid(self.mask.value) == int(self.mask_id.value)
            mask = erode_mask(mask, fac.grid.radius(float(self.erode.value)))
        mask = fac.used if mask is None else mask & fac.used  # the pixels NMF could use
        opts = {
            "method": str(self.method.value),
            "k": int(self.n_clusters.value),
            "mask": mask,
            "smooth": fac.grid.sigma(float(self.smooth.value)),
        }
        grid = fac.coefficient_grid() if self.on.value == "NMF coefficients" else fac.grid
        if grid.features is None:  # factors opened from a file keep no features
            show_error("Factors: these factors were opened from a file; cluster on the NMF "
                       "coefficients, or run the NMF to cluster on the features.")  # fmt: skip
            return

        def job() -> ProgressGen[Any]:
            yield Progress(0, None, "clustering")
            return cluster_map(grid.features, **opts)

        done = lambda res: self._cluster_done(res, opts)  # noqa: E731
        self.runner.start(job(), name="Clustering", on_done=done)

    def _cluster_done(self, res: Any, opts: dict[str, Any] | None = None) -> None:
        self._put("clusters", res.labels, kind="labels", opacity=0.6).visible = True
        rgb = self._own("NMF RGB")
        if rgb is not None:  # the clusters are not drawn over the composite
            rgb.visible = False
        text = f"{res.k} clusters on {res.n_labelled} map points"
        if res.bic is not None:
            text += f"; BIC {res.bic:.4g}"
        if self.truth.value is not None:
            self.scores = score_against(self._on_grid(self.truth.value), res.labels)
            text += f"; V-measure {self.scores['v_measure']:.3f}, ARI {self.scores['ari']:.3f}"
        self.status.value = text
        keep_clusters(self, res, opts or {})
