"""Pure functions from the papers' equations (torch only: no Lightning, no TensorBoard)."""
from . import transformational as _transformational
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
from .transformational import *  # noqa: F403 - Quiroga et al.'s measures: that module's own __all__, re-exported

__all__ = [
    "correlation_scores", "correlation_invariance", "correlation_equivariance",
    "lie_generator", "image_gradient", "velocity_field", "local_equivariance_error",
]
__all__ += [
    "orbit_average", "geed_channel_scores", "geed_latent_scores", "geed_softmax_scores",
    "geed_channel", "geed_latent", "geed_softmax",
]
__all__ += _transformational.__all__  # Quiroga et al.'s measures, as that module lists them
