"""Discovery on the synthetic micro-CT: does the whole pipeline find areas and layers?

Composes the public APIs: synthetic slab (``synthetic.make_microct``) → patches from
slices 50 µm apart (``patches.sample_splits``) → CNN (``training.train_cnn``) → dense
post-ReLU features of the test slice (``dense.compute_feature_map``) → NMF k = 15
(``factors.fit_nmf``) → greedy factor selection against the six areas (paper rule:
λ = 0.5, raw counts, ``v > 0``) → GMM(4) on the NMF coefficients of cortex eroded
by 64 px (scaled to the slab) → ARI / V-measure against the five layer groups
(L1, L2/3, L4, L5, L6) → feature analyses of the trained network against the same
architecture with random weights (``analysis.compare_extractors``).

Keys: ``layer_ari``, ``layer_vmeasure``, ``areas_with_own_factor`` (areas whose
selected factor is active on ≥ 50 % of the area; the selection gives every area
a distinct factor), ``vmeasure_trained`` / ``vmeasure_random`` (GMM fitted on
validation features, V-measure on test features), ``noise_acc_trained`` /
``noise_acc_random`` (logistic regression under growing Gaussian noise).
Targets: layer ARI ≥ 0.5; ≥ 5 of 6 areas; trained beats random in V-measure and
under noise.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3)
# quick: CI-sized; full: the pipeline's "small" sizes with the paper's 64 px erosion scaled.
SIZES = {
    True: {
        "shape": (8, 512, 512),
        "patch": 64,
        "per_class": 150,
        "epochs": 6,
        "stride": 4,
        "slices": (1, 4, 6),
        "erode": 16,
    },
    False: {
        "shape": (96, 512, 512),
        "patch": 64,
        "per_class": 400,
        "epochs": 10,
        "stride": 2,
        "slices": None,
        "erode": 32,
    },
}


def run(quick: bool, out: Path) -> dict:
    from napari_brainfeatures._progress import run as drive
    from napari_brainfeatures.analysis import compare_extractors, feature_extractor
    from napari_brainfeatures.clustering import cluster_map, erode_mask, on_grid, score_against
    from napari_brainfeatures.dense import compute_feature_map
    from napari_brainfeatures.factors import finite_rows, fit_nmf, select_factors
    from napari_brainfeatures.patches import sample_splits
    from napari_brainfeatures.synthetic import LAYER_GROUPS, make_microct
    from napari_brainfeatures.training import make_config, train_cnn

    cfg = SIZES[quick]
    times: dict[str, float] = {}
    t = time.perf_counter()
    ct = make_microct(cfg["shape"], seed=0)
    splits = sample_splits(
        ct.image,
        ct.areas,
        slices=cfg["slices"],
        voxel_size=ct.voxel_size_um[0],
        patch_size=cfg["patch"],
        per_class=cfg["per_class"],
        classes=ct.classes,
        seed=0,
    )
    times["sample_s"] = time.perf_counter() - t
    t = time.perf_counter()
    trained = drive(
        train_cnn(
            splits.train,
            splits.val,
            config=make_config(patch_size=cfg["patch"], n_classes=6),
            epochs=cfg["epochs"],
            seed=0,
            classes=ct.classes,
        )
    )
    times["train_s"] = time.perf_counter() - t
    model = trained.model

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
    f = store.features()[0]  # (C, Y, X) of the test slice
    rows, valid = finite_rows(np.moveaxis(np.asarray(f), 0, -1))
    t = time.perf_counter()
    nmf = drive(fit_nmf(rows, 15, seed=0))
    times["nmf_s"] = time.perf_counter() - t
    origin, step = store.attrs["origin"][1:], store.attrs["step"][1:]
    grid = lambda a: on_grid(np.asarray(a[z]), valid.shape, origin=origin, step=step)  # noqa: E731
    areas, layers = grid(ct.areas), grid(ct.layers)

    sel = select_factors(nmf.W, areas[valid], lam=0.5, roi_ids=ct.classes.ids)
    sel_area = select_factors(
        nmf.W, areas[valid], lam=0.5, roi_ids=ct.classes.ids, normalise="area"
    )
    own = sum(c >= 0.5 for c in sel.coverage_fraction)

    U = np.zeros((*valid.shape, 15), np.float32)
    U[valid] = nmf.W
    ctx = ct.classes.by_name("Ctx").id
    cortex = erode_mask((areas == ctx) & valid, cfg["erode"] / step[0])
    clusters = cluster_map(U, method="gmm", k=4, mask=cortex, seed=0)
    group = np.zeros(256, np.uint8)
    for g, (_, ids) in enumerate(LAYER_GROUPS.items(), start=1):
        group[list(ids)] = g
    scores = score_against(group[layers], clusters.labels, cortex)

    t = time.perf_counter()
    extractors = {
        "trained": feature_extractor("cnn", model=model),
        "random": feature_extractor("random", config=model.config, seed=1),
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
    r = {k: report[k] for k in ("trained", "random")}
    return {
        "layer_ari": round(float(scores["ari"]), 4),
        "layer_vmeasure": round(float(scores["v_measure"]), 4),
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
        "cnn_best_val_acc": round(float(trained.best_val_acc), 4),
        "nmf_rel_error": round(float(nmf.rel_error), 4),
        "nmf_rows": int(rows.shape[0]),
        "grid": list(valid.shape),
        "shape": list(cfg["shape"]),
        **{k: round(v, 1) for k, v in times.items()},
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
