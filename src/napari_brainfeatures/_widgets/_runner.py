"""Run a core progress generator in a napari worker, with progress bar and Cancel.

Every long-running widget action goes through :class:`TaskRunner`: the core
generator runs in a worker thread; each yielded :class:`Progress` updates the
bar and status (and an optional live callback); the return value is handed to
a callback on the GUI thread; exceptions become napari error notifications.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error, show_info

from napari_brainfeatures.progress import Progress


class TaskRunner(Container):
    """A progress bar, a status line and a Cancel button for one worker at a time."""

    def __init__(self) -> None:
        self.progress = ProgressBar(value=0, min=0, max=1, label="progress")
        self.status = Label(value="")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        super().__init__(widgets=[self.progress, self.status, self.cancel_button])
        self.cancel_button.changed.connect(self.cancel)
        self.worker: GeneratorWorker | None = None
        self.last_error: BaseException | None = None

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
        if self.worker is not None:
            show_info(f"{name}: another task is still running; cancel it or wait.")
            gen.close()
            return None

        def _body() -> Generator[Progress, Any, Any]:
            return (yield from gen)

        def _yielded(rec: Progress) -> None:
            if rec.total:
                self.progress.max = max(int(rec.total), 1)
                self.progress.value = min(int(rec.step), int(rec.total))
            self.status.value = f"{name}: {rec.message}" if rec.message else name
            if on_progress is not None:
                on_progress(rec)

        def _returned(value: Any) -> None:
            self.progress.value = self.progress.max
            self.status.value = f"{name}: done"
            if on_done is not None:
                try:
                    on_done(value)
                except Exception as err:  # a bad result must not kill the GUI
                    show_error(f"{name}: could not show the result: {err}")
                    self.last_error = err

        def _errored(err: BaseException) -> None:
            self.last_error = err
            self.status.value = f"{name}: failed"
            show_error(f"{name} failed: {err}")

        def _aborted() -> None:
            self.status.value = f"{name}: cancelled"
            show_info(f"{name}: cancelled")

        def _finished() -> None:
            self.worker = None
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
        self.worker = worker
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
