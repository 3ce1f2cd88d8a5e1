"""Shared fixtures: small volumes on disk in every supported format."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import tifffile
import zarr


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Workspaces of in-memory data go to a temporary home, never the user's."""
    monkeypatch.setenv("BRAINFEATURES_HOME", str(tmp_path_factory.mktemp("bf-home")))


@pytest.fixture
def one_thread():
    """Tiny problems: BLAS and torch threads only add synchronisation (slow on a busy machine)."""
    import torch
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(6, 40, 50), dtype=np.uint8)


@pytest.fixture
def tiff_stack(tmp_path, volume):
    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        volume,
        imagej=True,
        resolution=(1 / 1.17, 1 / 1.17),
        metadata={"spacing": 1.17, "unit": "um"},
    )
    return path


@pytest.fixture
def tiff_folder(tmp_path, volume):
    folder = tmp_path / "slices"
    folder.mkdir()
    for i, sl in enumerate(volume):
        tifffile.imwrite(folder / f"slice_{i}.tif", sl)
    return folder


@pytest.fixture(params=[2, 3], ids=["zarr-v2", "zarr-v3"])
def zarr_array(request, tmp_path, volume):
    path = tmp_path / f"vol_v{request.param}.zarr"
    z = zarr.create_array(
        str(path),
        shape=volume.shape,
        chunks=(2, 16, 16),
        dtype=volume.dtype,
        zarr_format=request.param,
    )
    z[:] = volume
    z.attrs["voxel_size_um"] = [1.17, 1.17, 1.17]
    return path


# Interpreter teardown with Qt, torch and dask threads alive has crashed with a
# segfault *after* every test passed (seen once on a clean clone), which would
# turn a green run red.  Once pytest has finished and reported, leave with its
# exit status directly instead of running interpreter teardown.
_EXIT: dict[str, int] = {}


def pytest_sessionfinish(session, exitstatus):
    _EXIT["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    if "status" in _EXIT and os.environ.get("BRAINFEATURES_HARD_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT["status"])
