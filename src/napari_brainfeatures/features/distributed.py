"""Dense feature maps on a dask.distributed cluster: each worker does whole tiles.

The client plans the job and creates (or reopens) the store with
:func:`~.plan.plan_job`, as :func:`~.run.compute_feature_map` does; every worker then
reads its tiles' input windows, evaluates them and writes the tiles' chunks and
``done`` markers straight into the store, so the store must be on a file system
all workers share (always true for the default local cluster).  The model
travels as its config and a dict of numpy weights (no pickled module code);
workers rebuild it once and reuse it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import torch

from napari_brainfeatures.features.inuse import discard, finish
from napari_brainfeatures.features.network import model_id
from napari_brainfeatures.features.options import DenseOptions
from napari_brainfeatures.features.plan import DenseJob, plan_job
from napari_brainfeatures.features.store import FeatureStore, done_tiles
from napari_brainfeatures.features.tile import TileWorker
from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = ["compute_feature_map_distributed", "connect"]


class _Opaque:
    """Hides an image from dask so that a dask array is shipped as is, not computed."""

    def __init__(self, value: Any) -> None:
        self.value = value


_CACHE: dict[tuple[str, int], TileWorker] = {}
_LOCK = threading.Lock()


def _tile_task(
    job: DenseJob, weights: dict[str, Any], image: _Opaque, tile: tuple[int, int, int]
) -> tuple[tuple[int, int, int], int, float]:
    """Worker side: compute and write one tile; returns ``(tile, outputs, seconds)``."""
    t0 = time.perf_counter()
    key = (weights["id"], id(job))
    with _LOCK:
        worker = _CACHE.get(key)
        if worker is None:
            model = BrainAreaCNN(CNNConfig.from_dict(weights["config"]))
            model.load_state_dict({k: torch.from_numpy(v) for k, v in weights["state"].items()})
            worker = TileWorker(_own_gpu(job), model.eval(), image.value)
            _CACHE.clear()  # one job at a time per worker process
            _CACHE[key] = worker
    worker.write(tile, worker.compute(tile, worker.read(tile)))
    return tile, job.n_outputs(tile), time.perf_counter() - t0


def _own_gpu(job: DenseJob) -> DenseJob:
    """On a machine with several GPUs, spread workers over them (one GPU per worker)."""
    n_gpu = torch.cuda.device_count()
    if job.device != "cuda" or n_gpu < 2:
        return job
    from distributed import get_worker

    name = get_worker().name
    index = int(name) if str(name).isdigit() else abs(hash(name))
    return dataclasses.replace(job, device=f"cuda:{index % n_gpu}")


def connect(
    scheduler: str | None = None,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    timeout: float = 10.0,
) -> tuple[Any, Any]:
    """A ``(client, cluster)`` pair: a new LocalCluster, or ``cluster=None`` for an address.

    Raises
    ------
    ConnectionError
        No scheduler answered at ``scheduler`` within ``timeout`` seconds.
    """
    from distributed import Client, LocalCluster

    if scheduler in (None, "", "local"):
        if int(n_workers) < 1:
            raise ValueError(f"n_workers must be at least 1, got {n_workers!r}")
        cluster = LocalCluster(
            n_workers=int(n_workers),
            threads_per_worker=int(threads_per_worker),
            processes=True,
            dashboard_address=None,
        )
        return Client(cluster), cluster
    if not isinstance(scheduler, str) or "://" not in scheduler:
        raise ValueError(
            "scheduler must be None, 'local' or an address like 'tcp://host:8786', "
            f"got {scheduler!r}"
        )
    try:
        return Client(scheduler, timeout=timeout), None
    except (OSError, TimeoutError) as err:
        raise ConnectionError(
            f"no dask scheduler answered at {scheduler!r} within {timeout:g} s ({err}); "
            "start one with `dask scheduler` (and workers with `dask worker ADDRESS`), "
            "or use scheduler='local'"
        ) from None


def compute_feature_map_distributed(
    image: Any,
    model: BrainAreaCNN | str | Path,
    *,
    out: str | Path,
    scheduler: str | None = None,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    timeout: float = 10.0,
    options: DenseOptions | None = None,
    **kwargs: Any,
) -> ProgressGen[FeatureStore]:
    """:func:`~.run.compute_feature_map` on a dask cluster (a generator).

    Parameters
    ----------
    image, model, out
        As for ``compute_feature_map``.  A dask ``image`` is shipped as a graph and
        read by the workers (it must be readable there, e.g. zarr on shared disk).
    scheduler : None, "local" or str
        None / ``"local"``: a new LocalCluster of ``n_workers`` processes (closed at
        the end); an address ``"tcp://host:port"``: that cluster's workers.
    n_workers, threads_per_worker : int
        Size of the LocalCluster (default 2 processes of 1 thread).
    timeout : float
        Seconds to wait for a scheduler at ``scheduler`` (default 10).
    options, **kwargs
        The job's options, as for ``compute_feature_map``: a
        :class:`~.options.DenseOptions` and/or its fields as keywords.

    Yields
    ------
    Progress
        One per finished tile (``payload``: the :class:`~.run.TileDone`).

    Returns
    -------
    FeatureStore
    """
    from distributed import as_completed

    job, net, _ = plan_job(image, model, out=out, options=DenseOptions.of(options, **kwargs))
    weights = {
        "id": model_id(net),
        "config": net.config.to_dict(),
        "state": {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()},
    }
    built, target = job.path or Path(out), Path(out)
    todo = [t for t in job.tiles() if t not in done_tiles(built)]
    total, step = job.n_tiles, job.n_tiles - len(todo)
    if step:
        yield Progress(step, total, f"resuming: {step}/{total} tiles already done")
    client, cluster = connect(
        scheduler, n_workers=n_workers, threads_per_worker=threads_per_worker, timeout=timeout
    )
    futures: list[Any] = []
    complete = False
    try:
        job_f, weights_f, image_f = client.scatter(
            [job, weights, _Opaque(image)], broadcast=True, hash=False
        )
        futures = [
            client.submit(_tile_task, job_f, weights_f, image_f, t, pure=False) for t in todo
        ]
        t0, n_out = time.perf_counter(), 0
        for fut in as_completed(futures):
            tile, n, _ = fut.result()
            step, n_out = step + 1, n_out + n
            rate = n_out / max(time.perf_counter() - t0, 1e-9)
            done = job.tile_done(tile)
            yield Progress(
                step, total, f"tile {step}/{total} (z {done.z})", {"outputs_per_s": rate}, done
            )
        complete = True
    finally:
        if futures:
            client.cancel(futures)
        client.close()
        if cluster is not None:
            cluster.close()
        if not complete:  # Cancel or an error: a replacement is dropped, the old store stays
            discard(built, target)
    return FeatureStore(finish(built, target, total))
