"""Lazy re-exports for stage packages (PEP 562).

A stage package names its public objects and the submodule that defines each;
nothing is imported until a name is used, so ``import napari_brainfeatures.features.store``
does not pull in torch through ``features/__init__``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, table: dict[str, str]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for a package.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    table : dict of str to str
        Submodule name -> the public names it defines, separated by spaces.
    """
    where = {name: module for module, names in table.items() for name in names.split()}
    names = sorted(where)

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def __dir__() -> list[str]:
        return names

    return names, __getattr__, __dir__
