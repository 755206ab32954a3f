"""The plugin's data layer: runs read through TensorBoard's data provider, validated.

Torch-free (numpy, TensorBoard; scipy for the rank correlation and the intervals of
run groups, :mod:`lightning_equivariance_tb.run_groups`, imported when first needed). The routes of
:mod:`lightning_equivariance_tb.plugin` are thin wrappers
around :class:`Reader`, whose methods return JSON-ready ``dict`` bodies or raise
``tensorboard.errors`` (404 for unknown or unreadable data), never anything else
for what an event file holds: every field read from an event file is checked
(metadata in :func:`metadata.parse_plugin_metadata`, tensors here).

JSON numbers: infinities stay floats (TensorBoard's ``http_util.Respond`` sends
them as the strings ``"Infinity"``/``"-Infinity"``); a missing value (NaN) is
``None``. Matrices travel as base64 of little-endian float32 (``values_base64``
with ``values_shape``), where NaN is missing and infinities are themselves; the
group statistics of ``/groups`` as float64 (``*_dtype: "float64"``).
"""

import base64
import json
import logging
import math

import numpy as np
from tensorboard import errors
from tensorboard.data import provider

from lightning_equivariance_tb import metadata, run_groups

logger = logging.getLogger(__name__)

READ_ALL = 10**9
"""``downsample`` passed to the data provider: return every stored point."""

TB_DEFAULT_SAMPLES = (10, 100)
"""Points per tag TensorBoard keeps for a plugin not named in ``--samples_per_plugin``:
10 with the Python loader (``--load_fast=false``), 100 with the Rust data server."""

SAMPLES_FLAG = "--samples_per_plugin=%s=0" % metadata.PLUGIN_NAME
"""The flag that makes TensorBoard keep every epoch (0 = keep all)."""


# ------------------------------------------------------------------ numbers --


def json_number(value):
    """A float for a JSON body: NaN (missing, undefined) becomes ``None``."""
    value = float(value)
    return None if math.isnan(value) else value


def encode_matrix(matrix, prefix="values", dtype="float32"):
    """``{prefix_base64, prefix_shape}``: little-endian float32 bytes, row-major.

    ``dtype="float64"``: little-endian float64 bytes instead, and
    ``prefix_dtype: "float64"`` says so (the group statistics, exact to 1e-9)."""
    a = np.asarray(matrix, dtype=np.float64)
    data = np.ascontiguousarray(a, dtype="<f8" if dtype == "float64" else "<f4").tobytes()
    out = {
        prefix + "_base64": base64.b64encode(data).decode("ascii"),
        prefix + "_shape": list(a.shape),
    }
    if dtype == "float64":
        out[prefix + "_dtype"] = "float64"
    return out


def ordered_parts(parts):
    """Distinct part names: those of :data:`metadata.PARTS` in depth order, then any
    other name (a part this version does not know) in order of appearance."""
    seen = list(dict.fromkeys(parts))
    return [p for p in metadata.PARTS if p in seen] + [p for p in seen if p not in metadata.PARTS]


def part_means(values, parts):
    """``{part: mean of its layers' values}``, parts ordered by :func:`ordered_parts`.

    The plain arithmetic mean over the layers that have a value (NaN = not measured
    is skipped; a part without any measured layer is left out): a ``+inf`` layer
    makes its part ``+inf``, a ``-inf`` one ``-inf``, and a part with both is NaN
    (undefined). The library's ``.../part/...`` scalars follow the same rule.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    parts = list(parts)
    out = {}
    with np.errstate(invalid="ignore"):
        for part in ordered_parts(parts):
            sel = values[[i for i, p in enumerate(parts) if p == part]]
            sel = sel[~np.isnan(sel)]
            if sel.size:
                out[part] = float(sel.sum() / sel.size)
    return out


def part_mean_matrix(matrix, parts):
    """Part means of every column of a layer x point matrix: ``(names, P x T matrix)``
    (NaN where a part has no measured layer or no mean)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    names = ordered_parts(parts)
    out = np.full((len(names), matrix.shape[1]), np.nan)
    parts = np.asarray(parts, dtype=object)
    with np.errstate(invalid="ignore"):
        for k, part in enumerate(names):
            rows = matrix[parts == part]
            present = ~np.isnan(rows)
            counts = present.sum(axis=0)
            sums = np.where(present, rows, 0.0).sum(axis=0)
            out[k] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return names, out


