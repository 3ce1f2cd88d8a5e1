"""How good are CNN features as brain-area descriptors? The analyses of paper 000.

Feature extractors map patches ``(N, P, P)`` (uint8, or float in [0, 1]) to
features ``(N, D)``: a trained :class:`BrainAreaCNN`, the same architecture with
random weights (the baseline that needs no download), or a torchvision ImageNet
network from a weights file the user provides.  On features: linear/RBF SVM and
logistic-regression probes, GMM V-measure (fit on train, predict test), the
distance of the Gram matrix from the ideal block-diagonal one, and a PCA
scatter; on patches: logistic-regression accuracy as Gaussian noise grows.
:func:`compare_extractors` runs everything for several extractors as one
progress generator (used by the CLI and the widget).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from napari_brainfeatures._util.device import resolve_device
from napari_brainfeatures.models.cnn import (
    BrainAreaCNN,
    CNNConfig,
    fold_input_normalisation,
    input_scale_for,
    load_cnn,
    to_input,
)
from napari_brainfeatures.progress import Progress, ProgressGen, run

__all__ = [
    "FeatureFn",
    "compare_extractors",
    "feature_extractor",
    "gmm_vmeasure",
    "gram_block_distance",
    "gram_matrix",
    "noise_robustness",
    "pca_scatter",
    "probe_scores",
    "report_figure",
    "training_input_stats",
]

FeatureFn = Callable[[np.ndarray], np.ndarray]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# -- feature extractors -----------------------------------------------------------------------
def _batched(
    net: Callable[[torch.Tensor], torch.Tensor],
    prep: Callable[[Any], torch.Tensor],
    batch_size: int,
    dev: torch.device,
) -> FeatureFn:
    @torch.no_grad()
    def extract(patches: np.ndarray) -> np.ndarray:
        patches = np.asarray(patches)
        if patches.ndim != 3:
            raise ValueError(f"patches must have shape (N, P, P), got {patches.shape!r}")
        out = [
            net(prep(patches[i : i + batch_size]).to(dev)).float().cpu()
            for i in range(0, len(patches), batch_size)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)

    return extract


def _cnn_fn(model: BrainAreaCNN, relu: bool, batch_size: int, dev: torch.device) -> FeatureFn:
    model = model.to(dev).eval()
    cfg = model.config

    def prep(p: np.ndarray) -> torch.Tensor:
        if p.shape[-1] != cfg.patch_size or p.shape[-2] != cfg.patch_size:
            raise ValueError(
                f"the network takes {cfg.patch_size}x{cfg.patch_size} patches, got "
                f"{p.shape[-2]}x{p.shape[-1]}; sample patches of the model's size"
            )
        return to_input(p, in_channels=cfg.in_channels)  # (B, C, P, P)

    return _batched(lambda x: model.features(x, relu=relu), prep, batch_size, dev)


def _torchvision_fn(
    arch: str,
    weights: str | os.PathLike[str],
    input_size: int,
    batch_size: int,
    dev: torch.device,
    arch_kwargs: dict[str, Any] | None,
) -> FeatureFn:
    try:
        import torchvision
    except ImportError:
        raise ImportError(
            "the 'torchvision' baseline needs torchvision, which is not installed; install the "
            "build matching your torch (pip install torchvision) or use kind='random'"
        ) from None
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} not found; nothing is downloaded here")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code
    try:
        net = torchvision.models.get_model(arch, weights=None, **(arch_kwargs or {}))
    except ValueError as err:
        raise ValueError(f"unknown torchvision architecture {arch!r}: {err}") from None
    net.load_state_dict(state)
    for head in ("fc", "classifier", "heads"):
        if hasattr(net, head):
            setattr(net, head, torch.nn.Identity())  # penultimate features
            break
    net = net.to(dev).eval()
    mean = torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1)

    def prep(p: np.ndarray) -> torch.Tensor:
        x = to_input(p, in_channels=3)  # (B, 3, P, P) in [0, 1]
        x = torch.nn.functional.interpolate(x, size=(input_size, input_size), mode="bilinear")
        return (x - mean) / std  # (B, 3, S, S)

    return _batched(net, prep, batch_size, dev)


def training_input_stats(meta: dict[str, Any]) -> tuple[float, float] | None:
    """The (mean, std) a model's training standardised its input by, if it did."""
    rec = meta.get("training_standardisation") or {}
    if rec.get("applied") and "mean" in rec and "std" in rec:
        return float(rec["mean"]), float(rec["std"])
    return None


