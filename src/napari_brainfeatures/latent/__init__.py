"""The beta-VAE stage: population IO, training, traversal and fields, quality."""

from napari_brainfeatures._util.lazy import lazy_exports

# submodule -> the public names it defines (imported on first use)
_EXPORTS = {
    "population": (
        "as_stack center_crop crop_offset check_population_size check_rois preprocess "
        "preprocess_for read_population roi_names_for"
    ),
    "pca": "PCABaseline PCA_KIND",
    "train": "VAELatentModel TrainResult train_vae fit_pca torch_threads",
    "model": (
        "LatentModel as_latent_model MODEL_NAMES model_label FittedModel fit_latent_model "
        "load_latent_model"
    ),
    "codes": "PopulationCodes population_codes display_range active_units factor_alignment",
    "explore": (
        "traverse projective_field projective_fields projective_rgb default_step "
        "ReceptiveFields receptive_fields gaussian_kl impact_covariance disentanglement_score"
    ),
    "metrics": "steerable_filters cw_ssim pca_frechet_distance frechet_distance",
    "disentangle": "discretize mutual_information mutual_info_gap impact_scores",
    "repeats": (
        "REPEATS Spread parse_seeds seeded_path iter_repeats fit_latent_repeats summarise "
        "seeds_agreeing"
    ),
    "quality": "model_quality reconstruction_picture QualityReport quality_report tile",
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
