"""NMF of feature maps, ROI-aligned factor selection and cluster maps."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "select": (
        "FeatureNMF NMFResult fit_nmf check_features factor_maps finite_rows "
        "rgb_composite Selection select_factors"
    ),
    "clusters": (
        "ClusterResult LayerProfile cluster_map erode_mask gmm_bic_curve layer_profile "
        "match_profiles on_grid score_against smooth_within"
    ),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
