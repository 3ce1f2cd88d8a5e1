"""Numeric kernels of :mod:`napari_brainfeatures.factors.nmf`: block HALS NMF in PyTorch.

``X (N, D) ≈ W (N, k) H (k, D)``.  One iteration is one pass over ``X`` in row
blocks: for each block, ``P = H Xbᵀ`` feeds a few HALS sweeps on that block of
``W`` (reusing ``P`` is nearly free), and ``WbᵀXb``, ``WbᵀWb`` are accumulated;
then the same HALS kernel updates ``H`` from ``WᵀX`` and ``WᵀW``.  The loss comes
for free: ``‖X − WH‖² = ‖X‖² − 2⟨WᵀX, H⟩ + ⟨WᵀW, HHᵀ⟩``.  Memory beyond ``X``:
``W`` plus one block.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_brainfeatures._util.device import resolve_device
from napari_brainfeatures.progress import Progress

_TINY = 1e-12


@dataclass
class NMFResult:
    """Output of :func:`fit_nmf`.

    Attributes
    ----------
    W : ndarray ``(N, k)`` float32
        Coefficients of each row on each factor (the heatmaps); the transpose of a
        C-ordered ``(k, N)`` array, so ``W.T.reshape(k, H, W)`` is free.
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


def _serial(fn: Callable[[int], Any], items: Any) -> list[Any]:
    return [fn(i) for i in items]


