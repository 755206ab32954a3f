"""Pure functions from the papers' equations (torch only: no Lightning, no TensorBoard)."""
from .correlation import correlation_equivariance, correlation_invariance, correlation_scores
from .geed import (
    geed_channel,
    geed_channel_scores,
    geed_latent,
    geed_latent_scores,
    geed_softmax,
    geed_softmax_scores,
    orbit_average,
)
from .lie import image_gradient, lie_generator, local_equivariance_error, velocity_field
from .transformational import (
    anova_invariance,
    goodfellow_invariance,
    normalized_distance,
    normalized_variance,
    same_equivariance,
    sample_distance,
    sample_variance,
    st_columns,
    st_matrix,
    transformation_distance,
    transformation_variance,
    unit_norm_maps,
)

__all__ = [
    "correlation_scores", "correlation_invariance", "correlation_equivariance",
    "lie_generator", "image_gradient", "velocity_field", "local_equivariance_error",
]
__all__ += [
    "orbit_average", "geed_channel_scores", "geed_latent_scores", "geed_softmax_scores",
    "geed_channel", "geed_latent", "geed_softmax",
]
__all__ += [
    "st_matrix",
    "st_columns",
    "transformation_variance",
    "sample_variance",
    "normalized_variance",
    "transformation_distance",
    "sample_distance",
    "normalized_distance",
    "anova_invariance",
    "same_equivariance",
    "goodfellow_invariance",
    "unit_norm_maps",
]
