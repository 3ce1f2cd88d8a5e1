"""Non-negative matrix factorisation of dense feature maps (paper 001).

``X ≈ W H`` with ``X`` the ``(N, D)`` feature rows (one per pixel; post-ReLU, so
non-negative), ``W`` the ``(N, k)`` coefficients (one heatmap per factor) and
``H`` the ``(k, D)`` factors (``components_``).  The paper writes ``X ≈ U V``;
here, as in scikit-learn, the per-pixel coefficients are returned by
:meth:`FeatureNMF.transform`.

The default solver is block HALS (hierarchical alternating least squares, i.e.
coordinate descent on columns) in PyTorch (:mod:`._hals`).  ``X`` enters an
iteration only through ``X Hᵀ`` (per row block, to update that block of ``W``)
and ``Wᵀ X`` (accumulated over blocks, to update ``H``), so one iteration is
**one pass over X** in row blocks: memory beyond ``X`` itself is ``W`` plus one
block.  The loss is tracked for free from ``WᵀX``, ``WᵀW`` and ``‖X‖²``.
Float32, all threads, CUDA when present.  ``solver="sklearn"`` wraps
:class:`sklearn.decomposition.NMF` (the reference) and ``"sklearn-minibatch"``
:class:`~sklearn.decomposition.MiniBatchNMF`.

Every option lives in :class:`~.options.NMFOptions`; :func:`fit_nmf` and
:class:`FeatureNMF` both take it (or its fields as keywords).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import numpy as np
import torch

from napari_brainfeatures._util.device import resolve_device
from napari_brainfeatures.factors._hals import (
    NMFResult,
    _as_rows,
    _fit_sklearn,
    _fit_torch,
    _load_rows,
    _solve_w,
    check_features,
)
from napari_brainfeatures.factors.options import SOLVERS, NMFOptions
from napari_brainfeatures.progress import Progress, run

__all__ = [
    "SOLVERS",
    "FeatureNMF",
    "NMFOptions",
    "NMFResult",
    "check_features",
    "fit_nmf",
    "project_rows",
]


def nmf_options(
    n_components: int | None = None, *, options: NMFOptions | None = None, **overrides: Any
) -> NMFOptions:
    """``options`` (default :class:`NMFOptions()`) with ``n_components`` and ``overrides`` set.

    Raises
    ------
    OptionError
        A value out of range (a :class:`ValueError` quoting it).
    TypeError
        An option that does not exist.
    """
    if n_components is not None:
        overrides["n_components"] = n_components
    return dataclasses.replace(options or NMFOptions(), **overrides)


def _masked_rows(X: Any, mask: Any, block: int) -> np.ndarray:
    """The rows of ``X`` where ``mask`` is True, in memory (float32, row order kept)."""
    rows = _as_rows(X)
    if mask is None:
        return _load_rows(rows, block)
    keep = np.asarray(mask, dtype=bool).reshape(-1)
    if keep.shape[0] != rows.shape[0]:
        raise ValueError(
            f"mask has {keep.shape[0]} pixels but X has {rows.shape[0]} rows; give a mask of "
            f"X's spatial shape {tuple(X.shape[:-1])!r}"
        )
    if not keep.any():
        raise ValueError("the mask keeps no row of X (no pixel in tissue); check the tissue mask")
    if isinstance(rows, np.ndarray):
        return np.ascontiguousarray(rows[keep], dtype=np.float32)
    out = np.empty((int(keep.sum()), rows.shape[1]), dtype=np.float32)
    n = 0
    for s in range(0, rows.shape[0], block):  # only the kept rows are copied
        k = keep[s : s + block]
        if k.any():
            b = np.asarray(rows[s : s + block], dtype=np.float32)[k]
            out[n : n + b.shape[0]], n = b, n + b.shape[0]
    return out


def fit_nmf(
    X: Any,
    n_components: int | None = None,
    *,
    options: NMFOptions | None = None,
    mask: Any = None,
    **overrides: Any,
) -> Generator[Progress, None, NMFResult]:
    """Factorise ``X ≈ W H`` (non-negative), yielding one :class:`Progress` per iteration.

    Parameters
    ----------
    X : array ``(N, D)`` or ``(H, W, D)``, numpy or dask
        Non-negative finite features (post-ReLU).  Loaded into memory as float32
        (no copy for a C-contiguous float32 numpy array).
    n_components : int, optional
        Number of factors ``k``, 1..min(N, D); default ``options.n_components`` (15,
        the paper).
    options : NMFOptions, optional
        Every option (solver, init, max_iter, tol, seed, device, block_rows, sweeps);
        default :class:`NMFOptions()`.
    **overrides
        Any :class:`NMFOptions` field, set on top of ``options``
        (``fit_nmf(X, 15, solver="sklearn")``).
    mask : bool array ``(N,)`` or ``(H, W)``, optional
        Rows to factorise (e.g. pixels in tissue whose patch lies in tissue); the
        others are left out of the fit.  Default: every row.

    Returns
    -------
    NMFResult
        ``W (n, k)`` for the rows used (all ``N``, or those in ``mask``), in the row
        order of ``X`` (put back on the map with :func:`~.maps.factor_maps` and
        ``valid=mask``).
    """
    opts = nmf_options(n_components, options=options, **overrides)
    rows = _masked_rows(X, mask, opts.block_rows)
    common = {
        "max_iter": opts.max_iter,
        "tol": opts.tolerance,
        "seed": opts.seed,
        "init": opts.init,
    }
    if opts.solver.startswith("sklearn"):
        minibatch = opts.solver.endswith("minibatch")
        return (yield from _fit_sklearn(rows, opts.n_components, minibatch=minibatch, **common))
    return (
        yield from _fit_torch(
            rows,
            opts.n_components,
            device=opts.device,
            block=opts.block_rows,
            inner=opts.sweeps,
            **common,
        )
    )


class FeatureNMF:
    """Estimator-style NMF of feature maps: ``X ≈ transform(X) @ components_``.

    Parameters
    ----------
    n_components : int
        Number of factors ``k``, default 15.
    options : NMFOptions, optional
        Every other option; default :class:`NMFOptions()`.
    **overrides
        Any :class:`NMFOptions` field (``solver``, ``init``, ``max_iter``, ``tol``,
        ``seed``, ``device``, ``block_rows``, ``sweeps``), set on top of ``options``.
        Checked here, when the estimator is made.

    Attributes
    ----------
    options : NMFOptions
    components_ : ndarray ``(k, D)`` float32
    reconstruction_err_ : float
        ``‖X − WH‖_F`` on the training data.
    rel_error_ : float
        ``‖X − WH‖_F / ‖X‖_F``.
    n_iter_ : int
    history_ : list of float
    """

    def __init__(
        self, n_components: int = 15, *, options: NMFOptions | None = None, **overrides: Any
    ) -> None:
        self.options = nmf_options(n_components, options=options, **overrides)

    def __repr__(self) -> str:
        return f"FeatureNMF({self.options!r})"

    @property
    def n_components(self) -> int:
        """Number of factors ``k``."""
        return self.options.n_components

    def _keep(self, res: NMFResult) -> None:
        self.components_, self.n_iter_, self.history_ = res.H, res.n_iter, res.history
        self.reconstruction_err_, self.rel_error_ = res.reconstruction_err, res.rel_error

    def fit(self, X: Any) -> FeatureNMF:
        """Fit on ``X (N, D)`` or ``(H, W, D)``; returns self."""
        self._keep(run(fit_nmf(X, options=self.options)))
        return self

    def fit_transform(self, X: Any) -> np.ndarray:
        """Fit and return the coefficients, shape ``X.shape[:-1] + (k,)``, float32."""
        res = run(fit_nmf(X, options=self.options))
        self._keep(res)
        return res.W.reshape(*X.shape[:-1], -1)

    def transform(self, X: Any, *, sweeps: int = 50) -> np.ndarray:
        """Coefficients of new rows for the fitted factors, shape ``X.shape[:-1] + (k,)``.

        Solved by clipped least squares then ``sweeps`` HALS sweeps (NNLS).
        """
        if not hasattr(self, "components_"):
            raise RuntimeError("FeatureNMF is not fitted yet; call fit(X) first")
        rows = _load_rows(_as_rows(X), self.options.block_rows)
        if rows.shape[1] != self.components_.shape[1]:
            raise ValueError(
                f"X has {rows.shape[1]} features but the factors have "
                f"{self.components_.shape[1]}; use features from the same model"
            )
        W = project_rows(rows, self.components_, options=self.options, sweeps=sweeps)
        return W.reshape(*X.shape[:-1], -1)


def project_rows(
    rows: np.ndarray, H: np.ndarray, *, options: NMFOptions | None = None, sweeps: int = 50
) -> np.ndarray:
    """Coefficients ``(n, k)`` float32 of ``rows`` ``(n, D)`` on fixed factors ``H`` ``(k, D)``.

    Clipped least squares then ``sweeps`` HALS sweeps (non-negative least squares);
    ``options`` gives the device and block size.
    """
    opts = options or NMFOptions()
    if rows.shape[0] == 0:
        return np.zeros((0, H.shape[0]), dtype=np.float32)
    check_features(rows, block=opts.block_rows)
    dev = resolve_device(opts.device)
    Ht = torch.from_numpy(np.ascontiguousarray(H, dtype=np.float32)).to(dev)  # (k, D)
    Wt, _ = _solve_w(rows, Ht, None, block=opts.block_rows, sweeps=sweeps, dev=dev)  # (k, n)
    return Wt.cpu().numpy().T
