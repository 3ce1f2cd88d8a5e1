"""The beta-VAE stage: population IO, training, traversal and fields, quality."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "population": (
        "as_stack center_crop crop_offset check_population_size check_rois preprocess "
        "read_population roi_names_for PCABaseline PCA_KIND"
    ),
    "train": (
        "VAELatentModel train_vae fit_pca load_latent_model model_label MODEL_NAMES torch_threads"
    ),
    "explore": (
        "LatentModel as_latent_model traverse projective_field projective_rgb "
        "default_step ReceptiveFields receptive_fields gaussian_kl impact_covariance "
        "disentanglement_score factor_alignment active_units"
    ),
    "quality": (
        "steerable_filters cw_ssim pca_frechet_distance frechet_distance model_quality "
        "reconstruction_picture tile"
    ),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
