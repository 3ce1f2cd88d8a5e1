"""One tile of a dense feature-map job: read its window, evaluate, write, mark done."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np
import torch

from napari_brainfeatures.features.fcn import make_evaluator
from napari_brainfeatures.features.plan import DenseJob
from napari_brainfeatures.features.store import write_tile
from napari_brainfeatures.models.cnn import BrainAreaCNN


def pad_index(idx: np.ndarray, n: int, edge: str) -> np.ndarray:
    """Map pixel indices (possibly outside ``0..n-1``) to image rows; -1 means zero."""
    if edge != "reflect":
        return np.where((idx >= 0) & (idx < n), idx, -1)
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    m = np.mod(idx, period)
    return np.where(m < n, m, period - m)


class TileWorker:
    """Reads, computes and writes single tiles of a :class:`DenseJob`."""

    def __init__(self, job: DenseJob, model: BrainAreaCNN, image: Any) -> None:
        self.job, self.image = job, image
        self.device = torch.device(job.device)
        model = model if self.device.type == "cpu" else copy.deepcopy(model).to(self.device)
        self.ev = make_evaluator(model, job.method, job.stride, job.batch)
        self._arrays: dict[str, Any] | None = None
        self.class_ids = job.class_ids

    @property
    def arrays(self) -> dict[str, Any]:
        """The store's zarr arrays, opened once."""
        if self._arrays is None:
            import zarr

            group = zarr.open_group(self.job.path, mode="r+")
            self._arrays = {name: group[name] for name in (*self.job.which, "done")}
        return self._arrays

    def _mask(self, t: tuple[int, int, int]) -> np.ndarray | None:
        """Which outputs of tile ``t`` to keep (None: all)."""
        job, s = self.job, self.job.stride
        sy, sx = job.box(t)
        _, (y0, _), (x0, _) = job.bounds
        ys = y0 + s * np.arange(sy.start, sy.stop)
        xs = x0 + s * np.arange(sx.start, sx.stop)
        keep = None
        if job.mask is not None:
            m = job.mask if job.mask.ndim == 2 else job.mask[t[0]]  # z relative to z0
            keep = np.asarray(m[ys[0] : ys[-1] + 1 : s, xs[0] : xs[-1] + 1 : s], dtype=bool)
        if job.edge == "invalid":
            h, w = job.image_shape[-2:]
            p, b = job.patch_size, job.patch_size // 2
            iy = (ys - b >= 0) & (ys - b + p <= h)
            ix = (xs - b >= 0) & (xs - b + p <= w)
            inside = iy[:, None] & ix[None, :]
            keep = inside if keep is None else keep & inside
        return keep

    def read(self, t: tuple[int, int, int]) -> np.ndarray | None:
        """The tile's input window ``(L, L)`` float32 with its halo (None if masked out)."""
        job = self.job
        keep = self._mask(t)
        if keep is not None and not keep.any():
            return None
        sy, sx = job.box(t)
        (z0, _), (y0, _), (x0, _) = job.bounds
        h, w = job.image_shape[-2:]
        ar = np.arange(job.input_len)
        iy = pad_index(y0 + job.stride * sy.start - job.before + ar, h, job.edge)
        ix = pad_index(x0 + job.stride * sx.start - job.before + ar, w, job.edge)
        vy, vx = iy >= 0, ix >= 0
        ylo, yhi, xlo, xhi = iy[vy].min(), iy[vy].max() + 1, ix[vx].min(), ix[vx].max() + 1
        key: tuple[Any, ...] = (slice(ylo, yhi), slice(xlo, xhi))
        if len(job.image_shape) == 3:
            key = (z0 + t[0], *key)
        import dask

        with dask.config.set(scheduler="synchronous"):
            block = np.asarray(self.image[key], dtype=np.float32)
        win = np.zeros((job.input_len, job.input_len), dtype=np.float32)
        win[np.ix_(vy, vx)] = block[np.ix_(iy[vy] - ylo, ix[vx] - xlo)]
        return win * np.float32(job.input_scale)

    def _context(self) -> contextlib.AbstractContextManager[Any]:
        stack = contextlib.ExitStack()
        if self.device.type == "cuda":  # float32 exactness: no TF32 in cuDNN convs / matmuls
            saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False

            def _restore() -> None:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

            stack.callback(_restore)
        if self.job.precision == "mixed":
            dt = torch.float16 if self.device.type == "cuda" else torch.bfloat16
            stack.enter_context(torch.autocast(self.device.type, dtype=dt))
        return stack

    def compute(self, t: tuple[int, int, int], window: np.ndarray | None) -> dict[str, np.ndarray]:
        """Evaluate tile ``t`` on its window: ``name -> (C, ny, nx)`` / ``(ny, nx)`` arrays."""
        job = self.job
        sy, sx = job.box(t)
        ny, nx = sy.stop - sy.start, sx.stop - sx.start
        if window is None:  # masked out: the fill values
            n_cls = len(self.class_ids)
            return {
                n: np.zeros((ny, nx), self.class_ids.dtype)
                if n == "areas"
                else np.full((n_cls if n == "probs" else job.n_features, ny, nx), np.nan, "f4")
                for n in job.which
            }
        x = torch.from_numpy(window)[None, None].to(self.device)  # (1, 1, L, L)
        with self._context():
            res = self.ev(x, job.tile, job.tile, which=job.which)
        out: dict[str, np.ndarray] = {}
        keep = self._mask(t)
        for name, v in res.items():
            arr = v[0, :, :ny, :nx].cpu().numpy()  # (C, ny, nx)
            if name == "areas":
                idx = arr[0]  # (ny, nx) class index, -1 = not finite
                arr = np.where(idx >= 0, self.class_ids[np.maximum(idx, 0)], 0).astype(
                    self.class_ids.dtype
                )  # (ny, nx) label ids, 0 where the features are NaN
                if keep is not None:
                    arr[~keep] = 0
            elif keep is not None:
                arr[:, ~keep] = np.nan
            out[name] = np.ascontiguousarray(arr)
        return out

    def write(self, t: tuple[int, int, int], data: dict[str, np.ndarray]) -> None:
        """Write tile ``t`` and mark it done."""
        if self.job.path is None:
            raise RuntimeError("the job has no store path; plan it with plan_job")
        write_tile(self.job.path, self.arrays, t, self.job.box(t), data)
