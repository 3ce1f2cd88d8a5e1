"""How good are CNN features as brain-area descriptors? The analyses of paper 000, together.

:func:`compare_extractors` runs every analysis (probes, GMM V-measure, Gram
distance, PCA, noise curve) for several feature extractors as one progress
generator; :func:`report_json` and :func:`report_figure` give its JSON-ready part
and its figure.  :func:`analyse_model` is the whole stage for a model file:
patches from a training and a test slice, the trained network against the same
architecture at random weights (and optionally a torchvision network), compared
(used by the CLI and the widget).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.analyse.extract import (
    FeatureFn,
    feature_extractor,
    training_input_stats,
)
from napari_brainfeatures.analyse.gram import gram_block_distance, gram_matrix
from napari_brainfeatures.analyse.probes import (
    gmm_vmeasure,
    iter_noise_robustness,
    pca_scatter,
    probe_scores,
)
from napari_brainfeatures.classes import ClassTable, on_white
from napari_brainfeatures.models.cnn import check_image_dtype, load_cnn
from napari_brainfeatures.progress import Progress, ProgressGen
from napari_brainfeatures.train.bounds import PER_CLASS, SEED, SIGMA, as_slices
from napari_brainfeatures.train.patches import PatchSet, sample_patches
from napari_brainfeatures.train.recorded import recorded_slices, recorded_split
from napari_brainfeatures.train.splits import painted_classes

__all__ = [
    "ModelAnalysis",
    "analyse_model",
    "compare_extractors",
    "report_figure",
    "report_json",
]
SIGMAS = (0.0, 0.05, 0.1, 0.2, 0.3)


def _in_chunks(
    fn: Any, patches: np.ndarray, what: str, step: int, total: int, chunk: int = 256
) -> Generator[Progress, None, np.ndarray]:
    """``fn(patches)`` a chunk at a time, with a record after each (so Cancel is quick)."""
    if len(patches) <= chunk:
        return fn(patches)
    parts = []
    for i in range(0, len(patches), chunk):
        parts.append(fn(patches[i : i + chunk]))
        yield Progress(step, total, f"{what} {min(i + chunk, len(patches))}/{len(patches)}")
    return np.concatenate(parts)


def compare_extractors(
    extractors: dict[str, FeatureFn],
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    sigmas: Sequence[float] = SIGMAS,
    n_components: int | None = None,
    seed: int = 0,
) -> ProgressGen[dict[str, Any]]:
    """Probes, GMM V-measure, Gram distance, PCA and the noise curve per extractor.

    Parameters
    ----------
    extractors : dict of name to feature function
        E.g. ``{"trained": feature_extractor("cnn", model=m), "random": ...}``.
    train, test : (patches, labels)
        Patches ``(N, P, P)`` and labels ``(N,)``; train and test from different
        slices, as in the paper.
    sigmas : sequence of float
        Noise levels for the noise curve.
    n_components : int, optional
        GMM components, default the number of classes.

    Returns
    -------
    dict
        Per name: ``probes``, ``vmeasure``, ``gram_distance``, ``noise`` (JSON-ready)
        and ``pca`` / ``pca_explained`` / ``gram`` / ``test_labels`` (arrays, for plots).
    """
    if not extractors:
        raise ValueError("give at least one feature extractor")
    (ptr, ytr), (pte, yte) = train, test
    ytr, yte = np.asarray(ytr), np.asarray(yte)
    n_components = n_components or int(np.unique(ytr).size)
    total = len(extractors) * (2 + len(sigmas))
    step, report = 0, {}
    for name, fn in extractors.items():
        yield Progress(step, total, f"{name}: features")
        ftr = yield from _in_chunks(fn, ptr, f"{name}: training features", step, total)
        fte = yield from _in_chunks(fn, pte, f"{name}: test features", step, total)
        step += 1
        yield Progress(step, total, f"{name}: probes")  # a record between the steps: Cancel
        res: dict[str, Any] = {"probes": probe_scores(ftr, ytr, fte, yte, seed=seed)}
        yield Progress(step, total, f"{name}: V-measure, Gram matrix")
        res["vmeasure"] = gmm_vmeasure(ftr, fte, yte, n_components, seed=seed)
        res["gram_distance"] = gram_block_distance(fte, yte)
        res["pca"], res["pca_explained"] = pca_scatter(fte, min(3, *fte.shape))
        res["gram"], res["gram_labels"] = gram_matrix(fte, yte, seed=seed)
        res["test_labels"] = yte
        yield Progress(step, total, f"{name}: noise robustness")
        step += 1
        gen = iter_noise_robustness(
            fn, ptr, ytr, sigmas, test_patches=pte, test_labels=yte, seed=seed, train_features=ftr
        )  # the training features above, not extracted a second time
        while True:
            try:
                rec = next(gen)
            except StopIteration as stop:
                res["noise"] = stop.value
                break
            step += 1
            yield Progress(step, total, f"{name}: {rec.message}", rec.values)
        report[name] = res
    return report


def report_json(report: dict[str, Any]) -> dict[str, Any]:
    """The JSON-ready part of a :func:`compare_extractors` report."""
    keys = ("probes", "vmeasure", "gram_distance", "noise")
    out = {name: {k: r[k] for k in keys} for name, r in report.items()}
    for name, r in report.items():
        out[name]["pca_explained"] = [float(v) for v in r["pca_explained"]]
    return out


def report_figure(
    report: dict[str, Any], figure: Any = None, classes: Any = None, *, narrow: bool = False
) -> Any:
    """Plot a :func:`compare_extractors` report on a matplotlib ``Figure``.

    One row per extractor (Gram matrix, PCA scatter) and a last column with the
    noise curves of all extractors and a bar chart of probe accuracies / V-measure.
    ``narrow=True`` (a dock widget) stacks them instead: one row of two panels
    per extractor, then the noise curves and the bar chart full width.
    With ``classes`` (a :class:`~.classes.ClassTable`) the scatter points take
    the class colours, with a legend of class names.  Narrow, the scatters
    show the first two components (a 3-D scatter at dock width is a few
    pixels wide) and share one legend below the figure.
    """
    from matplotlib.figure import Figure

    n = len(report)
    fig = figure if figure is not None else Figure(figsize=(11, 3.2 * n))
    fig.clear()
    if narrow:
        grid = fig.add_gridspec(n + 2, 2)
        cells = [((grid[row, 0],), (grid[row, 1],)) for row in range(n)]
        noise_cell, bars_cell = (grid[n, :],), (grid[n + 1, :],)
    else:
        cells = [((n, 3, 3 * row + 1), (n, 3, 3 * row + 2)) for row in range(n)]
        noise_cell, bars_cell = (2, 3, 3), (2, 3, 6)

    sep = "\n" if narrow else " "
    add = fig.add_subplot
    handles: list[Any] = []
    names: list[str] = []
    for row, (name, r) in enumerate(report.items()):
        ax = add(*cells[row][0])
        ax.imshow(r["gram"], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}: Gram,{sep}distance {r['gram_distance']:.3f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        # a dock is too narrow for a legible 3-D scatter: the first two components there
        three = r["pca"].shape[1] == 3 and not narrow
        ax = add(*cells[row][1], projection="3d" if three else None)
        xyz = list(r["pca"].T[: 3 if three else 2])
        if len(xyz) == 1:
            xyz.append(np.zeros_like(xyz[0]))
        labels = np.asarray(r["test_labels"])
        if classes is None:
            ax.scatter(*xyz, c=labels, s=3, cmap="tab10")
        else:
            known = {c.id: c for c in classes}
            for cid in np.unique(labels):
                c = known.get(int(cid))
                pts = [a[labels == cid] for a in xyz]
                ax.scatter(
                    *pts,
                    s=3,
                    color=on_white(c.colour) if c else "grey",
                    label=c.name if c else str(int(cid)),
                )
            if row == 0 and narrow:  # one legend for every scatter, beside the noise curves
                handles, names = ax.get_legend_handles_labels()
            elif row == 0:
                ax.legend(fontsize=6, markerscale=3, loc="best")
        explained = list(r.get("pca_explained", []))
        if explained and not three:
            ax.set_xlabel(f"PC1 ({explained[0]:.0%})", fontsize=7)
            if len(explained) > 1:
                ax.set_ylabel(f"PC2 ({explained[1]:.0%})", fontsize=7)
        if narrow:
            ax.tick_params(labelsize=6)
        ax.set_title(f"{name}:{sep}PCA of test features", fontsize=9)
    ax = add(*noise_cell)
    for name, r in report.items():
        ax.plot(r["noise"]["sigmas"], r["noise"]["accuracy"], marker="o", label=name)
    ax.set_xlabel("noise σ"), ax.set_ylabel("LR accuracy"), ax.legend(fontsize=8)
    if narrow and handles:
        constrained = type(fig.get_layout_engine()).__name__ == "ConstrainedLayoutEngine"
        where = "outside lower center" if constrained else "lower center"
        fig.legend(
            handles, names, loc=where, ncol=min(len(names), 6), fontsize=7, markerscale=3,
            title="class (PCA scatters)", title_fontsize=7,
        )  # fmt: skip
    ax = add(*bars_cell)
    metrics = ["linear_svm", "rbf_svm", "logistic", "vmeasure"]
    width = 0.8 / n
    for i, (name, r) in enumerate(report.items()):
        vals = [r["probes"][m] for m in metrics[:3]] + [r["vmeasure"]]
        ax.bar(np.arange(4) + i * width, vals, width, label=name)
    ax.set_xticks(
        np.arange(4) + 0.4 - width / 2, ["lin.\nSVM", "RBF\nSVM", "LR", "V-\nmeas."], fontsize=8
    )
    ax.set_ylim(0, 1), ax.legend(fontsize=8)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    return fig


@dataclass
class ModelAnalysis:
    """What :func:`analyse_model` returns.

    Attributes
    ----------
    report : dict
        The :func:`compare_extractors` report, per extractor name.
    train, test : PatchSet
        The patches the probes were fitted and scored on.
    classes : ClassTable
        The model's classes (names and colours for plots).
    """

    report: dict[str, Any]
    train: PatchSet
    test: PatchSet
    classes: ClassTable

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: slices, patch counts, class names, :func:`report_json`."""
        return {
            "train_slices": self.train.slices,
            "test_slices": self.test.slices,
            "n_train": len(self.train),
            "n_test": len(self.test),
            "classes": self.classes.names,
            "results": report_json(self.report),
        }


