"""Run a core progress generator in a napari worker, with progress bar and Cancel.

Every long-running widget action goes through :class:`TaskRunner`: the core
generator runs in a worker thread; each yielded :class:`Progress` updates the
bar and status (and an optional live callback); the return value is handed to
a callback on the GUI thread; exceptions become napari error notifications.

A worker never outlives its widget: when the runner's widget is destroyed (its
dock or viewer closed), the worker is cancelled and waited for, and its
generator is closed in the worker thread (its ``finally`` blocks run there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt

from napari_brainfeatures.progress import Progress

_DIRECT = Qt.ConnectionType.DirectConnection  # run in the worker thread, as it emits

#: Seconds :meth:`TaskRunner.shutdown` waits for a worker by default (its next progress report).
CLOSE_TIMEOUT_S = 30.0


class _Raised(Exception):
    """Carries a ``RuntimeError`` out of the worker.

    superqt takes a ``RuntimeError`` from the generator for a deleted Qt object: it
    only warns and never emits ``errored`` nor ``finished``, which would leave the
    runner busy forever.  Wrapped, it fails the task like any other error.
    """

    def __init__(self, error: RuntimeError) -> None:
        super().__init__(str(error))
        self.error = error


class _Job:
    """One worker, the generator it runs, and thread-safe flags about both."""

    def __init__(self, gen: Generator[Progress, Any, Any]) -> None:
        self.gen = gen
        self.worker: GeneratorWorker | None = None
        self.began = threading.Event()  # the worker thread has picked it up
        self.ended = threading.Event()  # the worker thread has left it for good
        self.close_error: BaseException | None = None

    def close_gen(self) -> None:
        """Close the generator (after an abort: it is suspended at a ``yield``)."""
        try:
            self.gen.close()
        except Exception as err:  # a failing `finally` in the core: report, never raise here
            self.close_error = err

    def stop(self, timeout: float) -> bool:
        """Ask the worker to stop; wait up to ``timeout`` s. True if it has stopped."""
        if self.worker is None:
            return True
        self.worker.quit()
        if not self.began.is_set():
            # Queued, not picked up yet: when it starts, it sees the abort first and
            # never enters the generator.
            return True
        return self.ended.wait(timeout)


class TaskRunner(Container):
    """A progress bar, a status line and a Cancel button for one worker at a time.

    ``bar=False`` hides the bar (the status line says the step): for jobs that run
    many times a second, such as the live classifier's refits.  Qt repaints a
    progress bar synchronously when its value reaches its ends, and that repaint
    takes the whole window, the viewer's canvas included: 40-130 ms per change in
    software OpenGL, several times per job.
    """

    def __init__(self, *, bar: bool = True) -> None:
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.progress, self.status, self.cancel_button])
        self.progress.visible = bar
        self.cancel_button.changed.connect(self.cancel)
        self.worker: GeneratorWorker | None = None
        self.last_error: BaseException | None = None
        self._job: _Job | None = None
        self._closed = False
        self.native.destroyed.connect(lambda *_: self.shutdown())

    @property
    def running(self) -> bool:
        """True while a worker is running."""
        return self.worker is not None

    def start(
        self,
        gen: Generator[Progress, Any, Any],
        *,
        name: str,
        on_progress: Callable[[Progress], Any] | None = None,
        on_done: Callable[[Any], Any] | None = None,
        on_finish: Callable[[], Any] | None = None,
    ) -> GeneratorWorker | None:
        """Run ``gen`` in a worker thread; refuse (with a notification) if one is running."""
        if self._closed:
            gen.close()
            raise RuntimeError(f"{name}: this task runner is shut down (its widget is closed)")
        if self.worker is not None:
            show_info(f"{name}: another task is still running; cancel it or wait.")
            gen.close()
            return None
        job = _Job(gen)

        def _body() -> Generator[Progress, Any, Any]:
            try:
                return (yield from gen)
            except RuntimeError as err:
                raise _Raised(err) from err

        def _yielded(rec: Progress) -> None:
            if self._closed:
                return
            if rec.total:
                self.progress.max = max(int(rec.total), 1)
                self.progress.value = min(int(rec.step), int(rec.total))
            self.status.value = f"{name}: {rec.message}" if rec.message else name
            if on_progress is not None:
                on_progress(rec)

        def _returned(value: Any) -> None:
            if self._closed:
                return
            self.progress.value = self.progress.max
            self.status.value = f"{name}: done"
            if on_done is not None:
                try:
                    on_done(value)
                except Exception as err:  # a bad result must not kill the GUI
                    show_error(f"{name}: could not show the result: {err}")
                    self.last_error = err

        def _errored(err: BaseException) -> None:
            err = err.error if isinstance(err, _Raised) else err
            self.last_error = err
            if self._closed:
                return
            self.status.value = f"{name}: failed"
            show_error(f"{name} failed: {err}")

        def _aborted() -> None:
            if self._closed:
                return
            self.status.value = f"{name}: cancelled"
            show_info(f"{name}: cancelled")

        def _finished() -> None:
            if self._job is job:
                self.worker, self._job = None, None
            if job.close_error is not None:
                self.last_error = job.close_error
            if self._closed:
                return
            self.cancel_button.enabled = False
            if on_finish is not None:
                on_finish()

        # Connecting `errored` here stops superqt from re-raising in the GUI thread.
        worker: GeneratorWorker = create_worker(
            _body,
            _start_thread=False,
            _connect={
                "yielded": _yielded,
                "returned": _returned,
                "errored": _errored,
                "aborted": _aborted,
                "finished": _finished,
            },
        )
        # In the worker thread, in order: picked up, (aborted: close the suspended
        # generator there, so its `finally` runs before the thread lets go), done.
        worker.started.connect(job.began.set, _DIRECT)
        worker.aborted.connect(job.close_gen, _DIRECT)
        worker.finished.connect(job.ended.set, _DIRECT)
        job.worker = worker
        self.worker, self._job = worker, job
        self.last_error = None
        self.progress.max, self.progress.value = 1, 0
        self.status.value = f"{name}: starting…"
        self.cancel_button.enabled = True
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running worker to stop at its next progress report."""
        if self.worker is not None:
            self.status.value = "cancelling…"
            self.worker.quit()

    def shutdown(self, timeout: float = CLOSE_TIMEOUT_S) -> bool:
        """Cancel the running task for good and wait up to ``timeout`` s for its thread.

        Afterwards the runner starts nothing and updates no widget.  Called when
        the runner's widget is destroyed.  Returns False if the worker is still
        inside a step of the core generator after ``timeout`` seconds.
        """
        self._closed = True
        job = self._job
        return True if job is None else job.stop(timeout)
