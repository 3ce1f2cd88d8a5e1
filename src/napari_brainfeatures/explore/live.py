"""A live sub-area classifier on the stored features, retrained after every stroke.

The user paints a few strokes of new classes (barrels vs septa, L4 vs L5) into a
label image; :class:`LiveSession` reads the stored features under the strokes (no
CNN is rerun), fits a :class:`LiveClassifier` and predicts the class and its
uncertainty over the visible region, whose features it keeps in memory while the
view stays.

Why multinomial logistic regression on standardised features: the 64-d CNN
features are already a non-linear description of the tissue, so a linear read-out
is what separates sub-areas that the features know about (and it shows which ones
they do not); it is convex (the same strokes give the same answer, no seed
lottery), fits a few thousand samples in about 0.1 s with L-BFGS warm started
from the last fit, its probabilities give an uncertainty for free, and its
prediction is one matrix product -- about 0.5 s for the 1024² points of a zoomed-out
2048² view on two cores (``bench_explore``).  A small MLP would need more strokes,
a seed and early stopping, for features that a linear model reads well.

:func:`save_live_model` writes the classifier with its stroke set as one
safetensors model file (:mod:`~..models.checkpoint`); :func:`load_live_model` reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_brainfeatures.explore.context import block_of, coarse_context, context_at
from napari_brainfeatures.features.grid import FeatureGrid

__all__ = [
    "KIND",
    "LiveClassifier",
    "OneClassError",
    "LiveResult",
    "LiveSession",
    "load_live_model",
    "save_live_model",
]

KIND = "LiveClassifier"
# Image pixels of surroundings the classifier sees besides the pixel: about one cortical
# layer's thickness, so that a layer is told from its neighbours by where it lies.  Chosen
# on the sample volume of seed 1 (L2/3, L4 and barrels painted on one slice, predicted on
# another: IoU 0.39 / 0.35 / 0.15 with 32 px, 0.52 / 0.44 / 0.30 with 128 px); the explore
# benchmark's volume (seed 0) gives a plateau from 96 to 256 px.
CONTEXT_PX = 128.0
_MAX_ITER = 60  # L-BFGS steps per fit: well-separated strokes would take hundreds; each
# fit starts from the last one, so the solution keeps improving stroke after stroke
_CHUNK = 1 << 20  # rows predicted at a time (bounds the temporaries to ~ 4 MiB per class)


class OneClassError(ValueError):
    """Strokes of one class only: the live classifier needs two or more (``ids``: the one)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids
        super().__init__(
            f"the strokes hold one class only (id {ids}); paint at least two "
            "classes (e.g. barrels and septa) before the classifier can learn"
        )


