"""Open volumes (TIFF, zarr, OME-Zarr) lazily and convert them to OME-Zarr."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "volume": "Volume VolumeError open_volume sample_contrast_limits SUPPORTED_DTYPES",
    "convert": "convert_to_ome_zarr n_levels_for",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
