"""The "Equivariance" TensorBoard tab: HTTP routes and static frontend.

TensorBoard finds this plugin through the ``tensorboard_plugins`` entry point
(``equivariance = tb_plugin.plugin:EquivariancePlugin``). It reads data only
through ``context.data_provider`` (so it works with both the Rust data
server and the Python loader) and imports neither torch nor Lightning, so
TensorBoard starts fast and shows logs on machines without them.

Routes, all under ``/data/plugin/equivariance``; errors are JSON
``{"error": "..."}`` with status 400 (bad or missing argument) or 404
(unknown run, measure, group, layer, step or scalar tag):

``/runs``
    runs with equivariance data: model, baseline flag, and per series
    (measure, group) the layer count, last step and whether per-channel
    data exists; plus the measures and their groups, and the tags skipped
    because their metadata could not be read (e.g. a newer format).
``/series?run=&measure=&group=``
    layers, parts, steps and the ``values`` matrix (layer x step) of one
    run; ``downsampled`` says whether TensorBoard kept fewer points than
    the steps suggest.
``/series_batch?run=&run=...&measure=&group=``
    ``{"series": [...]}``: the ``/series`` bodies of several runs from one
    read (what the frontend uses).
``/channels?run=&measure=&group=&layer=[&step=]``
    per-channel values of one layer: ``values`` is channel x step, or the
    channel vector at ``step``.
``encoding=base64`` (on /series, /series_batch, /channels)
    the matrix as ``values_base64`` (little-endian float32, row-major) and
    ``values_shape`` instead of the JSON ``values``: far cheaper for big
    models.

Infinite values (MEASURES.md §4: ``nv``/``nd`` are ``x/0 = +inf``) are
data, not errors. JSON has no infinity, so every JSON number of a route that
is infinite is sent as the *string* ``"Infinity"`` or ``"-Infinity"`` (the
proto3 JSON mapping's spelling; ``JSON.parse`` leaves them strings, Python's
``float()`` reads them) and a missing value (NaN) as ``null``. The base64
encoding carries IEEE float32 ``+inf``/``-inf`` as they are, NaN = missing.
``/scalar_tags``
    scalar tags of the runs that have equivariance data.
``/spearman?measure=&group=&scalar=[&run=...]``
    Spearman rank correlation across runs between each depth part's mean
    value at the run's last step and the last value of a scalar tag
    (Bruintjes et al. 2023, Fig. 4). A part mean is the plain mean of its
    layers, so one ``+inf`` layer makes it ``+inf`` (``-inf`` likewise); a
    part holding both ``+inf`` and ``-inf`` has no mean and that run is left
    out of that part's correlation (``excluded`` says which and why), as is
    a run whose scalar is NaN. Ranks take infinities as they order: ``+inf``
    above every number (ties share their average rank).
``/index.js``, ``/style.css``
    the frontend (``tb_plugin/static``).
``/plotly.min.js``
    the plotly.js bundle of the *installed* ``plotly`` Python package. The
    frontend draws its default view (heatmaps) on a canvas of its own and
    loads this only for the plotly views (curves, profile, channels,
    Spearman), or when the browser is idle after the first paint.
"""

import base64
import gzip
import importlib.util
import json
import logging
import math
import os
import re
import uuid

import numpy as np

from werkzeug import wrappers

from tensorboard import errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin

from tb_plugin import metadata
from tb_plugin import spearman

logger = logging.getLogger(__name__)

_STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
_STATIC_FILES = {
    "/index.js": ("index.js", "text/javascript"),
    "/style.css": ("style.css", "text/css"),
}

_READ_ALL = 10**9
"""``downsample`` passed to the data provider: return every stored point."""

TB_DEFAULT_SAMPLES = (10, 100)
"""Points per tag TensorBoard keeps for a plugin not named in
``--samples_per_plugin``: 10 with the Python loader (``--load_fast=false``),
100 with the Rust data server (the default when installed)."""

SAMPLES_FLAG = "--samples_per_plugin=%s=0" % metadata.PLUGIN_NAME
"""The flag that makes TensorBoard keep every epoch (0 = keep all)."""

_BASELINE_NAME = re.compile(r"baseline|steerable", re.IGNORECASE)


