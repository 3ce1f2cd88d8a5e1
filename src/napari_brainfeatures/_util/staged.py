"""A model's best-so-far file, kept beside its target until training ends.

Training writes its best model whenever validation improves.  Written onto the
target, a killed run would leave a model of its first epochs where the user's
previous model was.  :class:`Staged` keeps it in a hidden sibling folder named
as a leftover of the target (:func:`~._util.leftovers.temp_path`, so the next
save of the target removes what a killed run left), and training replaces the
target only at its end.  Cancelled or failed, the best so far becomes the model
only where there was none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_brainfeatures._util.leftovers import clean_leftovers, temp_path
from napari_brainfeatures.models.checkpoint import model_path

__all__ = ["Staged"]


class Staged:
    """The best model so far of a run that will write ``target`` (None: nothing kept)."""

    def __init__(self, target: str | os.PathLike[str] | None) -> None:
        self.target = None if target is None else model_path(target)
        self.folder: Path | None = None

    def save(self, write: Callable[[Path], Any]) -> None:
        """Keep the best so far: ``write(path)`` writes it to the staged file."""
        if self.target is None:
            return
        if self.folder is None:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            clean_leftovers(self.target)  # what a killed earlier run left beside it
            self.folder = temp_path(self.target, "partial")
            self.folder.mkdir()
        write(self.folder / self.target.name)

    def stop(self) -> None:
        """Stopped early: the best so far becomes the model only where none was."""
        if self.target is None or self.folder is None:
            return
        best = self.folder / self.target.name
        if best.exists() and not self.target.exists():
            os.replace(best, self.target)
        self.drop()

    def drop(self) -> None:
        """Forget the staged file (the run wrote its target, or kept nothing)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
