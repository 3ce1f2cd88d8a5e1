"""Results kept safe: labels saved in bounded memory, a session listed fast, kill -9 safe writers.

- ``labels_save_peak_mb``: a 64x2048x2048 uint16 labels volume (a lazy dask array,
  never whole in memory) saved through the napari labels writer
  (``_napari/writer.write_labels``) in a fresh process: peak RSS above the process's
  baseline just before the save.  Target <= 150 MB.  ``--quick``: 8x1024x1024.
- ``session_restore_s``: reopen a workspace holding 1 model, 2 feature stores,
  3 factor/cluster results and 2 evaluations and list them (``Workspace.open`` +
  ``Workspace.inventory()``), median of 5 in a warm process; ``session_restore_cold_s``
  is the same in a fresh Python process, imports included.  Target <= 1 s.
- ``kill_safe``: for each writer (model: ``train-cnn`` over an existing model;
  store: ``features --overwrite``; factors and clusters: the CLI over an earlier
  result folder; labels export: the napari writer over an earlier file) a
  previous result is written, then the writer is started over it in a subprocess
  and killed with SIGKILL mid-write; the previous result must still open and be
  byte for byte identical, and the next write must remove what the killed one left
  beside it.  ``kill_safe`` is true when every writer passes.
- ``exports_valid``: OME-Zarr exports validated and reopened (``_exports.py``).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
WRITERS = ("model", "store", "factors", "clusters", "labels")


# -- labels: peak memory of a save --------------------------------------------------------------
def _labels_block(block: np.ndarray, block_info: Any = None) -> np.ndarray:
    """Areas as seen on a slice: ids 1..6 in bands that shift with z (uint16)."""
    (z0, _), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    y = np.arange(y0, y1)[:, None]
    x = np.arange(x0, x1)[None, :]
    return (1 + ((y // 300 + x // 400 + z0) % 6)).astype(np.uint16)[None]


def lazy_labels(shape: tuple[int, int, int]) -> Any:
    """A lazy uint16 labels volume of ``shape`` (computed chunk by chunk, never held whole)."""
    import dask.array as da

    chunks = (1, min(512, shape[1]), min(512, shape[2]))
    empty = da.empty(shape, dtype=np.uint16, chunks=chunks)
    return empty.map_blocks(_labels_block, dtype=np.uint16)


def labels_child(shape: list[int], out: str) -> None:
    """Subprocess body: save the lazy labels; prints baseline and peak RSS (MB)."""
    import resource

    from napari_brainfeatures._napari.writer import write_labels

    data = lazy_labels(tuple(shape))  # type: ignore[arg-type]
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    t0 = time.perf_counter()
    write_labels(out, data, {"name": "areas", "metadata": {}})
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"base_mb": base, "peak_mb": peak, "wall_s": wall}))


def _child(call: str, *args: Any) -> dict[str, Any]:
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_results; "
        f"bench_results.{call}(*{list(args)!r})"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{call} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def labels_save(quick: bool, out: Path) -> dict[str, Any]:
    shape = [8, 1024, 1024] if quick else [64, 2048, 2048]
    res = _child("labels_child", shape, str(out / "labels.zarr"))
    return {
        "labels_save_peak_mb": round(res["peak_mb"] - res["base_mb"], 1),
        "labels_save_shape": shape,
        "labels_save_mib": round(int(np.prod(shape)) * 2 / 2**20, 1),
        "labels_save_s": round(res["wall_s"], 2),
    }


# -- a small workspace with one of everything ---------------------------------------------------
def tiny_model() -> Any:
    import torch

    from napari_brainfeatures.models.cnn import BrainAreaCNN, CNNConfig

    torch.manual_seed(0)
    cfg = CNNConfig(
        patch_size=32, channels=(4, 8, 8), kernels=(5, 3, 3), paddings=(0, 0, 0), fc=(16, 8),
        n_classes=3,
    )  # fmt: skip
    return BrainAreaCNN(cfg).eval()


def image() -> np.ndarray:
    return (np.random.default_rng(0).random((2, 48, 48)) * 255).astype(np.uint8)


def build_workspace(root: Path) -> Path:
    """1 model, 2 feature stores, 2 factors + 1 clusters result, 2 evaluations."""
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.factors.results import factorise, save_clusters
    from napari_brainfeatures.features.grid import FeatureGrid
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.models.cnn import save_cnn
    from napari_brainfeatures.progress import run
    from napari_brainfeatures.workspace import Workspace

    img = image()
    ws = Workspace.open(root, shape=img.shape)
    model = save_cnn(ws.path("models", "cnn-a"), tiny_model(), classes=ClassTable.from_names("abc"))
    stores = []
    for z in (0, 1):
        path = ws.path("features", f"cnn-a-s4-z{z}_{z + 1}.zarr")
        run(compute_feature_map(img, model, out=path, stride=4, region=z, tile=8, device="cpu"))
        stores.append(path)
    grid = FeatureGrid.open(stores[0], 0)
    for k in (2, 3):
        fac = run(factorise(grid, k, seed=0, max_iter=20))
        fac.save(ws.path("results", f"nmf-k{k}") / "factors.zarr")
    labels = np.ones(grid.shape, np.int32)
    save_clusters(ws.path("results", "gmm-k2") / "clusters.zarr", labels, grid, {"k": 2})
    for i in (1, 2):
        ws.write_json(f"evaluation-{i}.json", {"accuracy": 0.5, "confusion": [[1, 1], [1, 1]]})
    return root


def restore_child(root: str) -> None:
    """Subprocess body: open and list a workspace, imports included."""
    t0 = time.perf_counter()
    from napari_brainfeatures.workspace import Workspace

    n = len(Workspace.open(root, mode="r").inventory())
    print(json.dumps({"s": time.perf_counter() - t0, "n": n}))


def session_restore(out: Path) -> dict[str, Any]:
    from napari_brainfeatures.workspace import Workspace

    root = build_workspace(out / "session.brainfeatures")
    times, kinds = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        entries = Workspace.open(root, mode="r").inventory()
        times.append(time.perf_counter() - t0)
        kinds = [e.kind for e in entries]
    cold = _child("restore_child", str(root))
    return {
        "session_restore_s": round(statistics.median(times), 4),
        "session_restore_cold_s": round(cold["s"], 3),
        "session_entries": {k: kinds.count(k) for k in dict.fromkeys(kinds)},
    }


# -- kill -9 during each writer -----------------------------------------------------------------
def tree_bytes(path: Path) -> dict[str, bytes]:
    """Every file of ``path`` (a file, or a folder's files): equal means untouched."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def _mid() -> None:
    """Tell the parent the write is under way, then wait to be killed."""
    print("mid", flush=True)
    time.sleep(120)


def _patches(seed: int) -> Any:
    from napari_brainfeatures.classes import ClassTable
    from napari_brainfeatures.train.patches import PatchSet

    rng = np.random.default_rng(seed)
    y = np.arange(24) % 3
    x = (rng.normal(60, 20, (24, 32, 32)) + 50 * y[:, None, None]).clip(0, 255).astype(np.uint8)
    centres = np.zeros((24, 3), np.int64)
    centres[:, 0] = seed  # training and validation on other slices
    return PatchSet(x, (y + 1).astype(np.int64), centres, ClassTable.from_names("abc"))


def write(kind: str, target: str, work: str, killed: bool) -> None:
    """Write ``kind``'s result at ``target``; when ``killed``, stop mid-write for the kill."""
    from napari_brainfeatures import cli

    work_dir = Path(work)
    if kind == "model":
        from napari_brainfeatures.train.fit import train_cnn

        gen = train_cnn(
            _patches(0), _patches(1), config=tiny_model().config, epochs=3, batch_size=8,
            checkpoint_path=target, device="cpu", num_threads=1, seed=int(killed),
        )  # fmt: skip
        for rec in gen:
            if killed and "val_acc" in rec.values:
                _mid()  # the best model so far is on disk (beside the target)
    elif kind == "store":
        from napari_brainfeatures.features.run import compute_feature_map

        stride = 3 if killed else 4
        gen = compute_feature_map(
            image(), tiny_model(), out=target, stride=stride, tile=4, device="cpu", overwrite=True
        )
        for i, _ in enumerate(gen):
            if killed and i == 3:
                _mid()  # tiles of the new store are on disk
    elif kind in ("factors", "clusters"):
        import matplotlib.image

        if killed:  # the result files are being written into the new folder
            matplotlib.image.imsave = lambda *a, **k: _mid()
        store = str(work_dir / "store.zarr")
        args = ["--k", "3" if killed else "2", "--out", target, "--z", "0", "--overwrite"]
        if kind == "factors":
            args += ["--max-iter", "20"]
        command = "factors" if kind == "factors" else "cluster"
        if cli.main([command, store, *args]) != 0:
            raise SystemExit(f"{kind} failed")
    elif kind == "labels":
        from napari_brainfeatures._napari.writer import write_labels

        data = lazy_labels((4, 256, 256))
        if killed:
            data = data.map_blocks(_slow_block, dtype=data.dtype) + 1
        write_labels(target, data, {"name": "areas", "metadata": {}})
    else:
        raise ValueError(f"kind must be one of {WRITERS}, got {kind!r}")
    print(json.dumps({"written": kind}))


def _slow_block(block: np.ndarray, block_info: Any = None) -> np.ndarray:
    if block_info[None]["chunk-location"][0] == 2:  # half the volume written
        _mid()
    return block


def _opens(kind: str, target: Path) -> bool:
    """Whether the result at ``target`` opens with the package's own reader."""
    import zarr

    from napari_brainfeatures.factors.results import open_factors
    from napari_brainfeatures.features.store import FeatureStore
    from napari_brainfeatures.models.cnn import load_cnn

    if kind == "model":
        load_cnn(target)
    elif kind == "store":
        return FeatureStore(target).complete
    elif kind == "factors":
        open_factors(target / "factors.zarr")
    elif kind == "clusters":
        return zarr.open_group(target / "clusters.zarr", mode="r")["labels"].ndim == 2
    else:
        return zarr.open_array(str(target), mode="r").shape == (4, 256, 256)
    return True


def kill_one(kind: str, work: Path) -> dict[str, Any]:
    names = {"model": "cnn.safetensors", "store": "s.zarr", "labels": "labels.zarr"}
    target = work / names.get(kind, f"{kind}_out")
    _child("write", kind, str(target), str(work), False)  # the previous result
    before = tree_bytes(target)
    code = (
        f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_results; "
        f"bench_results.write({kind!r}, {str(target)!r}, {str(work)!r}, True)"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert p.stdout is not None
    reached = p.stdout.readline().strip() == "mid"
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    try:
        opens = _opens(kind, target)
    except Exception:  # noqa: BLE001 - any failure to open is the finding
        opens = False
    same = tree_bytes(target) == before
    left = len(_leftovers(target))
    _child("write", kind, str(target), str(work), False)  # the next write cleans up
    cleaned = not _leftovers(target)
    return {"pass": bool(reached and opens and same and cleaned), "killed_mid_write": reached,
            "opens": opens, "identical": same, "leftovers": left,
            "cleaned_by_next_write": cleaned}  # fmt: skip


def _leftovers(target: Path) -> list[str]:
    return sorted(e.name for e in target.parent.iterdir() if e.name.startswith(f".{target.name}."))


def kill_safe(out: Path) -> dict[str, Any]:
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.progress import run

    work = out / "kill"
    work.mkdir(parents=True, exist_ok=True)
    run(compute_feature_map(image(), tiny_model(), out=work / "store.zarr", stride=4, tile=8))
    per = {kind: kill_one(kind, work) for kind in WRITERS}
    return {"kill_safe": all(r["pass"] for r in per.values()), "kill_safe_writers": per}


def run(quick: bool, out: Path) -> dict[str, Any]:
    import platform

    result: dict[str, Any] = {
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU",
        "date": time.strftime("%Y-%m-%d"),
    }
    result.update(labels_save(quick, out))
    result.update(session_restore(out))
    result.update(kill_safe(out))
    from _exports import exports_valid  # OME-Zarr exports validated and reopened

    result.update(exports_valid(out))
    result["targets"] = {
        "labels_save_peak_mb": 150,
        "session_restore_s": 1.0,
        "kill_safe": True,
        "exports_valid": True,
    }
    return result
