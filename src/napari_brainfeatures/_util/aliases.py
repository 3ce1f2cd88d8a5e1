"""Old module paths that still import, with a DeprecationWarning, for one release.

The stages became packages (``dense`` -> ``features``, ``training`` -> ``train``, ...).
``import napari_brainfeatures.dense`` keeps working: a meta-path finder hands out the
module at its new home (the very same module object, so monkeypatching either name
patches both).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

PACKAGE = "napari_brainfeatures"

# old module (under the package) -> new module
OLD_NAMES: dict[str, str] = {
    "_progress": "progress",
    "_files": "_util.files",
    "_overwrite": "_util.overwrite",
    "_reader": "_napari.reader",
    "_writer": "_napari.writer",
    "_sample_data": "_napari.sample_data",
    "convert": "io",
    "patches": "train",
    "training": "train",
    "evaluation": "train",
    "dense": "features",
    "_dense_plan": "features.plan",
    "_dense_tile": "features.tile",
    "dense_fcn": "features.fcn",
    "dense_store": "features.store",
    "dense_distributed": "features.distributed",
    "_nmf": "factors.nmf",
    "clustering": "factors",
    "analysis": "analyse",
    "vae_training": "latent",
    "quality": "latent",
    "population": "latent",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):  # noqa: D102
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:  # noqa: D102
        # The import system stamped the alias spec on the shared module: put its own back.
        module.__spec__ = self._spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        prefix = PACKAGE + "."
        if not fullname.startswith(prefix) or fullname[len(prefix) :] not in OLD_NAMES:
            return None
        new = f"{PACKAGE}.{OLD_NAMES[fullname[len(prefix) :]]}"
        warnings.warn(
            f"{fullname} moved to {new}; the old name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Register the finder once (idempotent)."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
