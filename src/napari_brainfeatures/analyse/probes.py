"""Probes of features: SVM and logistic accuracy, GMM V-measure, PCA, noise robustness.

On features ``(N, D)`` and labels ``(N,)``: linear/RBF SVM and logistic-regression
probes (:func:`probe_scores`), the V-measure of a Gaussian mixture
(:func:`gmm_vmeasure`) and a PCA scatter (:func:`pca_scatter`); on patches: the
logistic-regression accuracy as Gaussian noise on the test images grows
(:func:`noise_robustness`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_brainfeatures.analyse.extract import FeatureFn, feature_extractor
from napari_brainfeatures.models.cnn import BrainAreaCNN, input_scale_for
from napari_brainfeatures.progress import Progress, ProgressGen, blocking
from napari_brainfeatures.train.augment import intensity_range, value_range

__all__ = [
    "gmm_vmeasure",
    "iter_noise_robustness",
    "noise_robustness",
    "pca_scatter",
    "probe_scores",
]


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


def pca_scatter(X: Any, n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """First ``n`` principal components: ``(coords (N, n), explained_variance_ratio (n,))``."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float64)
    if not 1 <= n <= min(X.shape):
        raise ValueError(f"n must be in 1..{min(X.shape)} for features {X.shape!r}, got {n!r}")
    pca = PCA(n_components=n).fit(X)
    return pca.transform(X), pca.explained_variance_ratio_


def _as_unit(
    patches: np.ndarray,
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """Patches in network units (what the extractors see) and their intensity range.

    Integers are divided by their dtype's maximum (uint8: / 255), floats kept;
    the ranges are :func:`~napari_brainfeatures.train.augment.intensity_range` (the
    noise scale: [0, 1] for uint8 micro-CT, the 0.1-99.9th percentiles
    otherwise) and :func:`~napari_brainfeatures.train.augment.value_range` (clipping).
    """
    p = np.asarray(patches)
    scale = input_scale_for(p.dtype)[0]
    top = float(np.iinfo(p.dtype).max) if p.dtype.kind in "ui" else 1.0
    return p.astype(np.float32) / top, intensity_range(p, scale), value_range(p, scale)


def iter_noise_robustness(
    extract: FeatureFn | BrainAreaCNN,
    patches: Any,
    labels: Any,
    sigmas: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
    *,
    test_patches: Any = None,
    test_labels: Any = None,
    seed: int = 0,
    train_features: Any = None,
) -> ProgressGen[dict[str, list[float]]]:
    """Accuracy of a logistic regression trained on clean features as test images get noisier.

    Parameters
    ----------
    extract : feature function or BrainAreaCNN
    patches, labels : ``(N, P, P)`` images (uint8, other integers, float), ``(N,)``
        Training patches (the probe is fitted on their clean features).  Without
        ``test_patches``, a stratified half of them is held out for testing.
    sigmas : sequence of float
        Standard deviations of the Gaussian noise added to the test images, as a
        share of their intensity range (:func:`~napari_brainfeatures.train.augment.
        intensity_range`: [0, 1] for uint8 micro-CT, as in the paper); noisy
        images are clipped to that range.
    test_patches, test_labels : optional
        The test images and labels.
    seed : int
        Seeds the held-out half, the probe and the noise.
    train_features : array ``(N, D)``, optional
        ``extract(patches)`` when the caller has it already (with ``test_patches``):
        not computed again.

    Yields
    ------
    Progress
        One per σ, with ``sigma`` and ``accuracy`` in its values.

    Returns
    -------
    dict
        ``sigmas`` and ``accuracy`` lists.
    """
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
    given = train_features is not None and test_patches is not None
    clf.fit(np.asarray(train_features) if given else extract(patches), labels)
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


noise_robustness = blocking(iter_noise_robustness)
