"""The whole pipeline, headless, on the built-in sample data (``brainfeatures demo --headless``).

Each stage is a generator over the previous stages' results; :func:`run_pipeline`
chains them and writes every result (JSON) and a picture of every map (PNG)
into one folder:

sample → patches → train CNN → evaluate → dense features on the test slice →
NMF factors → ROI-aligned selection → cortex clusters → feature analyses →
β-VAE / VAE / PCA on a population of sections → latent analyses.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from napari_brainfeatures.progress import Progress

__all__ = ["PRESETS", "Preset", "run_pipeline"]

N_STAGES = 7


@dataclass(frozen=True)
class Preset:
    """Sizes of one pipeline run."""

    shape: tuple[int, int, int]
    patch_size: int
    per_class: int
    epochs: int
    stride: int
    nmf_k: int
    erode: int
    population: int
    vae_shape: tuple[int, int]
    vae_epochs: int
    slices: tuple[int, int, int] | None = None  # None: the paper's sections 50 µm apart


PRESETS = {
    # For tests: a minute or two on 2 cores.
    "tiny": Preset((8, 512, 512), 64, 60, 3, 4, 15, 8, 64, (80, 112), 2, slices=(1, 4, 6)),
    # The default demo: a few minutes on 2 cores.
    "small": Preset((96, 512, 512), 64, 300, 8, 2, 15, 16, 256, (160, 224), 10),
    # The paper's sizes: 128 px patches, the sample's 1536 x 1024 slab, 320x448 sections;
    # patches and epochs as training.DEFAULTS (the train_cnn benchmark's 90 %).
    "full": Preset((128, 1536, 1024), 128, 600, 18, 1, 15, 64, 512, (320, 448), 20),
}


def _save_map(
    path: Path, img: np.ndarray, *, title: str, cmap: str = "gray", labels: bool = False
) -> str:
    fig = Figure(figsize=(6, 6 * img.shape[0] / max(img.shape[1], 1) + 0.4), dpi=100)
    ax = fig.add_subplot()
    kw: dict[str, Any] = {"interpolation": "nearest"} if labels else {}
    ax.imshow(img, cmap=None if img.ndim == 3 else cmap, **kw)
    ax.set_title(title)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    return path.name


def _relay(gen: Generator[Progress, None, Any], step: int, label: str, *, every: str | None = None):  # type: ignore[no-untyped-def]
    """Re-yield ``gen``'s progress as stage ``step`` of the pipeline; return its result.

    With ``every`` set, only records whose ``values`` hold that key are passed on.
    """
    while True:
        try:
            rec = next(gen)
        except StopIteration as stop:
            return stop.value
        if every is None or every in rec.values:
            yield Progress(step, N_STAGES, f"{label}: {rec.message}", rec.values)


def run_pipeline(
    out: str | Path, *, size: str = "small", seed: int = 0, vae: bool = True
) -> Generator[Progress, None, dict[str, Any]]:
    """Run every stage on synthetic data, writing results and pictures into ``out``.

    Parameters
    ----------
    out : path
        Folder for the results (created; existing files of an earlier run are replaced).
    size : {"tiny", "small", "full"}
        A :data:`PRESETS` key.
    seed : int
        Seeds the data and every fit.
    vae : bool
        Also run the β-VAE part (paper 004).

    Returns
    -------
    dict
        A JSON-ready summary of every stage's headline numbers and files.
    """
    if size not in PRESETS:
        raise ValueError(f"size must be one of {sorted(PRESETS)!r}, got {size!r}")
    p = PRESETS[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"size": size, "seed": seed, "files": []}
    t0 = time.perf_counter()

    ctx = yield from _stage_sample(out, p, seed, summary)
    model, splits = yield from _stage_train(out, p, seed, ctx, summary)
    grid = yield from _stage_dense(out, p, model, ctx, splits, summary)
    yield from _stage_factors(out, p, seed, grid, ctx, summary)
    yield from _stage_analyse(out, seed, model, splits, summary)
    if vae:
        yield from _stage_vae(out, p, seed, summary)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _stage_sample(out: Path, p: Preset, seed: int, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    from napari_brainfeatures.synthetic import make_microct

    yield Progress(0, N_STAGES, f"sample: synthetic micro-CT {p.shape}")
    ct = make_microct(p.shape, seed=seed)
    z = p.shape[0] // 2
    summary["files"] += [
        _save_map(out / "sample_image.png", ct.image[z], title=f"synthetic micro-CT, z={z}"),
        _save_map(
            out / "sample_areas.png", ct.areas[z], title="areas (truth)", cmap="tab10", labels=True
        ),
    ]
    return ct


def _stage_train(out: Path, p: Preset, seed: int, ct: Any, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    from napari_brainfeatures.train import sample_splits
    from napari_brainfeatures.train.evaluation import confusion_figure, evaluate
    from napari_brainfeatures.train.fit import make_config, train_cnn

    yield Progress(1, N_STAGES, "patches: sampling train / val / test slices 50 µm apart")
    splits = sample_splits(
        ct.image,
        ct.areas,
        slices=p.slices,
        voxel_size=ct.voxel_size_um[0],
        patch_size=p.patch_size,
        per_class=p.per_class,
        classes=ct.classes,
        seed=seed,
    )
    config = make_config(patch_size=p.patch_size, n_classes=len(ct.classes))
    gen = train_cnn(
        splits.train,
        splits.val,
        config=config,
        epochs=p.epochs,
        seed=seed,
        checkpoint_path=out / "cnn.safetensors",
        classes=ct.classes,
        voxel_size=ct.voxel_size_um,
    )
    result = yield from _relay(gen, 2, "train CNN", every="epoch")
    ev = evaluate(result.model, splits.test, classes=ct.classes)
    ev.save(out / "cnn_evaluation.json")
    confusion_figure(ev, out / "cnn_confusion.png")
    summary["files"] += ["cnn.safetensors", "cnn_evaluation.json", "cnn_confusion.png"]
    summary["cnn"] = {
        "slices": splits.slices(),
        "train_patches": len(splits.train.labels),
        "best_epoch": result.best_epoch,
        "val_accuracy": round(result.best_val_acc, 4),
        "test_accuracy": round(float(ev.accuracy), 4),
        "macro_f1": round(float(ev.macro_f1), 4),
    }
    return result.model, splits


def _stage_dense(out: Path, p: Preset, model: Any, ct: Any, splits: Any, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.features.run import compute_feature_map

    z = splits.slices()["test"][0]
    gen = compute_feature_map(
        ct.image,
        model,
        out=out / "features.zarr",
        stride=p.stride,
        region=z,
        classes=ct.classes,
        overwrite=True,
    )
    store = yield from _relay(gen, 3, f"dense features, test slice z={z}")
    grid = FeatureGrid.from_store(store)  # the test slice on the image grid
    areas = np.asarray(store.areas)[0]
    conf = np.asarray(store.confidence())[0]
    truth = grid.labels_on(ct.areas)
    valid = areas > 0
    summary["dense"] = {
        "z": z,
        "stride": p.stride,
        "grid": list(areas.shape),
        "slice_accuracy": round(float((areas[valid] == truth[valid]).mean()), 4),
    }
    summary["files"] += [
        _save_map(
            out / "dense_areas.png",
            areas,
            title="predicted areas (dense)",
            cmap="tab10",
            labels=True,
        ),
        _save_map(out / "dense_confidence.png", conf, title="confidence", cmap="magma"),
    ]
    return grid


def _stage_factors(out: Path, p: Preset, seed: int, grid: Any, ct: Any, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    from napari_brainfeatures.factors.clusters import cluster_map, erode_mask
    from napari_brainfeatures.factors.maps import rgb_composite
    from napari_brainfeatures.factors.results import factorise
    from napari_brainfeatures.factors.scores import score_against

    gen = factorise(grid, p.nmf_k, seed=seed)
    fac = yield from _relay(gen, 4, f"NMF k={p.nmf_k}")
    maps = fac.maps  # (k, Y, X), NaN where no feature was computed
    truth, layers = grid.labels_on(ct.areas), grid.labels_on(ct.layers)  # (Y, X) each
    sel = fac.select(truth, lam=0.5)
    fac = fac.with_selection(sel)
    fac.save(out / "factors.zarr")  # reopened by open_factors, clustered by `cluster`
    (out / "factor_selection.json").write_text(json.dumps(sel.to_dict(), indent=2))
    top = [f for f, _roi, _s in sel.pairs[:3]]
    while len(top) < 3:
        top.append(len(top))
    fig = Figure(figsize=(15, 9), dpi=80)
    for i in range(p.nmf_k):
        ax = fig.add_subplot(3, (p.nmf_k + 2) // 3, i + 1)
        ax.imshow(maps[i], cmap="inferno")
        ax.set_title(f"factor {i}", fontsize=9)
        ax.set_axis_off()
    fig.savefig(out / "nmf_factors.png")
    summary["files"] += [
        "factors.zarr",
        "factor_selection.json",
        "nmf_factors.png",
        _save_map(
            out / "nmf_rgb.png", rgb_composite(maps, tuple(top)), title=f"factors {top} as RGB"
        ),
    ]
    cortex = erode_mask(truth == ct.classes.by_name("Ctx").id, grid.radius(p.erode))
    clusters = cluster_map(
        fac.coefficient_grid().features, method="gmm", k=4, mask=cortex, seed=seed
    )
    scores = score_against(layers, clusters.labels, cortex)
    summary["files"].append(
        _save_map(
            out / "cortex_clusters.png",
            clusters.labels,
            title="GMM(4) on NMF, cortex",
            cmap="tab10",
            labels=True,
        )
    )
    summary["factors"] = {
        "k": p.nmf_k,
        "rel_error": round(float(fac.info["rel_error"]), 4),
        "pairs": [
            {"factor": int(f), "roi": ct.classes.by_id(int(r)).name, "score": float(sc)}
            for f, r, sc in sel.pairs
        ],
        "cortex_layers": {k: round(float(v), 4) for k, v in scores.items() if k != "n"},
    }


def _stage_analyse(out: Path, seed: int, model: Any, splits: Any, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    from napari_brainfeatures.analyse import (
        compare_extractors,
        feature_extractor,
        report_figure,
        report_json,
    )

    extractors = {
        "trained CNN": feature_extractor("cnn", model=model),
        # the saved model file records its input standardisation, which the baseline shares
        "random weights": feature_extractor("random", model=out / "cnn.safetensors", seed=seed),
    }
    gen = compare_extractors(
        extractors,
        (splits.val.patches, splits.val.labels),
        (splits.test.patches, splits.test.labels),
        seed=seed,
    )
    report = yield from _relay(gen, 5, "analyse")
    (out / "analysis.json").write_text(json.dumps(report_json(report), indent=2))
    report_figure(report, classes=splits.train.classes).savefig(out / "analysis.png")
    summary["files"] += ["analysis.json", "analysis.png"]
    summary["analysis"] = {
        name: {
            "vmeasure": r["vmeasure"],
            "gram_distance": r["gram_distance"],
            "probes": r["probes"],
        }
        for name, r in report_json(report).items()
    }


def _stage_vae(out: Path, p: Preset, seed: int, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    from napari_brainfeatures.latent.explore import (
        disentanglement_score,
        projective_field,
        projective_rgb,
        receptive_fields,
    )
    from napari_brainfeatures.latent.population import preprocess
    from napari_brainfeatures.latent.train import fit_pca, train_vae
    from napari_brainfeatures.models.vae import VAEConfig
    from napari_brainfeatures.synthetic import make_population

    yield Progress(6, N_STAGES, f"population: {p.population} sections {p.vae_shape}")
    pop = make_population(p.population, shape=p.vae_shape, seed=seed)
    results: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for name, beta in (("beta_vae", 3.0), ("vae", 1.0)):
        gen = train_vae(
            pop.images,
            config=VAEConfig.for_shape(p.vae_shape, beta=beta),
            epochs=p.vae_epochs,
            seed=seed,
            checkpoint_path=out / f"{name}.safetensors",
        )
        trained = yield from _relay(gen, 6, f"train {name}", every="loss")
        models[name] = trained.latent_model()
    models["pca"], _meta = fit_pca(pop.images, latent_dim=8, seed=seed)
    clean, _ = preprocess(pop.clean)
    for name, m in models.items():
        gen = receptive_fields(
            m, clean, pop.rois, roi_names=list(pop.roi_names)[1:] or None, seed=seed
        )
        rf = yield from _relay(gen, 6, f"receptive fields {name}")
        results[name] = {"disentanglement": round(float(disentanglement_score(rf.impact)), 4)}
    z0 = models["beta_vae"].encode(clean[:64]).mean(0)
    field = projective_field(models["beta_vae"], z0, 0)
    summary["files"].append(
        _save_map(
            out / "beta_vae_projective_field_0.png", projective_rgb(field), title="β-VAE latent 0"
        )
    )
    summary["vae"] = results
