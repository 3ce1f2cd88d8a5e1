"""Open volumes (TIFF, zarr, OME-Zarr, 2-D images) lazily and convert them to OME-Zarr."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "volume": "Volume VolumeError open_volume sample_contrast_limits SUPPORTED_DTYPES",
    "convert": "convert_to_ome_zarr n_levels_for",
    "base": "length_unit_um check_voxel_size to_grey",
    "ome": "open_ome_zarr parse_multiscale",
    "tiff": "open_tiff open_tiff_folder",
    "image2d": "open_image2d",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
