"""The brain-area CNN: sample patches from labels, fit, evaluate on held-out slices."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "patches": "PatchSet sample_patches",
    "splits": (
        "SliceChoice Splits choose_slices iter_sample_splits painted_classes painted_slices "
        "sample_splits split_slices"
    ),
    "regions": "SplitMap default_split spatial_split",
    "recorded": "read_split_mask recorded_slices recorded_split model_warnings near_chance "
    "chance_of",
    "plan": "fit_and_test held_out_patches plan_splits",
    "windows": "MIN_PAINTED inside_class paint_report",
    "augment": "augment_batch border_mix intensity_range random_rotation value_range",
    "recipe": (
        "DEFAULTS VARIANTS Recipe check_sets init_weights make_config model_meta "
        "overlapping_patches training_history training_record"
    ),
    "fit": "TrainResult train_cnn",
    "evaluation": (
        "Evaluation evaluate iter_evaluate trained_with_flips confusion_figure plot_confusion"
    ),
    "predict": "SlicePrediction iter_predict_proba predict_proba predict_slice slice_accuracy",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
