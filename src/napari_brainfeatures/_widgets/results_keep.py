"""What each dock keeps of what it shows: one small call after each result.

:func:`keep` writes a result into the workspace of the dock's image layer (a
writer of :mod:`napari_brainfeatures.results.kinds`), adds where it went to the
dock's status line and tells the results browser.  The ``keep_*`` functions
gather a dock's inputs and parameters for it, so the docks stay one line each.
A result that cannot be written is a warning, never a lost result on screen.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari.utils.notifications import show_warning

from napari_brainfeatures._widgets._common import (
    class_names,
    image_shape,
    source_path,
    workspace_for,
    workspace_root,
)
from napari_brainfeatures.results import kinds

#: called with the new result's folder after every :func:`keep` (the results browser)
LISTENERS: list[Callable[[Path], Any]] = []


def _workspace(layer: Any) -> Path:
    """The layer's workspace folder; created for a volume (a 2-D image gets the folder only)."""
    root = workspace_root(layer)
    if not (root / "workspace.json").exists() and len(image_shape(layer)) == 3:
        root = workspace_for(layer).root
    return root


def keep(status: Any, layer: Any, write: Callable[[Path], Path], *, what: str) -> Path | None:
    """``write(workspace)`` into the workspace of ``layer``; the folder (None on failure).

    ``status`` (a dock's status label) gets a line saying where it went.
    """
    if layer is None:
        return None
    try:
        path = write(_workspace(layer))
    except (OSError, ValueError) as err:
        show_warning(f"{what}: shown, but not kept in the workspace: {err}")
        return None
    status.value = f"{status.value}\n{what} kept in results/{path.parent.name}/{path.name}"
    status.tooltip = str(path)
    for listener in list(LISTENERS):
        listener(path)
    return path


def _volume(layer: Any) -> str | None:
    if layer is None:
        return None
    return source_path(layer) or f"layer {layer.name!r}"


def _names(layer: Any) -> dict[int, str] | None:
    return class_names(layer) or None


def _store_inputs(widget: Any) -> dict[str, Any]:
    from napari_brainfeatures.features.store import FeatureStore

    grid, img = widget.grid, widget.image.value
    out: dict[str, Any] = {"volume": _volume(img), "feature_store": grid.source}
    try:
        out["model"] = (FeatureStore(Path(str(grid.source))).attrs.get("model") or {}).get("file")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return out


def _geo(widget: Any) -> dict[str, Any]:
    img = widget.image.value
    return widget.grid.layer_kwargs(
        None if img is None else img.scale, None if img is None else img.translate
    )


def keep_factors(widget: Any) -> Path | None:
    """The Factors dock's NMF (and its selection, once made): maps, ``factors.zarr``, tables."""
    fac, rois = widget.factors, widget.rois.value
    sel = fac.selection
    params = {**fac.info, "store_z": widget.grid.index, "z": widget.grid.z}
    name = f"{Path(str(widget.grid.source)).stem}-z{widget.grid.z}"
    extra: dict[str, Any] = {}
    inputs = _store_inputs(widget)
    if sel is not None and rois is not None:
        extra = {"rois": widget._on_grid(rois), "roi_names": _names(rois)}
        inputs["rois"] = rois.name
        params.update(selection=sel.params)
    return keep(
        widget.status,
        widget.image.value,
        lambda ws: kinds.save_factors_result(
            ws,
            fac,
            **_geo(widget),
            name=name + ("-selection" if sel else ""),
            inputs=inputs,
            parameters=_plain(params),
            **extra,
        ),
        what="factors" + (" and selection" if sel else ""),
    )


def keep_clusters(widget: Any, res: Any, opts: dict[str, Any]) -> Path | None:
    """The Factors dock's cluster map with its scores and, with a ground truth, profiles."""
    truth = widget.truth.value
    geo = _geo(widget)
    lab = res.labels
    params = {k: v for k, v in opts.items() if k != "mask"}
    params.update(on=str(widget.on.value), mask=getattr(widget.mask.value, "name", None))
    scores = {"k": res.k, "n_labelled": res.n_labelled, "bic": res.bic}
    scores.update(widget.scores if truth is not None else {})  # scored against this truth
    inputs = {**_store_inputs(widget), "truth": getattr(truth, "name", None)}
    return keep(
        widget.status,
        widget.image.value,
        lambda ws: kinds.save_clusters_result(
            ws,
            lab,
            **geo,
            scores=scores,
            truth=None if truth is None else widget._on_grid(truth),
            truth_names=_names(truth),
            name=f"{Path(str(widget.grid.source)).stem}-z{widget.grid.z}-clusters",
            inputs=inputs,
            parameters=_plain(params),
        ),
        what="clusters",
    )


def keep_evaluation(widget: Any, evaluation: Any) -> Path | None:
    """The Train dock's evaluation: scores, per-class table, confusion figure."""
    model = getattr(widget, "model_file", None)
    labels = widget.area_labels.value
    inputs = {"volume": _volume(widget.image.value), "labels": getattr(labels, "name", None)}
    inputs["model"] = str(model) if model else None
    params = {
        "tta": bool(evaluation.tta),
        "patch_size": widget.splits.test.patch_size,
        "eval_per_class": int(widget.eval_per_class.value),
        "split": widget.splits.record(),
    }
    name = Path(str(model)).stem if model else "model"
    return keep(
        widget.scores,
        widget.image.value,
        lambda ws: kinds.save_evaluation_result(
            ws, evaluation, name=name, inputs=inputs, parameters=_plain(params)
        ),
        what="evaluation",
    )


def keep_report(
    widget: Any, analysis: Any, inputs: dict[str, Any], params: dict[str, Any]
) -> Path | None:
    """The Analyse dock's report: JSON, metrics table, figure."""
    model = inputs.get("model")
    return keep(
        widget.status,
        widget.image.value,
        lambda ws: kinds.save_report_result(
            ws,
            analysis,
            name=Path(str(model)).stem if model else "analysis",
            inputs={"volume": _volume(widget.image.value), **inputs},
            parameters=_plain(params),
        ),
        what="report",
    )


def keep_latent(widget: Any, **payload: Any) -> Path | None:
    """The latent dock's comparison table, with the fields or picture just shown."""
    from napari_brainfeatures.latent.model import model_label

    layer = widget.population.value
    inputs = {"population": _volume(layer), "rois": getattr(widget.rois.value, "name", None)}
    params = {"model": model_label(widget.model, widget.meta), **widget.meta}
    params.pop("training", None)  # per-epoch history: the model file has it
    return keep(
        widget.status,
        layer,
        lambda ws: kinds.save_latent_result(
            ws,
            comparison=widget.comparison,
            name=params["model"],
            inputs=inputs,
            parameters=_plain(params),
            **payload,
        ),
        what="latent result",
    )


def _plain(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON takes them: numbers, strings, lists; anything else as text."""
    import numpy as np

    def one(v: Any) -> Any:
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, dict):
            return {str(k): one(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [one(x) for x in v]
        if isinstance(v, np.ndarray):
            return f"array {v.shape} {v.dtype}"
        if isinstance(v, np.generic):
            return v.item()
        return getattr(v, "name", None) or str(v)

    return {str(k): one(v) for k, v in params.items()}
