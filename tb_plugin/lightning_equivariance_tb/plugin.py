"""The "Equivariance" TensorBoard tab: HTTP routes and static frontend.

TensorBoard finds this plugin through the ``tensorboard_plugins`` entry point of the
``tensorboard-plugin-equivariance`` distribution (``equivariance =
lightning_equivariance_tb.plugin:EquivariancePlugin``). It reads data only through
``context.data_provider`` (:mod:`lightning_equivariance_tb.data`), so it works with
both the Rust data server and the Python loader, and imports neither torch nor
Lightning: TensorBoard starts fast and shows logs on machines without them.

Routes, all under ``/data/plugin/equivariance``. Errors are JSON ``{"error": "..."}``
from ``tensorboard.errors``: 400 (bad or missing argument) or 404 (unknown run,
measure, group, layer, step or scalar tag, or data an event file holds in a form
that cannot be read). Matrices are base64 of little-endian float32 (``*_base64``
with ``*_shape``; NaN = missing, infinities as they are); other infinite numbers are
the strings ``"Infinity"``/``"-Infinity"``, a missing one ``null``.

``/runs``
    runs with equivariance data: model, baseline flag, run group, and per series
    (measure, group) the layer count, last step, direction and whether per-channel
    data and statistics exist; the measures and their groups; the known depth parts;
    the tags skipped because they cannot be read (e.g. a newer format).
``/series?run=&measure=&group=``
    one run: layers, parts, steps, epochs, global steps, the layer x step matrix
    (``values_base64``), the missing layers with their reasons, the part means
    (``part_names``, ``part_values_base64``), the statistics it has, and
    ``downsampled`` (TensorBoard kept fewer points than the steps suggest).
``/series_batch?run=&run=...&measure=&group=``
    ``{"series": [...]}``: the ``/series`` bodies of several runs from one read.
``/channels?run=&measure=&group=&layer=[&step=]``
    per-channel values of one layer: channel x step, or the channel vector at ``step``.
``/scalar_tags``
    scalar tags of the runs that have equivariance data.
``/spearman?measure=&group=&scalar=[&run=...]``
    Spearman rank correlation (scipy) across runs between each depth part's mean
    value at the run's last step and the last value of a scalar tag (Bruintjes et al.
    2023, Fig. 4); runs whose part mean is undefined (+inf with -inf) or whose scalar
    is NaN are left out of that part and named in ``excluded``.
``/groups?measure=&group=[&run=...][&pattern=][&x=step|epoch|global_step]``
    groups of the runs (all, or the repeated ``run=``: the tab's selection) by their
    recorded ``run_group`` or by the first capture group of ``pattern`` (a regular
    expression in RE2 syntax searched in the run name, in time linear in the name):
    per group its runs, layers, parts, x values and, per layer (``mean``/``low``/
    ``high``/``n`` matrices) and per part (``part_mean``...), the mean over its runs
    and the 95% Student-t interval over runs at each x
    (:mod:`lightning_equivariance_tb.run_groups`, scipy); the runs in no group. A
    pattern RE2 refuses is a 400 whose body also has ``"argument": "pattern"``; so are
    statistics of more than ``data.MAX_GROUP_CELLS`` cells (without ``argument``).
``/index.js``, ``/app.js``, ``/views.js``, ``/charts.js``, ``/heatmap.js``, ``/util.js``, ``/style.css``
    the frontend (``static/``): entry point, application state and controls, the views,
    plotly figures, canvas heatmap, helpers.
``/plotly.min.js``
    the plotly.js bundle of the *installed* ``plotly`` Python package, loaded by the
    frontend only for its plotly views (curves, profile, channels, Spearman).
"""

import gzip
import importlib.util
import os

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from lightning_equivariance_tb import data, metadata

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_FILES = {
    "/index.js": "text/javascript",
    "/app.js": "text/javascript",
    "/charts.js": "text/javascript",
    "/heatmap.js": "text/javascript",
    "/util.js": "text/javascript",
    "/views.js": "text/javascript",
    "/style.css": "text/css",
}
"""The frontend's files, served from ``static/`` by their names."""


def _json_route(handler):
    """Wrap ``handler(self, request) -> dict`` as a JSON werkzeug route.

    ``tensorboard.errors`` become ``{"error": message}`` with their HTTP code;
    ``http_util.Respond`` sends infinite floats as ``"Infinity"``/``"-Infinity"``.
    """

    @wrappers.Request.application
    def route(self, request):
        try:
            body, code = handler(self, request), 200
        except errors.PublicError as e:
            body, code = {"error": str(e)}, e.http_code
            if getattr(e, "argument", None):  # data.RefusedArgument: the parameter at fault
                body["argument"] = e.argument
        return http_util.Respond(request, body, "application/json", code=code)

    route.__name__ = handler.__name__
    route.__doc__ = handler.__doc__
    return route


def _require(request, name):
    value = request.args.get(name)
    if value is None or value == "":
        raise errors.InvalidArgumentError("missing query parameter %r" % name)
    return value


