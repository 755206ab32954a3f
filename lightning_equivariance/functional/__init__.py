"""Pure functions from the papers' equations (torch only: no Lightning, no TensorBoard)."""
from .correlation import correlation_equivariance, correlation_invariance, correlation_scores

__all__ = ["correlation_scores", "correlation_invariance", "correlation_equivariance"]
