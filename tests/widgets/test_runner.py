import threading
import time

import pytest

from napari_brainfeatures._widgets._runner import TaskRunner
from napari_brainfeatures.progress import Progress


def _slow(n, record, threads=None):
    try:
        for i in range(n):
            time.sleep(0.02)
            yield Progress(i + 1, n, f"step {i + 1}", {"loss": 1.0 / (i + 1)})
        return "finished"
    finally:
        record.append("closed")
        if threads is not None:
            threads.append(threading.current_thread())


def test_progress_result_and_values(qtbot):
    runner = TaskRunner()
    seen, results, record = [], [], []
    runner.start(_slow(5, record), name="job", on_progress=seen.append, on_done=results.append)
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert results == ["finished"] and [r.step for r in seen] == [1, 2, 3, 4, 5]
    assert runner.progress.value == runner.progress.max == 5
    assert runner.status.value == "job: done"


def test_cancel_stops_and_closes_the_generator(qtbot):
    runner = TaskRunner()
    results, record, threads = [], [], []
    runner.start(_slow(10_000, record, threads), name="job", on_done=results.append)
    qtbot.waitUntil(lambda: runner.progress.value >= 2, timeout=5000)
    assert runner.cancel_button.enabled
    runner.cancel_button.clicked.emit()
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert results == [] and runner.status.value == "job: cancelled"
    assert record == ["closed"]  # closed by the worker before it let go, not by the GC
    assert threads and threads[0] is not threading.main_thread()


def test_second_start_is_refused_while_running(qtbot):
    runner = TaskRunner()
    record = []
    runner.start(_slow(10_000, record), name="a")
    other = []
    assert runner.start(_slow(3, other), name="b") is None
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)


# A RuntimeError too: superqt drops it (it takes it for a deleted Qt object): no `errored`,
# no `finished`, and the runner would stay busy for ever.
@pytest.mark.parametrize(
    "error", [ValueError("bad input: got 'x'"), RuntimeError("CUDA out of memory")]
)
def test_error_becomes_status_not_crash_nor_hang(qtbot, error):
    def bad():
        yield Progress(0, 1)
        raise error

    runner = TaskRunner()
    runner.start(bad(), name="job")
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert runner.last_error is error and runner.status.value == "job: failed"


def test_closing_the_viewer_stops_the_worker(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    runner = TaskRunner()
    viewer.window.add_dock_widget(runner, name="runner")
    record, threads = [], []
    worker = runner.start(_slow(10_000, record, threads), name="job")
    qtbot.waitUntil(lambda: runner.progress.value >= 2, timeout=5000)
    viewer.close()  # the window is deleted with its docks: the runner's worker must stop
    qtbot.waitUntil(lambda: record == ["closed"], timeout=5000)
    assert threads[0] is not threading.main_thread()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=5000)
    with pytest.raises(RuntimeError, match="shut down"):
        runner.start(_slow(3, []), name="again")


def test_shutdown_waits_for_the_worker_and_closes_its_generator(qtbot):
    runner = TaskRunner()
    record = []
    worker = runner.start(_slow(10_000, record), name="job")
    qtbot.waitUntil(lambda: runner.progress.value >= 1, timeout=5000)
    assert runner.shutdown(timeout=5)
    assert record == ["closed"] and not worker.is_running  # no event processing needed
    qtbot.waitUntil(lambda: not runner.running, timeout=5000)
    assert runner.status.value != "job: cancelled"  # a shut-down runner updates no widget


def test_status_label_grows_to_fit_a_long_message(qtbot):
    from napari_brainfeatures._widgets._common import status_label

    label = status_label("short")
    qtbot.addWidget(label.native)
    label.native.show()
    label.native.resize(200, label.native.minimumHeight())
    reserved = label.native.minimumHeight()
    label.value = "selected: " + ", ".join(f"F{i}→area {i} (93%)" for i in range(12))
    assert label.native.minimumHeight() > 2 * reserved  # many lines at 200 px, none clipped
    label.native.resize(2000, label.native.height())  # wider: fewer lines needed
    assert label.native.minimumHeight() < 2 * reserved
    label.value = "done"
    assert label.native.minimumHeight() == reserved
