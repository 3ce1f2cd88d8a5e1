"""Probes, V-measure, noise robustness and Gram matrices of CNN features."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "extract": "FeatureFn feature_extractor training_input_stats",
    "probes": "gmm_vmeasure iter_noise_robustness noise_robustness pca_scatter probe_scores",
    "gram": "gram_block_distance gram_matrix",
    "report": "ModelAnalysis analyse_model compare_extractors report_figure report_json",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