def feature_extractor(
    kind: str,
    *,
    model: BrainAreaCNN | str | os.PathLike[str] | None = None,
    config: CNNConfig | None = None,
    seed: int = 0,
    relu: bool = False,
    arch: str | None = None,
    weights: str | os.PathLike[str] | None = None,
    input_size: int = 224,
    arch_kwargs: dict[str, Any] | None = None,
    batch_size: int = 256,
    device: str | None = None,
    input_stats: tuple[float, float] | None = None,
) -> FeatureFn:
    """A function ``patches (N, P, P) -> features (N, D) float32``.

    Parameters
    ----------
    kind : {'cnn', 'random', 'torchvision'}
        'cnn': a trained network (``model``: a :class:`BrainAreaCNN` or a model file);
        'random': the same architecture (``config``, or ``model``'s) with random
        weights drawn from ``seed``; 'torchvision': ``arch`` (e.g. 'resnet18',
        'inception_v3') with the weights in ``weights`` (.safetensors, or a
        state-dict .pth loaded with ``weights_only``); its classifier is removed.
    relu : bool
        CNN kinds: post-ReLU features (True) or the FC2 output before its ReLU as in
        the authors' analyses (False, default).
    input_size : int
        torchvision: grey patches are repeated to 3 channels, resized to this side
        (224; 299 for Inception v3) and ImageNet-normalised.
    arch_kwargs : dict, optional
        torchvision: extra ``get_model`` arguments (e.g. ``{"aux_logits": True,
        "init_weights": False}`` for inception_v3).
    batch_size : int
    device : str, optional
        Default CUDA when available.
    input_stats : (mean, std), optional
        'random': standardise the input by these, as the trained network does
        (its training folds the training patches' mean and std into its first
        convolution); default: the ones recorded in ``model``'s training
        (:func:`training_input_stats`), none without a record.  Without them a
        random network fed a 12-bit scan scaled by 1/65535 sees nearly constant
        patches, and the baseline measures the intensity scale, not the features.
    """
    dev = resolve_device(device)
    if kind in ("cnn", "random"):
        if isinstance(model, str | os.PathLike):
            model, meta = load_cnn(model)
            input_stats = input_stats or training_input_stats(meta)
        if kind == "cnn":
            if not isinstance(model, BrainAreaCNN):
                raise ValueError(f"kind='cnn' needs a BrainAreaCNN or model file, got {model!r}")
            return _cnn_fn(model, relu, batch_size, dev)
        cfg = config or (model.config if isinstance(model, BrainAreaCNN) else CNNConfig())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            rand = BrainAreaCNN(cfg)
        if input_stats is not None:
            rand = fold_input_normalisation(rand, *input_stats)
        return _cnn_fn(rand, relu, batch_size, dev)
    if kind == "torchvision":
        if not arch or weights is None:
            raise ValueError(
                "kind='torchvision' needs arch= (e.g. 'resnet18') and weights= (a file)"
            )
        return _torchvision_fn(arch, weights, input_size, batch_size, dev, arch_kwargs)
    raise ValueError(f"kind must be 'cnn', 'random' or 'torchvision', got {kind!r}")


