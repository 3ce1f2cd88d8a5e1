"""Open a volume of the real data set's shape (720 x 1420 x 5805 uint8) and show one slice.

A zarr array of that shape is created with chunks (4, 512, 512); the chunks
around the middle slice are written with data (the rest stay unwritten, as
in a sparse store).  A fresh subprocess then measures what a viewer does:
``open_volume`` + contrast limits from a sample (``open_s``), then reading the
full-resolution middle slice (``first_slice_s``), and its peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr

SHAPE = (720, 1420, 5805)
CHUNKS = (4, 512, 512)

PROBE = r"""
import json, resource, sys, time
import numpy as np
t0 = time.perf_counter()
from napari_brainfeatures._napari.reader import read_volume
t_import = time.perf_counter() - t0
t0 = time.perf_counter()
(data, kwargs, kind), = read_volume(sys.argv[1])
open_s = time.perf_counter() - t0
t0 = time.perf_counter()
z = data.shape[0] // 2
sl = np.asarray(data[z])
first_slice_s = time.perf_counter() - t0
print(json.dumps({
    "open_s": open_s, "first_slice_s": first_slice_s, "import_s": t_import,
    "slice_shape": list(sl.shape), "slice_mean": float(sl.mean()),
    "contrast_limits": list(kwargs["contrast_limits"]),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def run(quick: bool, out: Path) -> dict:
    shape = (72, 1420, 5805) if quick else SHAPE
    path = out / "big.zarr"
    t0 = time.perf_counter()
    arr = zarr.create_array(str(path), shape=shape, chunks=CHUNKS, dtype=np.uint8, fill_value=0)
    arr.attrs["voxel_size_um"] = [1.17, 1.17, 1.17]
    zmid = shape[0] // 2
    z0 = zmid - zmid % CHUNKS[0]
    rng = np.random.default_rng(0)
    slab = rng.integers(40, 200, size=(CHUNKS[0], *shape[1:]), dtype=np.uint8)
    arr[z0 : z0 + CHUNKS[0]] = slab
    create_s = time.perf_counter() - t0
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True
    )
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "open_s": round(probe["open_s"], 4),
        "first_slice_s": round(probe["first_slice_s"], 4),
        "peak_rss_mb": round(probe["peak_rss_mb"], 1),
        "import_s": round(probe["import_s"], 3),
        "shape": list(shape),
        "voxels": int(np.prod(shape)),
        "chunks": list(CHUNKS),
        "slice_shape": probe["slice_shape"],
        "slice_matches": bool(abs(probe["slice_mean"] - float(slab[zmid - z0].mean())) < 1e-6),
        "contrast_limits": probe["contrast_limits"],
        "create_s": round(create_s, 2),
        "targets": {"open_s": 2.0, "peak_rss_mb": 500},
    }
