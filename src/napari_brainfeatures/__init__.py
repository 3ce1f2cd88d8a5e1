"""napari-brainfeatures: exploratory neuroanatomy with deep features.

The package reads as the pipeline: ``io`` (open, convert) -> ``classes`` and
``workspace`` (annotate) -> ``train`` (patches, fit, evaluate) -> ``features`` (dense
maps) -> ``factors`` (NMF, selection, clusters) -> ``analyse`` (probes, Gram) ->
``latent`` (beta-VAE).  Each stage is napari-free; the dock widgets are in
:mod:`napari_brainfeatures._widgets`, the subcommands in ``_cli``, the napari
reader/writer/sample data in ``_napari``.  Importing this package never imports
napari, Qt or torch.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-brainfeatures")
except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

from napari_brainfeatures._util.aliases import install as _install_old_names  # noqa: E402

_install_old_names()
