"""NMF of feature maps, ROI-aligned factor selection and cluster maps."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "options": "NMFOptions OptionError SOLVERS SelectOptions",
    "nmf": "FeatureNMF NMFResult check_features fit_nmf",
    "maps": "factor_maps finite_rows rgb_composite robust_max",
    "select": "Selection check_rois select_factors",
    "results": "Factors factorise is_factors open_factors open_map save_clusters save_factors",
    "clusters": "ClusterResult cluster_map erode_mask gmm_bic_curve on_grid smooth_within",
    "scores": "LayerProfile layer_profile match_profiles score_against",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