def analyse_model(
    model: str | os.PathLike[str],
    image: Any,
    labels: Any,
    *,
    train_slices: int | Sequence[int] | None = None,
    test_slices: int | Sequence[int] | None = None,
    split_mask: Any = None,
    per_class: int = 300,
    sigmas: Sequence[float] = SIGMAS,
    relu: bool = False,
    random_seed: int = 1,
    torchvision: tuple[str, str | os.PathLike[str]] | None = None,
    interior: bool | str = "auto",
    seed: int = 0,
    device: str | None = None,
) -> ProgressGen[ModelAnalysis]:
    """A model file's features against random weights (and ImageNet), on two slices.

    Patches of the model's size are sampled from the training slices (``interior``,
    as :func:`~napari_brainfeatures.train.patches.sample_patches`; seed ``seed``)
    and the test slices (unrestricted; seed ``seed + 1``) for the model's classes
    painted on both (the others are left out with a warning); then
    :func:`compare_extractors` compares the trained network with the same
    architecture at random weights (seed ``random_seed``, standardised like
    the trained one) and, with ``torchvision=(arch, weights)``, an ImageNet
    network from a local weights file.

    Parameters
    ----------
    model : path-like
        A model file written by ``train-cnn`` (:func:`~napari_brainfeatures.models.cnn.save_cnn`).
    image, labels : array-like (Z, Y, X) or (Y, X)
        The image (of the dtype the model was trained on) and its area labels;
        a 2-D image is its own training and test slice.
    train_slices, test_slices : int or sequence of int, optional
        Default: the model's own split (its training and test slices, or the
        training and test regions of its one section, a guard band apart;
        ``split_mask`` gives a drawn split again).
    per_class : int
        Patches per class and split; default 300.
    sigmas, relu, seed
        As for :func:`compare_extractors` and :func:`~.extract.feature_extractor`;
        ranges as the ``analyse`` command's (:mod:`napari_brainfeatures.train.bounds`).
    device : str, optional
        Default CUDA when available.

    Raises
    ------
    ValueError
        Fewer than two of the model's classes painted on both slices, an image
        of another dtype than the model's, or a sampling error.
    ImportError
        ``torchvision`` given but not installed.
    """
    per_class = PER_CLASS.check("per_class", per_class)
    seed, random_seed = SEED.check("seed", seed), SEED.check("random_seed", random_seed)
    sigmas = [SIGMA.check("sigmas", s) for s in np.atleast_1d(np.asarray(sigmas, dtype=object))]
    if not sigmas:
        raise ValueError("sigmas must hold at least one noise level (0: none), got []")
    n_z = labels.shape[0] if len(labels.shape) == 3 else 1
    for name, zs in (("train_slices", train_slices), ("test_slices", test_slices)):
        if zs is not None and any(not 0 <= z < n_z for z in as_slices(name, zs)):
            raise ValueError(f"{name} must be in 0..{n_z - 1}, got {zs!r}")
    yield Progress(0, None, "loading the model, sampling patches")
    net, meta = load_cnn(model, device=device or "cpu")
    check_image_dtype(meta, image.dtype)
    fx: dict[str, Any] = {"relu": relu, "device": device}
    stats = training_input_stats(meta)
    extractors = {
        "trained": feature_extractor("cnn", model=net, **fx),
        "random": feature_extractor("random", model=net, seed=random_seed, input_stats=stats, **fx),
    }
    if torchvision:  # built before sampling: a missing package or file fails at once
        arch, weights = torchvision
        size = 299 if "inception" in arch else 224
        extractors[arch] = feature_extractor(
            "torchvision", arch=arch, weights=weights, input_size=size, device=device
        )
    regions: dict[str, Any] = {"train": None, "test": None}
    if train_slices is None and test_slices is None:
        sm = recorded_split(meta, split_mask)
        fits = sm is not None and tuple(sm.region("train").shape) == tuple(image.shape[-2:])
        if fits and (image.ndim == 3 or sm.z == 0):  # the model's own regions of the section
            train_slices = test_slices = sm.z  # type: ignore[union-attr]
            regions = {k: sm.region(k) for k in regions}  # type: ignore[union-attr]
        elif image.ndim == 3:
            train_slices = recorded_slices(meta, "train")
            test_slices = recorded_slices(meta, "test")
    split = regions["train"] is not None  # classes missing from a region are left out
    if image.ndim == 2:
        train_slices = test_slices = 0
        if not split:
            warnings.warn(
                "one section and no regions of it recorded by the model: the probes are "
                "trained and tested on patches of the same section (not a held-out test)",
                stacklevel=2,
            )
    if train_slices is None or test_slices is None:
        raise ValueError("the model records no split; give the training and test slices")
    table = meta["class_table"]
    present = _painted_on_both(table, labels, train_slices, test_slices)
    opts: dict[str, Any] = {"patch_size": net.config.patch_size, "per_class": per_class}
    opts["classes"] = present
    train = sample_patches(image, labels, slices=train_slices, interior=interior, seed=seed,
                           within=regions["train"], skip_missing=split, **opts)  # fmt: skip
    test = sample_patches(image, labels, slices=test_slices, interior=False, seed=seed + 1,
                          within=regions["test"], skip_missing=split, **opts)  # fmt: skip
    pair = ((train.patches, train.labels), (test.patches, test.labels))
    report = yield from compare_extractors(extractors, *pair, sigmas=sigmas, seed=seed)
    return ModelAnalysis(report, train, test, table)


def _painted_on_both(
    table: ClassTable, labels: Any, train: int | Sequence[int], test: int | Sequence[int]
) -> ClassTable:
    """The classes of ``table`` painted on the training and on the test slices."""
    on_train, on_test = painted_classes(table, labels, train), painted_classes(table, labels, test)
    both = {c.id for c in on_train} & {c.id for c in on_test}  # type: ignore[union-attr]
    present = ClassTable(tuple(c for c in table if c.id in both))
    if len(present) < 2:
        raise ValueError(
            f"fewer than two of the model's classes {table.names!r} are painted on both the "
            f"training slices {train!r} and the test slices {test!r}; paint them there or "
            "choose other slices"
        )
    left_out = [c.name for c in table if c.id not in both]
    if left_out:
        warnings.warn(
            f"class(es) {left_out!r} are not painted on both the training slices {train!r} and "
            f"the test slices {test!r}; they are left out of the analysis",
            stacklevel=3,
        )
    return present
