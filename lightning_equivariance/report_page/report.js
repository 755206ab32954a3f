// The shareable HTML report's glue (lightning_equivariance.html_report): it reads the
// data embedded in the page (each group as the tab's own /groups body), turns each run
// into the shape of the tab's decoded /series body, and draws with the TensorBoard tab's own
// modules (heatmap.js, charts.js, views.js, util.js of lightning_equivariance_tb),
// which the page inlines through an import map of data: URLs (the "./x.js" specifiers
// below name those files; html_report makes them bare when it writes the page). So the report and the
// tab draw each view once: the canvas heatmap, the curves per part and per layer, and
// the layer profile on relative depth (runs with different layer lists line up by
// depth, never by layer name). plotly.js is inlined from the installed package.
//
// Safety: names from the logs reach the DOM through textContent and the canvases'
// fillText; plotly gets them through the tab's escaping figure builders.

import { FIXED_RANGES, PALETTE, decodeMatrix, directionHint, layerNames, num, plural } from "./util.js";
import { CanvasHeatmap, heatmapHeight, valueRange } from "./heatmap.js";
import { PLOT_CONFIG, curvesFigures, profileFigure } from "./charts.js";
import { cellNotes, groupCellNotes, uninformativeAt } from "./views.js";

const DATA = JSON.parse(document.getElementById("report-data").textContent);
const GROUP_MATRICES = ["mean", "low", "high", "n", "part_mean", "part_low", "part_high", "part_n"];
for (const t of DATA.series) {
  for (const g of t.groups) {
    for (const body of Object.values(g.axes)) if (body) for (const prefix of GROUP_MATRICES) decodeMatrix(body, prefix);
  }
}
const STATS = ["chance", "stderr", "margin", "margin_stderr", "margin_low", "significant"];
const state = { series: 0, axis: "step", heat: null, layer: null, mode: "both" };
const heatmap = new CanvasHeatmap();

const $ = (id) => document.getElementById(id);
const rows = (matrix) => matrix.map((row) => Float64Array.from(row, num));

function option(select, value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  select.append(o);
}

function current() { return DATA.series[state.series]; }
function axisTitle() { return state.axis === "step" ? "global step" : "epoch"; }
function hasEpochs(t) { return t.runs.some((r) => r.epochs.some((e) => e !== null)); }

/** [x values, columns] of a run along the chosen axis: every step, or the last
 * measurement of each recorded epoch. */
function columnsOf(r) {
  if (state.axis === "step") return [r.steps, r.steps.map((_, j) => j)];
  const last = new Map();
  r.epochs.forEach((e, j) => { if (e !== null) last.set(e, j); });
  const epochs = [...last.keys()].sort((a, b) => a - b);
  return [epochs, epochs.map((e) => last.get(e))];
}

/** A run of the data as the tab's decoded /series body, on the chosen axis. */
function seriesBody(r, t) {
  const [xs, cols] = columnsOf(r);
  const pick = (matrix) => rows(matrix).map((row) => Float64Array.from(cols, (j) => row[j]));
  const stats = {};
  for (const field of STATS) if (r[field]) stats[field] = { values: pick(r[field]) };
  return {
    run: r.run, model: r.model, baseline: r.baseline, run_group: r.run_group, higher_is_better: t.higher_is_better,
    layers: r.layers, parts: r.parts, steps: xs, epochs: cols.map((j) => r.epochs[j]),
    values: pick(r.values), part_names: r.part_names, part_values: pick(r.part_values),
    stats, missing: [], missingAt: new Map(),
  };
}

/** The tab's /groups body of a group on the chosen axis (decoded once, as the tab decodes it),
 * or null where its runs recorded no such x. */
function groupBody(g) {
  return g.axes[state.axis];
}

/** What is drawn now: the runs and groups of the chosen series, styled as the tab styles them. */
function view() {
  const t = current();
  const series = t.runs.map((r) => seriesBody(r, t));
  const groups = state.mode === "runs" ? [] : t.groups.map(groupBody).filter(Boolean);
  const members = new Set(groups.flatMap((g) => g.runs));
  const runColor = (run) => PALETTE[Math.max(0, t.runs.findIndex((r) => r.run === run)) % PALETTE.length];
  const baseline = (run) => t.runs.some((r) => r.run === run && r.baseline);
  return {
    t, series, groups,
    shown: series.filter((x) => state.mode !== "groups" || !members.has(x.run)),
    lineStyle: (run, width = 2) => ({
      color: runColor(run), width: baseline(run) ? width + 0.5 : width, dash: baseline(run) ? "dash" : "solid",
    }),
    groupStyle: (g) => ({ color: runColor(g.runs[0]), width: 2.5, dash: g.baseline ? "dash" : "solid" }),
    members: (g) => series.filter((x) => g.runs.includes(x.run)),
  };
}

function fillControls(t) {
  const s = $("series");
  s.replaceChildren();
  DATA.series.forEach((x, i) => option(s, i, `${x.measure} / ${x.group}`));
  s.value = state.series;
  const a = $("axis");
  a.replaceChildren();
  option(a, "step", "global step");
  if (hasEpochs(t)) option(a, "epoch", "epoch");
  else state.axis = "step";
  a.value = state.axis;
  const h = $("heat");
  h.replaceChildren();
  t.groups.filter(groupBody).forEach((g) => option(h, `g:${g.name}`,
    `group ${g.name} (mean of ${plural(g.runs.length, "run")})`));
  t.runs.forEach((r) => option(h, `r:${r.run}`, `run ${r.run}`));
  if (![...h.options].some((o) => o.value === state.heat)) state.heat = h.options[0].value;
  h.value = state.heat;
  const c = $("curve");
  c.replaceChildren();
  const layers = [...new Set(t.runs.flatMap((r) => r.layers))];
  layers.forEach((l) => option(c, l, l));
  if (!layers.includes(state.layer)) state.layer = layers[0];
  c.value = state.layer;
  $("mode-box").style.display = t.groups.length ? "" : "none";
  $("mode").value = state.mode;
}