def spearman(x, y):
    """Spearman's rho of two equal-length samples and its two-sided p-value
    (``scipy.stats.spearmanr``: ties get average ranks; ``+inf``/``-inf`` rank
    above/below every number).

    Returns:
      ``(rho, p, note)``: floats, or ``None`` with a human-readable ``note`` when
      undefined (fewer than 3 points, or a constant sample).

    Raises:
      ValueError: on shapes that differ or are not 1-D, or on a NaN in either
        sample (the caller leaves such points out first).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D of equal length, got %r and %r" % (x.shape, y.shape))
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("x and y must not contain NaN; leave those points out first")
    if x.size < 3:
        return None, None, "needs at least 3 runs, got %d" % x.size
    if (x == x[0]).all() or (y == y[0]).all():
        return None, None, "constant input: all runs have the same value"
    from scipy import stats  # lazy: only the Spearman view needs it

    rho, p = stats.spearmanr(x, y)[:2]
    return max(-1.0, min(1.0, float(rho))), float(p), None


GROUP_X = ("step", "epoch", "global_step")
"""The x axes of ``/groups``: the event's step, or the epoch / global step recorded."""

MAX_GROUP_CELLS = 1_000_000
"""The most (layer or part) x (x value) cells one ``/groups`` answer holds, summed over its
groups: 100 runs x 40 layers x 100 points, every run at its own steps, are 450,000 (about
20 MB of JSON); beyond the limit the answer is a 400 that says what to narrow."""


class RefusedArgument(errors.InvalidArgumentError):
    """A 400 that names the query parameter at fault: its JSON body carries ``argument``, so
    that the tab does not send that value again (a refused run-group pattern)."""

    def __init__(self, argument, details):
        super().__init__(details)
        self.argument = argument


def merged_layers(layer_lists):
    """Layer names of several runs merged in depth order: a layer only some runs
    have goes right after its predecessor in its own run (as the tab merges them)."""
    names = []
    for layers in layer_lists:
        at = -1
        for name in layers:
            if name in names:
                at = names.index(name)
            else:
                at += 1
                names.insert(at, name)
    return names


def _last_point_at_each_x(xs):
    """``(points, x values)``: per distinct x of a run's points (None = no x), its last point."""
    known = [j for j, v in enumerate(xs) if v is not None]
    values = np.array([int(xs[j]) for j in known], dtype=np.int64)
    if not known:
        return np.zeros(0, dtype=np.intp), values
    distinct, last = np.unique(values[::-1], return_index=True)  # first in reverse = last in step order
    return np.asarray(known, dtype=np.intp)[len(known) - 1 - last], distinct


