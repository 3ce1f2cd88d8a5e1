"""The brain-area CNN: sample patches from labels, fit, evaluate on held-out slices."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "patches": "PatchSet Splits sample_patches sample_splits split_slices",
    "fit": (
        "DEFAULTS VARIANTS TrainResult augment_batch border_mix init_weights "
        "intensity_range value_range random_rotation make_config train_cnn"
    ),
    "evaluate": (
        "Evaluation SlicePrediction evaluate iter_evaluate predict_proba predict_slice "
        "slice_accuracy trained_with_flips confusion_figure plot_confusion"
    ),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
