"""Dense feature maps: speed vs naive per-patch evaluation, exactness, memory vs image size.

Random weights of the default 128 px network (speed and exactness do not need
trained weights).  ``naive`` = batched per-patch evaluation of the same model on a
subset of pixels of the same image (outputs/s extrapolated); ``dense`` = the
end-to-end stride-1 run, zarr in -> zarr out.  Peak RSS of the 1x and 4x (2x per
side) images is measured in a fresh subprocess each, at the same tile size.

Targets: speedup_stride1 >= 40 on CPU, max_abs_diff <= 1e-4, rss_ratio_4x <= 1.2.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _model():
    import torch

    from napari_brainfeatures.models.cnn import BrainAreaCNN

    torch.manual_seed(0)
    return BrainAreaCNN().eval()


def _image(side: int, path: Path):
    """A smooth-ish uint8 test image written to zarr (read back lazily)."""
    import dask.array as da
    import zarr

    rng = np.random.default_rng(side)
    yy, xx = np.mgrid[0:side, 0:side] / 37.0
    img = 127 + 60 * np.sin(yy) * np.cos(xx * 1.3) + rng.normal(0, 25, (side, side))
    arr = zarr.create_array(
        str(path), shape=img.shape, chunks=(256, 256), dtype="uint8", overwrite=True
    )
    arr[:] = np.clip(img, 0, 255).astype(np.uint8)
    return da.from_zarr(zarr.open_array(str(path), mode="r"))


def _dense_run(image, out: Path, **kw) -> tuple[float, object]:
    from napari_brainfeatures.features.run import compute_feature_map
    from napari_brainfeatures.progress import run

    t0 = time.perf_counter()
    store = run(compute_feature_map(image, _model(), out=out, overwrite=True, **kw))
    return time.perf_counter() - t0, store


def rss_child(side: int, tile: int, out: str) -> None:
    """Subprocess body: one stride-1 run; prints peak RSS (MB) as JSON."""
    image = _image(side, Path(out) / f"img{side}.zarr")
    wall, _ = _dense_run(image, Path(out) / f"rss{side}.zarr", tile=tile, which=("features",))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"peak_rss_mb": peak, "wall_s": wall}))


def _rss(side: int, tile: int, out: Path) -> dict:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import bench_dense; bench_dense.rss_child({side}, {tile}, {str(out)!r})"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(quick: bool, out: Path) -> dict:
    import torch

    from napari_brainfeatures.features.fcn import DenseCNN, PatchCNN

    model = _model()
    side = 160 if quick else 512
    image = _image(side, out / "img.zarr")
    result: dict = {"image_side": side, "load_avg_1min": round(os.getloadavg()[0], 2)}

    # Naive: batched per-patch evaluation of an n x n block of outputs in the middle.
    n = 8 if quick else 24
    y0 = side // 2 - n // 2
    patch = PatchCNN(model, stride=1, batch=64)
    win = np.asarray(image[y0 - 64 : y0 - 64 + n + 127, y0 - 64 : y0 - 64 + n + 127])
    x = torch.from_numpy(win.astype(np.float32) / 255)[None, None]
    patch(x, 8, 8, which=("features",))  # warm-up (oneDNN primitives), not timed
    t0 = time.perf_counter()
    naive = patch(x, n, n, which=("features",))["features"][0].numpy()  # (64, n, n)
    result["naive_outputs_per_s"] = round(n * n / (time.perf_counter() - t0), 1)
    # The dense kernel alone (no IO), right after the naive run: same machine load.
    ev = DenseCNN(model, stride=1)
    t_side = 128
    xt = torch.rand(1, 1, ev.input_length(t_side), ev.input_length(t_side))
    ev(xt, t_side, t_side)  # warm-up (same shapes)
    t0 = time.perf_counter()
    ev(xt, t_side, t_side)
    result["dense_kernel_outputs_per_s"] = round(t_side**2 / (time.perf_counter() - t0), 1)
    result["speedup_kernel"] = round(
        result["dense_kernel_outputs_per_s"] / result["naive_outputs_per_s"], 1
    )

    # Dense: stride 1 on the whole image, end to end.
    wall, store = _dense_run(image, out / "dense.zarr", which=("features", "probs", "areas"))
    result["dense_outputs_per_s"] = round(side * side / wall, 1)
    result["dense_wall_s"] = round(wall, 2)
    result["tile"] = store.attrs["tile"]
    dense = np.asarray(store.features()[:, y0 : y0 + n, y0 : y0 + n])
    result["max_abs_diff"] = float(np.abs(dense - naive).max())
    result["max_rel_diff"] = float(np.abs(dense - naive).max() / np.abs(naive).max())
    result["speedup_stride1"] = round(
        result["dense_outputs_per_s"] / result["naive_outputs_per_s"], 1
    )
    for s in (4, 8, 16):
        wall, st = _dense_run(image, out / f"s{s}.zarr", stride=s)
        result[f"dense_outputs_per_s_stride{s}"] = round(int(np.prod(st.shape)) / wall, 1)
        result[f"pixels_per_s_stride{s}"] = round(side * side / wall, 1)

    # Memory: 1x vs 4x image in fresh processes, same tile.
    tile, rss_side = (48, 96) if quick else (256, side)
    small, big = _rss(rss_side, tile, out), _rss(2 * rss_side, tile, out)
    result["peak_rss_mb"] = round(small["peak_rss_mb"], 1)
    result["peak_rss_4x_mb"] = round(big["peak_rss_mb"], 1)
    result["rss_ratio_4x"] = round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
    result["rss_tile"], result["rss_side_1x"] = tile, rss_side

    if torch.cuda.is_available():
        result.update(_cuda(out, quick))
    result["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    return result


def _cuda(out: Path, quick: bool, side: int | None = None) -> dict:
    """A 2400 x 2400 slice at stride 1, zarr -> zarr, float32 and mixed precision."""
    side = side or (1200 if quick else 2400)
    image = _image(side, out / "gpu.zarr")
    res: dict = {"gpu_side": side}
    stores = {}
    for prec in ("float32", "mixed"):
        wall, stores[prec] = _dense_run(image, out / f"gpu-{prec}.zarr", precision=prec)
        res[f"gpu_{prec}_wall_s"] = round(wall, 2)
        res[f"gpu_{prec}_outputs_per_s"] = round(side * side / wall, 1)
    a = np.asarray(stores["float32"].features()[:, :256, :256])
    b = np.asarray(stores["mixed"].features()[:, :256, :256])
    res["gpu_mixed_max_rel_diff"] = float(np.abs(a - b).max() / np.abs(a).max())
    return res
