"""TensorBoard tab "Equivariance": per-layer learned equivariance over training.

The distribution ``tensorboard-plugin-equivariance``; it needs tensorboard, numpy,
plotly, scipy and google-re2, never torch or Lightning.

* :mod:`lightning_equivariance_tb.metadata` - the event format (version 2, reads 1)
  and its constants (``PARTS``, ``MISSING_STATUSES``, ``STAT_FIELDS``).
* :mod:`lightning_equivariance_tb.summary` - the writer: ``Series``,
  ``write_series(writer, series, step)``, ``write_report(writer, report, step)``.
* :mod:`lightning_equivariance_tb.data` - reading runs through TensorBoard's data
  provider: validation, part means, Spearman (scipy), down-sampling.
* :mod:`lightning_equivariance_tb.plugin` - the TensorBoard plugin (routes, static
  frontend), registered through the ``tensorboard_plugins`` entry point.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("tensorboard-plugin-equivariance")
except _metadata.PackageNotFoundError:  # run from a source tree that is not installed
    __version__ = "0+unknown"
