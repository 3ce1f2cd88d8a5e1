"""Dense sliding-window feature maps of a trained CNN into a resumable zarr store."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "options": "DenseOptions EDGES OUTPUTS",
    "plan": "Region TileDone plan_job",
    "run": "compute_feature_map measure_padding_deviation",
    "network": "load_model",
    "store": "FeatureStore StoreMismatchError",
    "grid": "FeatureGrid",
    "distributed": "compute_feature_map_distributed connect",
    "fcn": "DenseCNN PatchCNN choose_tile estimate_bytes make_evaluator padded_twin_geometry",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
