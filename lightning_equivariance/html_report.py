"""A shareable report: one self-contained HTML file with the tab's main views.

For whoever has no TensorBoard at hand: the file opens offline in any browser, needs no
server and loads nothing from the network. plotly.js is read from the installed ``plotly``
package when the file is written (never kept in this repository) and inlined; the data travel
inside the file as JSON.

One drawing of each view: the page draws with the TensorBoard tab's own ES modules
(``heatmap.js``, ``charts.js``, ``views.js``, ``util.js`` of ``lightning_equivariance_tb/static``,
read through :mod:`importlib.resources` from the plugin distribution this library depends on),
inlined through an import map of ``data:`` URLs (:func:`view_modules`); the page's own script,
``report_page/report.js``, is glue that turns the embedded data into the tab's route bodies.

Views, as in the TensorBoard tab: the **layer x step heatmap** of a run or of a group's mean,
the **curves** of every depth part and of a chosen layer over the x axis (global step or
epoch), the **layer profile** on relative depth at each run's last measurement (the chance
level dotted and the standard errors as a band where they were logged), and a table of the
runs. **Groups** of runs (the ``run_group`` recorded by the callback, the CLI or the summary
writer, or a regular expression whose first capture group names the group) are drawn as their
mean with a Student-t interval over runs (the tab's ``/groups`` bodies,
:func:`lightning_equivariance_tb.data.group_body`); a group of one run is shown as the run.

Three ways in:

* ``MeasureReport.to_html(path)``: one measurement;
* :func:`write_logdir_report` (and ``lightning-equivariance report LOGDIR ... -o report.html``):
  every run of one or more log directories written by the callback or
  :mod:`lightning_equivariance_tb.summary`, read through the tab's own data layer
  (:class:`lightning_equivariance_tb.data.Reader`);
* :func:`collect_logdirs` + :func:`build_data` + :func:`write_html` for custom titles or groups.

This module needs neither torch nor Lightning.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import re
from importlib import resources
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "RunSeries",
    "collect_logdirs",
    "runs_from_report",
    "build_data",
    "render_html",
    "write_html",
    "write_logdir_report",
    "human_size",
    "ReportError",
]


class ReportError(ValueError):
    """A user error in making a report (a missing log directory, no data, a bad pattern)."""


#: The per-layer statistics a report carries besides the values (docs/measures.md §7).
_STATS = ("chance", "stderr", "margin", "margin_stderr", "margin_low", "significant")


class RunSeries:
    """One run's data for one (measure, group): what a report draws.

    Attributes:
        run, model, baseline, run_group: as recorded (``run_group`` ``""`` = none).
        measure, group, higher_is_better: the series.
        layers, parts: the layer names in depth order and their depth parts.
        steps: the x positions (the events' steps: the global step for the callback).
        epochs: the epoch recorded at each step (``None`` where unknown).
        values: ``L x T`` float array (NaN: not measured; infinities are values).
        chance, stderr: ``L x T`` arrays or ``None`` when not logged.
        margin, margin_stderr, margin_low, significant: ``L x T`` arrays or ``None`` when not
            logged (docs/measures.md §7; ``significant`` 0/1, NaN where undecided).
    """

    __slots__ = ("run", "model", "baseline", "run_group", "measure", "group", "higher_is_better",
                 "layers", "parts", "steps", "epochs", "values", "chance", "stderr",
                 "margin", "margin_stderr", "margin_low", "significant")

    def __init__(self, run, measure, group, layers, parts, steps, values, *, model="", baseline=False,
                 run_group="", higher_is_better=True, epochs=None, chance=None, stderr=None,
                 margin=None, margin_stderr=None, margin_low=None, significant=None):
        self.run, self.measure, self.group = str(run), str(measure), str(group)
        self.model, self.baseline, self.run_group = str(model or ""), bool(baseline), str(run_group or "")
        self.higher_is_better = higher_is_better
        self.layers, self.parts = [str(x) for x in layers], [str(p) for p in parts]
        self.steps = [int(s) for s in steps]
        self.epochs = list(epochs) if epochs is not None else [None] * len(self.steps)
        shape = (len(self.layers), len(self.steps))
        self.values = np.asarray(values, dtype=np.float64).reshape(shape)
        self.chance = None if chance is None else np.asarray(chance, dtype=np.float64).reshape(shape)
        self.stderr = None if stderr is None else np.asarray(stderr, dtype=np.float64).reshape(shape)
        self.margin = None if margin is None else np.asarray(margin, dtype=np.float64).reshape(shape)
        self.margin_stderr = (
            None if margin_stderr is None else np.asarray(margin_stderr, dtype=np.float64).reshape(shape)
        )
        self.margin_low = None if margin_low is None else np.asarray(margin_low, dtype=np.float64).reshape(shape)
        self.significant = None if significant is None else np.asarray(significant, dtype=np.float64).reshape(shape)


# ------------------------------------------------------------------ reading logs --


def _decode(body: Mapping[str, Any], prefix: str) -> np.ndarray:
    """A matrix of a ``/series`` body (:func:`lightning_equivariance_tb.data.encode_matrix`)."""
    dtype = "<f8" if body.get(prefix + "_dtype") == "float64" else "<f4"
    raw = base64.b64decode(body[prefix + "_base64"])
    return np.frombuffer(raw, dtype=dtype).astype(np.float64).reshape(body[prefix + "_shape"])


def _run_names(logdirs: Sequence[str]) -> List[str]:
    """A distinct label per log directory (its base name; a number when two share it)."""
    names = [os.path.basename(os.path.normpath(os.path.abspath(d))) or "logdir" for d in logdirs]
    return [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]


def collect_logdirs(logdirs: Sequence[str]) -> List[RunSeries]:
    """Every series of every run under ``logdirs``, read as the TensorBoard tab reads them.

    One log directory: runs are named as in TensorBoard (relative to it; the directory itself
    by its base name). Several: each run's name is prefixed with its directory's base name.

    Raises:
        ReportError: naming the log directory that does not exist or holds no equivariance data.
    """
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    from lightning_equivariance_tb import data as tb_data
    from lightning_equivariance_tb import metadata

    if isinstance(logdirs, (str, os.PathLike)):
        logdirs = [logdirs]
    logdirs = [os.fspath(d) for d in logdirs]
    if not logdirs:
        raise ReportError("LOGDIR: give at least one log directory")
    for d in logdirs:
        if not os.path.isdir(d):
            raise ReportError(f"LOGDIR {d!r} is not a directory; give the folder TensorBoard would get as --logdir")
    labels = _run_names(logdirs)
    out: List[RunSeries] = []
    for d, label in zip(logdirs, labels):
        mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={metadata.PLUGIN_NAME: 0})
        mux.AddRunsFromDirectory(d)
        mux.Reload()
        reader = tb_data.Reader(data_provider.MultiplexerDataProvider(mux, d), 0)
        ctx = context.RequestContext()
        listing = reader.runs(ctx, "")
        if not listing["runs"]:
            raise ReportError(
                f"LOGDIR {d!r} holds no equivariance data: write it with EquivarianceCallback and a "
                "TensorBoardLogger, `lightning-equivariance measure`, or lightning_equivariance_tb.summary"
            )
        for measure, groups in listing["measures"].items():
            for group in groups:
                runs = [r["run"] for r in listing["runs"] if any(
                    s["measure"] == measure and s["group"] == group for s in r["series"])]
                for body in reader.series(ctx, "", runs, measure, group):
                    run = body["run"]
                    name = label if run == "." else run
                    if len(logdirs) > 1 and run != ".":
                        name = f"{label}/{run}"
                    stats = body.get("stats") or {}
                    out.append(RunSeries(
                        name, measure, group, body["layers"], body["parts"], body["steps"], _decode(body, "values"),
                        model=body.get("model", ""), baseline=body.get("baseline", False),
                        run_group=body.get("run_group", ""), higher_is_better=body.get("higher_is_better", True),
                        epochs=body.get("epochs"),
                        **{f: _decode(stats[f], "values") if f in stats else None for f in _STATS},
                    ))
    return out


def runs_from_report(report: Any, run: str = "report", step: int = 0, *, model: str = "", baseline: bool = False,
                     run_group: str = "", epoch: Optional[int] = None) -> List[RunSeries]:
    """The series of one :class:`~lightning_equivariance.report.MeasureReport` as one run at ``step``."""
    out = []
    for s in report.series():
        def column(x):
            return None if x is None else np.asarray(x, dtype=np.float64).reshape(-1, 1)

        out.append(RunSeries(
            run, s.measure, s.group, s.layers, s.parts, [step], column(s.values), model=model, baseline=baseline,
            run_group=run_group, higher_is_better=s.higher_is_better, epochs=[epoch],
            **{f: column(getattr(s, f, None)) for f in _STATS},
        ))
    return out


# ------------------------------------------------------------------ the data --


def _json_value(v: float):
    """NaN -> None; infinities -> "inf" / "-inf" (JSON has no infinities); else a float."""
    v = float(v)
    if math.isnan(v):
        return None
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return round(v, 7)


def _rows(matrix: Optional[np.ndarray]):
    if matrix is None:
        return None
    return [[_json_value(v) for v in row] for row in np.asarray(matrix, dtype=np.float64)]


def _part_matrix(values: np.ndarray, parts: Sequence[str]) -> Tuple[List[str], np.ndarray]:
    from lightning_equivariance_tb.data import part_mean_matrix

    return part_mean_matrix(values, parts)


def _group_entry(name: str, members: List[RunSeries], confidence: float) -> Dict[str, Any]:
    """A group of two or more runs: per x axis (``"step"``, ``"epoch"``; ``None`` where no run
    recorded an epoch) the tab's own ``/groups`` body of its runs
    (:func:`lightning_equivariance_tb.data.group_body`: per layer and per part, the mean over runs,
    the interval ends and the number of runs at each x, each run's last point at an x)."""
    from lightning_equivariance_tb.data import group_body

    def metadata_of(r: RunSeries) -> Dict[str, Any]:
        return {"layers": r.layers, "parts": r.parts, "baseline": r.baseline, "model": r.model,
                "higher_is_better": r.higher_is_better}

    axes: Dict[str, Any] = {}
    for axis in ("step", "epoch"):
        runs = [(r.run, metadata_of(r), r.steps if axis == "step" else r.epochs, r.values) for r in members]
        recorded = any(x is not None for _, _, xs, _ in runs for x in xs)
        axes[axis] = group_body(name, runs, confidence) if recorded else None
    return {
        "name": name,
        "runs": [r.run for r in members],
        "baseline": all(r.baseline for r in members),
        "layers": axes["step"]["layers"],
        "parts": axes["step"]["parts"],
        "axes": axes,
    }


def build_data(runs: Sequence[RunSeries], *, group_regex: Optional[str] = None, confidence: float = 0.95,
               title: str = "Equivariance report", sources: Sequence[str] = ()) -> Dict[str, Any]:
    """The JSON the report's page draws: per (measure, group), every run and every group.

    Groups come from :func:`lightning_equivariance_tb.run_groups.assign_groups` (the recorded
    ``run_group`` names, or ``group_regex``'s first capture group); their statistics are the
    tab's (:func:`lightning_equivariance_tb.data.group_body`) at ``confidence``. A group of
    one run is not a group (the run is shown as itself).

    Raises:
        ReportError: for no runs, or a ``group_regex`` that is not a regular expression.
    """
    from lightning_equivariance_tb import metadata
    from lightning_equivariance_tb.run_groups import assign_groups, interval_label

    if not runs:
        raise ReportError("no runs to report (nothing was measured or logged)")
    if not 0.0 < float(confidence) < 1.0:
        raise ReportError(f"confidence (--confidence) must be in (0, 1), got {confidence!r}")
    recorded = {}
    for r in runs:
        recorded[r.run] = recorded.get(r.run) or r.run_group
    try:
        groups = assign_groups(recorded, group_regex)
    except ValueError as e:
        raise ReportError(f"--group-regex: {e}") from None
    groups = {g: members for g, members in groups.items() if len(members) > 1}
    group_of = {run: g for g, members in groups.items() for run in members}
    series = []
    keys = list(dict.fromkeys((r.measure, r.group) for r in runs))
    for measure, group in keys:
        these = [r for r in runs if (r.measure, r.group) == (measure, group)]
        entries = []
        for r in these:
            names, pm = _part_matrix(r.values, r.parts)
            entries.append({
                "run": r.run, "model": r.model, "baseline": r.baseline, "run_group": group_of.get(r.run, ""),
                "recorded_group": r.run_group, "layers": r.layers, "parts": r.parts,
                "steps": r.steps, "epochs": [None if e is None else int(e) for e in r.epochs],
                "values": _rows(r.values), **{f: _rows(getattr(r, f)) for f in _STATS},
                "part_names": names, "part_values": _rows(pm),
            })
        group_entries = []
        for g, members in groups.items():
            member_series = [r for r in these if r.run in members]
            if len(member_series) > 1:
                group_entries.append(_group_entry(g, member_series, confidence))
        series.append({
            "measure": measure, "group": group, "higher_is_better": these[0].higher_is_better,
            "runs": entries, "groups": group_entries,
        })
    return {
        "title": str(title),
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "sources": [str(s) for s in sources],
        "confidence": float(confidence),
        "interval_label": interval_label(confidence),
        "group_regex": group_regex or "",
        "known_parts": list(metadata.PARTS),
        "series": series,
    }


# ------------------------------------------------------------------ the page --


def _script_json(data: Any) -> str:
    """JSON safe inside a ``<script type="application/json">`` element (no ``</script>``)."""
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    for a, b in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(a, b)
    return text


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as e:  # pragma: no cover - plotly is a dependency
        raise ReportError("the HTML report needs plotly (pip install plotly)") from e
    return get_plotlyjs()


def _page(name: str) -> str:
    """A file of the page (``report.css``, ``report.js``: the glue, ``report.html``: the body)
    from ``lightning_equivariance/report_page/``."""
    return resources.files("lightning_equivariance").joinpath("report_page", name).read_text(encoding="utf-8")


def _tab_file(name: str) -> str:
    """A file of the TensorBoard tab's frontend (``lightning_equivariance_tb/static/``, shipped by the
    plugin distribution this library depends on)."""
    return resources.files("lightning_equivariance_tb").joinpath("static", name).read_text(encoding="utf-8")


#: The prefix of the bare specifiers under which the page's import map offers the tab's modules.
MODULE_PREFIX = "lightning-equivariance-tb/"
#: A module's relative imports (``from "./util.js"``, ``import "./x.js"``): the tab's modules are
#: siblings, so every specifier names one file of ``static/``.
_RELATIVE_IMPORT = re.compile(r"""(\b(?:from|import)\s*)(["'])\./([\w.-]+\.js)\2""")


def _bare_imports(source: str) -> Tuple[str, List[str]]:
    """``source`` with its relative imports turned into the import map's bare specifiers, and the
    files it imports. A module in a ``data:`` URL has no base to resolve ``./util.js`` against, so
    the specifiers are the only text that changes; the code is the tab's, character for character."""
    imported = [m.group(3) for m in _RELATIVE_IMPORT.finditer(source)]
    return _RELATIVE_IMPORT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MODULE_PREFIX}{m.group(3)}{m.group(2)}",
                                source), imported


