"""NMF of a dense-feature-sized matrix: torch block HALS vs scikit-learn's NMF defaults.

Data: 5.5 M x 64 float32 (``--quick``: 200 k), post-ReLU-like: a 20-component
non-negative model with sparse, heavy-tailed activations and decaying component
strengths, plus Gaussian noise, clipped at 0 (about a quarter of the entries are
exactly 0, like ReLU features); seeded, generated in blocks with torch.
k = 15.  The reference is ``sklearn.decomposition.NMF(n_components=15)`` with
every other option at its default (init 'nndsvda', solver 'cd', max_iter 200,
tol 1e-4).  Both relative errors ``‖X − WH‖_F / ‖X‖_F`` are computed the same way.
Wall and CPU (process) seconds are reported: on a shared machine the CPU time is
the steadier figure.  scikit-learn runs twice: with its defaults (BLAS on all
cores) and with BLAS limited to one thread (threadpoolctl), which is faster on a
busy machine, so ``speedup_vs_sklearn_1thread`` is the conservative ratio.  Peak
RSS is measured after each solver.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

N_FULL, N_QUICK, D, K, K_TRUE = 5_500_000, 200_000, 64, 15, 20


def make_features(n: int, *, d: int = D, k_true: int = K_TRUE, seed: int = 0) -> np.ndarray:
    """Post-ReLU-like non-negative ``(n, d)`` float32 rows (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    H = torch.rand(k_true, d, generator=g) * (torch.rand(k_true, d, generator=g) < 0.3)
    strength = 1.0 / (1.0 + torch.arange(k_true) / 4.0)
    X = torch.empty(n, d)
    for s in range(0, n, 262_144):
        b = min(262_144, n - s)
        act = torch.rand(b, k_true, generator=g).pow(4) * (
            torch.rand(b, k_true, generator=g) < 0.25
        )
        X[s : s + b] = (act * strength @ H + 0.05 * torch.randn(b, d, generator=g)).clamp_(min=0)
    return X.numpy()


def rel_error(X: np.ndarray, W: np.ndarray, H: np.ndarray) -> float:
    num = den = 0.0
    for s in range(0, len(X), 262_144):
        xb = X[s : s + 262_144]
        num += float(np.square(xb - W[s : s + 262_144] @ H, dtype=np.float64).sum())
        den += float(np.square(xb, dtype=np.float64).sum())
    return (num / den) ** 0.5


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn):  # noqa: ANN001, ANN201
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def run(quick: bool, out: Path) -> dict:
    from sklearn.decomposition import NMF
    from threadpoolctl import threadpool_limits

    from napari_brainfeatures.factors.nmf import NMFOptions, fit_nmf
    from napari_brainfeatures.progress import run as drive

    n = N_QUICK if quick else N_FULL
    opts = NMFOptions(n_components=K, solver="torch", device="cpu")  # every other: default
    X, gen_s, _ = timed(lambda: make_features(n))
    rss0 = rss_mb()
    res, wall, cpu = timed(lambda: drive(fit_nmf(X, options=opts)))
    ours = rel_error(X, res.W, res.H)
    rss1 = rss_mb()
    n_iter = res.n_iter
    del res
    model = NMF(n_components=K)
    W, sk_wall, sk_cpu = timed(lambda: model.fit_transform(X))
    sk_err = rel_error(X, W, model.components_)
    rss2 = rss_mb()
    del W
    with threadpool_limits(1):  # sklearn's BLAS on one thread: no barrier waits when busy
        model1 = NMF(n_components=K)
        W1, sk1_wall, sk1_cpu = timed(lambda: model1.fit_transform(X))
    sk1_err = rel_error(X, W1, model1.components_)
    record = {
        "n_rows": n,
        "n_features": D,
        "k": K,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "n_iter": n_iter,
        "tol": opts.tolerance,
        "sweeps": list(opts.sweeps),
        "block_rows": opts.block_rows,
        "sklearn_wall_s": round(sk_wall, 3),
        "sklearn_cpu_s": round(sk_cpu, 3),
        "sklearn_n_iter": int(model.n_iter_),
        "sklearn_1thread_wall_s": round(sk1_wall, 3),
        "sklearn_1thread_cpu_s": round(sk1_cpu, 3),
        "sklearn_1thread_rel_error": round(sk1_err, 6),
        "speedup_vs_sklearn_1thread": round(sk1_wall / wall, 2),
        "speedup_vs_sklearn": round(sk_wall / wall, 2),
        "cpu_speedup_vs_sklearn": round(sk_cpu / cpu, 2),
        "rel_error": round(ours, 6),
        "sklearn_rel_error": round(sk_err, 6),
        "data_mb": round(X.nbytes / 2**20, 1),
        "generate_s": round(gen_s, 2),
        "peak_rss_mb_data": round(rss0, 1),
        "peak_rss_mb_torch": round(rss1, 1),
        "peak_rss_mb_sklearn": round(rss2, 1),
        "sklearn_W_dtype": str(W1.dtype),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available():
        res_gpu, gw, _ = timed(lambda: drive(fit_nmf(X, options=opts, device="cuda")))
        record.update(
            {
                "gpu_wall_s": round(gw, 3),
                "gpu_rel_error": round(res_gpu.rel_error, 6),
                "gpu": torch.cuda.get_device_name(0),
            }
        )
    return record
