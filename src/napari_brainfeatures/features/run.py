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
(exactly up to float rounding, for unpadded networks; see :mod:`.dense_fcn`).
Work goes tile by tile (one tile = one zarr chunk; input read with its halo;
peak memory set by the tile, not the image); finished tiles are marked done, so
an interrupted run resumes.  :mod:`.dense_distributed` runs the same tiles on
a dask cluster.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_brainfeatures import __version__
from napari_brainfeatures._util.device import resolve_device
from napari_brainfeatures.classes import ClassTable
from napari_brainfeatures.features.fcn import OUTPUTS, DenseCNN, PatchCNN
from napari_brainfeatures.features.plan import EDGES, DenseJob, Region, TileDone
from napari_brainfeatures.features.store import FeatureStore, done_tiles, mark_complete, prepare
from napari_brainfeatures.features.tile import (
    TileWorker,
    load_model,
    model_id,
    pad_index,
)
from napari_brainfeatures.models.cnn import BrainAreaCNN, check_image_dtype
from napari_brainfeatures.progress import Progress, ProgressGen

__all__ = [
    "EDGES",
    "OUTPUTS",
    "FeatureStore",
    "Region",
    "TileDone",
    "compute_feature_map",
    "load_model",
    "measure_padding_deviation",
    "plan_job",
]


def plan_job(
    image: Any,
    model: BrainAreaCNN | str | Path,
    *,
    out: str | Path,
    stride: int = 1,
    region: Any = None,
    tile: int | None = None,
    batch: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "float32",
    which: Sequence[str] = ("features", "probs", "areas"),
    edge: str = "reflect",
    method: str = "auto",
    classes: ClassTable | None = None,
    input_scale: float | None = None,
    memory_mb: float | None = None,
    overwrite: bool = False,
    image_name: str | None = None,
) -> tuple[DenseJob, BrainAreaCNN, dict[str, Any]]:
    """Validate the options, create (or reopen) the store; see :func:`compute_feature_map`.

    Returns
    -------
    job, model, provenance
    """
    model, header, file_sha = (
        load_model(model) if isinstance(model, str | Path) else (model, {}, None)
    )
    if not isinstance(model, BrainAreaCNN):
        raise TypeError(f"model must be a BrainAreaCNN or a model file, got {type(model).__name__}")
    if header and input_scale is None:
        check_image_dtype(header.get("meta", {}), getattr(image, "dtype", np.float32))
    job = DenseJob.build(
        image,
        model,
        stride=stride,
        region=region,
        tile=tile,
        batch=batch,
        device=str(resolve_device(device)),
        precision=precision,
        which=which,
        edge=edge,
        method=method,
        input_scale=input_scale,
        memory_mb=memory_mb,
        classes=classes or _classes_of(header, model),
    )
    cfg = model.config
    provenance = {
        "model_id": model_id(model),
        "model": {
            "kind": "BrainAreaCNN",
            "config": cfg.to_dict(),
            "file": header.get("path"),
            "file_sha256": file_sha,
            "meta": header.get("meta", {}),
        },
        **job.describe(),
        "image": {"shape": list(job.image_shape), "dtype": str(job.image_dtype)},
        "image_name": image_name,
        "package_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    group = prepare(out, provenance=provenance, arrays=job.array_specs(), overwrite=overwrite)
    job.path = Path(out)
    del group
    return job, model, provenance


def _classes_of(header: dict[str, Any], model: BrainAreaCNN) -> ClassTable:
    meta = header.get("meta", {}) if header else {}
    raw = meta.get("classes")
    if raw:
        table = ClassTable.from_dict(raw if isinstance(raw, dict) else {"classes": raw})
        if len(table) == model.config.n_classes:
            return table
    return ClassTable.from_names([f"class{i + 1}" for i in range(model.config.n_classes)])


def compute_feature_map(
    image: Any,
    model: BrainAreaCNN | str | Path,
    *,
    out: str | Path,
    stride: int = 1,
    region: Any = None,
    tile: int | None = None,
    batch: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "float32",
    which: Sequence[str] = ("features", "probs", "areas"),
    edge: str = "reflect",
    method: str = "auto",
    classes: ClassTable | None = None,
    input_scale: float | None = None,
    memory_mb: float | None = None,
    overwrite: bool = False,
    image_name: str | None = None,
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
    stride : int
        Pixels between outputs, default 1 (every pixel).
    region : None, int, slice, (start, stop), dict, Region or bool array
        ``None``: everything; int / slice / pair: z-slices; ``{"z": .., "y": (y0, y1),
        "x": (x0, x1)}`` or :class:`Region`: a box; a bool mask ``(Y, X)`` or
        ``(Z, Y, X)``: only outputs whose pixel is in the mask (others NaN / 0).
    tile : int, optional
        Outputs per tile side (= zarr chunk); default from ``memory_mb``.
    batch : int, optional
        Patches per forward pass (``method="patch"``) or FC1 outputs per call (dense).
    device : str or torch.device, optional
        Default: CUDA when available, else CPU (all cores).
    precision : {"float32", "mixed"}
        ``"mixed"``: autocast (float16 on CUDA, bfloat16 on CPU); stores stay float32.
        Meant for CUDA: CPUs without bfloat16 units run it slower than float32.
    which : sequence of str
        Any of ``"features"`` (post-ReLU), ``"features_pre"`` (pre-ReLU),
        ``"probs"``, ``"areas"``.
    edge : {"reflect", "zero", "invalid"}
        Edge rule (module docstring).
    method : {"auto", "dense", "patch"}
        ``"auto"``: exact fully convolutional evaluation for unpadded networks, batched
        per-patch evaluation (exact, slow) for padded ones; ``"dense"`` on a padded
        network is the inexact dense approximation.
    classes : ClassTable, optional
        Label ids for ``areas`` (default: the model file's, else 1..K).
    input_scale : float, optional
        Multiply the image by this instead of the dtype rule.
    memory_mb : float, optional
        Working-set budget that sets the default tile (1024 on CPU, 8192 on CUDA).
    overwrite : bool
        Replace a store made by another job (default: refuse).
    image_name : str, optional
        Recorded in the provenance.

    Yields
    ------
    Progress
        One per tile; ``payload`` is the :class:`TileDone` just written.

    Returns
    -------
    FeatureStore
    """
    job, model, _ = plan_job(
        image,
        model,
        out=out,
        stride=stride,
        region=region,
        tile=tile,
        batch=batch,
        device=device,
        precision=precision,
        which=which,
        edge=edge,
        method=method,
        classes=classes,
        input_scale=input_scale,
        memory_mb=memory_mb,
        overwrite=overwrite,
        image_name=image_name,
    )
    worker = TileWorker(job, model, image)
    todo = [t for t in job.tiles() if t not in done_tiles(out)]
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
    if len(done_tiles(out)) == total:
        from zarr import open_group

        mark_complete(open_group(out, mode="r+"))
    return FeatureStore(out)


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
