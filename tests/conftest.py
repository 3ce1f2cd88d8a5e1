"""Shared fixtures: small volumes on disk in every supported format.

Teardown is part of the test: a thread, dask client or cluster, or child process a
test leaves running fails that test (``_nothing_left_running``), and the session
ends with nothing running that interpreter teardown could trip over
(``_clean_session_end``: Qt workers, deferred Qt deletions, napari viewers).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import sys
import threading
import time

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


#: Seconds a test's leftover thread or child process gets to finish on its own.
GRACE_S = 20.0
#: Seconds a Qt worker may still need after the test body (its last signals, a last step).
WORKER_GRACE_S = 10.0


def _dask_left() -> list[str]:
    """Open dask clients and clusters (none if distributed was never imported)."""
    if "distributed" not in sys.modules:
        return []
    from distributed.client import _global_clients
    from distributed.deploy.spec import SpecCluster

    clients = [c for c in list(_global_clients.values()) if c.status not in ("closed", "closing")]
    clusters = [c for c in list(SpecCluster._instances) if str(c.status.name) != "closed"]
    return [repr(x) for x in clients + clusters]


def _close_dask() -> None:
    from distributed.client import _global_clients
    from distributed.deploy.spec import SpecCluster

    for client in list(_global_clients.values()):
        client.close(timeout=10)
    for cluster in list(SpecCluster._instances):
        cluster.close(timeout=10)


def _dask_pool_threads() -> set[threading.Thread]:
    """Threads of dask's threaded-scheduler pools: kept for the process, joined at exit."""
    threaded = sys.modules.get("dask.threaded")
    if threaded is None:
        return set()
    pools = [threaded.default_pool, *(p for d in list(threaded.pools.values()) for p in d.values())]
    return {t for p in pools if p is not None for t in list(getattr(p, "_threads", ()))}


def _threads_left(before: set[threading.Thread]) -> list[threading.Thread]:
    """Non-daemon threads started since ``before`` that are still alive after GRACE_S."""
    new = [t for t in threading.enumerate() if t not in before and not t.daemon]
    new = [t for t in new if t not in _dask_pool_threads()]
    if new:
        gc.collect()  # an executor that is only garbage lets its threads go
    deadline = time.monotonic() + GRACE_S
    for t in new:
        t.join(max(deadline - time.monotonic(), 0.0))
    return [t for t in new if t.is_alive()]


def _children_left(before: set[int]) -> list[multiprocessing.process.BaseProcess]:
    new = [p for p in multiprocessing.active_children() if p.pid not in before]
    deadline = time.monotonic() + GRACE_S
    for p in new:
        p.join(max(deadline - time.monotonic(), 0.0))
    return [p for p in new if p.is_alive()]


def _qt_workers_left(timeout_s: float) -> list[str]:
    """Let napari/superqt workers finish (GUI events processed meanwhile); those still running.

    Those still running after ``timeout_s`` are asked to quit and waited for.
    """
    if "superqt.utils._qthreading" not in sys.modules:
        return []
    from qtpy.QtCore import QCoreApplication, QThreadPool
    from superqt.utils._qthreading import WorkerBase

    deadline = time.monotonic() + timeout_s
    while WorkerBase._worker_set and time.monotonic() < deadline:
        QCoreApplication.processEvents()
        time.sleep(0.01)
    left = [_describe_worker(w) for w in list(WorkerBase._worker_set)]
    if left:
        with contextlib.suppress(RuntimeError):  # raised if they do not quit in time
            WorkerBase.await_workers(msecs=int(GRACE_S * 1000))
        QCoreApplication.processEvents()
    elif not QThreadPool.globalInstance().waitForDone(int(timeout_s * 1000)):
        left = ["a QThreadPool runnable"]
    return left


def _describe_worker(worker) -> str:  # type: ignore[no-untyped-def]
    """The core generator a worker runs (``TaskRunner`` wraps it in ``_body``)."""
    gen = getattr(worker, "_gen", None)
    while getattr(gen, "gi_yieldfrom", None) is not None:
        gen = gen.gi_yieldfrom
    code = getattr(gen, "gi_code", None)
    return f"worker running {code.co_qualname}" if code is not None else repr(worker)


@pytest.fixture(autouse=True)
def _nothing_left_running():
    """Fail a test that leaves a thread, a dask client/cluster or a child process running."""
    threads = set(threading.enumerate())
    children = {p.pid for p in multiprocessing.active_children()}
    dask_before = set(_dask_left())
    yield
    problems = []
    dask = [d for d in _dask_left() if d not in dask_before]
    if dask:
        _close_dask()
        problems.append(f"dask clients/clusters left open (closed now): {dask}")
    left = _threads_left(threads)
    if left:
        problems.append(f"threads still running {GRACE_S:g} s after the test: {left}")
    procs = _children_left(children)
    if procs:
        for p in procs:
            p.terminate()
        problems.append(f"child processes still running (terminated now): {procs}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A Qt test ends with its workers finished, before fixtures close its viewer.

    A test returning while a ``TaskRunner`` (or any napari/superqt) worker runs leaves
    a thread running Python in Qt's thread pool, touching widgets that the viewer's
    teardown deletes.  Leftover workers get a short grace period (GUI events processed);
    one still running then is cancelled and fails the test.
    """
    qt = "qtbot" in getattr(item, "fixturenames", ())
    left: list[str] = []
    try:
        result = yield
    finally:  # a failed test's workers are stopped too, without hiding its error
        if qt:
            left = _qt_workers_left(WORKER_GRACE_S)
    if left:
        pytest.fail(
            f"workers still running {WORKER_GRACE_S:g} s after the test (cancelled "
            f"now): {left}; wait for them: qtbot.waitUntil(lambda: not w.runner.running)",
            pytrace=False,
        )
    return result


def _session_leftovers() -> list[str]:
    """Stop and report what would still run during interpreter teardown."""
    problems = []
    workers = _qt_workers_left(GRACE_S)
    if workers:
        problems.append(f"Qt workers still running (cancelled now): {workers}")
    if "napari" in sys.modules and "qtpy" in sys.modules:
        # Viewers outside `make_napari_viewer`, and Qt objects whose deletion is still
        # queued: gone now, in order, not in the interpreter's teardown.
        from napari import Viewer
        from qtpy.QtCore import QCoreApplication, QEvent

        Viewer.close_all()
        gc.collect()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        QCoreApplication.processEvents()
    dask = _dask_left()
    if dask:
        _close_dask()
        problems.append(f"dask clients/clusters open (closed now): {dask}")
    main, pools = threading.main_thread(), _dask_pool_threads()
    threads = [t for t in threading.enumerate() if t is not main and not t.daemon]
    threads = [t for t in threads if t not in pools]
    if threads:
        problems.append(f"non-daemon threads alive: {threads}")
    return problems


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """End the session with nothing running; anything found makes the run fail.

    Runs after every fixture's teardown.  Qt worker threads still running Python
    while the interpreter finalises, open dask clusters, and Qt objects deleted in
    arbitrary order during teardown are what crash a run after every test passed.
    """
    problems = _session_leftovers()
    if not problems:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "left running at the end of the session", red=True)
        for p in problems:
            reporter.write_line(p)
    else:
        print("left running at the end of the session:", *problems, sep="\n", file=sys.stderr)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
