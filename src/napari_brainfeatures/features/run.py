"""Dense sliding-window feature maps of the patch CNN, tile by tile into zarr.

:func:`compute_feature_map` evaluates a :class:`BrainAreaCNN` at every
``stride``-th pixel of an image (numpy, zarr or dask; 2-D ``(Y, X)`` or 3-D
``(Z, Y, X)``, one 2-D map per z-slice) and writes 64-d features, class
probabilities and the argmax area map into a :class:`FeatureStore`.  The output at
pixel ``(y, x)`` is the patch whose top-left corner is ``(y - P//2, x - P//2)``
(64 px before, 63 after for P = 128).

Edge rule (``edge=``): patches that leave the image read

- ``"reflect"`` (default) -- the image mirrored at its border without repeating
  the edge pixel (``numpy.pad(mode="reflect")``), so every pixel gets an output;
- ``"zero"`` -- zeros outside the image;
- ``"invalid"`` -- nothing: such outputs are NaN (features, probs) and 0 (areas).

Within the image, results equal per-patch evaluation of the same padded image
(exactly up to float rounding, for unpadded networks; see :mod:`.fcn`).
Work goes tile by tile (one tile = one zarr chunk; input read with its halo;
peak memory set by the tile, not the image); finished tiles are marked done, so
an interrupted run resumes.  :mod:`.distributed` runs the same tiles on
a dask cluster.  The options are :class:`~.options.DenseOptions`.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_brainfeatures.features.fcn import DenseCNN, PatchCNN
from napari_brainfeatures.features.inuse import discard, finish
from napari_brainfeatures.features.network import load_model
from napari_brainfeatures.features.options import EDGES, OUTPUTS, DenseOptions
from napari_brainfeatures.features.plan import Region, TileDone, plan_job
from napari_brainfeatures.features.store import FeatureStore, done_tiles
from napari_brainfeatures.features.tile import TileWorker, pad_index
from napari_brainfeatures.models.cnn import BrainAreaCNN
from napari_brainfeatures.progress import Progress, ProgressGen

# Besides its own two functions, the names this module has always offered (defined in
# options, plan, network, store) stay importable from here.
__all__ = [
    "EDGES",
    "OUTPUTS",
    "DenseOptions",
    "FeatureStore",
    "Region",
    "TileDone",
    "compute_feature_map",
    "load_model",
    "measure_padding_deviation",
    "plan_job",
]


def compute_feature_map(
    image: Any,
    model: BrainAreaCNN | str | Path,
    *,
    out: str | Path,
    options: DenseOptions | None = None,
    **kwargs: Any,
) -> ProgressGen[FeatureStore]:
    """Dense feature maps of ``model`` over ``image``, written tile by tile (a generator).

    Parameters
    ----------
    image : array-like ``(Y, X)`` or ``(Z, Y, X)``
        numpy, zarr or dask array; integer images are scaled to [0, 1] by their
        dtype's maximum, floats are used as they are (see ``input_scale``).
    model : BrainAreaCNN or path
        The network, or a model file written by ``save_checkpoint``.
    out : path
        The ``.zarr`` store to write (created, or resumed if it holds this job).
    options : DenseOptions, optional
        The job's options (default: ``DenseOptions()``).
    **kwargs
        Any field of :class:`~.options.DenseOptions` as a keyword -- ``stride``,
        ``region``, ``tile``, ``batch``, ``device``, ``precision``, ``which``, ``edge``,
        ``method``, ``classes``, ``input_scale``, ``memory_mb``, ``overwrite``,
        ``image_name`` -- set on top of ``options``; each is documented there.

    Yields
    ------
    Progress
        One per tile; ``payload`` is the :class:`TileDone` just written.

    Returns
    -------
    FeatureStore

    Raises
    ------
    ValueError
        An option out of range (the message quotes it), or a region outside the image.
    """
    job, model, _ = plan_job(image, model, out=out, options=DenseOptions.of(options, **kwargs))
    built = job.path or Path(out)
    try:
        yield from _run(job, model, image, built)
    except BaseException:  # Cancel (GeneratorExit) or an error: a replacement is dropped
        discard(built, Path(out))
        raise
    return FeatureStore(finish(built, Path(out), job.n_tiles))


def _run(job: Any, model: BrainAreaCNN, image: Any, built: Path) -> ProgressGen[None]:
    """Compute and write the tiles not done yet into the store at ``built``."""
    worker = TileWorker(job, model, image)
    todo = [t for t in job.tiles() if t not in done_tiles(built)]
    total = job.n_tiles
    step = total - len(todo)
    if step:
        yield Progress(step, total, f"resuming: {step}/{total} tiles already done")
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dense-io")
    pending: deque[tuple[TileDone, Future[None], int]] = deque()
    t0, n_out = time.perf_counter(), 0
    try:
        reads = deque(pool.submit(worker.read, t) for t in todo[:1])
        for i, t in enumerate(todo):
            window = reads.popleft().result()
            if i + 1 < len(todo):
                reads.append(pool.submit(worker.read, todo[i + 1]))
            data = worker.compute(t, window)
            pending.append((job.tile_done(t), pool.submit(worker.write, t, data), job.n_outputs(t)))
            while pending and (len(pending) > 1 or i + 1 == len(todo)):
                done, fut, n = pending.popleft()
                fut.result()
                step, n_out = step + 1, n_out + n
                rate = n_out / max(time.perf_counter() - t0, 1e-9)
                yield Progress(
                    step,
                    total,
                    f"tile {step}/{total} (z {done.z})",
                    {"outputs_per_s": rate},
                    payload=done,
                )
    finally:
        for _, fut, _ in pending:  # finish (or fail) writes already started, never half-mark
            fut.exception()
        pool.shutdown(wait=True, cancel_futures=True)


def measure_padding_deviation(
    model: BrainAreaCNN,
    image: np.ndarray,
    *,
    n: int = 32,
    edge: str = "reflect",
) -> dict[str, float]:
    """How far dense evaluation of a padded network is from exact per-patch evaluation.

    Evaluates an ``n x n`` stride-1 grid of outputs centred in the 2-D ``image`` both
    ways (dense approximation vs :class:`PatchCNN`) and compares post-ReLU features.

    Returns
    -------
    dict
        ``rel_deviation`` (||dense - exact|| / ||exact||), ``max_abs`` (max abs
        difference), ``max_rel`` (max abs difference / max |exact|), ``cosine`` (mean
        per-output cosine similarity) and ``area_agreement`` (fraction of equal argmax).
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (Y, X), got shape {img.shape!r}")
    dense = DenseCNN(model, stride=1)
    patch = PatchCNN(model, stride=1)
    y0, x0 = max(img.shape[0] // 2 - n // 2, 0), max(img.shape[1] // 2 - n // 2, 0)
    res = {}
    for name, ev in (("dense", dense), ("patch", patch)):
        length = ev.input_length(n)
        ys = np.arange(y0 - ev.before, y0 - ev.before + length)
        xs = np.arange(x0 - ev.before, x0 - ev.before + length)
        win = img[np.ix_(pad_index(ys, img.shape[0], edge), pad_index(xs, img.shape[1], edge))]
        res[name] = ev(
            torch.from_numpy(np.ascontiguousarray(win))[None, None],
            n,
            n,
            which=("features", "areas"),
        )
    a, b = res["dense"]["features"][0], res["patch"]["features"][0]  # (C, n, n)
    diff = (a - b).abs()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-12)
    return {
        "rel_deviation": float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)),
        "max_abs": float(diff.max()),
        "max_rel": float(diff.max() / b.abs().max()),
        "cosine": float(cos.mean()),
        "area_agreement": float((res["dense"]["areas"] == res["patch"]["areas"]).float().mean()),
    }
