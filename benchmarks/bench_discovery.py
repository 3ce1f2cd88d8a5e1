"""Discovery on the synthetic micro-CT: does the whole pipeline find areas and layers?

Composes the public APIs: synthetic slab (``synthetic.make_microct``) → patches from
slices 50 µm apart (``patches.sample_splits``) → CNN (``training.train_cnn``) → dense
post-ReLU features of the test slice (``dense.compute_feature_map``) → NMF k = 15
(``factors.fit_nmf``) → greedy factor selection against the six areas (paper rule:
λ = 0.5, raw counts, ``v > 0``) → GMM(4) on the NMF coefficients of cortex eroded
by 64 px (scaled to the slab) → ARI / V-measure against the five layer groups
(L1, L2/3, L4, L5, L6) → feature analyses of the trained network against the same
architecture with random weights (``analysis.compare_extractors``).

Keys: ``layer_ari``, ``layer_vmeasure``, ``layer_ari_smoothed`` (the same GMM(4)
after smoothing the coefficients inside the eroded cortex by a Gaussian of
``layer_smooth_px``, half the patch size: ``clustering.smooth_within``),
``layer_probe_accuracy`` (supervised
linear/RBF/logistic probes of the layer group from the features, fitted on the
left half of the eroded cortex and scored on the right: the ceiling for any
clustering; ``layer_probe_chance`` the majority-group share),
``layer_at_scale`` (only with ``BRAINFEATURES_DISCOVERY_LAYER_SCALE=S``: the layer
ARI (plain and smoothed) and logistic probe on the test slice rendered S× larger, whose
cortex is S× thicker; see :func:`layers_at_scale`), ``areas_with_own_factor`` (areas
whose selected factor is active on ≥ 50 % of the area; the selection gives
every area a distinct factor),
``vmeasure_trained`` / ``vmeasure_random`` (GMM fitted on validation features,
V-measure on test features), ``noise_acc_trained`` / ``noise_acc_random``
(logistic regression under growing Gaussian noise).
Targets: layer ARI ≥ 0.5; ≥ 5 of 6 areas; trained beats random in V-measure and
under noise.  ``targets`` (full run only) says which are met, the layer target
for the paper's recipe and with smoothing separately.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3)
# full: the paper's protocol at the train_cnn benchmark's sizes (128 px patches, the
# sample's 128 x 1536 x 1024 slab, slices 50 µm apart, the paper's 64 px erosion), with 600
# training patches per class, as its figures in docs/benchmarks.md were measured (the
# training default is 1000 since bfloat16 steps made that affordable); quick: a
# small slab and 64 px patches (a plumbing check, its CNN is weak).
SIZES = {
    True: {
        "shape": (8, 512, 512),
        "patch": 64,
        "per_class": 300,
        "eval_per_class": 150,
        "epochs": 8,
        "stride": 4,
        "slices": (1, 4, 6),
        "erode": 16,
        "smooth": 32,
    },
    False: {
        "shape": None,
        "patch": 128,
        "per_class": 600,
        "eval_per_class": None,
        "epochs": None,
        "stride": 4,
        "slices": None,
        "erode": 64,
        "smooth": 64,
    },
}
MODEL_ENV = "BRAINFEATURES_DISCOVERY_MODEL"  # a trained model file to reuse (skips training)
# e.g. 1.87: the layers also measured on the slab rendered at the paper's slice size (~5.5 M
# pixels, paper 001; sqrt(5.5e6 / (1536 * 1024)) = 1.87 x the sample's).  Off by default.
SCALE_ENV = "BRAINFEATURES_DISCOVERY_LAYER_SCALE"


def _pictures(folder: Path, U, sel, areas, layers, clusters) -> None:  # noqa: ANN001
    """Factor heatmaps (selected ones titled with their area), truth and clusters."""
    from matplotlib.figure import Figure

    picked = {f: a for f, a, _ in sel.pairs}
    fig = Figure(figsize=(16, 10), dpi=70)
    for i in range(U.shape[-1]):
        ax = fig.add_subplot(3, 6, i + 1)
        ax.imshow(U[..., i], cmap="magma")
        ax.set_title(f"F{i}" + (f" → area {picked[i]}" if i in picked else ""), fontsize=9)
        ax.set_axis_off()
    for j, (img, title) in enumerate(
        ((areas, "areas"), (layers, "layer groups"), (clusters, "GMM(4) clusters"))
    ):
        ax = fig.add_subplot(3, 6, 16 + j)
        ax.imshow(img, cmap="tab10", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    fig.savefig(folder / "discovery.png")


def _layer_measures(U, fmap, layers, cortex, smooth, *, max_rows: int = 20_000):  # noqa: ANN001, ANN202
    """Layer clusters and probes in the cortex: ``(clusters, scores, probes, chance, truth)``.

    GMM(4) on the NMF coefficients ``U`` inside ``cortex``, scored against the
    five layer groups, as the paper does it and (``scores["smoothed"]``) after
    smoothing ``U`` inside the mask by a Gaussian of ``smooth`` grid px (per axis);
    supervised probes of the group from the features ``fmap`` (the ceiling for
    any clustering of single pixels), fitted on the left half of the mask and
    scored on the right, at most ``max_rows`` pixels a side.
    """
    from napari_brainfeatures.analyse import probe_scores
    from napari_brainfeatures.factors.clusters import cluster_map, score_against
    from napari_brainfeatures.synthetic import LAYER_GROUPS

    group = np.zeros(256, np.uint8)
    for g, (_, ids) in enumerate(LAYER_GROUPS.items(), start=1):
        group[list(ids)] = g
    truth = group[layers]
    clusters = cluster_map(U, method="gmm", k=4, mask=cortex, seed=0)
    smoothed = cluster_map(U, method="gmm", k=4, mask=cortex, seed=0, smooth=smooth)
    left = np.zeros_like(cortex)
    left[:, : cortex.shape[1] // 2] = True
    rng = np.random.default_rng(0)
    tr, te = (
        np.sort(rng.permutation(np.flatnonzero(m))[:max_rows])
        for m in (cortex & left, cortex & ~left)
    )
    f2, t2 = fmap.reshape(-1, fmap.shape[-1]), truth.ravel()
    probe = probe_scores(f2[tr], t2[tr], f2[te], t2[te], seed=0)
    chance = float(np.bincount(t2[te]).max() / len(te))
    scores = score_against(truth, clusters.labels, cortex)
    scores["smoothed"] = score_against(truth, smoothed.labels, cortex)
    return clusters, scores, probe, chance, truth


def layers_at_scale(model, shape, z: int, scale: float, cfg: dict, out: Path) -> dict:  # noqa: ANN001
    """The layer measures on the cortex of the same slab rendered ``scale``× larger.

    The sample's layout scales with the slice size while cells keep their size
    in voxels, so a larger rendering has a thicker cortex at the same
    resolution (2× is about 1230 px, a real S1's thickness at 1.17 µm).  Only
    the top 60 % of the slice (cortex and callosum) is rendered.
    """
    from napari_brainfeatures.factors.clusters import erode_mask
    from napari_brainfeatures.factors.maps import finite_rows
    from napari_brainfeatures.factors.nmf import fit_nmf
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.progress import run as drive
    from napari_brainfeatures.synthetic import make_microct_lazy

    big = (shape[0], round(shape[1] * scale), round(shape[2] * scale))
    ct = make_microct_lazy(big, chunks=(1, 512, 512))
    top = int(0.6 * big[1])
    store = drive(
        compute_feature_map(
            np.asarray(ct.image[z, :top]),
            model,
            stride=cfg["stride"],
            out=out / "features_scaled.zarr",
            overwrite=True,
        )
    )
    grid = FeatureGrid.from_store(store)  # the top of slice z (a 2-D image)
    fmap = np.asarray(grid.features)  # (Y, X, C)
    rows, valid = finite_rows(fmap)
    areas = grid.labels_on(ct.areas[z, :top])
    cortex = erode_mask((areas == ct.classes.by_name("Ctx").id) & valid, grid.radius(cfg["erode"]))
    U = np.zeros((*valid.shape, 15), np.float32)
    U[valid] = drive(fit_nmf(rows, 15, seed=0)).W
    _, scores, probe, _, _ = _layer_measures(
        U, fmap, grid.labels_on(ct.layers[z, :top]), cortex, grid.sigma(cfg["smooth"])
    )
    return {
        "scale": scale,
        "layer_ari": round(float(scores["ari"]), 4),
        "layer_ari_smoothed": round(float(scores["smoothed"]["ari"]), 4),
        "layer_probe_logistic": round(probe["logistic"], 4),
        "cortex_pixels": int(cortex.sum()),
    }


def run(quick: bool, out: Path) -> dict:
    from napari_brainfeatures.analyse import (
        compare_extractors,
        feature_extractor,
        training_input_stats,
    )
    from napari_brainfeatures.factors.clusters import erode_mask
    from napari_brainfeatures.factors.maps import finite_rows
    from napari_brainfeatures.factors.nmf import fit_nmf
    from napari_brainfeatures.factors.select import select_factors
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.models.cnn import load_cnn
    from napari_brainfeatures.progress import run as drive
    from napari_brainfeatures.synthetic import DEFAULT_SHAPE
    from napari_brainfeatures.synthetic.weights import sample_training_splits
    from napari_brainfeatures.train.fit import DEFAULTS, make_config, train_cnn

    cfg = dict(SIZES[quick])
    for key in ("per_class", "eval_per_class", "epochs"):
        cfg[key] = cfg[key] or DEFAULTS[key]
    shape = cfg["shape"] or DEFAULT_SHAPE
    times: dict[str, float] = {}
    t = time.perf_counter()
    ct, _, splits = sample_training_splits(  # renders per slice
        shape,
        slices=cfg["slices"],
        patch_size=cfg["patch"],
        per_class=cfg["per_class"],
        eval_per_class=cfg["eval_per_class"],
    )
    times["sample_s"] = time.perf_counter() - t
    t = time.perf_counter()
    if os.environ.get(MODEL_ENV):
        model, meta = load_cnn(os.environ[MODEL_ENV], expect_patch_size=cfg["patch"])
        best_val = float("nan")
    else:
        trained = drive(
            train_cnn(
                splits.train,
                splits.val,
                config=make_config(patch_size=cfg["patch"], n_classes=6),
                epochs=cfg["epochs"],
                seed=0,
                classes=ct.classes,
                checkpoint_path=out / "cnn.safetensors",
            )
        )
        model, best_val, meta = trained.model, float(trained.best_val_acc), trained.meta
    times["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    z = splits.slices()["test"][0]
    store = drive(
        compute_feature_map(
            ct.image,
            model,
            out=out / "features.zarr",
            stride=cfg["stride"],
            region=z,
            overwrite=True,
        )
    )
    times["dense_s"] = time.perf_counter() - t
    grid = FeatureGrid.from_store(store)  # the test slice on the image grid
    fmap = np.asarray(grid.features)  # (Y, X, C)
    rows, valid = finite_rows(fmap)
    t = time.perf_counter()
    nmf = drive(fit_nmf(rows, 15, seed=0))
    times["nmf_s"] = time.perf_counter() - t
    areas, layers = grid.labels_on(ct.areas), grid.labels_on(ct.layers)  # at the slice's z
    (out / "maps").mkdir(exist_ok=True)

    sel = select_factors(nmf.W, areas[valid], lam=0.5, roi_ids=ct.classes.ids)
    sel_area = select_factors(
        nmf.W, areas[valid], lam=0.5, roi_ids=ct.classes.ids, normalise="area"
    )
    own = sum(c >= 0.5 for c in sel.coverage_fraction)

    U = np.zeros((*valid.shape, 15), np.float32)
    U[valid] = nmf.W
    ctx = ct.classes.by_name("Ctx").id
    cortex = erode_mask((areas == ctx) & valid, grid.radius(cfg["erode"]))
    clusters, scores, layer_probe, layer_chance, truth = _layer_measures(
        U, fmap, layers, cortex, grid.sigma(cfg["smooth"])
    )

    t = time.perf_counter()
    extractors = {
        "trained": feature_extractor("cnn", model=model),
        "random": feature_extractor(
            "random", config=model.config, seed=1, input_stats=training_input_stats(meta)
        ),
    }
    report = drive(
        compare_extractors(
            extractors,
            (splits.val.patches, splits.val.labels),
            (splits.test.patches, splits.test.labels),
            sigmas=SIGMAS,
            seed=0,
        )
    )
    times["analyse_s"] = time.perf_counter() - t
    scaled = None
    scale = float(os.environ.get(SCALE_ENV) or 0)
    if scale > 0:  # the layer measures on a thicker cortex
        t = time.perf_counter()
        scaled = layers_at_scale(model, shape, z, scale, cfg, out)
        times["scaled_s"] = time.perf_counter() - t
    _pictures(out / "maps", U, sel, areas, truth, clusters.labels)
    r = {k: report[k] for k in ("trained", "random")}
    res = {
        "layer_ari": round(float(scores["ari"]), 4),
        "layer_vmeasure": round(float(scores["v_measure"]), 4),
        "layer_ari_smoothed": round(float(scores["smoothed"]["ari"]), 4),
        "layer_smooth_px": cfg["smooth"],
        "layer_probe_accuracy": {k: round(v, 4) for k, v in layer_probe.items()},
        "layer_at_scale": scaled,
        "layer_probe_chance": round(layer_chance, 4),
        "areas_with_own_factor": int(own),
        "coverage_per_area": {
            ct.classes.by_id(a).name: round(c, 3)
            for (_, a, _), c in zip(sel.pairs, sel.coverage_fraction, strict=True)
        },
        "areas_with_own_factor_area_normalised": int(
            sum(c >= 0.5 for c in sel_area.coverage_fraction)
        ),
        "vmeasure_trained": round(r["trained"]["vmeasure"], 4),
        "vmeasure_random": round(r["random"]["vmeasure"], 4),
        "noise_sigmas": list(SIGMAS),
        "noise_acc_trained": [round(a, 4) for a in r["trained"]["noise"]["accuracy"]],
        "noise_acc_random": [round(a, 4) for a in r["random"]["noise"]["accuracy"]],
        "probe_logistic_trained": round(r["trained"]["probes"]["logistic"], 4),
        "probe_logistic_random": round(r["random"]["probes"]["logistic"], 4),
        "gram_distance_trained": round(r["trained"]["gram_distance"], 4),
        "gram_distance_random": round(r["random"]["gram_distance"], 4),
        "cnn_best_val_acc": round(best_val, 4),
        "nmf_rel_error": round(float(nmf.rel_error), 4),
        "nmf_rows": int(rows.shape[0]),
        "grid": list(valid.shape),
        "shape": list(shape),
        "patch_size": cfg["patch"],
        "stride": cfg["stride"],
        **{k: round(v, 1) for k, v in times.items()},
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    res["targets"] = None if quick else _targets(res)
    return res


def _targets(res: dict) -> dict[str, bool]:
    """Issue #5's targets, each read off the measured values (the full run only).

    The layer target is reported for the paper's recipe (``layer_ari``) and with
    the product's smoothing (``layer_ari_smoothed``) separately.
    """
    t, r = res["noise_acc_trained"], res["noise_acc_random"]
    return {
        "areas_with_own_factor>=5": res["areas_with_own_factor"] >= 5,
        "layer_ari>=0.5": res["layer_ari"] >= 0.5,
        "layer_ari_smoothed>=0.5": res["layer_ari_smoothed"] >= 0.5,
        "vmeasure_trained>random": res["vmeasure_trained"] > res["vmeasure_random"],
        "noise_acc_trained>=random_and_above_somewhere": all(
            a >= b for a, b in zip(t, r, strict=True)
        )
        and any(a > b for a, b in zip(t, r, strict=True)),
    }
