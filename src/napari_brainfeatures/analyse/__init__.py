"""Probes, V-measure, noise robustness and Gram matrices of CNN features."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "report": (
        "FeatureFn compare_extractors feature_extractor gmm_vmeasure "
        "gram_block_distance gram_matrix noise_robustness pca_scatter probe_scores "
        "report_figure training_input_stats"
    ),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