def _check_encoding(request):
    encoding = request.args.get("encoding", "base64")
    if encoding != "base64":
        raise errors.InvalidArgumentError(
            "encoding must be 'base64' (matrices are sent as base64 float32), got %r" % (encoding,)
        )


class EquivariancePlugin(base_plugin.TBPlugin):
    """Per-layer learned equivariance of every run, over training."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context):
        """Set up from a ``base_plugin.TBContext``; reads nothing yet."""
        hints = context.sampling_hints or {}
        # None: TensorBoard's default for unnamed plugins; 0: keep all.
        self._reader = data.Reader(context.data_provider, hints.get(self.plugin_name))
        self._plotly_gz = None

    # -- TensorBoard plugin API -------------------------------------------

    def get_plugin_apps(self):
        apps = {path: self._serve_static for path in STATIC_FILES}
        apps.update(
            {
                "/plotly.min.js": self._serve_plotly,
                "/runs": self.runs_route,
                "/series": self.series_route,
                "/series_batch": self.series_batch_route,
                "/channels": self.channels_route,
                "/scalar_tags": self.scalar_tags_route,
                "/spearman": self.spearman_route,
                "/groups": self.groups_route,
            }
        )
        return apps

    def is_active(self):
        # TensorBoard core activates the tab through list_plugins() when any tag
        # carries our plugin name; nothing to compute here.
        return False

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Equivariance")

    # -- static files -------------------------------------------------------

    @wrappers.Request.application
    def _serve_static(self, request):
        name = request.path[request.path.rindex("/") :]
        with open(os.path.join(_STATIC_DIR, name[1:]), "rb") as f:
            content = f.read()
        return http_util.Respond(request, content, STATIC_FILES[name])

    @wrappers.Request.application
    def _serve_plotly(self, request):
        if self._plotly_gz is None:
            path = plotly_bundle_path()
            if path is None:
                return http_util.Respond(
                    request,
                    {"error": "plotly.js not found: install the 'plotly' Python package "
                              "(it ships package_data/plotly.min.js)"},
                    "application/json",
                    code=404,
                )
            with open(path, "rb") as f:
                self._plotly_gz = gzip.compress(f.read(), compresslevel=6)
        return http_util.Respond(
            request, self._plotly_gz, "text/javascript", content_encoding="gzip", expires=3600
        )

    # -- JSON routes --------------------------------------------------------

    @staticmethod
    def _context(request):
        return plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)

    @_json_route
    def runs_route(self, request):
        """Runs with equivariance data and what each of them holds."""
        return self._reader.runs(*self._context(request))

    @_json_route
    def series_route(self, request):
        """Per-layer values of one run (see the module docstring)."""
        run = _require(request, "run")
        measure = _require(request, "measure")
        group = _require(request, "group")
        _check_encoding(request)
        return self._reader.series(*self._context(request), [run], measure, group)[0]

    @_json_route
    def series_batch_route(self, request):
        """``/series`` of several runs (repeated ``run=``) in one response, in the
        order asked; a run without this measure/group is a 404."""
        runs = request.args.getlist("run")
        if not runs:
            raise errors.InvalidArgumentError("missing query parameter 'run'")
        measure = _require(request, "measure")
        group = _require(request, "group")
        _check_encoding(request)
        return {"series": self._reader.series(*self._context(request), runs, measure, group, batch=True)}

    @_json_route
    def channels_route(self, request):
        """Per-channel values of one layer, over steps or at one step."""
        run = _require(request, "run")
        measure = _require(request, "measure")
        group = _require(request, "group")
        layer = _require(request, "layer")
        _check_encoding(request)
        step = request.args.get("step") or None
        if step is not None:
            try:
                step = int(step)
            except ValueError:
                raise errors.InvalidArgumentError("step must be an integer, got %r" % (step,)) from None
        return self._reader.channels(*self._context(request), run, measure, group, layer, step)

    @_json_route
    def scalar_tags_route(self, request):
        """Scalar tags (e.g. ``val/acc``) of runs with equivariance data."""
        return self._reader.scalar_tags(*self._context(request))

    @_json_route
    def spearman_route(self, request):
        """Across runs: each part's last-step mean vs a scalar's last value.

        Optional repeated ``run=`` restricts the runs (the tab's selection).
        """
        measure = _require(request, "measure")
        group = _require(request, "group")
        scalar = _require(request, "scalar")
        return self._reader.spearman(
            *self._context(request), measure, group, scalar, request.args.getlist("run")
        )

    @_json_route
    def groups_route(self, request):
        """Run groups: mean and Student-t interval over runs per layer and part."""
        measure = _require(request, "measure")
        group = _require(request, "group")
        _check_encoding(request)
        return self._reader.groups(
            *self._context(request), request.args.getlist("run"), measure, group,
            pattern=request.args.get("pattern") or None, x=request.args.get("x") or "step",
        )


def plotly_bundle_path():
    """Path of ``plotly.min.js`` inside the installed plotly package, or None.

    Found without importing plotly (which would slow TensorBoard's start).
    """
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = os.path.join(base, "package_data", "plotly.min.js")
        if os.path.isfile(path):
            return path
    return None
