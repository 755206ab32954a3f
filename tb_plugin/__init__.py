"""TensorBoard tab "Equivariance" for lightning-equivariance.

* :mod:`tb_plugin.metadata` - the event format (tags, metadata JSON).
* :mod:`tb_plugin.summary` - the writer: ``write_report(writer, report, step)``.
* :mod:`tb_plugin.plugin` - the TensorBoard plugin (routes, static frontend),
  registered through the ``tensorboard_plugins`` entry point.

Nothing here imports torch or Lightning.
"""