def group_body(name, runs, confidence=run_groups.CONFIDENCE):
    """One group of ``/groups``: ``runs`` is ``[(run, metadata, xs, layer x point
    matrix)]``. Per layer (by name, merged over the runs) and per depth part (each
    run's part means), at every x some run has: mean, interval ends and the number
    of runs with a finite value (:func:`run_groups.cell_statistics`, the
    :func:`run_groups.group_statistics` of every cell at once). A run's value at an x
    is its last point there.

    The x values are aligned once, on the union of the runs' x values, and every run
    adds only the cells it has: the cost is linear in runs x points, also when every
    run was measured at its own steps (the union then grows with the runs)."""
    layers = merged_layers([md["layers"] for _, md, _, _ in runs])
    part_of = {}
    for _, md, _, _ in runs:
        for layer, part in zip(md["layers"], md["parts"]):
            part_of.setdefault(layer, part)
    picked = [_last_point_at_each_x(run_xs) for _, _, run_xs, _ in runs]
    xs = np.unique(np.concatenate([x for _, x in picked])) if picked else np.zeros(0, dtype=np.int64)
    part_names = ordered_parts([p for _, md, _, _ in runs for p in md["parts"]])
    layer_row = {layer: i for i, layer in enumerate(layers)}
    part_row = {part: i for i, part in enumerate(part_names)}
    cells = {"": [], "part_": []}
    values = {"": [], "part_": []}
    for (_, md, _, matrix), (points, run_x) in zip(runs, picked):
        names, part_matrix = part_mean_matrix(matrix, md["parts"])
        cols = np.searchsorted(xs, run_x)
        for prefix, rows, row_names, row_of in (
            ("", matrix, md["layers"], layer_row),
            ("part_", part_matrix, names, part_row),
        ):
            at = np.array([row_of[n] for n in row_names], dtype=np.intp)
            cells[prefix].append((at[:, None] * len(xs) + cols[None, :]).reshape(-1))
            values[prefix].append(np.asarray(rows, dtype=np.float64)[:, points].reshape(-1))
    body = {
        "name": name,
        "runs": [run for run, _, _, _ in runs],
        "baseline": all(md["baseline"] for _, md, _, _ in runs),
        "models": sorted({md["model"] for _, md, _, _ in runs if md["model"]}),
        "higher_is_better": runs[0][1]["higher_is_better"],
        "layers": layers,
        "parts": [part_of[layer] for layer in layers],
        "xs": [int(v) for v in xs],
        "part_names": part_names,
    }
    for prefix, n_rows in (("", len(layers)), ("part_", len(part_names))):
        shape = (n_rows, len(xs))
        stats = run_groups.cell_statistics(
            np.concatenate(cells[prefix]) if cells[prefix] else np.zeros(0, dtype=np.intp),
            np.concatenate(values[prefix]) if values[prefix] else np.zeros(0),
            n_rows * len(xs), confidence,
        )
        for k, matrix in zip(("mean", "low", "high", "n"), stats):
            body.update(encode_matrix(np.asarray(matrix, dtype=np.float64).reshape(shape), prefix + k, dtype="float64"))
    return body


def _check_group_size(grouped, x):
    """A 400 when the groups' statistics would exceed :data:`MAX_GROUP_CELLS` cells: per group,
    (its layers + its parts) x the union of its runs' x values."""
    cells = 0
    for runs in grouped.values():
        layers = {layer for _, md, _, _ in runs for layer in md["layers"]}
        parts = {part for _, md, _, _ in runs for part in md["parts"]}
        xs = {v for _, _, run_xs, _ in runs for v in run_xs if v is not None}
        cells += (len(layers) + len(parts)) * len(xs)
    if cells > MAX_GROUP_CELLS:
        raise errors.InvalidArgumentError(
            "the run groups' statistics would hold %d (layer or part) x %s cells, more than the %d one answer "
            "sends: the runs' %s values differ, so each adds its own columns. Select fewer runs, group them "
            "into smaller groups, or use x=step or x=epoch where the runs share steps"
            % (cells, x, MAX_GROUP_CELLS, x)
        )


