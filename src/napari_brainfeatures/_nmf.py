"""Numeric kernels of :mod:`napari_brainfeatures.factors`: block HALS NMF in PyTorch.

``X (N, D) ≈ W (N, k) H (k, D)``.  One iteration is one pass over ``X`` in row
blocks: for each block, ``P = H Xbᵀ`` feeds a few HALS sweeps on that block of
``W`` (reusing ``P`` is nearly free), and ``WbᵀXb``, ``WbᵀWb`` are accumulated;
then the same HALS kernel updates ``H`` from ``WᵀX`` and ``WᵀW``.  The loss comes
for free: ``‖X − WH‖² = ‖X‖² − 2⟨WᵀX, H⟩ + ⟨WᵀW, HHᵀ⟩``.  Memory beyond ``X``:
``W`` plus one block.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_brainfeatures._progress import Progress

SOLVERS = ("auto", "torch", "sklearn", "sklearn-minibatch")
_TINY = 1e-12


@dataclass
class NMFResult:
    """Output of :func:`fit_nmf`.

    Attributes
    ----------
    W : ndarray ``(N, k)`` float32
        Coefficients of each row on each factor (the heatmaps).
    H : ndarray ``(k, D)`` float32
        The factors.
    n_iter : int
    reconstruction_err : float
        ``‖X − WH‖_F``.
    rel_error : float
        ``‖X − WH‖_F / ‖X‖_F``.
    history : list of float
        Relative error after each iteration (torch solver).
    solver : str
    wall_s : float
    """

    W: np.ndarray
    H: np.ndarray
    n_iter: int
    reconstruction_err: float
    rel_error: float
    history: list[float]
    solver: str
    wall_s: float


def _as_rows(X: Any) -> Any:
    """``(..., D)`` numpy/dask -> ``(N, D)`` without copying numpy input."""
    if X.ndim < 2:
        raise ValueError(f"features need shape (N, D) or (H, W, D), got shape {X.shape!r}")
    return X.reshape(-1, X.shape[-1])


def _load_rows(X: Any, block: int = 262_144) -> np.ndarray:
    """Bring ``(N, D)`` numpy or dask rows into memory as float32 (no copy when already so)."""
    if isinstance(X, np.ndarray):
        return np.ascontiguousarray(X, dtype=np.float32)
    out = np.empty(X.shape, dtype=np.float32)  # NMF needs many passes: load once
    for s in range(0, X.shape[0], block):
        out[s : s + block] = np.asarray(X[s : s + block], dtype=np.float32)
    return out


def check_features(
    X: np.ndarray, *, n_components: int | None = None, block: int = 262_144
) -> tuple[float, float]:
    """Validate non-negative finite features blockwise; return ``(‖X‖²_F, ΣX)``.

    Raises
    ------
    ValueError
        On NaN/inf or negative values (with their count), or when ``n_components``
        exceeds the number of rows or features.
    """
    n, d = X.shape
    if n_components is not None:
        if isinstance(n_components, bool) or not isinstance(n_components, int | np.integer):
            raise ValueError(f"n_components must be an integer, got {n_components!r}")
        if n_components < 1 or n_components > d or n_components > n:
            raise ValueError(
                f"n_components must be in 1..min(N, D) = 1..{min(n, d)} for features of "
                f"shape {X.shape!r}, got {n_components!r}"
            )
    bad = neg = 0
    sq = total = 0.0
    for s in range(0, n, block):
        b = torch.from_numpy(X[s : s + block])  # (B, D)
        finite = torch.isfinite(b)
        bad += int((~finite).sum())
        neg += int((b < 0).sum())
        b = torch.where(finite, b, 0).double()
        sq, total = sq + float(b.square().sum()), total + float(b.sum())
    if bad:
        raise ValueError(
            f"features contain {bad} NaN or infinite values (of {X.size}); drop rows that "
            "were not computed (e.g. X[np.isfinite(X).all(axis=1)]) before the NMF"
        )
    if neg:
        raise ValueError(
            f"NMF needs non-negative features, but {neg} values (of {X.size}) are negative; "
            "use the post-ReLU features (FeatureStore.features(pre_relu=False))"
        )
    if sq == 0.0:
        raise ValueError("features are all zero: nothing to factorise")
    return sq, total


def _nndsvda(
    X: np.ndarray, k: int, xsum: float, block: int, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVDa start ``W (N, k)`` (host), ``H (k, D)`` from a streamed SVD of ``X``.

    The top right singular vectors come from ``XᵀX (D, D)``; the left ones are
    ``X v / s``, written into ``W`` block by block.  As in scikit-learn, each
    pair keeps the sign part with the larger norm product, and zeros are then
    filled with the mean of ``X`` (this keeps HALS out of the poor local minima
    of plain NNDSVD).
    """
    n, d = X.shape
    G = torch.zeros(d, d, dtype=torch.float64, device=dev)
    for s in range(0, n, block):
        b = torch.from_numpy(X[s : s + block]).to(dev)  # (B, D)
        G += (b.T @ b).double()
    evals, evecs = torch.linalg.eigh(G)  # ascending
    sv = evals.flip(0)[:k].clamp(min=0).sqrt()  # (k,) singular values
    V = evecs.flip(1)[:, :k]  # (D, k)
    proj = (V / sv.clamp(min=_TINY)).float()  # (D, k): u = X v / s
    W = torch.empty(n, k, dtype=torch.float32)
    pos = torch.zeros(k, dtype=torch.float64)
    neg = torch.zeros(k, dtype=torch.float64)
    for s in range(0, n, block):
        U = torch.from_numpy(X[s : s + block]).to(dev) @ proj  # (B, k)
        pos += U.clamp(min=0).double().square().sum(0).cpu()
        neg += U.clamp(max=0).double().square().sum(0).cpu()
        W[s : s + block] = U.cpu()
    V = V.cpu()
    vpos, vneg = V.clamp(min=0).norm(dim=0), V.clamp(max=0).norm(dim=0)  # (k,)
    mp, mn = pos.sqrt() * vpos, neg.sqrt() * vneg
    use_pos = mp >= mn
    use_pos[0] = V[:, 0].sum() >= 0  # the Perron vector: keep its dominant sign
    sign = torch.where(use_pos, 1.0, -1.0).double()
    unorm = torch.where(use_pos, pos.sqrt(), neg.sqrt()).clamp(min=_TINY)
    vnorm = torch.where(use_pos, vpos, vneg).clamp(min=_TINY)
    lam = (sv.cpu() * torch.where(use_pos, mp, mn)).sqrt()
    H = ((sign[:, None] * V.T).clamp(min=0) * (lam / vnorm)[:, None]).float()  # (k, D)
    wscale = (sign * lam / unorm).float()  # (k,)
    avg = xsum / (n * d)
    for s in range(0, n, block):
        Wb = W[s : s + block]
        Wb.mul_(wscale).clamp_(min=0)
        Wb[Wb == 0] = avg
    H[H == 0] = avg
    return W, H.to(dev)


