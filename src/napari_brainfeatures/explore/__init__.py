"""Explore and correct: feature-space density, selections, readouts, profiles, live classifier."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "density": "Density FeaturePoints PCAProjection density factor_points pca_points",
    "selection": "bins_mask from_mask keep_as_class mask_bins polygon_bins rectangle_bins "
    "select_polygon select_rectangle to_mask",
    "embed": "UMAPProjection umap_points",
    "readout": "Readout",
    "sources": "Sources open_sources",
    "profiles": "FactorProfile factor_profile match_slices",
    "context": "block_of coarse_context context_at",
    "live": "LiveClassifier LiveResult LiveSession OneClassError load_live_model save_live_model",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