def is_downsampled(steps, sample_limit):
    """Whether TensorBoard dropped points of a series with these steps.

    TensorBoard keeps a random sample (always with the last point) of at most
    ``sample_limit`` points per tag (``None``: its default; 0: keep all). A series
    that is regularly spaced when complete (every epoch, or every k-th) shows a gap
    when sampled: fewer points than ``(last - first) / stride + 1``. A gapless
    series is flagged too when it does not start at step 0 and holds exactly as
    many points as the limit (its first points were dropped).
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


# ------------------------------------------------------- tensor validation --


def _numeric(datum, shape_ok, expected):
    """``(float64 array, None)`` or ``(None, why)`` for one stored point."""
    array = datum.numpy
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiu":
        kind = getattr(getattr(array, "dtype", None), "name", type(array).__name__)
        return None, "not a numeric tensor (%s)" % kind
    if not shape_ok(array.shape):
        return None, "shape %r, expected %s" % (array.shape, expected)
    return array.astype(np.float64), None


def _record(datum, layers):
    """The step record (see :mod:`metadata`) of one point, or ``(None, why)``."""
    array = datum.numpy
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "OSU" or array.size != 1:
        return None, "not a string scalar"
    raw = array.reshape(-1)[0]
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        record = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None, "not UTF-8 JSON"
    if not isinstance(record, dict):
        return None, "not a JSON object"
    for key in ("epoch", "global_step"):
        value = record.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return None, "%r is not an integer" % key
    missing = record.get("missing", {})
    if not isinstance(missing, dict):
        return None, "'missing' is not an object"
    out = {}
    for name, entry in missing.items():
        if name not in layers:
            return None, "'missing' names a layer %r that the metadata does not list" % name
        if (
            not isinstance(entry, dict)
            or entry.get("status") not in metadata.MISSING_STATUSES
            or not isinstance(entry.get("reason"), str)
        ):
            return None, "'missing'[%r] is not {status, reason}" % name
        out[layers.index(name)] = (entry["status"], entry["reason"])
    return {"epoch": record.get("epoch"), "global_step": record.get("global_step"), "missing": out}, None


def _runs_with(index, key, wanted=()):
    """The runs of ``index`` (sorted) that have series ``key = (kind, measure, group)``, restricted
    to ``wanted`` when given; ``NotFoundError`` when none has."""
    wanted = set(wanted)
    runs = sorted(r for r, e in index.items() if key in e and (not wanted or r in wanted))
    if not runs:
        raise errors.NotFoundError(
            "no run%s has data for measure %r, group %r" % (" of those selected" if wanted else "", key[1], key[2])
        )
    return runs


class _Entry:
    """One tag of a run: its name, parsed metadata and time series."""

    __slots__ = ("tag", "md", "ts")

    def __init__(self, tag, md, ts):
        self.tag, self.md, self.ts = tag, md, ts


class Reader:
    """Equivariance data of an experiment, read through a TensorBoard data provider."""

    def __init__(self, data_provider, sample_limit):
        self._provider = data_provider
        self._sample_limit = sample_limit  # None: TensorBoard's default; 0: keep all
        self._warned = set()

    # -------------------------------------------------------------- index --

    def index(self, ctx, experiment, runs=None):
        """``({run: {(kind, measure, group): _Entry}}, skipped)``.

        ``skipped`` lists ``{"run", "tag", "reason"}`` of the tags that cannot be
        read: unreadable metadata (e.g. a newer format) and auxiliary tags whose
        layers differ from those of their series.
        """
        mapping = self._provider.list_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=metadata.PLUGIN_NAME,
            run_tag_filter=provider.RunTagFilter(runs=runs) if runs else None,
        )
        index, skipped = {}, []

        def skip(run, tag, reason):
            if (run, tag, reason) not in self._warned:
                self._warned.add((run, tag, reason))
                logger.warning("skipping run %r tag %r: %s", run, tag, reason)
            skipped.append({"run": run, "tag": tag, "reason": reason})

        for run, tags in mapping.items():
            entries = {}
            for tag in sorted(tags):
                ts = tags[tag]
                try:
                    md = metadata.parse_plugin_metadata(ts.plugin_content)
                except (TypeError, ValueError) as e:
                    skip(run, tag, str(e))
                    continue
                key = (md["kind"], md["measure"], md["group"])
                if key in entries:
                    skip(run, tag, "a second tag for %s/%s/%s (the first: %r)" % (key + (entries[key].tag,)))
                    continue
                entries[key] = _Entry(tag, md, ts)
            for key in sorted(entries, key=lambda k: metadata.KINDS.index(k[0])):
                kind, measure, group = key
                main = entries.get((metadata.KIND_LAYERS, measure, group))
                if kind == metadata.KIND_LAYERS or main is None:
                    continue
                if entries[key].md["layers"] != main.md["layers"]:
                    skip(run, entries[key].tag, "its layers differ from those of %r" % main.tag)
                    del entries[key]
            if any(k[0] == metadata.KIND_LAYERS for k in entries):
                index[run] = entries
        return index, skipped

    def _series_entry(self, index, run, measure, group, kind=metadata.KIND_LAYERS):
        if run not in index:
            raise errors.NotFoundError("run %r has no equivariance data" % (run,))
        entry = index[run].get((kind, measure, group))
        if entry is None or (metadata.KIND_LAYERS, measure, group) not in index[run]:
            available = sorted(
                "%s/%s" % (m, g) for (k, m, g) in index[run] if k == metadata.KIND_LAYERS
            )
            what = "per-channel data" if kind == metadata.KIND_CHANNELS else "data"
            raise errors.NotFoundError(
                "run %r has no %s for measure %r, group %r (it has: %s)"
                % (run, what, measure, group, ", ".join(available))
            )
        return entry

    def _read(self, ctx, experiment, runs, tags, downsample=READ_ALL):
        return self._provider.read_tensors(
            ctx,
            experiment_id=experiment,
            plugin_name=metadata.PLUGIN_NAME,
            downsample=downsample,
            run_tag_filter=provider.RunTagFilter(runs=runs, tags=sorted(set(tags))),
        )

    # -------------------------------------------------------------- /runs --

    def runs(self, ctx, experiment):
        """Runs with equivariance data and what each of them holds."""
        index, skipped = self.index(ctx, experiment)
        runs, measures = [], {}
        for run in sorted(index):
            entries = index[run]
            keys = sorted(k for k in entries if k[0] == metadata.KIND_LAYERS)
            mds = [entries[k].md for k in keys]
            series = []
            for key in keys:
                _, measure, group = key
                entry = entries[key]
                measures.setdefault(measure, set()).add(group)
                series.append(
                    {
                        "measure": measure,
                        "group": group,
                        "layers": len(entry.md["layers"]),
                        "last_step": entry.ts.max_step,
                        "wall_time": entry.ts.max_wall_time,
                        "higher_is_better": entry.md["higher_is_better"],
                        "has_channels": (metadata.KIND_CHANNELS, measure, group) in entries,
                        "has_stats": (metadata.KIND_STATS, measure, group) in entries,
                    }
                )
            runs.append(
                {
                    "run": run,
                    "model": mds[0]["model"],
                    "baseline": any(md["baseline"] for md in mds),
                    "run_group": next((md["run_group"] for md in mds if md["run_group"]), ""),
                    "layers": max(len(md["layers"]) for md in mds),
                    "last_step": max(entries[k].ts.max_step for k in keys),
                    "series": series,
                }
            )
        return {
            "runs": runs,
            "measures": {m: sorted(g) for m, g in sorted(measures.items())},
            "parts": list(metadata.PARTS),
            "sample_limit": self._sample_limit,
            "samples_flag": SAMPLES_FLAG,
            "skipped": sorted(skipped, key=lambda s: (s["run"], s["tag"])),
        }

    # ------------------------------------------------------------ /series --

    def series(self, ctx, experiment, runs, measure, group, batch=False):
        """The ``/series`` bodies of ``runs`` (one read for all of them); ``batch``:
        one error naming every run without this series."""
        index, _ = self.index(ctx, experiment, runs=runs)
        key = (metadata.KIND_LAYERS, measure, group)
        if batch:
            missing = [run for run in runs if key not in index.get(run, {})]
            if missing:
                raise errors.NotFoundError(
                    "no data for measure %r, group %r in run(s) %s"
                    % (measure, group, ", ".join(repr(r) for r in missing))
                )
        for run in runs:
            self._series_entry(index, run, measure, group)
        tags = []
        for run in runs:
            for kind in (metadata.KIND_LAYERS, metadata.KIND_RECORD, metadata.KIND_STATS):
                if (kind, measure, group) in index[run]:
                    tags.append(index[run][(kind, measure, group)].tag)
        data = self._read(ctx, experiment, runs, tags)
        return [
            self._series_body(run, measure, group, index[run], data.get(run, {}))
            for run in runs
        ]

    @staticmethod
    def _parse_run(run, measure, group, entries, data):
        """The readable points of one run's series: ``(steps, wall_times, matrix
        (layer x point), epochs, global_steps, missing {(i, j): (status, reason)},
        problems, skipped_records)``; a 404 when no point can be read."""
        entry = entries[(metadata.KIND_LAYERS, measure, group)]
        md = entry.md
        n_layers = len(md["layers"])
        steps, wall_times, columns, problems = [], [], [], []
        for datum in data.get(entry.tag, []):
            values, why = _numeric(datum, lambda s: int(np.prod(s)) == n_layers, "(%d,)" % n_layers)
            if values is None:
                problems.append("step %d: %s" % (datum.step, why))
                continue
            steps.append(int(datum.step))
            wall_times.append(float(datum.wall_time))
            columns.append(values.reshape(-1))
        if problems and not steps:
            raise errors.NotFoundError(
                "run %r has no readable data for measure %r, group %r: %d point(s) of tag %r "
                "cannot be read (%s)" % (run, measure, group, len(problems), entry.tag, problems[0])
            )
        matrix = np.array(columns, dtype=np.float64).reshape(len(columns), n_layers).T
        point_of = {step: j for j, step in enumerate(steps)}
        epochs, global_steps, missing = [None] * len(steps), [None] * len(steps), {}
        record = entries.get((metadata.KIND_RECORD, measure, group))
        skipped_records = 0
        for datum in data.get(record.tag, []) if record else []:
            parsed, why = _record(datum, md["layers"])
            j = point_of.get(int(datum.step))
            if parsed is None or j is None:
                skipped_records += parsed is None
                continue
            epochs[j], global_steps[j] = parsed["epoch"], parsed["global_step"]
            for i, (status, reason) in parsed["missing"].items():
                missing[(i, j)] = (status, reason)
        for i, j in zip(*np.nonzero(np.isnan(matrix))):
            missing.setdefault((int(i), int(j)), ("refused", "no value (no reason recorded)"))
        return steps, wall_times, matrix, epochs, global_steps, missing, problems, skipped_records

    def _series_body(self, run, measure, group, entries, data):
        md = entries[(metadata.KIND_LAYERS, measure, group)].md
        n_layers = len(md["layers"])
        steps, wall_times, matrix, epochs, global_steps, missing, problems, skipped_records = (
            self._parse_run(run, measure, group, entries, data)
        )
        point_of = {step: j for j, step in enumerate(steps)}
        names, part_matrix = part_mean_matrix(matrix, md["parts"])
        body = {
            "run": run,
            "measure": measure,
            "group": group,
            "version": md["version"],
            "model": md["model"],
            "baseline": md["baseline"],
            "run_group": md["run_group"],
            "higher_is_better": md["higher_is_better"],
            "layers": md["layers"],
            "parts": md["parts"],
            "unknown_parts": [p for p in names if p not in metadata.PARTS],
            "steps": steps,
            "wall_times": wall_times,
            "epochs": epochs,
            "global_steps": global_steps,
            "missing": [
                {"layer": i, "point": j, "status": s, "reason": r}
                for (i, j), (s, r) in sorted(missing.items(), key=lambda kv: (kv[0][1], kv[0][0]))
            ],
            "downsampled": is_downsampled(steps, self._sample_limit),
            "skipped_points": len(problems),
            "skipped_records": skipped_records,
            "has_channels": (metadata.KIND_CHANNELS, measure, group) in entries,
            "part_names": names,
            "stats": self._stats(entries.get((metadata.KIND_STATS, measure, group)), data, point_of, n_layers),
        }
        body.update(encode_matrix(matrix))
        body.update(encode_matrix(part_matrix, "part_values"))
        return body

    @staticmethod
    def _stats(entry, data, point_of, n_layers):
        """``{field: base64 layer x point matrix}`` of the known statistics."""
        if entry is None:
            return {}
        fields = entry.md["fields"]
        out = np.full((len(fields), n_layers, len(point_of)), np.nan)
        for datum in data.get(entry.tag, []):
            j = point_of.get(int(datum.step))
            values, _ = _numeric(datum, lambda s: s == (len(fields), n_layers), "")
            if values is not None and j is not None:
                out[:, :, j] = values
        return {
            field: encode_matrix(out[f])
            for f, field in enumerate(fields)
            if field in metadata.STAT_FIELDS
        }

    # ------------------------------------------------------------ /groups --

    def groups(self, ctx, experiment, runs, measure, group, pattern=None, x="step",
               confidence=run_groups.CONFIDENCE):
        """Groups of ``runs`` (all runs with this series when empty): per layer and per
        depth part, the mean over the group's runs and a Student-t interval over runs
        at each x, with the number of runs there (:mod:`run_groups`).

        A run's group is its recorded ``run_group``, or with ``pattern`` (RE2 syntax,
        :func:`run_groups.compile_pattern`; a refused one is a :class:`RefusedArgument`)
        the first capture group of its leftmost match in the run name. More than
        :data:`MAX_GROUP_CELLS` cells of statistics are a 400. ``x``: ``"step"`` (the event's
        step), ``"epoch"`` or ``"global_step"`` (from the step records; a point
        without a record keeps its event step, by convention the epoch). A run's part means are those of
        ``/series`` (:func:`part_mean_matrix`); its value at an x is its last point
        there. Non-finite values (missing, +-inf) do not count.
        """
        if x not in GROUP_X:
            raise errors.InvalidArgumentError("x must be one of %s, got %r" % (", ".join(GROUP_X), x))
        key = (metadata.KIND_LAYERS, measure, group)
        index, _ = self.index(ctx, experiment, runs=list(runs) or None)
        names = _runs_with(index, key, runs)
        recorded = {run: index[run][key].md["run_group"] for run in names}
        try:
            assignment = run_groups.assign_groups(recorded, pattern or None)
        except ValueError as e:
            raise RefusedArgument("pattern", str(e)) from None
        members = sorted({run for rs in assignment.values() for run in rs})
        tags = [
            index[run][(kind, measure, group)].tag
            for run in members
            for kind in (metadata.KIND_LAYERS, metadata.KIND_RECORD)
            if (kind, measure, group) in index[run]
        ]
        data = self._read(ctx, experiment, members, tags) if members else {}
        parsed, unreadable = {}, {}
        for run in members:
            try:
                steps, _, matrix, epochs, global_steps = self._parse_run(
                    run, measure, group, index[run], data.get(run, {}))[:5]
            except errors.NotFoundError as e:
                unreadable[run] = str(e)
                continue
            recorded = {"step": [None] * len(steps), "epoch": epochs, "global_step": global_steps}[x]
            xs = [r if r is not None else s for r, s in zip(recorded, steps)]
            parsed[run] = (index[run][key].md, xs, matrix)
        grouped = {}
        for name, group_runs in assignment.items():
            group_runs = [r for r in group_runs if r in parsed]
            if group_runs:
                grouped[name] = [(r,) + parsed[r] for r in group_runs]
        _check_group_size(grouped, x)
        bodies = [group_body(name, group_runs, confidence) for name, group_runs in grouped.items()]
        in_group = set(members)
        return {
            "measure": measure,
            "group": group,
            "x": x,
            "pattern": pattern or "",
            "confidence": confidence,
            "interval": run_groups.interval_label(confidence),
            "groups": bodies,
            "ungrouped": [r for r in names if r not in in_group],
            "unreadable": [{"run": r, "why": why} for r, why in sorted(unreadable.items())],
        }

    # ---------------------------------------------------------- /channels --

    def channels(self, ctx, experiment, run, measure, group, layer, step=None):
        """Per-channel values of one layer: channel x point, or the vector at ``step``."""
        index, _ = self.index(ctx, experiment, runs=[run])
        entry = self._series_entry(index, run, measure, group, metadata.KIND_CHANNELS)
        md = entry.md
        if layer not in md["layers"]:
            raise errors.NotFoundError(
                "run %r has no layer %r for measure %r, group %r" % (run, layer, measure, group)
            )
        i = md["layers"].index(layer)
        count = md["channels"][i]
        if count == 0:
            raise errors.NotFoundError(
                "run %r has no per-channel data for layer %r (measure %r, group %r): it was "
                "not measured when the tag was first written" % (run, layer, measure, group)
            )
        data = self._read(ctx, experiment, [run], [entry.tag]).get(run, {}).get(entry.tag, [])
        n_layers = len(md["layers"])
        steps, columns, problems = [], [], []
        for datum in data:
            matrix, why = _numeric(
                datum, lambda s: len(s) == 2 and s[0] == n_layers and s[1] >= count,
                "(%d, >= %d)" % (n_layers, count),
            )
            if matrix is None:
                problems.append("step %d: %s" % (datum.step, why))
                continue
            steps.append(int(datum.step))
            columns.append(matrix[i, :count])
        if problems and not steps:
            raise errors.NotFoundError(
                "run %r has no readable per-channel data for measure %r, group %r: %d point(s) "
                "of tag %r cannot be read (%s)"
                % (run, measure, group, len(problems), entry.tag, problems[0])
            )
        body = {
            "run": run,
            "measure": measure,
            "group": group,
            "layer": layer,
            "layer_index": i,
            "part": md["parts"][i],
            "channels": count,
            "higher_is_better": md["higher_is_better"],
            "downsampled": is_downsampled(steps, self._sample_limit),
            "skipped_points": len(problems),
        }
        if step is None:
            body["steps"] = steps
            body.update(encode_matrix(np.array(columns).reshape(len(columns), count).T))
            return body
        if step not in steps:
            raise errors.NotFoundError(
                "run %r has no per-channel data at step %d for measure %r, group %r"
                % (run, step, measure, group)
            )
        body["step"] = step
        body.update(encode_matrix(columns[steps.index(step)]))
        return body

    # ------------------------------------------------- scalars, Spearman --

    def scalar_tags(self, ctx, experiment):
        """Scalar tags (e.g. ``val/acc``) of the runs with equivariance data."""
        runs = sorted(self.index(ctx, experiment)[0])
        counts = {}
        if runs:
            mapping = self._provider.list_scalars(
                ctx,
                experiment_id=experiment,
                plugin_name="scalars",
                run_tag_filter=provider.RunTagFilter(runs=runs),
            )
            for tags in mapping.values():
                for tag in tags:
                    counts[tag] = counts.get(tag, 0) + 1
        return {"tags": [{"tag": t, "runs": counts[t]} for t in sorted(counts)], "runs": len(runs)}

    def spearman(self, ctx, experiment, measure, group, scalar, wanted=()):
        """Across runs: each part's mean at the run's last point vs a scalar's last value
        (Bruintjes et al. 2023, Fig. 4). ``wanted`` restricts the runs."""
        key = (metadata.KIND_LAYERS, measure, group)
        index, _ = self.index(ctx, experiment)
        runs = _runs_with(index, key, wanted)
        scalars = self._provider.read_scalars(
            ctx,
            experiment_id=experiment,
            plugin_name="scalars",
            downsample=1,  # the data providers always keep the last point
            run_tag_filter=provider.RunTagFilter(runs=runs, tags=[scalar]),
        )
        if not any(scalar in tags for tags in scalars.values()):
            raise errors.NotFoundError(
                "no run with data for measure %r, group %r has the scalar tag %r"
                % (measure, group, scalar)
            )
        tensors = self._read(ctx, experiment, runs, [index[r][key].tag for r in runs], downsample=1)
        points = []
        for run in runs:
            entry = index[run][key]
            scalar_data = scalars.get(run, {}).get(scalar)
            tensor_data = tensors.get(run, {}).get(entry.tag)
            if not scalar_data or not tensor_data:
                continue
            n_layers = len(entry.md["layers"])
            values, _ = _numeric(
                tensor_data[-1], lambda s: int(np.prod(s)) == n_layers, ""  # noqa: B023 - _numeric calls it at once
            )
            if values is None:
                continue
            means = part_means(values, entry.md["parts"])
            points.append(
                {
                    "run": run,
                    "baseline": entry.md["baseline"],
                    "step": int(tensor_data[-1].step),
                    "scalar": float(scalar_data[-1].value),
                    "scalar_step": int(scalar_data[-1].step),
                    "parts": means,
                }
            )
        parts = []
        for part in ordered_parts([p for point in points for p in point["parts"]]):
            excluded, usable = [], []
            for point in (p for p in points if part in p["parts"]):
                if math.isnan(point["parts"][part]):
                    excluded.append({"run": point["run"], "why": "part mean undefined (+inf and -inf layers)"})
                elif math.isnan(point["scalar"]):
                    excluded.append({"run": point["run"], "why": "scalar is NaN"})
                else:
                    usable.append(point)
            rho, pvalue, note = spearman(
                [p["parts"][part] for p in usable], [p["scalar"] for p in usable]
            )
            parts.append(
                {"part": part, "rho": rho, "p": pvalue, "n": len(usable), "note": note, "excluded": excluded}
            )
        for point in points:
            point["scalar"] = json_number(point["scalar"])
            point["parts"] = {k: json_number(v) for k, v in point["parts"].items()}
        return {"measure": measure, "group": group, "scalar": scalar, "parts": parts, "points": points}