class LiveClassifier:
    """Multinomial logistic regression on standardised features (see the module's note).

    Parameters
    ----------
    C : float
        Inverse L2 strength, default 1.0 (strong enough for a few strokes).
    max_per_class : int
        Samples per class used in a fit (a random subset, ``seed``), default 2000.
    seed : int
    """

    def __init__(self, *, C: float = 1.0, max_per_class: int = 2000, seed: int = 0) -> None:
        if not C > 0:
            raise ValueError(f"C must be > 0, got {C!r}")
        self.C, self.max_per_class, self.seed = float(C), int(max_per_class), int(seed)
        self._model: Any = None
        self.classes_: np.ndarray | None = None
        self.weight_: np.ndarray | None = None  # (K, D) on the raw features
        self.bias_: np.ndarray | None = None  # (K,)

    def fit(self, rows: np.ndarray, labels: np.ndarray) -> LiveClassifier:
        """Fit on ``rows`` ``(n, D)`` and their class ids ``labels`` ``(n,)`` (two or more)."""
        labels = np.asarray(labels)
        ids = np.unique(labels)
        if ids.size < 2:
            raise OneClassError(ids.tolist())
        rng = np.random.default_rng(self.seed)
        keep = np.concatenate([
            rng.permutation(np.flatnonzero(labels == c))[: self.max_per_class] for c in ids
        ])  # fmt: skip
        x, y = np.asarray(rows, np.float64)[keep], np.searchsorted(ids, labels[keep])
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-6] = 1.0  # a channel constant under the strokes carries no weight
        x = (x - mean) / scale
        k, d = ids.size, x.shape[1]
        start = self._model  # warm start: the last fit's weights when the classes are the same
        if start is None or not np.array_equal(self.classes_, ids) or start.size != k * (d + 1):
            start = np.zeros(k * (d + 1))
        self._model = _softmax_fit(x, y, k, self.C, start)
        coef, icpt = self._model[: k * d].reshape(k, d), self._model[k * d :]
        self.classes_ = ids
        self.weight_ = (coef / scale).astype(np.float32)  # folded standardisation
        self.bias_ = (icpt - (coef / scale) @ mean).astype(np.float32)
        return self

    def predict(
        self, rows: np.ndarray, offset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class ids ``(n,)`` and uncertainty ``(n,)`` float32 (entropy / log K, in [0, 1]).

        ``rows`` ``(n, D')`` may hold the first ``D'`` columns of what was fitted only;
        ``offset`` ``(n, K)`` then carries the logits of the others (the context's,
        computed on a coarse map).  Rows with NaN get class 0 and uncertainty NaN.
        """
        if self.weight_ is None or self.classes_ is None or self.bias_ is None:
            raise ValueError("the live classifier is not fitted yet; paint strokes first")
        rows = np.asarray(rows, np.float32)
        n, k = rows.shape[0], self.classes_.size
        weight = self.weight_[:, : rows.shape[1]]
        if weight.shape[1] < self.weight_.shape[1] and offset is None:
            raise ValueError(
                f"the classifier was fitted on {self.weight_.shape[1]} columns, got "
                f"{rows.shape[1]}; pass the other columns' logits as offset"
            )
        dtype = np.uint8 if self.classes_.max() < 256 else np.uint16
        labels, unc = np.zeros(n, dtype), np.full(n, np.nan, np.float32)
        ids = self.classes_.astype(dtype)
        for s in range(0, n, _CHUNK):
            # class-major (K, m): each step below is K whole-row operations, where the
            # row-major (m, K) layout reduced m rows of K (3-10x slower for a few classes)
            z = weight @ rows[s : s + _CHUNK].T  # (K, m)
            z += self.bias_[:, None]
            if offset is not None:
                z += offset[s : s + _CHUNK].T
            ok = np.isfinite(z).all(axis=0)
            z -= z.max(axis=0)
            np.maximum(z, -60.0, out=z)  # no subnormals (slow) out of exp
            p = np.exp(z, out=z)
            p /= p.sum(axis=0)
            best = np.argmax(p, axis=0)
            h = (p * np.log(np.maximum(p, 1e-12))).sum(axis=0) * np.float32(-1.0 / np.log(k))
            labels[s : s + _CHUNK] = np.where(ok, ids[best], 0)
            unc[s : s + _CHUNK] = np.where(ok, h, np.nan)
        return labels, unc


@dataclass(frozen=True, eq=False)
class LiveResult:
    """One live update: the prediction over the region and what it took.

    ``labels`` ``(h, w)`` class ids (0: no features); ``uncertainty`` ``(h, w)``
    float32; ``grid`` the region as a :class:`FeatureGrid` (its ``layer_kwargs``
    place the maps over the image); ``n_samples`` stroke samples per class.
    """

    labels: np.ndarray
    uncertainty: np.ndarray
    grid: FeatureGrid
    n_samples: dict[int, int]
    fit_s: float
    predict_s: float


class LiveSession:
    """Strokes -> stored features -> :class:`LiveClassifier` -> prediction of the visible region.

    Parameters
    ----------
    grid : FeatureGrid
        The slice whose stored features are classified (lazy; read per region).
    classifier : LiveClassifier, optional
    within : bool array ``(H', W')``, optional
        Predict only inside this mask (e.g. the store's predicted cortex, for sub-areas
        of one area); class 0 and uncertainty NaN elsewhere.  Strokes count anywhere.
    context_px : float
        Besides each pixel's features, the classifier sees their mean over its
        surroundings (:mod:`.context`: blocks of about this many image pixels,
        smoothed); default :data:`CONTEXT_PX`; 0: the pixel's features only.
    """

    def __init__(
        self,
        grid: FeatureGrid,
        classifier: LiveClassifier | None = None,
        *,
        within: Any = None,
        context_px: float = CONTEXT_PX,
    ) -> None:
        if grid.features is None:
            raise ValueError("the grid holds no features; open it with FeatureGrid.open(store)")
        if within is not None:
            within = np.asarray(within, dtype=bool)
            if within.shape != grid.shape:
                raise ValueError(
                    f"within must be a mask on the grid {grid.shape!r}, got {within.shape!r}"
                )
        self.grid = grid
        self.within = within  # (H', W') bool: predict only here (e.g. one predicted area)
        self.context_px = float(context_px)
        self.block = block_of(self.context_px, grid.step)
        self._coarse: np.ndarray | None = None  # (Hc, Wc, D) context map, made once
        self.classifier = classifier or LiveClassifier()
        self.box: tuple[int, int, int, int] | None = None  # (i0, i1, j0, j1) cached
        self._region: np.ndarray | None = None  # (h, w, D) float32
        self._shown: np.ndarray | None = None  # the region thinned for prediction
        self.thin = 1
        self._ids = np.zeros(0, np.int64)  # grid points whose features were read
        self._rows = np.zeros((0, int(grid.features.shape[-1])), np.float32)
        self.samples: tuple[np.ndarray, np.ndarray] | None = None  # (flat ids, labels)

    # -- the region ---------------------------------------------------------------------
    def box_of(self, y0: float, y1: float, x0: float, x1: float) -> tuple[int, int, int, int]:
        """The grid box ``(i0, i1, j0, j1)`` covering the image rows y0..y1 and columns x0..x1."""
        (h, w), (oy, ox), (sy, sx) = self.grid.shape, self.grid.origin, self.grid.step
        i0, i1 = int(np.floor((y0 - oy) / sy)), int(np.ceil((y1 - oy) / sy)) + 1
        j0, j1 = int(np.floor((x0 - ox) / sx)), int(np.ceil((x1 - ox) / sx)) + 1
        box = (max(i0, 0), min(i1, h), max(j0, 0), min(j1, w))
        if box[0] >= box[1] or box[2] >= box[3]:
            raise ValueError(
                f"the view (rows {y0:.0f}..{y1:.0f}, columns {x0:.0f}..{x1:.0f}) does not "
                "overlap the feature store's region; pan to it"
            )
        return box

    def region_grid(self, box: tuple[int, int, int, int], thin: int = 1) -> FeatureGrid:
        """The grid of what :meth:`predict` returns for ``box`` viewed at ``thin`` (no reading)."""
        i0, i1, j0, j1 = (int(b) for b in box)
        t = max(1, int(thin))
        (oy, ox), (sy, sx) = self.grid.origin, self.grid.step
        return FeatureGrid(
            (len(range(i0, i1, t)), len(range(j0, j1, t))),
            origin=(oy + sy * i0, ox + sx * j0), step=(sy * t, sx * t), z=self.grid.z,
            image_shape=self.grid.image_shape, source=self.grid.source,
        )  # fmt: skip

    def view(self, box: tuple[int, int, int, int], *, thin: int = 1) -> bool:
        """Read the features of grid ``box`` into memory (unless cached); True if read.

        ``thin``: predict every ``thin``-th grid point of the box along each axis (a
        view zoomed out so far that the screen shows fewer pixels than the box holds).
        """
        box = tuple(int(b) for b in box)  # type: ignore[assignment]
        thin = max(1, int(thin))
        if box == self.box and self._region is not None and thin == self.thin:
            return False
        if box != self.box or self._region is None:
            self._shown = None
            self._region = self._read(box)
            self.box = box
        self.thin = thin
        reg = self._region
        self._shown = reg if thin == 1 else np.ascontiguousarray(reg[::thin, ::thin])  # type: ignore[index]
        return True

    def _read(self, box: tuple[int, int, int, int]) -> np.ndarray:
        """The features of grid ``box``, ``(h, w, D)`` float32; a pan reads only what is new.

        Where ``box`` overlaps the region in memory, that part is copied from it and
        only the strips around it are read from the store (a pan of a 1536² view of a
        stride-1, 64-d store: 0.5 s against 1.2 s for the whole, file cached; the
        strips still read whole chunks).  Both regions are in memory meanwhile;
        without an overlap the old one is let go first.
        """
        i0, i1, j0, j1 = box
        features = self.grid.features
        old, ob = self._region, self.box
        if old is not None and ob is not None:
            r0, r1 = max(i0, ob[0]), min(i1, ob[1])
            c0, c1 = max(j0, ob[2]), min(j1, ob[3])
        if old is None or ob is None or r0 >= r1 or c0 >= c1:
            self._region = None  # free the old view before reading the new one
            return np.asarray(features[i0:i1, j0:j1], dtype=np.float32)
        out = np.empty((i1 - i0, j1 - j0, old.shape[-1]), np.float32)
        out[r0 - i0 : r1 - i0, c0 - j0 : c1 - j0] = old[
            r0 - ob[0] : r1 - ob[0], c0 - ob[2] : c1 - ob[2]
        ]
        strips = (
            (i0, r0, j0, j1),  # above the overlap, full width
            (r1, i1, j0, j1),  # below it
            (r0, r1, j0, c0),  # left of it
            (r0, r1, c1, j1),  # right of it
        )
        for a0, a1, b0, b1 in strips:
            if a0 < a1 and b0 < b1:
                out[a0 - i0 : a1 - i0, b0 - j0 : b1 - j0] = features[a0:a1, b0:b1]
        return out

    # -- strokes ------------------------------------------------------------------------
    def stroke_points(self, strokes: Any) -> tuple[np.ndarray, np.ndarray]:
        """Grid points under the painted pixels: ``(flat ids (m,), class ids (m,))``.

        ``strokes`` is a label image ``(Y, X)`` (or ``(Z, Y, X)``, read at the grid's z):
        0 unpainted.  Each painted pixel counts for the grid point covering it.
        """
        plane = (
            np.asarray(self.grid._plane(strokes, "the live strokes"))
            if np.ndim(strokes) == 3
            else np.asarray(strokes)
        )
        ys, xs = np.nonzero(plane)
        if ys.size == 0:
            raise ValueError("no strokes yet: paint at least two classes in the strokes layer")
        (h, w), (oy, ox), (sy, sx) = self.grid.shape, self.grid.origin, self.grid.step
        i = np.floor((ys - oy) / sy + 0.5).astype(np.int64)
        j = np.floor((xs - ox) / sx + 0.5).astype(np.int64)
        inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
        if not inside.any():
            y1, x1 = oy + sy * (h - 1), ox + sx * (w - 1)
            raise ValueError(
                f"the strokes lie outside the feature store's region (image rows {oy}..{y1}, "
                f"columns {ox}..{x1}); paint inside it"
            )
        flat = i[inside] * w + j[inside]
        flat, first = np.unique(flat, return_index=True)
        return flat, plane[ys[inside], xs[inside]][first]

    def _features_at(self, flat: np.ndarray) -> np.ndarray:
        """Feature rows ``(m, D)`` of grid points; each is read from the store once."""
        new = flat[~np.isin(flat, self._ids)]
        if new.size:
            w = self.grid.shape[1]
            i, j = new // w, new % w
            rows = np.empty((new.size, self._rows.shape[1]), np.float32)
            cached = np.zeros(new.size, bool)
            if self.box is not None and self._region is not None:
                i0, i1, j0, j1 = self.box
                cached = (i >= i0) & (i < i1) & (j >= j0) & (j < j1)
                rows[cached] = self._region[i[cached] - i0, j[cached] - j0]
            if (~cached).any():
                f, far = self.grid.features, ~cached
                picked = f.vindex[i[far], j[far]] if hasattr(f, "vindex") else f[i[far], j[far]]
                rows[far] = np.asarray(picked)  # dask reads only the chunks they lie in
            ids, allrows = np.r_[self._ids, new], np.vstack([self._rows, rows])
            order = np.argsort(ids)
            self._ids, self._rows = ids[order], allrows[order]
        return self._rows[np.searchsorted(self._ids, flat)]

    def prepare(self) -> None:
        """Make the context map now (a pass over the slice), so the first fit does not wait."""
        if self.block:
            self._context()

    def _context(self) -> np.ndarray:
        """The slice's context map (:func:`.context.coarse_context`), made on first use."""
        if self._coarse is None:
            whole = self.box == (0, self.grid.shape[0], 0, self.grid.shape[1])
            source = self._region if whole and self._region is not None else self.grid.features
            self._coarse = coarse_context(source, self.block)
        return self._coarse

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """Class ids and uncertainty ``(h, w)`` each of the viewed region (fitted classifier)."""
        if self._shown is None or self.box is None:
            raise ValueError("no region to predict: call view(box) with the visible region first")
        h, w, d = self._shown.shape
        i0, i1, j0, j1 = self.box
        t = self.thin
        offset = None
        if self.block:
            weight = self.classifier.weight_[:, d:]  # type: ignore[index]
            logits = self._context() @ weight.T  # (Hc, Wc, K): the context's part, coarse
            bi, bj = (i0 + t * np.arange(h)) // self.block, (j0 + t * np.arange(w)) // self.block
            offset = logits[bi[:, None], bj[None, :]].reshape(h * w, -1)  # (h*w, K)
        pred, unc = self.classifier.predict(self._shown.reshape(-1, d), offset)
        pred, unc = pred.reshape(h, w), unc.reshape(h, w)
        if self.within is not None:
            out = ~self.within[i0:i1:t, j0:j1:t]
            pred[out], unc[out] = 0, np.nan
        return pred, unc

    def update(self, strokes: Any) -> LiveResult:
        """Refit on the strokes and predict the viewed region (call :meth:`view` first).

        Raises
        ------
        ValueError
            No strokes, strokes of one class, strokes outside the store's region or
            only where no feature was computed, or no region viewed yet.
        """
        if self._region is None or self.box is None:
            raise ValueError("no region to predict: call view(box) with the visible region first")
        t0 = time.perf_counter()
        flat, labels = self.stroke_points(strokes)
        rows = self._features_at(flat)
        if self.block:
            w = self.grid.shape[1]
            rows = np.hstack([rows, context_at(self._context(), flat // w, flat % w, self.block)])
        ok = np.isfinite(rows).all(axis=1)
        if not ok.any():
            raise ValueError(
                "the strokes lie only where no feature was computed (NaN in the store); "
                "paint where the feature maps are"
            )
        self.classifier.fit(rows[ok], labels[ok])
        self.samples = (flat[ok], labels[ok])
        t1 = time.perf_counter()
        pred, unc = self.predict()
        ids, counts = np.unique(labels[ok], return_counts=True)
        sub = self.region_grid(self.box, self.thin)
        return LiveResult(
            pred,
            unc,
            sub,
            {int(c): int(n) for c, n in zip(ids, counts, strict=True)},
            t1 - t0,
            time.perf_counter() - t1,
        )


def save_live_model(path: Any, session: LiveSession, *, names: dict[int, str] | None = None) -> Any:
    """Write the fitted classifier and its stroke set as one safetensors model file.

    Tensors: ``weight`` ``(K, D)``, ``bias`` ``(K,)``, ``classes`` ``(K,)``, and the
    stroke set ``stroke_points`` ``(n, 2)`` (grid i, j) with ``stroke_labels`` ``(n,)``;
    the header names the store, slice and grid it was painted on, and the class names.
    An existing file of another kind of model (a CNN) is never replaced.
    """
    import torch

    from napari_brainfeatures.models.checkpoint import check_save_path, save_checkpoint

    clf = session.classifier
    if clf.weight_ is None or session.samples is None:
        raise ValueError("nothing to save: paint strokes of two classes first")
    path = check_save_path(path, KIND)
    flat, labels = session.samples
    w = session.grid.shape[1]
    module = torch.nn.Module()
    for name, value in {
        "weight": clf.weight_,
        "bias": clf.bias_,
        "classes": clf.classes_.astype(np.int64),  # type: ignore[union-attr]
        "stroke_points": np.stack([flat // w, flat % w], 1).astype(np.int64),
        "stroke_labels": labels.astype(np.int64),
    }.items():
        module.register_buffer(name, torch.from_numpy(np.ascontiguousarray(value)))
    d = int(clf.weight_.shape[1])
    names = {int(c): str(names.get(int(c), f"class {c}")) for c in clf.classes_} if names else {}  # type: ignore[union-attr]
    meta = {"grid": session.grid.to_attrs(), "grid_shape": list(session.grid.shape)}
    meta |= {"names": {str(k): v for k, v in names.items()}, "C": clf.C}
    meta |= {"context_px": session.context_px, "block": session.block}
    return save_checkpoint(
        path, module, kind=KIND, config={"n_features": d, "n_classes": int(clf.classes_.size)},  # type: ignore[union-attr]
        meta=meta,
    )  # fmt: skip


def load_live_model(path: Any) -> tuple[LiveClassifier, dict[str, Any]]:
    """Read a file of :func:`save_live_model`: the classifier and ``meta`` (grid, names, strokes).

    ``meta["strokes"]`` is ``(points (n, 2) grid i, j, labels (n,))``.
    """
    from safetensors.numpy import load_file

    from napari_brainfeatures.models.checkpoint import ModelFileError, read_header

    header = read_header(path)
    if header.get("kind") != KIND:
        raise ModelFileError(f"{str(path)!r} holds a {header.get('kind')} model, not a {KIND}")
    t = load_file(str(path))
    clf = LiveClassifier(C=float(header["meta"].get("C", 1.0)))
    clf.weight_, clf.bias_ = t["weight"].astype(np.float32), t["bias"].astype(np.float32)
    clf.classes_ = t["classes"]
    meta = dict(header["meta"])
    meta["strokes"] = (t["stroke_points"], t["stroke_labels"])
    return clf, meta


def _softmax_fit(x: np.ndarray, y: np.ndarray, k: int, C: float, start: np.ndarray) -> np.ndarray:
    """Multinomial logistic regression, L2 ``1 / C`` on the weights (scikit-learn's objective).

    ``x`` ``(n, d)`` standardised, ``y`` ``(n,)`` class indices in ``0..k-1``; returns the
    weights ``(k*d,)`` then the intercepts ``(k,)``.  A few dozen L-BFGS steps from
    ``start`` (:data:`_MAX_ITER`), on one BLAS thread.
    """
    from scipy.optimize import minimize
    from threadpoolctl import threadpool_limits

    n, d = x.shape
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0

    def loss(wb: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = wb[: k * d].reshape(k, d), wb[k * d :]
        z = x @ w.T + b  # (n, k)
        z -= z.max(axis=1, keepdims=True)
        np.maximum(z, -60.0, out=z)  # exp of less is 0 to float64, and its subnormals are slow
        lse = np.log(np.exp(z).sum(axis=1))
        g = np.exp(z - lse[:, None]) - onehot  # (n, k): softmax - target
        value = float((lse - z[np.arange(n), y]).sum() + 0.5 / C * (w * w).sum())
        return value, np.concatenate([(g.T @ x + w / C).ravel(), g.sum(axis=0)])

    # One BLAS thread: these products are small, and threads that wait for each other on
    # a busy machine took seconds per fit where one thread takes tens of milliseconds.
    with threadpool_limits(1, user_api="blas"):
        res = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": _MAX_ITER})
    return np.asarray(res.x)