class _RouteError(Exception):
    """An error to report to the client as JSON ``{"error": message}``."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def _json_route(handler):
    """Wrap ``handler(self, request) -> dict`` as a JSON werkzeug route."""

    @wrappers.Request.application
    def route(self, request):
        try:
            body = handler(self, request)
            code = 200
        except _RouteError as e:
            body, code = {"error": e.message}, e.code
        except errors.PublicError as e:
            body, code = {"error": str(e)}, e.http_code
        text = _dumps(body)
        if code == 200 and request.args.get("encoding") == "base64":
            # Base64 of float32 data barely compresses: gzip would only cost
            # time (0.5 s for 10 runs x 200 layers x 300 epochs).
            return wrappers.Response(
                text.encode("ascii"),
                status=code,
                content_type="application/json",
                headers=[
                    ("X-Content-Type-Options", "nosniff"),
                    ("Cache-Control", "no-cache, must-revalidate"),
                    ("Expires", "0"),
                ],
            )
        return http_util.Respond(request, text, "application/json", code=code)

    route.__name__ = handler.__name__
    route.__doc__ = handler.__doc__
    return route


INFINITY_JSON = {math.inf: "Infinity", -math.inf: "-Infinity"}
"""How the JSON routes spell infinite numbers (JSON has no infinity)."""


def _json_number(value):
    """A float for JSON: itself, ``"Infinity"``/``"-Infinity"``, or ``None``
    for NaN (missing)."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return None
    return INFINITY_JSON[value]