# -- analyses on features ---------------------------------------------------------------------
def _xy(X: Any, y: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.shape[0] or X.shape[0] == 0:
        raise ValueError(f"{name}: need X (N, D) and y (N,), got {X.shape!r} and {y.shape!r}")
    return X, y


def probe_scores(
    X_train: Any, y_train: Any, X_test: Any, y_test: Any, *, seed: int = 0
) -> dict[str, float]:
    """Test accuracy of linear SVM, RBF SVM and logistic-regression probes.

    Each is a scikit-learn pipeline ``StandardScaler -> classifier`` with default
    regularisation (C = 1), fitted on the training features.

    Returns
    -------
    dict
        ``linear_svm``, ``rbf_svm``, ``logistic``: accuracies in [0, 1].
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, LinearSVC

    Xtr, ytr = _xy(X_train, y_train, "train")
    Xte, yte = _xy(X_test, y_test, "test")
    if np.unique(ytr).size < 2:
        raise ValueError("probes need at least two classes in the training labels")
    probes = {
        "linear_svm": LinearSVC(random_state=seed, max_iter=5000),
        "rbf_svm": SVC(kernel="rbf", gamma="scale", random_state=seed),
        "logistic": LogisticRegression(max_iter=2000, random_state=seed),
    }
    return {
        name: float(make_pipeline(StandardScaler(), clf).fit(Xtr, ytr).score(Xte, yte))
        for name, clf in probes.items()
    }


def gmm_vmeasure(
    X_train: Any,
    X_test: Any,
    y_test: Any,
    n_components: int,
    *,
    seed: int = 0,
    covariance_type: str = "full",
) -> float:
    """V-measure of a Gaussian mixture fitted on train features, predicting test clusters.

    Features are standardised with the training set's mean and standard
    deviation first, so the score does not depend on their scale (a
    random-weight network's features are orders of magnitude smaller than a
    trained one's, and a fixed covariance regularisation would otherwise
    swamp them into a single cluster).
    """
    from sklearn.metrics import v_measure_score
    from sklearn.mixture import GaussianMixture
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xtr = np.asarray(X_train, dtype=np.float64)
    Xte, yte = _xy(X_test, y_test, "test")
    if not 1 <= n_components <= len(Xtr):
        raise ValueError(f"n_components must be in 1..{len(Xtr)}, got {n_components!r}")
    gmm = make_pipeline(
        StandardScaler(),
        GaussianMixture(
            n_components, covariance_type=covariance_type, random_state=seed, reg_covar=1e-4
        ),
    ).fit(Xtr)
    return float(v_measure_score(yte, gmm.predict(Xte)))


def _normalised(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def gram_block_distance(X: Any, y: Any) -> float:
    """``(1/N)‖G − D‖_F``: Gram matrix of L2-normalised features vs the ideal block one.

    ``G = X̂X̂ᵀ`` (``X̂``: rows scaled to unit norm; zero rows stay zero) and
    ``D_ij = 1`` when ``y_i = y_j`` else 0.  Computed without any ``N × N`` matrix from
    ``‖G − D‖² = ‖X̂ᵀX̂‖² − 2 Σ_c ‖Σ_{i∈c} x̂_i‖² + Σ_c n_c²`` (exact, O(N D²)).
    """
    X, y = _xy(X, y, "gram_block_distance")
    Xn = _normalised(X)
    gg = float(np.square(Xn.T @ Xn).sum())  # ‖G‖² = ‖X̂ᵀX̂‖²
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    sums = np.zeros((classes.size, X.shape[1]))
    np.add.at(sums, inv, Xn)
    gd = float(np.square(sums).sum())  # ⟨G, D⟩ = Σ_c ‖Σ_{i∈c} x̂_i‖²
    dd = float(np.square(counts.astype(np.float64)).sum())
    return max(gg - 2 * gd + dd, 0.0) ** 0.5 / X.shape[0]


def gram_matrix(
    X: Any, y: Any, *, max_n: int = 1500, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Gram matrix of L2-normalised features, rows sorted by class (for display).

    At most ``max_n`` random rows are used.  Returns ``(G (n, n), y (n,))``.
    """
    X, y = _xy(X, y, "gram_matrix")
    idx = np.arange(len(y))
    if len(y) > max_n:
        idx = np.random.default_rng(seed).choice(idx, max_n, replace=False)
    idx = idx[np.argsort(y[idx], kind="stable")]
    Xn = _normalised(X[idx])
    return Xn @ Xn.T, y[idx]


def pca_scatter(X: Any, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` principal components: ``(coords (N, n), explained_variance_ratio (n,))``."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float64)
    if not 1 <= n <= min(X.shape):
        raise ValueError(f"n must be in 1..{min(X.shape)} for features {X.shape!r}, got {n!r}")
    pca = PCA(n_components=n).fit(X)
    return pca.transform(X), pca.explained_variance_ratio_


# -- analyses on patches ----------------------------------------------------------------------
def _as_unit(
    patches: np.ndarray,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Patches in network units (what the extractors see) and their intensity range.

    Integers are divided by their dtype's maximum (uint8: / 255), floats kept;
    the ranges are :func:`~napari_brainfeatures.train.fit.intensity_range` (the
    noise scale: [0, 1] for uint8 micro-CT, the 0.1-99.9th percentiles
    otherwise) and :func:`~napari_brainfeatures.train.fit.value_range` (clipping).
    """
    from napari_brainfeatures.train.fit import intensity_range, value_range

    p = np.asarray(patches)
    scale = input_scale_for(p.dtype)[0]
    top = float(np.iinfo(p.dtype).max) if p.dtype.kind in "ui" else 1.0
    return p.astype(np.float32) / top, intensity_range(p, scale), value_range(p, scale)


def noise_curve(
    extract: FeatureFn | BrainAreaCNN,
    patches: Any,
    labels: Any,
    sigmas: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
    *,
    test_patches: Any = None,
    test_labels: Any = None,
    seed: int = 0,
) -> ProgressGen[dict[str, list[float]]]:
    """Generator form of :func:`noise_robustness` (one progress record per σ)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(extract, BrainAreaCNN):
        extract = feature_extractor("cnn", model=extract)
    if any(s < 0 for s in sigmas):
        raise ValueError(f"noise sigmas must be >= 0, got {list(sigmas)!r}")
    labels = np.asarray(labels)
    if test_patches is None:
        tr, te = train_test_split(
            np.arange(len(labels)), test_size=0.5, random_state=seed, stratify=labels
        )
        patches, test_patches = np.asarray(patches)[tr], np.asarray(patches)[te]
        labels, test_labels = labels[tr], labels[te]
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
    clf.fit(extract(patches), labels)
    clean, (lo, hi), (bottom, top) = _as_unit(test_patches)
    rng = np.random.default_rng(seed)
    acc: list[float] = []
    for i, sigma in enumerate(sigmas):
        sd = sigma * (hi - lo)  # sigma for [0, 1] images; a share of the range otherwise
        noisy = np.clip(clean + sd * rng.standard_normal(clean.shape, np.float32), bottom, top)
        acc.append(float(clf.score(extract(noisy), np.asarray(test_labels))))
        yield Progress(
            i + 1,
            len(sigmas),
            f"noise σ={sigma:g}: accuracy {acc[-1]:.3f}",
            {"sigma": float(sigma), "accuracy": acc[-1]},
        )
    return {"sigmas": [float(s) for s in sigmas], "accuracy": acc}


def noise_robustness(
    extract: FeatureFn | BrainAreaCNN,
    patches: Any,
    labels: Any,
    sigmas: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
    **kwargs: Any,
) -> dict[str, list[float]]:
    """Accuracy of a logistic regression trained on clean features as test images get noisier.

    Parameters
    ----------
    extract : feature function or BrainAreaCNN
    patches, labels : ``(N, P, P)`` images (uint8, other integers, float), ``(N,)``
        Training patches (the probe is fitted on their clean features).  Without
        ``test_patches``, a stratified half of them is held out for testing.
    sigmas : sequence of float
        Standard deviations of the Gaussian noise added to the test images, as a
        share of their intensity range (:func:`~napari_brainfeatures.train.fit.
        intensity_range`: [0, 1] for uint8 micro-CT, as in the paper); noisy
        images are clipped to that range.
    test_patches, test_labels, seed
        Keyword-only, optional.

    Returns
    -------
    dict
        ``sigmas`` and ``accuracy`` lists.
    """
    return run(noise_curve(extract, patches, labels, sigmas, **kwargs))


# -- everything, for several extractors -------------------------------------------------------
def compare_extractors(
    extractors: dict[str, FeatureFn],
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    sigmas: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
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
        ftr, fte = fn(ptr), fn(pte)
        step += 1
        yield Progress(step, total, f"{name}: probes, V-measure, Gram matrix")
        res: dict[str, Any] = {
            "probes": probe_scores(ftr, ytr, fte, yte, seed=seed),
            "vmeasure": gmm_vmeasure(ftr, fte, yte, n_components, seed=seed),
            "gram_distance": gram_block_distance(fte, yte),
        }
        res["pca"], res["pca_explained"] = pca_scatter(fte, min(3, *fte.shape))
        res["gram"], res["gram_labels"] = gram_matrix(fte, yte, seed=seed)
        res["test_labels"] = yte
        step += 1
        gen = noise_curve(fn, ptr, ytr, sigmas, test_patches=pte, test_labels=yte, seed=seed)
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
    the class colours, with a legend of class names.
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
    for row, (name, r) in enumerate(report.items()):
        ax = add(*cells[row][0])
        ax.imshow(r["gram"], cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}: Gram,{sep}distance {r['gram_distance']:.3f}", fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
        ax = add(*cells[row][1], projection="3d" if r["pca"].shape[1] == 3 else None)
        xyz = list(r["pca"].T[:3])
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
                    *pts, s=3, color=c.colour if c else "grey", label=c.name if c else str(int(cid))
                )
            if row == 0:
                ax.legend(fontsize=6, markerscale=3, loc="best")
        if narrow:
            ax.tick_params(labelsize=6)
        ax.set_title(f"{name}:{sep}PCA of test features", fontsize=9)
    ax = add(*noise_cell)
    for name, r in report.items():
        ax.plot(r["noise"]["sigmas"], r["noise"]["accuracy"], marker="o", label=name)
    ax.set_xlabel("noise σ"), ax.set_ylabel("LR accuracy"), ax.legend(fontsize=8)
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