def view_modules(entry: str) -> Dict[str, str]:
    """``{file: source}`` of the tab's ES modules that ``entry`` (a module's source) needs,
    directly or through each other, with bare specifiers (:func:`_bare_imports`)."""
    _, wanted = _bare_imports(entry)
    modules: Dict[str, str] = {}
    while wanted:
        name = wanted.pop()
        if name in modules:
            continue
        modules[name], imported = _bare_imports(_tab_file(name))
        wanted.extend(imported)
    return modules


def _import_map(modules: Mapping[str, str]) -> str:
    """An import map offering each module under :data:`MODULE_PREFIX` as a ``data:`` URL (base64,
    so nothing in the code can end the ``<script>`` element)."""
    imports = {
        MODULE_PREFIX + name: "data:text/javascript;base64," + base64.b64encode(code.encode("utf-8")).decode("ascii")
        for name, code in sorted(modules.items())
    }
    return json.dumps({"imports": imports}, separators=(",", ":"))


def render_html(data: Mapping[str, Any]) -> str:
    """The page of :func:`build_data`'s ``data``: one HTML string with plotly.js, the data, the
    tab's own view modules (``heatmap.js``, ``charts.js``, ``views.js``, ``util.js`` of
    :mod:`lightning_equivariance_tb`, through an import map of ``data:`` URLs) and the page's glue
    inlined (nothing is loaded from anywhere): the report draws as the tab draws."""
    title = html.escape(str(data.get("title", "Equivariance report")))
    glue, _ = _bare_imports(_page("report.js"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{title}</title>\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<style>{_tab_file('style.css')}</style>\n"
        f"<style>{_page('report.css')}</style>\n"
        # plotly.js from the installed plotly package, inlined (never committed to this repository)
        f"<script>{_plotly_js()}</script>\n"
        f"<script type=\"importmap\">{_import_map(view_modules(_page('report.js')))}</script>\n"
        "</head>\n<body>\n"
        f"{_page('report.html')}\n"
        f"<script type=\"application/json\" id=\"report-data\">{_script_json(data)}</script>\n"
        f"<script type=\"module\">{glue}</script>\n"
        "</body>\n</html>\n"
    )


def write_html(path: str, data: Mapping[str, Any]) -> int:
    """Write the page of ``data`` to ``path`` (folders created); returns its size in bytes.

    Raises:
        ReportError: naming ``path`` when it cannot be written.
    """
    text = render_html(data)
    path = os.fspath(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise ReportError(f"-o/--output {path!r} cannot be written: {e.strerror or e}") from None
    return os.path.getsize(path)


def write_logdir_report(logdirs: Sequence[str], path: str, *, group_regex: Optional[str] = None,
                        title: Optional[str] = None, confidence: float = 0.95) -> int:
    """Read every run of ``logdirs`` and write one self-contained HTML report to ``path``.

    Returns the file's size in bytes. See :func:`collect_logdirs` and :func:`build_data`.
    """
    if isinstance(logdirs, (str, os.PathLike)):
        logdirs = [logdirs]
    runs = collect_logdirs(logdirs)
    data = build_data(runs, group_regex=group_regex, confidence=confidence,
                      title=title or "Equivariance report", sources=[os.fspath(d) for d in logdirs])
    return write_html(path, data)


def human_size(n: int) -> str:
    """``4.9 MB``-style size of ``n`` bytes."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"  # pragma: no cover
