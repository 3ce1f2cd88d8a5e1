"""Dense sliding-window feature maps of a trained CNN into a resumable zarr store."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "run": (
        "EDGES Region TileDone compute_feature_map load_model measure_padding_deviation plan_job"
    ),
    "store": "FeatureStore StoreMismatchError",
    "distributed": "compute_feature_map_distributed connect",
    "fcn": (
        "OUTPUTS DenseCNN PatchCNN choose_tile estimate_bytes make_evaluator padded_twin_geometry"
    ),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