def check_features(
    X: np.ndarray,
    *,
    n_components: int | None = None,
    block: int = 262_144,
    map_blocks: Callable[..., list[Any]] | None = None,
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

    def stats(s: int) -> tuple[float, float, int, int]:
        b = torch.from_numpy(X[s : s + block])  # (B, D)
        sq = float(torch.linalg.vector_norm(b, dtype=torch.float64)) ** 2
        if np.isfinite(sq) and float(b.amin()) >= 0:  # the usual case: three reads
            return sq, float(b.sum(dtype=torch.float64)), 0, 0
        return 0.0, 0.0, int((~torch.isfinite(b)).sum()), int((b < 0).sum())

    parts = (map_blocks or _serial)(stats, range(0, n, block))
    sq, total = sum(p[0] for p in parts), sum(p[1] for p in parts)
    bad, neg = sum(p[2] for p in parts), sum(p[3] for p in parts)
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
    X: np.ndarray,
    k: int,
    xsum: float,
    block: int,
    dev: torch.device,
    map_blocks: Callable[..., list[Any]] = _serial,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NNDSVDa start ``Wt (k, N)``, ``H (k, D)`` (on ``dev``) from a streamed SVD of ``X``.

    The top right singular vectors come from ``XᵀX (D, D)``; the left ones are
    ``X v / s``, written into ``Wt`` block by block.  As in scikit-learn, each
    pair keeps the sign part with the larger norm product, and zeros are then
    filled with the mean of ``X`` (this keeps HALS out of the poor local minima
    of plain NNDSVD).
    """
    n, d = X.shape

    def gram(s: int) -> torch.Tensor:
        b = torch.from_numpy(X[s : s + block]).to(dev)  # (B, D)
        return (b.T @ b).double()  # (D, D)

    G = torch.stack(map_blocks(gram, range(0, n, block))).sum(0)
    evals, evecs = torch.linalg.eigh(G)  # ascending
    sv = evals.flip(0)[:k].clamp(min=0).sqrt()  # (k,) singular values
    V = evecs.flip(1)[:, :k]  # (D, k)
    proj = (V / sv.clamp(min=_TINY)).float()  # (D, k): u = X v / s
    Wt = torch.empty(k, n, dtype=torch.float32, device=dev)

    def left(s: int) -> tuple[torch.Tensor, torch.Tensor]:
        U = proj.T @ torch.from_numpy(X[s : s + block]).to(dev).T  # (k, B)
        Wt[:, s : s + block] = U
        return U.clamp(min=0).double().square().sum(1), U.clamp(max=0).double().square().sum(1)

    parts = map_blocks(left, range(0, n, block))
    pos = torch.stack([p for p, _ in parts]).sum(0)  # (k,)
    neg = torch.stack([q for _, q in parts]).sum(0)  # (k,)
    vpos, vneg = V.clamp(min=0).norm(dim=0), V.clamp(max=0).norm(dim=0)  # (k,)
    mp, mn = pos.sqrt() * vpos, neg.sqrt() * vneg
    use_pos = mp >= mn
    use_pos[0] = V[:, 0].sum() >= 0  # the Perron vector: keep its dominant sign
    sign = torch.where(use_pos, 1.0, -1.0).double()
    unorm = torch.where(use_pos, pos.sqrt(), neg.sqrt()).clamp(min=_TINY)
    vnorm = torch.where(use_pos, vpos, vneg).clamp(min=_TINY)
    lam = (sv * torch.where(use_pos, mp, mn)).sqrt()
    H = ((sign[:, None] * V.T).clamp(min=0) * (lam / vnorm)[:, None]).float()  # (k, D)
    wscale = (sign * lam / unorm).float()[:, None]  # (k, 1)
    avg = xsum / (n * d)

    def scale(s: int) -> None:
        Wb = Wt[:, s : s + block]  # (k, B) view
        Wb.mul_(wscale).clamp_(min=0)
        Wb[Wb == 0] = avg

    map_blocks(scale, range(0, n, block))
    H[H == 0] = avg
    return Wt, H


def _hals_rows(Wt: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, sweeps: int) -> None:
    """In place: HALS sweeps on ``Wt (k, B)`` minimising ``‖Xᵀ − HᵀWt‖`` (``P`` is overwritten).

    Needs only ``P = H Xᵀ (k, B)`` and ``Q = H Hᵀ (k, k)``; the same kernel updates
    ``H (k, D)`` from ``WᵀX`` and ``WᵀW``.  Row j becomes
    ``max(0, (P[j] − Σ_{l≠j} Q[j, l] Wt[l]) / Q[j, j])``: with ``P`` and ``Q`` scaled by
    ``1 / Q[j, j]`` beforehand that is one matrix-vector product and one clamp, so
    few parallel regions (each costs a barrier, which is slow on a busy machine).
    A row whose ``Q[j, j]`` is 0 (its partner row is all zero) is left as it is, as
    in scikit-learn: zeroing it too would make that component dead for good.
    """
    diag = Q.diagonal()
    inv = 1.0 / diag.clamp(min=_TINY)  # (k,)
    Ps = P.mul_(inv[:, None])  # (k, B)
    Qs = (Q * inv[:, None]).fill_diagonal_(0)  # (k, k)
    tmp = torch.empty_like(Wt[0])  # (B,)
    live = [j for j, q in enumerate(diag.tolist()) if q > _TINY]
    for _ in range(sweeps):
        for j in live:
            torch.addmv(Ps[j], Wt.T, Qs[j], alpha=-1.0, out=tmp)  # (B,)
            torch.clamp(tmp, min=0, out=Wt[j])


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
    Wt: torch.Tensor | None,
    *,
    block: int,
    sweeps: int,
    dev: torch.device,
    Xd: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """``Wt (k, N)`` for fixed ``H`` and ``‖X − WH‖²``.

    HALS from ``Wt`` (updated in place), or from clipped least squares when it is None.
    """
    k = H.shape[0]
    Q = H @ H.T  # (k, k)
    fresh = Wt is None
    out = torch.empty(k, X.shape[0], dtype=torch.float32, device=dev) if Wt is None else Wt
    err2 = 0.0
    for s, Xb in _blocks(X, Xd, block, dev):
        P = H @ Xb.T  # (k, B)
        Wb = out[:, s : s + block]  # (k, B) view
        if fresh:
            Wb.copy_(torch.linalg.lstsq(Q, P).solution.clamp_(min=0))
        _hals_rows(Wb, P, Q, sweeps)
        err2 += float((Xb - Wb.T @ H).double().square().sum())
    return out, err2


@contextlib.contextmanager
def _block_pool(dev: torch.device) -> Iterator[Callable[..., list[Any]]]:
    """An ordered ``map`` over row blocks: on the CPU, one single-threaded block per core.

    Torch's intra-op threads meet at a barrier after every operation; NMF makes
    many small ones, and on a busy machine each barrier waits for a descheduled
    thread.  Independent row blocks on a thread pool (each op single-threaded)
    have no such barriers, and results come back in block order, so the sums do
    not depend on the thread count.  Torch's thread setting is restored on exit.
    """
    workers = torch.get_num_threads() if dev.type == "cpu" else 1
    if workers <= 1:
        yield lambda fn, items: [fn(i) for i in items]
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="nmf") as pool:
            yield lambda fn, items: list(pool.map(fn, items))
    finally:
        torch.set_num_threads(workers)


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
    dev = resolve_device(device)
    n, d = X.shape
    fits = dev.type == "cpu" or X.nbytes < 0.4 * torch.cuda.mem_get_info(dev)[0]
    Xd = torch.from_numpy(X).to(dev) if fits else None  # no copy on the CPU
    starts = range(0, n, block)

    def rows(s: int) -> torch.Tensor:
        return Xd[s : s + block] if Xd is not None else torch.from_numpy(X[s : s + block]).to(dev)

    def w_step(s: int) -> tuple[torch.Tensor, torch.Tensor]:
        # update this block of W in place, return its share of WᵀX and WᵀW
        Xb, Wb = rows(s), Wt[:, s : s + block]  # (B, D), (k, B) view
        _hals_rows(Wb, H @ Xb.T, Q, inner[0])
        return (Wb @ Xb).double(), (Wb @ Wb.T).double()

    history: list[float] = []
    it = 0
    with _block_pool(dev) as map_blocks:
        xx, xsum = check_features(X, n_components=k, block=block, map_blocks=map_blocks)
        yield Progress(0, max_iter, "initialising")
        if init == "nndsvda":
            Wt, H = _nndsvda(X, k, xsum, block, dev, map_blocks)  # Wt (k, N), H (k, D)
        else:  # as scikit-learn: uniform, scaled to the data's mean
            gen = torch.Generator().manual_seed(seed)
            scale = (xsum / (n * d) / k) ** 0.5
            H = (torch.rand(k, d, generator=gen) * scale).to(dev)
            Wt = (torch.rand(k, n, generator=gen) * scale).to(dev)
        for it in range(1, max_iter + 1):
            Q = H @ H.T  # (k, k)
            parts = map_blocks(w_step, starts)
            A = torch.stack([a for a, _ in parts]).sum(0)  # (k, D) Wᵀ X
            B = torch.stack([b for _, b in parts]).sum(0)  # (k, k) Wᵀ W
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
        Q = H @ H.T

        def final(s: int) -> float:  # W for the final H, and the exact error
            Xb, Wb = rows(s), Wt[:, s : s + block]
            _hals_rows(Wb, H @ Xb.T, Q, inner[0])
            return float((Xb - Wb.T @ H).double().square().sum())

        err = sum(map_blocks(final, starts)) ** 0.5
    return NMFResult(
        Wt.cpu().numpy().T,
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
