"""Open volumes (TIFF, zarr, OME-Zarr) lazily and convert them to OME-Zarr.

Public names are re-exported here lazily (nothing heavy is imported until used).
"""

from napari_brainfeatures._util.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "volume": [
            "Volume",
            "VolumeError",
            "open_volume",
            "sample_contrast_limits",
            "SUPPORTED_DTYPES",
        ],
        "convert": [
            "convert_to_ome_zarr",
            "n_levels_for",
        ],
    },
)
