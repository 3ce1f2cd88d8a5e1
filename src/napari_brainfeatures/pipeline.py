"""The whole pipeline, headless, on the built-in sample data (``brainfeatures demo --headless``).

Each stage is a generator over the previous stages' results; :func:`run_pipeline`
chains them and writes every result (JSON) and a picture of every map (PNG)
into one folder:

sample → patches → CNN (shipped for the sample, or trained) → its test accuracy →
dense features on the test slice → NMF factors → ROI-aligned selection → cortex
clusters → feature analyses → β-VAE / VAE / PCA on a population → latent analyses.
``small`` and ``full`` run on the sample (rendered slice by slice) with the CNN
shipped for it (:mod:`~napari_brainfeatures.synthetic.weights`) unless ``train=True``;
``tiny`` is a quick end-to-end check whose model is not meant to be good.

Why ``small`` uses shipped networks: its budget is 3 minutes on 2 cores, and
training is where the time goes (the CNN's recipe takes 10 min or more; 10
epochs of both VAEs took 100 s and left their KL term collapsed: flat
traversals).  It loads the β-VAE and VAE shipped for the sample population
(:mod:`~napari_brainfeatures.synthetic.weights.latent`, built by
``scripts/build_sample_vae.py`` with the recipe the ``vae`` benchmark found to
converge) and spends its seconds on what shows them: receptive fields, codes,
reconstructions and traversals on a population drawn with the run's seed,
scored as the PCA fitted here.  Every model's source is in the summary;
``train=True`` trains them all.  The analyses extract each clean patch set once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Generator
from dataclasses import dataclass, replace
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
    eval_per_class: int | None = None  # None: per_class // 2
    smooth: int = 0  # σ (image px) of the cortex clusters' smoothing
    analyse_per_class: int | None = None  # val / test patches the analyses use (None: all)
    note: str = ""  # what the run's model is (not) meant to show


SAMPLE = (128, 1536, 1024)  # the sample's shape (synthetic.DEFAULT_SHAPE), as the shipped model's
PRESETS = {
    # For tests: a minute or two on 2 cores; always trains a 3-epoch model.
    "tiny": Preset((8, 512, 512), 64, 60, 3, 4, 15, 8, 64, (80, 112), 2, slices=(1, 4, 6),
                   note="tiny: a quick end-to-end check; its 3-epoch model on 64 px patches is "
                   "not meant to be good"),
    # The default demo: the sample and its shipped CNN (or, with train=True, the full
    # recipe: training.DEFAULTS, the train_cnn benchmark's 90 %), maps at stride 4,
    # 100 test patches per class (8 views each), analyses on 50 per class; the β-VAE
    # and VAE shipped for 512 sections of 64x96 (or, with train=True, their recipe).
    "small": Preset(SAMPLE, 128, 1000, 18, 4, 15, 64, 512, (64, 96), 100, eval_per_class=100,
                    smooth=64, analyse_per_class=50),
    # The paper's sizes: stride 1, 320x448 sections (the VAEs trained here).
    "full": Preset(SAMPLE, 128, 1000, 18, 1, 15, 64, 512, (320, 448), 20, eval_per_class=250,
                   smooth=64),
}  # fmt: skip


def _save_map(
    path: Path, img: np.ndarray, *, title: str, cmap: str = "gray", labels: Any = None
) -> str:
    """A PNG of one map; ``labels``: a label map (True), or the summary of the CNN that made it."""
    fig = Figure(figsize=(6, 6 * img.shape[0] / max(img.shape[1], 1) + 0.4), dpi=100)
    ax = fig.add_subplot()
    kw: dict[str, Any] = {"interpolation": "nearest", "cmap": "tab10"} if labels else {}
    ax.imshow(img, **({"cmap": None if img.ndim == 3 else cmap} | kw))
    ax.set_title(title + (f"\n{_tag(labels)}" if isinstance(labels, dict) else ""))
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path)
    return path.name


def _tag(summary: dict[str, Any]) -> str:
    """Which CNN made a picture and how it scored: 'shipped CNN, test accuracy 90.3% (…)'."""
    return (
        f"{summary['model_source']} CNN, test accuracy {summary['test_accuracy']:.1%} "
        f"(chance {summary['chance_level']:.1%})"
    )


def _scores(scores: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in scores.items() if k != "n"}


def _balanced(patches: Any, per_class: int | None) -> Any:
    """The first ``per_class`` patches of each class (all with None)."""
    if per_class is None:
        return patches
    idx = [np.flatnonzero(patches.labels == c)[:per_class] for c in patches.class_ids]
    return patches.subset(np.sort(np.concatenate(idx)))


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
    out: str | Path,
    *,
    size: str = "small",
    seed: int = 0,
    vae: bool = True,
    train: bool | None = None,
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
    train : bool, optional
        Train the CNN anew (True) or use the one shipped for the sample (False).
        Default: the shipped model where it fits the size (``small``, ``full``).

    Returns
    -------
    dict
        A JSON-ready summary of every stage's headline numbers and files; its
        ``test_accuracy``, ``macro_f1``, ``chance_level`` and ``model_source``
        (``"shipped"`` or ``"trained"``) describe the CNN on the test slice.
    """
    if size not in PRESETS:
        raise ValueError(f"size must be one of {sorted(PRESETS)!r}, got {size!r}")
    p = PRESETS[size]
    fits = p.shape == SAMPLE and p.patch_size == 128
    if train is False and not fits:
        raise ValueError(
            f"size {size!r} ({p.shape}, {p.patch_size} px patches) does not fit the model shipped "
            f"for the sample {SAMPLE}; use size 'small' or 'full', or train=True (--train)"
        )
    shipped = fits if train is None else not train
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"size": size, "seed": seed, "files": []}
    t0 = time.perf_counter()

    ctx = yield from _stage_sample(out, p, seed, summary)
    model, val, test = yield from _stage_train(out, p, seed, ctx, summary, shipped=shipped)
    grid = yield from _stage_dense(out, p, model, ctx[0], test.slices[0], summary)
    yield from _stage_factors(out, p, seed, grid, ctx[0], summary)
    val, test = (_balanced(s, p.analyse_per_class) for s in (val, test))
    yield from _stage_analyse(out, seed, model, val, test, summary)
    if vae:
        yield from _stage_vae(out, p, seed, summary, shipped=shipped)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _stage_sample(out: Path, p: Preset, seed: int, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The sample, rendered lazily slice by slice; the three split slices rendered once."""
    import dask
    import dask.array as da

    from napari_brainfeatures.synthetic import make_microct_lazy
    from napari_brainfeatures.train.splits import split_slices

    yield Progress(0, N_STAGES, f"sample: synthetic micro-CT {p.shape}, the split slices")
    ct = make_microct_lazy(p.shape, seed=seed, chunks=(1, *p.shape[1:]))
    zs = p.slices or split_slices(p.shape[0], voxel_size=ct.voxel_size_um[0])
    kept = {}
    for name in ("image", "areas", "layers"):
        arr = getattr(ct, name)
        done = dask.compute(*(arr[z : z + 1] for z in zs))  # (1, Y, X) each, in parallel
        parts = [arr[z : z + 1] for z in range(p.shape[0])]
        for z, plane in zip(zs, done, strict=True):
            parts[z] = da.from_array(plane, chunks=plane.shape)
        kept[name] = da.concatenate(parts)
    ct = replace(ct, **kept)
    image, areas = np.asarray(ct.image[zs[2]]), np.asarray(ct.areas[zs[2]])
    title = f"synthetic micro-CT, test slice z={zs[2]}"
    summary["files"].append(_save_map(out / "sample_image.png", image, title=title))
    summary["files"].append(_save_map(out / "sample_areas.png", areas, title="areas", labels=True))
    return ct, zs


def _stage_train(
    out: Path, p: Preset, seed: int, ctx: Any, summary: dict[str, Any], *, shipped: bool
):  # type: ignore[no-untyped-def]
    """The shipped CNN (or one trained here), scored on the test slice: (model, val, test)."""
    from napari_brainfeatures.models.cnn import load_cnn
    from napari_brainfeatures.train.evaluation import confusion_figure, evaluate
    from napari_brainfeatures.train.patches import sample_patches

    ct, zs = ctx
    n_eval = p.eval_per_class or max(1, p.per_class // 2)
    if shipped:
        from napari_brainfeatures.synthetic.weights import install_sample_model, sample_model_record

        yield Progress(1, N_STAGES, f"patches: validation and test slices {zs[1]}, {zs[2]}")
        kw = {"patch_size": p.patch_size, "per_class": n_eval, "interior": False}
        kw |= {"classes": ct.classes, "skip_missing": True}  # as sample_splits samples them
        val, test = (sample_patches(ct.image, ct.areas, slices=zs[i], seed=seed + i, **kw)
                     for i in (1, 2))  # fmt: skip
        yield Progress(2, N_STAGES, "CNN: the model shipped for the sample")
        path = install_sample_model(out, name="cnn.safetensors")
        model, _ = load_cnn(path, expect_classes=ct.classes, expect_patch_size=p.patch_size)
        rec = sample_model_record()
        info = {"best_epoch": rec["best_epoch"], "val_accuracy": rec["best_val_acc"]}
        info |= {"slices": rec["slices"], "record": {k: rec[k] for k in _RECORDED}}
    else:
        from napari_brainfeatures.train.fit import make_config, train_cnn
        from napari_brainfeatures.train.splits import sample_splits

        yield Progress(1, N_STAGES, "patches: sampling train / val / test slices 50 µm apart")
        splits = sample_splits(ct.image, ct.areas, slices=zs, patch_size=p.patch_size,
                               per_class=p.per_class, eval_per_class=n_eval, classes=ct.classes,
                               seed=seed)  # fmt: skip
        config = make_config(patch_size=p.patch_size, n_classes=len(ct.classes))
        kw = {"config": config, "epochs": p.epochs, "seed": seed, "classes": ct.classes}
        kw |= {"voxel_size": ct.voxel_size_um, "checkpoint_path": out / "cnn.safetensors"}
        gen = train_cnn(splits.train, splits.val, **kw)
        result = yield from _relay(gen, 2, "train CNN", every="epoch")
        model, val, test = result.model, splits.val, splits.test
        info = {"best_epoch": result.best_epoch, "val_accuracy": round(result.best_val_acc, 4)}
        info |= {"slices": splits.slices(), "train_patches": len(splits.train.labels)}
    ev = evaluate(model, test, classes=ct.classes)
    ev.save(out / "cnn_evaluation.json")
    confusion_figure(ev, out / "cnn_confusion.png")
    summary["files"] += ["cnn.safetensors", "cnn_evaluation.json", "cnn_confusion.png"]
    summary |= {
        "model_source": "shipped" if shipped else "trained",
        "test_accuracy": round(float(ev.accuracy), 4),
        "macro_f1": round(float(ev.macro_f1), 4),
        "chance_level": round(1.0 / len(test.class_ids), 4),
        "test_slice": zs[2],
    }
    summary |= {"model_note": p.note} if p.note and not shipped else {}
    summary["cnn"] = {**info, "test_accuracy": summary["test_accuracy"],
                      "macro_f1": summary["macro_f1"], "test_patches": ev.n}  # fmt: skip
    return model, val, test


_RECORDED = ("test_accuracy", "macro_f1", "chance_level", "sha256", "date", "train_s")  # recorded


def _stage_dense(out: Path, p: Preset, model: Any, ct: Any, z: int, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.features.run import compute_feature_map

    yield Progress(3, N_STAGES, f"dense features, test slice z={z}, stride {p.stride}")
    kw = {"stride": p.stride, "region": z, "classes": ct.classes, "overwrite": True}
    gen = compute_feature_map(ct.image, model, out=out / "features.zarr", **kw)
    store = yield from _relay(gen, 3, f"dense features, test slice z={z}")
    grid = FeatureGrid.from_store(store)  # the test slice on the image grid
    areas, conf = np.asarray(store.areas)[0], np.asarray(store.confidence())[0]
    truth, valid = grid.labels_on(ct.areas), areas > 0
    accuracy = round(float((areas[valid] == truth[valid]).mean()), 4)
    summary["dense"] = {"z": z, "stride": p.stride, "grid": list(areas.shape)}
    summary["dense"]["slice_accuracy"] = accuracy
    summary["files"] += [
        _save_map(out / "dense_areas.png", areas, title="predicted areas (dense)", labels=summary),
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
    top = ([f for f, _roi, _s in sel.pairs[:3]] + [0, 1, 2])[:3]
    fig = Figure(figsize=(15, 9), dpi=80)
    for i in range(p.nmf_k):
        ax = fig.add_subplot(3, (p.nmf_k + 2) // 3, i + 1)
        ax.imshow(maps[i], cmap="inferno")
        ax.set_title(f"factor {i}", fontsize=9)
        ax.set_axis_off()
    fig.savefig(out / "nmf_factors.png")
    rgb = rgb_composite(maps, tuple(top))
    summary["files"] += ["factors.zarr", "factor_selection.json", "nmf_factors.png"]
    summary["files"].append(_save_map(out / "nmf_rgb.png", rgb, title=f"factors {top} as RGB"))
    cortex = erode_mask(truth == ct.classes.by_name("Ctx").id, grid.radius(p.erode))
    coef = fac.coefficient_grid().features
    clusters = cluster_map(coef, method="gmm", k=4, mask=cortex, seed=seed)
    scores = score_against(layers, clusters.labels, cortex)
    shown, how = clusters, "GMM(4) on NMF, cortex"
    if p.smooth:  # σ in image px; the papers' unsmoothed map is scored too
        shown = cluster_map(coef, method="gmm", k=4, mask=cortex, seed=seed,
                            smooth=grid.sigma(p.smooth))  # fmt: skip
        smoothed = score_against(layers, shown.labels, cortex)
        how += f", smoothed σ={p.smooth} px"
    path = out / "cortex_clusters.png"
    summary["files"].append(_save_map(path, shown.labels, title=how, labels=summary))
    summary["factors"] = {
        "k": p.nmf_k,
        "rel_error": round(float(fac.info["rel_error"]), 4),
        "pairs": [
            {"factor": int(f), "roi": ct.classes.by_id(int(r)).name, "score": float(sc)}
            for f, r, sc in sel.pairs
        ],
        "cortex_layers": _scores(scores),
    }
    if p.smooth:
        summary["factors"]["cortex_layers_smoothed"] = _scores(smoothed)


def _stage_analyse(out: Path, seed: int, model: Any, val: Any, test: Any, summary: dict[str, Any]):  # type: ignore[no-untyped-def]
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
    sets = (val.patches, val.labels), (test.patches, test.labels)
    extractors = {name: _once(fn) for name, fn in extractors.items()}
    gen = compare_extractors(extractors, *sets, seed=seed)
    report = yield from _relay(gen, 5, "analyse")
    (out / "analysis.json").write_text(json.dumps(report_json(report), indent=2))
    report_figure(report, classes=test.classes).savefig(out / "analysis.png")
    summary["files"] += ["analysis.json", "analysis.png"]
    keys = ("vmeasure", "gram_distance", "probes")
    summary["analysis"] = {n: {k: r[k] for k in keys} for n, r in report_json(report).items()}


def _once(fn: Any, keep: int = 2) -> Any:
    """``fn`` remembering the features of the first ``keep`` patch arrays (held, by identity).

    The noise curve fits its probe on the clean training patches, whose
    features the probes computed just before.
    """
    seen: list[tuple[Any, Any]] = []

    def features(patches: Any) -> Any:
        hit = next((f for p, f in seen if p is patches), None)
        if hit is None:
            hit = fn(patches)
            if len(seen) < keep:
                seen.append((patches, hit))
        return hit

    return features


def _stage_vae(out: Path, p: Preset, seed: int, summary: dict[str, Any], *, shipped: bool):  # type: ignore[no-untyped-def]
    """β-VAE, VAE (shipped for the sample population, or trained) and PCA, scored alike."""
    from napari_brainfeatures.latent.model import fit_latent_model, load_latent_model
    from napari_brainfeatures.synthetic.weights import latent as shipped_vaes

    recipe = {**shipped_vaes.RECIPE, "n": p.population, "shape": list(p.vae_shape)}
    use = shipped and (p.population, list(p.vae_shape)) == (
        shipped_vaes.RECIPE["n"], shipped_vaes.RECIPE["shape"])  # fmt: skip
    yield Progress(6, N_STAGES, f"population: {p.population} sections {p.vae_shape}")
    pop = shipped_vaes.sample_population(recipe, seed=seed)
    names = list(pop.roi_names)
    results: dict[str, Any] = {}
    fitted: dict[str, Any] = {}
    for name, beta in [*recipe["betas"].items(), ("pca", 0.0)]:
        if use and name != "pca":
            yield Progress(6, N_STAGES, f"{name}: the model shipped for the sample population")
            fitted[name] = load_latent_model(shipped_vaes.install_sample_vae(name, out))
        else:
            kind = {"beta_vae": "beta-vae", "vae": "vae"}.get(name, "pca")
            gen = fit_latent_model(
                pop.images, kind=kind, latent_dim=recipe["latent_dim"], beta=beta or 1.0,
                seed=seed, epochs=p.vae_epochs, batch_size=recipe["batch_size"], lr=recipe["lr"],
                roi_names=names, checkpoint_path=out / f"{name}.safetensors",
            )  # fmt: skip
            got = yield from _relay(gen, 6, f"fit {name}", every=None if beta == 0 else "loss")
            fitted[name] = (got.model, got.meta)
        yield Progress(6, N_STAGES, f"{name}: receptive fields, codes, reconstructions")
        source = "shipped" if use and name != "pca" else "fitted" if name == "pca" else "trained"
        scores = shipped_vaes.score_latent_model(*fitted[name], pop, seed=seed)
        results[name] = {"model_source": source, **scores}
    summary["files"] += ["beta_vae.safetensors", "vae.safetensors", "pca.safetensors"]
    summary["files"].append(_traversals(out / "beta_vae_traversals.png", *fitted["beta_vae"], pop))
    summary["vae"] = results


def _traversals(path: Path, model: Any, meta: dict[str, Any], pop: Any) -> str:
    """Decoded sections as each latent of ``model`` sweeps -3..3 sd around the mean code."""
    from napari_brainfeatures.latent.population import preprocess_for

    codes = model.encode(preprocess_for(pop.clean[pop.artifact == 0], meta))  # (N, L)
    mean, sd = codes.mean(0), codes.std(0)
    order = np.argsort(-sd)  # the most used latents first
    steps = np.linspace(-3, 3, 7)
    z = np.repeat(mean[None], len(order) * len(steps), 0)  # (L * 7, L)
    for row, k in enumerate(order):
        z[row * len(steps) : (row + 1) * len(steps), k] += steps * max(sd[k], 1e-3)
    imgs = np.clip(model.decode(z), 0, 1)  # (L * 7, H, W)
    fig = Figure(figsize=(7, 0.4 + len(order) * imgs.shape[1] / imgs.shape[2]), dpi=100)
    for i, img in enumerate(imgs):
        ax = fig.add_subplot(len(order), len(steps), i + 1, xticks=[], yticks=[])
        ax.imshow(img, cmap="gray", vmin=0, vmax=1)
        row, col = divmod(i, len(steps))
        k, use = order[row], "" if sd[order[row]] > 0.1 else "\ninactive"  # variance 0.01
        ax.set_ylabel(f"z{k}\nsd {sd[k]:.2f}{use}" if col == 0 else "", fontsize=7)
        ax.set_title(f"{steps[col]:+.0f} sd" if row == 0 else "", fontsize=7)
    fig.suptitle("β-VAE traversals: each row one latent, mean code ± 3 sd", fontsize=9)
    fig.savefig(path)
    return path.name
