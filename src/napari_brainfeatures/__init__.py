"""napari-brainfeatures: exploratory neuroanatomy with deep features.

The package is a napari-free core (one module per pipeline stage) plus thin
dock widgets in :mod:`napari_brainfeatures._widgets`.  Importing this package
never imports napari or Qt.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-brainfeatures")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
