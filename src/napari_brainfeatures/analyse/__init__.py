"""Probes, V-measure, noise robustness and Gram matrices of CNN features.

Public names are re-exported here lazily (nothing heavy is imported until used).
"""

from napari_brainfeatures._util.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "report": [
            "FeatureFn",
            "compare_extractors",
            "feature_extractor",
            "gmm_vmeasure",
            "gram_block_distance",
            "gram_matrix",
            "noise_robustness",
            "pca_scatter",
            "probe_scores",
            "report_figure",
            "training_input_stats",
        ],
    },
)