/** The chosen run's or group's heatmap on the tab's canvas, on one colour scale for all. */
function drawHeatmap(v) {
  const groups = v.t.groups.map(groupBody).filter(Boolean);
  const range = valueRange(v.series.map((x) => x.values).concat(groups.map((g) => g.mean)));
  const common = {
    knownParts: DATA.known_parts, zmin: range.lo, zmax: range.hi, rowKind: "layer", xTitle: axisTitle(),
    barTitle: v.t.measure,
  };
  let spec;
  if (state.heat.startsWith("g:")) {
    const g = groups.find((x) => `g:${x.name}` === state.heat);
    spec = Object.assign({
      values: g.mean, cols: g.xs, rowLabels: layerNames(g.layers), parts: g.parts,
      reverse: v.t.higher_is_better === false, height: heatmapHeight(g.layers.length),
      title: `${g.name} (group mean of ${plural(g.runs.length, "run")})`,
      notes: groupCellNotes(g, DATA.interval_label), valueLabel: "mean",
    }, common);
  } else {
    const x = v.series.find((s) => `r:${s.run}` === state.heat);
    spec = Object.assign({
      values: x.values, cols: x.steps, rowLabels: layerNames(x.layers), parts: x.parts,
      reverse: v.t.higher_is_better === false, height: heatmapHeight(x.layers.length), title: x.run,
      notes: cellNotes(x, false), valueLabel: "value", uninformative: uninformativeAt(x),
    }, common);
  }
  const box = $("heatmap");
  if (heatmap.node.parentNode !== box) box.replaceChildren(heatmap.node);
  heatmap.draw(spec, box.clientWidth || 900);
  box.dataset.drawn = state.heat;
  $("heat-note").textContent = `Rows: layers in depth order (top = input side). Columns: ${axisTitle()}s. ` +
    `One colour scale for every run and group; ${directionHint(v.t.higher_is_better, v.t.measure)}. ` +
    "Hatched cells: layers not significantly above chance or ±∞ values; grey: no value.";
}

function react(id, figure) {
  return window.Plotly.react($(id), figure.traces, figure.layout, PLOT_CONFIG);
}

function drawCurves(v) {
  const { perPart, perLayer } = curvesFigures(v.shown, [state.layer], DATA.known_parts, v.t.measure, v.lineStyle, {
    groups: v.groups, groupStyle: v.groupStyle, interval: DATA.interval_label, xTitle: axisTitle(),
    members: v.members,
  });
  react("curves", perPart);
  react("curves-layer", perLayer);
}

function drawProfile(v) {
  react("profile", profileFigure(v.shown, null, v.t.measure, v.lineStyle, {
    groups: v.groups, groupStyle: v.groupStyle, interval: DATA.interval_label, xTitle: axisTitle(),
    members: v.members,
  }));
}

function drawTable(t) {
  const body = $("runs-body");
  body.replaceChildren();
  for (const r of t.runs) {
    const tr = document.createElement("tr");
    [r.run, r.model, r.run_group || "", r.baseline ? "yes" : "", r.layers.length, r.steps.length,
      r.steps.length ? r.steps[r.steps.length - 1] : "", r.chance ? "yes" : "", r.stderr ? "yes" : ""].forEach((x) => {
      const td = document.createElement("td");
      td.textContent = String(x);
      tr.append(td);
    });
    body.append(tr);
  }
  const notes = [];
  if (t.groups.length) {
    notes.push(`Groups: thick lines are the mean over the group's runs, shaded: ${DATA.interval_label}.`);
  }
  notes.push("Baselines dashed with diamonds; dotted: chance level; band: ± stderr. Profile: x is the relative " +
    "depth (0 = first measured layer, 1 = last) at each run's last measurement.");
  if (FIXED_RANGES[t.measure]) notes.push(`y axes: the measure's range ${FIXED_RANGES[t.measure].join(" to ")}.`);
  $("notes").textContent = notes.join(" ");
}

function render() {
  const t = current();
  fillControls(t);
  const v = view();
  // one measurement per run (MeasureReport.to_html): no curves to draw
  const over = t.runs.some((r) => r.steps.length > 1);
  $("curves-view").style.display = over ? "" : "none";
  drawHeatmap(v);
  if (over) drawCurves(v);
  drawProfile(v);
  drawTable(t);
  document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
}

$("title").textContent = DATA.title;
$("meta").textContent = `Generated ${DATA.generated}${DATA.sources.length ? ` from ${DATA.sources.join(", ")}` : ""}` +
  `${DATA.group_regex ? `; groups by the pattern ${DATA.group_regex}` : ""}. Self-contained: no network needed.`;
$("series").onchange = (e) => { state.series = Number(e.target.value); state.heat = null; render(); };
$("axis").onchange = (e) => { state.axis = e.target.value; render(); };
$("heat").onchange = (e) => { state.heat = e.target.value; render(); };
$("curve").onchange = (e) => { state.layer = e.target.value; render(); };
$("mode").onchange = (e) => { state.mode = e.target.value; render(); };
window.addEventListener("resize", () => heatmap.spec && heatmap.redraw($("heatmap").clientWidth || 900));
render();
