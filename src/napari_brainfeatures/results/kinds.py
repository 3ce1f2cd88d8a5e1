"""One writer per kind of result: what each dock (and script) keeps of what it shows.

Each takes the workspace folder, the stage's own result object and the inputs
and parameters that made it, builds the folder with :func:`.record.new_result`
and returns its path.  Geometry (``scale``, ``translate``) is the napari layer's:
micrometres per pixel of the map and to its first pixel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_brainfeatures.results.record import new_result
from napari_brainfeatures.results.tables import area_table, mean_activity_table, profile_table

__all__ = [
    "save_clusters_result",
    "save_evaluation_result",
    "save_factors_result",
    "save_latent_result",
    "save_report_result",
]

Where = str | os.PathLike[str]
Names = Mapping[int, str] | None
Classes = Mapping[int, tuple[str, Sequence[float]]] | None


def _figure(**kwargs: Any) -> Any:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, thread-safe

    return Figure(layout="constrained", **kwargs)


def _map_axes(ndim_geo: int) -> str:
    return "zyx" if ndim_geo == 3 else "yx"


def save_evaluation_result(
    workspace: Where,
    evaluation: Any,
    *,
    name: str = "evaluation",
    inputs: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """``evaluation.json``, ``per_class.csv``, ``metrics.csv`` and ``confusion.png/svg``.

    ``evaluation`` is a :class:`~napari_brainfeatures.train.evaluation.Evaluation`.
    """
    from napari_brainfeatures.train.evaluation import plot_confusion

    per = evaluation.per_class()
    rows = [[c, d["precision"], d["recall"], d["f1"], d["support"]] for c, d in per.items()]
    with new_result(workspace, "evaluation", name, inputs=inputs, parameters=parameters) as out:
        out.json("evaluation.json", evaluation.to_dict())
        out.table("per_class.csv", ["class", "precision", "recall", "f1", "support"], rows)
        out.table(
            "metrics.csv",
            ["metric", "value"],
            [["accuracy", evaluation.accuracy], ["macro_f1", evaluation.macro_f1],
             ["n", evaluation.n], ["tta", bool(evaluation.tta)]],
        )  # fmt: skip
        fig = _figure(figsize=(4.5, 4))
        plot_confusion(evaluation, fig.add_subplot())
        out.figure("confusion", fig)
    return out.root


def save_factors_result(
    workspace: Where,
    factors: Any,
    *,
    scale: Sequence[float],
    translate: Sequence[float],
    rois: Any = None,
    roi_names: Names = None,
    name: str = "factors",
    inputs: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """The NMF maps (one map, a channel per factor), ``factors.zarr`` and the tables.

    Parameters
    ----------
    factors : :class:`~napari_brainfeatures.factors.results.Factors`
    scale, translate : 2 or 3 floats
        The factor layers' geometry (:meth:`FeatureGrid.layer_kwargs`); with 3 the
        maps are one slice ``(k, 1, H, W)`` of the volume.
    rois : int array ``(H, W)`` on the grid, optional
        ROI / area ids: adds ``mean_activity.csv`` and ``roi_sizes.csv``.
    """
    from napari_brainfeatures.factors.results import save_factors

    maps = np.asarray(factors.maps, dtype=np.float32)  # (k, H, W)
    geo = len(scale)
    names = [f"F{i}" for i in range(factors.k)]
    with new_result(workspace, "factors", name, inputs=inputs, parameters=parameters) as out:
        out.map("factor_maps", maps[:, None] if geo == 3 else maps, axes="c" + _map_axes(geo),
                scale=scale, translate=translate, channels=names)  # fmt: skip
        out.add("factors.zarr", lambda p: save_factors(p, factors))
        sel = factors.selection
        if sel is not None:
            ids = list(sel.roi_ids)
            rows = [[names[i], *row] for i, row in enumerate(np.asarray(sel.scores))]
            cols = [(roi_names or {}).get(int(a), f"ROI {a}") for a in ids]
            out.table("selection_scores.csv", ["factor", *cols], rows)
            out.table(
                "selection.csv",
                ["factor", "roi", "score", "coverage_fraction"],
                [[names[i], (roi_names or {}).get(int(a), f"ROI {a}"), s, c]
                 for (i, a, s), c in zip(sel.pairs, sel.coverage_fraction, strict=True)],
            )  # fmt: skip
        if rois is not None:
            pixel = scale[-2:]
            out.table("mean_activity.csv", *mean_activity_table(maps, rois, names=roi_names))
            out.table("roi_sizes.csv", *area_table(rois, pixel, names=roi_names))
    return out.root


def save_clusters_result(
    workspace: Where,
    labels: Any,
    *,
    scale: Sequence[float],
    translate: Sequence[float],
    scores: Mapping[str, Any] | None = None,
    truth: Any = None,
    truth_names: Names = None,
    name: str = "clusters",
    inputs: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """The cluster map (labels), ``cluster_sizes.csv``, ``scores.json`` and profiles.

    Parameters
    ----------
    labels : int array ``(H, W)``
        Cluster ids (0 = not clustered) on the map's grid.
    scale, translate : 2 or 3 floats
        The layer's geometry (3: one slice of the volume).
    scores : mapping, optional
        V-measure, ARI, BIC... (``scores.json``).
    truth : int array ``(H, W)``, optional
        Areas or layers on the same grid: adds ``profile.csv`` (each cluster's
        share of each) and ``truth_sizes.csv``.
    """
    from napari_brainfeatures.factors.scores import layer_profile

    lab = np.asarray(labels)
    geo = len(scale)
    pixel = scale[-2:]
    with new_result(workspace, "clusters", name, inputs=inputs, parameters=parameters) as out:
        n = int(lab.max(initial=0))
        classes = {i: (f"cluster {i}", _tab10(i)) for i in range(1, n + 1)}
        out.map("clusters", lab[None] if geo == 3 else lab, layer="labels", axes=_map_axes(geo),
                scale=scale, translate=translate, classes=classes)  # fmt: skip
        out.table("cluster_sizes.csv", *area_table(lab, pixel, what="cluster"))
        if scores:
            out.json("scores.json", dict(scores))
        if truth is not None:
            truth = np.asarray(truth)
            out.table("truth_sizes.csv", *area_table(truth, pixel, names=truth_names))
            try:
                profile = layer_profile(lab, truth)
                out.table("profile.csv", *profile_table(profile, names=truth_names))
            except ValueError:  # no pixel with both a cluster and a label: no profile
                pass
    return out.root


def _tab10(i: int) -> tuple[float, ...]:
    from matplotlib import colormaps

    return tuple(float(v) for v in colormaps["tab10"]((i - 1) % 10))


def save_report_result(
    workspace: Where,
    analysis: Any,
    *,
    name: str = "analysis",
    inputs: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """``report.json`` (:meth:`ModelAnalysis.to_dict`), ``metrics.csv`` and ``report.png/svg``."""
    from napari_brainfeatures.analyse.report import report_figure

    report = analysis.report
    names = list(report)
    rows = [[n, *(report[n]["probes"][m] for m in ("linear_svm", "rbf_svm", "logistic")),
             report[n]["vmeasure"], report[n]["gram_distance"],
             report[n]["noise"]["accuracy"][-1]] for n in names]  # fmt: skip
    cols = ["extractor", "linear_svm", "rbf_svm", "logistic", "vmeasure", "gram_distance",
            "noise_acc_last"]  # fmt: skip
    with new_result(workspace, "report", name, inputs=inputs, parameters=parameters) as out:
        out.json("report.json", analysis.to_dict())
        out.table("metrics.csv", cols, rows)
        fig = _figure(figsize=(10, 3.2 * (len(names) + 1)))
        report_figure(report, fig, classes=analysis.classes)
        out.figure("report", fig)
    return out.root


def save_latent_result(
    workspace: Where,
    *,
    comparison: Mapping[str, Mapping[str, Any]] | None = None,
    fields: Any = None,
    picture: Any = None,
    impact: Any = None,
    name: str = "latent",
    inputs: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> Path:
    """The model comparison table, and projective fields or a picture (traversal) as maps.

    Parameters
    ----------
    comparison : mapping model label -> {column: value}, optional
        ``comparison.csv`` (one row per model).
    fields : float array ``(L, H, W, 3)``, optional
        Projective fields (red: small -c, green: small +c, blue: large abs(c)): a map
        with three channels per latent.
    picture : array ``(H, W)`` or ``(H, W, 3)``, optional
        A picture the dock shows (reconstructions, the fields' RGB): ``picture.png``.
    impact : :class:`~napari_brainfeatures.latent.explore.ReceptiveFields`, optional
        Receptive fields: ``impact.csv``, one row per ROI, one column per latent.
    """
    with new_result(workspace, "latent", name, inputs=inputs, parameters=parameters) as out:
        if comparison:
            cols = sorted({c for row in comparison.values() for c in row})
            rows = [[m, *(row.get(c, "") for c in cols)] for m, row in comparison.items()]
            out.table("comparison.csv", ["model", *cols], rows)
        if fields is not None:
            f = np.moveaxis(np.asarray(fields, dtype=np.float32), -1, 1)  # (L, 3, H, W)
            names = [f"z{i} {c}" for i in range(f.shape[0]) for c in ("red", "green", "blue")]
            out.map("projective_fields", f.reshape(-1, *f.shape[-2:]), axes="cyx", channels=names)
        if impact is not None:
            m = np.asarray(impact.impact)  # (R, L)
            rows = [[n, *r] for n, r in zip(impact.roi_names, m, strict=True)]
            out.table("impact.csv", ["roi", *(f"z{i}" for i in range(m.shape[1]))], rows)
        if picture is not None:
            pic = np.asarray(picture)
            fig = _figure(figsize=(6, 6 * pic.shape[0] / max(pic.shape[1], 1)))
            ax = fig.add_subplot()
            ax.imshow(pic, cmap="magma" if pic.ndim == 2 else None)
            ax.set_axis_off()
            out.figure("picture", fig, svg=False)
    return out.root