def _dumps(body):
    """JSON text of ``body``; ``_RawJSON`` values are spliced in verbatim,
    infinite floats become ``"Infinity"``/``"-Infinity"`` and NaN ``null``
    (JSON has neither)."""
    raw = {}
    token = uuid.uuid4().hex

    def clean(value):
        if isinstance(value, _RawJSON):
            key = "__raw_%s_%d__" % (token, len(raw))
            raw['"%s"' % key] = str(value)
            return key
        if isinstance(value, float):
            return _json_number(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        return value

    text = json.dumps(clean(body), separators=(",", ":"))
    for key, fragment in raw.items():
        text = text.replace(key, fragment, 1)
    return text


class _RawJSON(str):
    """A pre-serialised JSON fragment (large numeric matrices)."""


def _matrix_json(matrix):
    """Serialise a 2-D float array compactly, to 7 significant digits.

    float32 data holds about 7 decimal digits, so nothing visible is lost;
    NaN becomes ``null``, ``+inf``/``-inf`` the strings ``"Infinity"``/
    ``"-Infinity"``. Rounding to ``n / 10**k`` in numpy makes the
    C JSON encoder print short decimals instead of the 17-digit float64
    expansion of each float32 value - several times faster and smaller.
    """
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError("expected a 2-D matrix, got shape %r" % (a.shape,))
    with np.errstate(all="ignore"):
        finite = np.isfinite(a)
        nonzero = finite & (a != 0)
        magnitude = np.floor(np.log10(np.where(nonzero, np.abs(a), 1.0)))
        decimals = np.clip(6 - magnitude, -300, 300)
        scale = 10.0 ** np.abs(decimals)
        up = decimals >= 0
        rounded = np.where(
            up, np.round(a * scale) / scale, np.round(a / scale) * scale
        )
        rounded = np.where(finite & np.isfinite(rounded), rounded, a)
    rows = rounded.tolist()
    if not finite.all():
        for i in np.flatnonzero(~finite.all(axis=1)):
            rows[i] = [v if math.isfinite(v) else _json_number(v) for v in rows[i]]
    return _RawJSON(json.dumps(rows, separators=(",", ":")))


def _matrix_body(body, matrix, encoding):
    """Put ``matrix`` into ``body["values"]`` as JSON, or base64 float32.

    ``encoding="base64"`` (what the frontend asks for) sends
    ``values_base64``: the row-major little-endian float32 bytes, NaN for
    missing, ``+inf``/``-inf`` as they are, with ``values_shape``; ~10x
    cheaper to produce and parse than a JSON matrix of the same numbers.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if encoding == "base64":
        data = np.ascontiguousarray(matrix, dtype="<f4").tobytes()
        body["values_base64"] = base64.b64encode(data).decode("ascii")
        body["values_shape"] = list(matrix.shape)
    else:
        body["values"] = _matrix_json(matrix)
    return body


def _encoding(request):
    encoding = request.args.get("encoding", "json")
    if encoding not in ("json", "base64"):
        raise _RouteError(
            400, "encoding must be 'json' or 'base64', got %r" % (encoding,)
        )
    return encoding


def _require(request, name):
    value = request.args.get(name)
    if value is None or value == "":
        raise _RouteError(400, "missing query parameter %r" % name)
    return value


def _is_downsampled(steps, sample_limit):
    """Whether TensorBoard dropped points of a series with these steps.

    TensorBoard keeps a random sample (always with the last point) of at
    most ``sample_limit`` points per tag (``None``: its default; 0: keep
    all). A series that is regularly spaced when complete (every epoch, or
    every k-th) shows a gap when sampled: fewer points than
    ``(last - first) / stride + 1``. A gapless series is flagged too when it
    does not start at step 0 and holds exactly as many points as the limit
    (its first points were dropped).
    """
    if sample_limit == 0 or len(steps) < 2:
        return False
    stride = 0
    for a, b in zip(steps, steps[1:]):
        stride = math.gcd(stride, b - a)
    if stride <= 0:
        return False
    if len(steps) < (steps[-1] - steps[0]) // stride + 1:
        return True
    limits = TB_DEFAULT_SAMPLES if sample_limit is None else (sample_limit,)
    return steps[0] > 0 and len(steps) in limits


class EquivariancePlugin(base_plugin.TBPlugin):
    """Per-layer learned equivariance of every run, over training."""

    plugin_name = metadata.PLUGIN_NAME

    def __init__(self, context):
        """Set up from a ``base_plugin.TBContext``; reads nothing yet."""
        self._data_provider = context.data_provider
        hints = context.sampling_hints or {}
        # None: TensorBoard's default for unnamed plugins; 0: keep all.
        self._sample_limit = hints.get(self.plugin_name)
        self._plotly_gz = None
        self._skipped = {}  # (run, tag) -> why its metadata was unreadable

    # -- TensorBoard plugin API -------------------------------------------

    def get_plugin_apps(self):
        return {
            "/index.js": self._serve_static,
            "/style.css": self._serve_static,
            "/plotly.min.js": self._serve_plotly,
            "/runs": self.runs_route,
            "/series": self.series_route,
            "/series_batch": self.series_batch_route,
            "/channels": self.channels_route,
            "/scalar_tags": self.scalar_tags_route,
            "/spearman": self.spearman_route,
        }

    def is_active(self):
        # TensorBoard core activates the tab through list_plugins() when any
        # tag carries our plugin name; nothing to compute here.
        return False

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name="Equivariance"
        )

    # -- static files -------------------------------------------------------

    @wrappers.Request.application
    def _serve_static(self, request):
        name, mimetype = _STATIC_FILES[request.path[request.path.rindex("/") :]]
        with open(os.path.join(_STATIC_DIR, name), "rb") as f:
            content = f.read()
        return http_util.Respond(request, content, mimetype)

    @wrappers.Request.application
    def _serve_plotly(self, request):
        if self._plotly_gz is None:
            path = plotly_bundle_path()
            if path is None:
                return http_util.Respond(
                    request,
                    _dumps(
                        {
                            "error": "plotly.js not found: install the "
                            "'plotly' Python package (it ships "
                            "package_data/plotly.min.js)"
                        }
                    ),
                    "application/json",
                    code=404,
                )
            with open(path, "rb") as f:
                self._plotly_gz = gzip.compress(f.read(), compresslevel=6)
        return http_util.Respond(
            request,
            self._plotly_gz,
            "text/javascript",
            content_encoding="gzip",
            expires=3600,
        )

    # -- data access --------------------------------------------------------

    def _context(self, request):
        return (
            plugin_util.context(request.environ),
            plugin_util.experiment_id(request.environ),
        )

    def _index(self, ctx, experiment, runs=None):
        """``{run: {(kind, measure, group): (tag, meta, time_series)}}``."""
        mapping = self._data_provider.list_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=self.plugin_name,
            run_tag_filter=provider.RunTagFilter(runs=runs) if runs else None,
        )
        index = {}
        for run, tags in mapping.items():
            entries = {}
            for tag, ts in tags.items():
                try:
                    md = metadata.parse_plugin_metadata(ts.plugin_content)
                except ValueError as e:
                    if (run, tag) not in self._skipped:
                        logger.warning("skipping run %r tag %r: %s", run, tag, e)
                    self._skipped[(run, tag)] = str(e)
                    continue
                entries[(md["kind"], md["measure"], md["group"])] = (tag, md, ts)
            if entries:
                index[run] = entries
        return index

    def _lookup(self, ctx, experiment, run, measure, group, kind):
        """``(tag, meta, time_series, run_entries)`` of one series, or 404."""
        index = self._index(ctx, experiment, runs=[run])
        if run not in index:
            raise _RouteError(
                404, "run %r has no equivariance data" % (run,)
            )
        key = (kind, measure, group)
        if key not in index[run]:
            available = sorted(
                "%s/%s" % (m, g)
                for (k, m, g) in index[run]
                if k == metadata.KIND_LAYERS
            )
            what = "per-channel data" if kind == metadata.KIND_CHANNELS else "data"
            raise _RouteError(
                404,
                "run %r has no %s for measure %r, group %r (it has: %s)"
                % (run, what, measure, group, ", ".join(available)),
            )
        return index[run][key] + (index[run],)

    def _read(self, ctx, experiment, runs, tag, downsample=_READ_ALL):
        return self._data_provider.read_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=self.plugin_name,
            downsample=downsample,
            run_tag_filter=provider.RunTagFilter(runs=runs, tags=[tag]),
        )

    @staticmethod
    def _is_baseline(run, md):
        return bool(md.get("baseline")) or bool(_BASELINE_NAME.search(run))

    # -- JSON routes --------------------------------------------------------

    @_json_route
    def runs_route(self, request):
        """Runs with equivariance data and what each of them holds."""
        ctx, experiment = self._context(request)
        index = self._index(ctx, experiment)
        runs = []
        measures = {}
        for run in sorted(index):
            entries = index[run]
            layer_series = sorted(
                (k for k in entries if k[0] == metadata.KIND_LAYERS),
                key=lambda k: (k[1], k[2]),
            )
            if not layer_series:
                continue
            first_md = entries[layer_series[0]][1]
            series = []
            for key in layer_series:
                _, md, ts = entries[key]
                _, measure, group = key
                measures.setdefault(measure, set()).add(group)
                series.append(
                    {
                        "measure": measure,
                        "group": group,
                        "layers": len(md["layers"]),
                        "last_step": ts.max_step,
                        "wall_time": ts.max_wall_time,
                        "higher_is_better": bool(md["higher_is_better"]),
                        "has_channels": (metadata.KIND_CHANNELS, measure, group)
                        in entries,
                    }
                )
            runs.append(
                {
                    "run": run,
                    "model": first_md["model"],
                    "baseline": self._is_baseline(run, first_md),
                    "baseline_flag": bool(first_md["baseline"]),
                    "layers": max(len(entries[k][1]["layers"]) for k in layer_series),
                    "last_step": max(entries[k][2].max_step for k in layer_series),
                    "series": series,
                }
            )
        return {
            "runs": runs,
            "measures": {m: sorted(g) for m, g in sorted(measures.items())},
            "sample_limit": self._sample_limit,
            "samples_flag": SAMPLES_FLAG,
            "skipped": [
                {"run": run, "tag": tag, "reason": reason}
                for (run, tag), reason in sorted(self._skipped.items())
            ],
        }

    @_json_route
    def series_route(self, request):
        """Per-layer values of one run: ``values[layer][point]``.

        With ``encoding=base64`` the matrix comes as ``values_base64`` and
        ``values_shape`` instead (see ``_matrix_body``).
        """
        run = _require(request, "run")
        measure = _require(request, "measure")
        group = _require(request, "group")
        encoding = _encoding(request)
        ctx, experiment = self._context(request)
        tag, md, _, entries = self._lookup(
            ctx, experiment, run, measure, group, metadata.KIND_LAYERS
        )
        data = self._read(ctx, experiment, [run], tag).get(run, {}).get(tag, [])
        return self._series_body(run, measure, group, md, entries, data, encoding)

    @_json_route
    def series_batch_route(self, request):
        """``/series`` of several runs (repeated ``run=``) in one response.

        One read from the data provider instead of one per run: what the
        frontend uses. Returns ``{"series": [body per run, in the order
        asked]}``; a run without this measure/group is a 404.
        """
        runs = request.args.getlist("run")
        if not runs:
            raise _RouteError(400, "missing query parameter 'run'")
        measure = _require(request, "measure")
        group = _require(request, "group")
        encoding = _encoding(request)
        ctx, experiment = self._context(request)
        key = (metadata.KIND_LAYERS, measure, group)
        index = self._index(ctx, experiment, runs=runs)
        missing = [run for run in runs if key not in index.get(run, {})]
        if missing:
            raise _RouteError(
                404,
                "no data for measure %r, group %r in run(s) %s"
                % (measure, group, ", ".join(repr(r) for r in missing)),
            )
        tag = metadata.layers_tag(measure, group)
        data = self._read(ctx, experiment, runs, tag)
        return {
            "series": [
                self._series_body(
                    run,
                    measure,
                    group,
                    index[run][key][1],
                    index[run],
                    data.get(run, {}).get(tag, []),
                    encoding,
                )
                for run in runs
            ]
        }

    def _series_body(self, run, measure, group, md, entries, data, encoding):
        n_layers = len(md["layers"])
        steps, wall_times, columns, skipped = [], [], [], 0
        for datum in data:
            values = datum.numpy.reshape(-1)
            if values.shape != (n_layers,):
                skipped += 1  # not written by tb_plugin.summary
                continue
            steps.append(int(datum.step))
            wall_times.append(float(datum.wall_time))
            columns.append(values)
        rows = np.array(columns, dtype=np.float64).reshape(len(columns), n_layers).T
        body = {
            "run": run,
            "measure": measure,
            "group": group,
            "model": md["model"],
            "baseline": self._is_baseline(run, md),
            "higher_is_better": bool(md["higher_is_better"]),
            "layers": md["layers"],
            "parts": md["parts"],
            "steps": steps,
            "wall_times": wall_times,
            "downsampled": _is_downsampled(steps, self._sample_limit),
            "skipped_points": skipped,
            "has_channels": (metadata.KIND_CHANNELS, measure, group) in entries,
        }
        return _matrix_body(body, rows, encoding)

    @_json_route
    def channels_route(self, request):
        """Per-channel values of one layer, over steps or at one step."""
        run = _require(request, "run")
        measure = _require(request, "measure")
        group = _require(request, "group")
        layer = _require(request, "layer")
        encoding = _encoding(request)
        step = request.args.get("step")
        if step is not None and step != "":
            try:
                step = int(step)
            except ValueError:
                raise _RouteError(
                    400, "step must be an integer, got %r" % (step,)
                ) from None
        else:
            step = None
        ctx, experiment = self._context(request)
        tag, md, _, _ = self._lookup(
            ctx, experiment, run, measure, group, metadata.KIND_CHANNELS
        )
        if layer not in md["layers"]:
            raise _RouteError(
                404,
                "run %r has no layer %r for measure %r, group %r"
                % (run, layer, measure, group),
            )
        index = md["layers"].index(layer)
        count = int(md["channels"][index])
        data = self._read(ctx, experiment, [run], tag).get(run, {}).get(tag, [])
        steps, columns = [], []
        for datum in data:
            matrix = datum.numpy
            if (
                matrix.ndim != 2
                or matrix.shape[0] != len(md["layers"])
                or matrix.shape[1] < count
            ):
                continue  # not written by tb_plugin.summary
            steps.append(int(datum.step))
            columns.append(matrix[index, :count])
        body = {
            "run": run,
            "measure": measure,
            "group": group,
            "layer": layer,
            "layer_index": index,
            "part": md["parts"][index],
            "channels": count,
            "higher_is_better": bool(md["higher_is_better"]),
            "downsampled": _is_downsampled(steps, self._sample_limit),
        }
        if step is None:
            body["steps"] = steps
            rows = np.array(columns, dtype=np.float64).reshape(len(columns), count).T
            return _matrix_body(body, rows, encoding)
        if step not in steps:
            raise _RouteError(
                404,
                "run %r has no per-channel data at step %d for measure %r, "
                "group %r" % (run, step, measure, group),
            )
        body["step"] = step
        body["values"] = columns[steps.index(step)].astype(float).tolist()
        return body

    def _equivariance_runs(self, ctx, experiment):
        return sorted(self._index(ctx, experiment))

    @_json_route
    def scalar_tags_route(self, request):
        """Scalar tags (e.g. ``val/acc``) of runs with equivariance data."""
        ctx, experiment = self._context(request)
        runs = self._equivariance_runs(ctx, experiment)
        counts = {}
        if runs:
            mapping = self._data_provider.list_scalars(
                ctx,
                experiment_id=experiment,
                plugin_name="scalars",
                run_tag_filter=provider.RunTagFilter(runs=runs),
            )
            for tags in mapping.values():
                for tag in tags:
                    counts[tag] = counts.get(tag, 0) + 1
        return {
            "tags": [{"tag": t, "runs": counts[t]} for t in sorted(counts)],
            "runs": len(runs),
        }

    @_json_route
    def spearman_route(self, request):
        """Across runs: each part's last-step mean vs a scalar's last value.

        Optional repeated ``run=`` restricts the runs (the UI's selection).
        """
        measure = _require(request, "measure")
        group = _require(request, "group")
        scalar = _require(request, "scalar")
        ctx, experiment = self._context(request)
        tag = metadata.layers_tag(measure, group)
        index = self._index(ctx, experiment)
        wanted = set(request.args.getlist("run"))
        runs = sorted(
            run
            for run, entries in index.items()
            if (metadata.KIND_LAYERS, measure, group) in entries
            and (not wanted or run in wanted)
        )
        if not runs:
            raise _RouteError(
                404,
                "no run%s has data for measure %r, group %r"
                % (" of those selected" if wanted else "", measure, group),
            )
        scalars = self._data_provider.read_scalars(
            ctx,
            experiment_id=experiment,
            plugin_name="scalars",
            downsample=1,  # the data providers always keep the last point
            run_tag_filter=provider.RunTagFilter(runs=runs, tags=[scalar]),
        )
        if not any(scalar in tags for tags in scalars.values()):
            raise _RouteError(
                404,
                "no run with data for measure %r, group %r has the scalar "
                "tag %r" % (measure, group, scalar),
            )
        tensors = self._read(ctx, experiment, runs, tag, downsample=1)
        points = []
        for run in runs:
            scalar_data = scalars.get(run, {}).get(scalar)
            tensor_data = tensors.get(run, {}).get(tag)
            if not scalar_data or not tensor_data:
                continue
            md = index[run][(metadata.KIND_LAYERS, measure, group)][1]
            last = tensor_data[-1]
            values = last.numpy.reshape(-1)
            if values.shape != (len(md["layers"]),):
                continue
            points.append(
                {
                    "run": run,
                    "baseline": self._is_baseline(run, md),
                    "step": int(last.step),
                    "scalar": float(scalar_data[-1].value),
                    "scalar_step": int(scalar_data[-1].step),
                    # NaN (undefined mean) goes out as null.
                    "parts": part_means(values, md["parts"]),
                }
            )
        parts = []
        for part in metadata.PARTS:
            having = [p for p in points if part in p["parts"]]
            if not having:
                continue
            excluded = []
            usable = []
            for p in having:
                if math.isnan(p["parts"][part]):
                    excluded.append(
                        {"run": p["run"], "why": "part mean undefined (+inf and -inf layers)"}
                    )
                elif math.isnan(p["scalar"]):
                    excluded.append({"run": p["run"], "why": "scalar is NaN"})
                else:
                    usable.append(p)
            rho, pvalue, reason = spearman.spearman(
                [p["parts"][part] for p in usable], [p["scalar"] for p in usable]
            )
            parts.append(
                {
                    "part": part,
                    "rho": rho,
                    "p": pvalue,
                    "n": len(usable),
                    "note": reason,
                    "excluded": excluded,
                }
            )
        return {
            "measure": measure,
            "group": group,
            "scalar": scalar,
            "parts": parts,
            "points": points,
        }


def part_means(values, parts):
    """``{part: mean of its layers' values}`` for the parts present.

    The plain arithmetic mean (the callback's ``.../part/...`` scalars are
    the same): a ``+inf`` layer makes its part ``+inf``, a ``-inf`` one
    ``-inf``, and a part with both is NaN (undefined). NaN layers are not
    expected (the writer refuses them) and would make the part NaN too.
    """
    sums, counts = {}, {}
    for value, part in zip(np.asarray(values, dtype=np.float64).tolist(), parts):
        sums[part] = sums.get(part, 0.0) + value
        counts[part] = counts.get(part, 0) + 1
    return {
        part: sums[part] / counts[part] for part in metadata.PARTS if part in sums
    }


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