def _hals_rows(Wt: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, sweeps: int) -> None:
    """In place: HALS sweeps on ``Wt (k, B)`` minimising ``‖Xᵀ − HᵀWt‖``.

    Needs only ``P = H Xᵀ (k, B)`` and ``Q = H Hᵀ (k, k)``; the same kernel updates
    ``H (k, D)`` from ``WᵀX`` and ``WᵀW``.
    """
    inv = (1.0 / Q.diagonal().clamp(min=_TINY)).tolist()
    for _ in range(sweeps):
        for j, inv_j in enumerate(inv):
            # Wt[j] += (P[j] - Q[j] @ Wt) / Q[j, j], then project on >= 0
            r = torch.addmv(P[j], Wt.T, Q[j], alpha=-1.0)  # (B,)
            Wt[j].add_(r, alpha=inv_j).clamp_(min=0)


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return dev


def _blocks(X: np.ndarray, Xd: torch.Tensor | None, block: int, dev: torch.device) -> Any:
    """Yield ``(start, block tensor (B, D))`` over the rows of ``X`` on ``dev``."""
    for s in range(0, X.shape[0], block):
        yield (
            s,
            (Xd[s : s + block] if Xd is not None else torch.from_numpy(X[s : s + block]).to(dev)),
        )


def _solve_w(
    X: np.ndarray,
    H: torch.Tensor,
    W: torch.Tensor | None,
    *,
    block: int,
    sweeps: int,
    dev: torch.device,
    Xd: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """``W (N, k)`` for fixed ``H`` and ``‖X − WH‖²``.

    HALS from ``W``, or from clipped least squares when ``W`` is None.
    """
    k = H.shape[0]
    Q = H @ H.T  # (k, k)
    out = W if W is not None else torch.empty(X.shape[0], k, dtype=torch.float32)
    err2 = 0.0
    for s, Xb in _blocks(X, Xd, block, dev):
        P = H @ Xb.T  # (k, B)
        if W is None:
            Wt = torch.linalg.lstsq(Q, P).solution.clamp_(min=0)  # (k, B)
        else:
            Wt = out[s : s + block].T.to(dev).contiguous()  # (k, B)
        _hals_rows(Wt, P, Q, sweeps)
        out[s : s + block] = Wt.T.cpu()
        err2 += float((Xb - Wt.T @ H).double().square().sum())
    return out, err2


def _fit_torch(
    X: np.ndarray,
    k: int,
    *,
    max_iter: int,
    tol: float,
    seed: int,
    device: Any,
    block: int,
    inner: tuple[int, int],
    init: str,
) -> Generator[Progress, None, NMFResult]:
    t0 = time.perf_counter()
    dev = _device(device)
    n, d = X.shape
    xx, xsum = check_features(X, n_components=k, block=block)
    yield Progress(0, max_iter, "initialising")
    if init == "nndsvda":
        W, H = _nndsvda(X, k, xsum, block, dev)  # W (N, k) on the host, H (k, D)
    elif init == "random":  # as scikit-learn: uniform, scaled to the data's mean
        gen = torch.Generator().manual_seed(seed)
        scale = (xsum / (n * d) / k) ** 0.5
        H = (torch.rand(k, d, generator=gen) * scale).to(dev)
        W = torch.rand(n, k, generator=gen) * scale
    else:
        raise ValueError(f"init must be 'nndsvda' or 'random', got {init!r}")
    fits = dev.type == "cpu" or X.nbytes < 0.4 * torch.cuda.mem_get_info(dev)[0]
    Xd = torch.from_numpy(X).to(dev) if fits else None  # no copy on the CPU
    history: list[float] = []
    it = 0
    for it in range(1, max_iter + 1):
        # one pass: update each block of W, accumulate WᵀX and WᵀW with the new W
        Q = H @ H.T  # (k, k)
        A = torch.zeros(k, d, dtype=torch.float64, device=dev)  # Wᵀ X
        B = torch.zeros(k, k, dtype=torch.float64, device=dev)  # Wᵀ W
        for s, Xb in _blocks(X, Xd, block, dev):
            Wt = W[s : s + block].T.to(dev).contiguous()  # (k, B)
            _hals_rows(Wt, H @ Xb.T, Q, inner[0])
            W[s : s + block] = Wt.T.cpu()
            A += (Wt @ Xb).double()
            B += (Wt @ Wt.T).double()
        _hals_rows(H, A.float(), B.float(), inner[1])  # the same HALS on H (k, D)
        Hd = H.double()
        err2 = xx - 2 * float((A * Hd).sum()) + float((B * (Hd @ Hd.T)).sum())
        rel = max(err2, 0.0) ** 0.5 / xx**0.5
        history.append(rel)
        yield Progress(
            it, max_iter, f"iteration {it}: relative error {rel:.4f}", {"rel_error": rel}
        )
        if len(history) > 1 and history[-2] - rel < tol * history[-2]:
            break
    W, err2 = _solve_w(X, H, W, block=block, sweeps=inner[0], dev=dev, Xd=Xd)  # W for the final H
    err = err2**0.5
    return NMFResult(
        W.numpy(),
        H.cpu().numpy(),
        it,
        err,
        err / xx**0.5,
        history,
        "torch",
        time.perf_counter() - t0,
    )


def _fit_sklearn(
    X: np.ndarray, k: int, *, max_iter: int, tol: float, seed: int, minibatch: bool, init: str
) -> Generator[Progress, None, NMFResult]:
    from sklearn.decomposition import NMF, MiniBatchNMF

    t0 = time.perf_counter()
    xx, _ = check_features(X, n_components=k)
    name = "MiniBatchNMF" if minibatch else "NMF"
    yield Progress(0, 1, f"scikit-learn {name} (no progress until it finishes)")
    cls = MiniBatchNMF if minibatch else NMF
    model = cls(n_components=k, init=init, max_iter=max_iter, tol=tol, random_state=seed)
    W = model.fit_transform(X)
    H = model.components_
    err2 = sum(
        float(np.square(X[s : s + 65536] - W[s : s + 65536] @ H, dtype=np.float64).sum())
        for s in range(0, X.shape[0], 65536)
    )
    err = err2**0.5
    yield Progress(
        1, 1, f"{name}: relative error {err / xx**0.5:.4f}", {"rel_error": err / xx**0.5}
    )
    return NMFResult(
        W.astype(np.float32, copy=False),
        H.astype(np.float32, copy=False),
        int(model.n_iter_),
        err,
        err / xx**0.5,
        [],
        f"sklearn-{name}",
        time.perf_counter() - t0,
    )
