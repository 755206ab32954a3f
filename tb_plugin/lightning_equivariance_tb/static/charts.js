// The plotly views of the "Equivariance" tab: curves, layer profile, channel bars,
// Spearman. Each figure is built by a pure function ({traces, layout}) from the
// routes' bodies, so what reaches plotly - which renders a subset of HTML in
// labels, legends and hover text - can be checked without a browser: every string
// from the logs (run, layer, part, measure, scalar names) goes through esc().
//
// plotly.js itself is the bundle of the installed plotly Python package, served by
// the plugin (./plotly.min.js) and loaded on first need.
//
// Statistics (docs/measures.md §7, the v2 stats tag): where a run has them, its
// chance level is a thin dotted line of the run's colour without markers, in the
// legend as "chance · run" (values: solid lines with round markers; baseline runs:
// dashed with diamonds), and its ± stderr a translucent band around the value -
// traces on the curves (meta "chance" and "stderr"), shapes on the layer profile
// (whose traces stay one per run) - and the hover reads value, chance and stderr.
//
// A bounded measure (FIXED_RANGES: the metric classes' plot bounds) is drawn on
// its natural range unless the view asks to fit the data, and every interval
// (± stderr, a group's interval over runs) is clipped to that range; the hover
// gives the interval as computed and says that it was clipped.
//
// Run groups (issue 15, the /groups route): a group of two or more runs is drawn
// as its mean over runs (a line of the group's colour, dashed for baseline groups,
// meta "group-mean") with the interval over runs as a band (meta "group-band" on
// the curves, a shape named "group-band" on the profile); the hover gives the
// interval and the number of runs at that point. A group of one run is the run.
// With the group's member series (options.members) the mean of their chance levels
// is a dotted line of the group's colour (meta "group-chance").
//
// Infinite values sit on a dotted "+∞"/"-∞" line at the y-axis ends of line and bar
// plots, drawn as triangles, and read "∞" in the hover (placeInfinities).

import {
  FIXED_RANGES, esc, fmt, layerNames, niceStride, orderParts, partColor, partStatRow, partSymbol, plural, statRows,
  statsText, marginText,
} from "./util.js";

/** Line style of chance levels: dotted, thinner and fainter than the values. */
const CHANCE_LINE = { width: 1.5, dash: "dot" };
const CHANCE_OPACITY = 0.75;

/** [lo, hi] of a measure's declared range (the metric classes' plot bounds), or null. */
export function declaredRange(measure) {
  const r = FIXED_RANGES[measure];
  return r ? [r[0], r[1]] : null;
}

/** An interval's ends clipped to `range` ([lo, hi] or null): {low, high, clipped},
 * clipped[i] true where an end was moved. */
export function clipInterval(low, high, range) {
  const lowArr = Array.from(low), highArr = Array.from(high);
  if (!range) return { low: lowArr, high: highArr, clipped: lowArr.map(() => false) };
  const [lo, hi] = range;
  const clip = (v) => (Number.isFinite(v) ? Math.min(hi, Math.max(lo, v)) : v);
  return {
    low: lowArr.map(clip),
    high: highArr.map(clip),
    clipped: lowArr.map((v, i) => (Number.isFinite(v) && v < lo) || (Number.isFinite(highArr[i]) && highArr[i] > hi)),
  };
}

/** Hover words of an interval clipped to the range. */
function clippedNote(range) {
  return ` (drawn clipped to [${range[0]}, ${range[1]}])`;
}

/** A y axis on the measure's range [lo, hi], widened to any value outside it, a
 * little padding on both ends; null when `range` is null. */
export function rangeAxis(range, traces) {
  if (!range) return null;
  let lo = range[0], hi = range[1];
  for (const t of traces) {
    for (const v of t.y || []) if (Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  const pad = 0.04 * (hi - lo || 1);
  return { range: [lo - pad, hi + pad], autorange: false };
}

/** The mean chance level of a group's member runs per layer (or per part, `parts`)
 * and per x of the group: {layer: rows, part: rows}, NaN where no member has one;
 * null when no member has chance levels. `xOf(x)`: a run's x values (the group's units). */
export function groupChance(g, members, xOf = (x) => x.steps) {
  const withChance = members.filter((m) => statRows(m, "chance"));
  if (!withChance.length) return null;
  const mean = (rowOf) => {
    const sums = new Float64Array(g.xs.length), counts = new Uint32Array(g.xs.length);
    for (const m of withChance) {
      const row = rowOf(m);
      if (!row) continue;
      const at = new Map(Array.from(xOf(m)).map((v, j) => [v, j]));
      g.xs.forEach((v, j) => {
        const k = at.get(v);
        if (k != null && Number.isFinite(row[k])) { sums[j] += row[k]; counts[j] += 1; }
      });
    }
    return Float64Array.from(sums, (s, j) => (counts[j] ? s / counts[j] : NaN));
  };
  return {
    layer: g.layers.map((name) => mean((m) => {
      const i = m.layers.indexOf(name);
      return i >= 0 ? statRows(m, "chance")[i] : null;
    })),
    part: g.part_names.map((part) => mean((m) => (
      m.part_names.includes(part) ? partStatRow(m, "chance", part) : null))),
  };
}

const FONT = { family: "Roboto, Helvetica Neue, Arial, sans-serif", size: 12, color: "#212121" };
export const PLOT_CONFIG = {
  responsive: true,
  displayModeBar: "hover",
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
};

let plotlyPromise = null;

/** Load plotly.js once (a <script>, compiled off the main thread by the browser
 * where it can); a failed load may be retried. */
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "./plotly.min.js";
      script.async = true;
      script.addEventListener("load", () => {
        performance.mark("eq-plotly");
        resolve(window.Plotly);
      });
      script.addEventListener("error", () => {
        plotlyPromise = null;
        script.remove();
        reject(new Error("could not load ./plotly.min.js (is the plotly Python package installed?)"));
      });
      document.head.append(script);
    });
  }
  return plotlyPromise;
}

export function baseLayout(extra = {}) {
  return Object.assign({
    font: FONT,
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    margin: { l: 60, r: 20, t: 10, b: 40 },
    uirevision: "keep",
    hoverlabel: { namelength: -1 },
  }, extra);
}

/**
 * Put the ±∞ points of plotly traces at the ends of their y axis, clearly marked:
 * a dotted line labelled "+∞" / "-∞", triangles for the points, and "∞" in the
 * hover (every trace gets `text` = its formatted values, so hovertemplates use
 * %{text}). `axis` is "" or the subplot number.
 */
export function placeInfinities(traces, layout, axis = "") {
  let lo = Infinity, hi = -Infinity, pos = false, neg = false;
  for (const t of traces) {
    t.y = Array.from(t.y, (v) => (v == null ? NaN : v));
    t.text = t.y.map((v) => fmt(v));
    for (const v of t.y) {
      if (v === Infinity) pos = true;
      else if (v === -Infinity) neg = true;
      else if (!Number.isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    }
  }
  if (!pos && !neg) return false;
  if (!(hi >= lo)) { lo = 0; hi = 1; }
  const pad = (hi - lo) * 0.12 || 0.5;
  const top = hi + pad, bottom = lo - pad;
  for (const t of traces) {
    const raw = t.y;
    t.y = raw.map((v) => (v === Infinity ? top : v === -Infinity ? bottom : v));
    if (t.type === "bar") continue;
    const marker = Object.assign({}, t.marker);
    const symbol = marker.symbol || "circle";
    const size = marker.size || 6;
    marker.symbol = raw.map((v, i) => (v === Infinity ? "triangle-up" : v === -Infinity ? "triangle-down"
      : Array.isArray(symbol) ? symbol[i] : symbol));
    marker.size = raw.map((v, i) => (Number.isFinite(v) || Number.isNaN(v) ? (Array.isArray(size) ? size[i] : size) : 11));
    t.marker = marker;
  }
  const key = `yaxis${axis}`;
  layout[key] = Object.assign({}, layout[key], {
    range: [neg ? bottom - pad * 0.6 : lo - pad * 0.4, pos ? top + pad * 0.6 : hi + pad * 0.4],
    autorange: false,
  });
  layout.shapes = layout.shapes || [];
  layout.annotations = layout.annotations || [];
  for (const [present, y, label] of [[pos, top, "+∞"], [neg, bottom, "-∞"]]) {
    if (!present) continue;
    layout.shapes.push({
      type: "line", xref: `x${axis} domain`, x0: 0, x1: 1, yref: `y${axis}`, y0: y, y1: y,
      line: { color: "#9e9e9e", width: 1, dash: "dot" },
    });
    layout.annotations.push({
      xref: `x${axis} domain`, x: 0, xanchor: "left", yref: `y${axis}`, y, yanchor: "bottom",
      text: `<b>${label}</b>`, showarrow: false, font: { size: 13, color: "#424242" },
    });
  }
  return true;
}

/**
 * An x axis of whole epochs/steps over `xs`: linear ticks at a whole stride of
 * 1, 2, 5 x 10^k (at most about 8 ticks), never between two epochs; a single
 * point gets the range [x - 0.5, x + 0.5] (one tick, the point in the middle).
 */
export function integerAxis(xs) {
  const finite = Array.from(xs).filter(Number.isFinite);
  if (!finite.length) return { tickformat: "d" };
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const axis = { tickmode: "linear", tick0: 0, dtick: niceStride(Math.max(1, Math.ceil((hi - lo) / 8))), tickformat: "d" };
  if (hi === lo) Object.assign(axis, { range: [lo - 0.5, hi + 0.5], autorange: false });
  return axis;
}

/** Small multiples: one panel per key, one line per run. `title(key)` is plain
 * text (escaped here); `lines(key)` gives {group, trace} with escaped strings. */
export function panelsFigure(keys, title, lines, yTitle, options = {}) {
  const n = keys.length;
  const columns = n <= 3 ? Math.max(n, 1) : 3;
  const rowsN = Math.max(1, Math.ceil(n / columns));
  const traces = [];
  const annotations = [];
  const legendSeen = new Set();
  const gap = 0.06;
  const layout = baseLayout({
    height: 260 * rowsN + 40,
    margin: { l: 60, r: 20, t: 30, b: 40 },
    showlegend: true,
    legend: { orientation: "h", y: -0.12 / rowsN, yanchor: "top" },
  });
  keys.forEach((key, k) => {
    const axis = k === 0 ? "" : String(k + 1);
    const col = k % columns, row = Math.floor(k / columns);
    const w = (1 - gap * (columns - 1)) / columns;
    const h = (1 - 0.12 * (rowsN - 1)) / rowsN;
    const x0 = col * (w + gap), y1 = 1 - row * (h + 0.12);
    layout[`xaxis${axis}`] = Object.assign({ domain: [x0, x0 + w], anchor: `y${axis}`, title: { text: esc(options.xTitle || "epoch"), standoff: 2 }, zeroline: false },
      integerAxis(options.xs || []));
    layout[`yaxis${axis}`] = { domain: [y1 - h, y1], anchor: `x${axis}`, zeroline: false, title: col === 0 ? { text: esc(yTitle) } : undefined };
    if (options.sharedY && k > 0) layout[`yaxis${axis}`].matches = "y";
    annotations.push({
      text: `<b>${esc(title(key))}</b>`, xref: "paper", yref: "paper", x: x0 + w / 2, y: y1,
      xanchor: "center", yanchor: "bottom", showarrow: false, font: { size: 12 },
    });
    const panelTraces = [], extras = [];
    for (const line of lines(key)) {
      panelTraces.push(Object.assign({
        type: "scatter", mode: "lines+markers", xaxis: `x${axis}`, yaxis: `y${axis}`,
        legendgroup: line.group, showlegend: !legendSeen.has(line.group), marker: { size: 4 },
      }, line.trace));
      legendSeen.add(line.group);
      for (const extra of line.extras || []) {
        // chance lines have a legend entry of their own (once), beside their run's
        const charted = extra.meta === "chance" || extra.meta === "group-chance";
        const entry = charted ? `${line.group}\u0000${extra.meta}` : null;
        extras.push(Object.assign(extra, {
          xaxis: `x${axis}`, yaxis: `y${axis}`, legendgroup: line.group,
          showlegend: Boolean(entry) && !legendSeen.has(entry),
        }));
        if (entry) legendSeen.add(entry);
      }
    }
    const natural = options.fitToData ? null : rangeAxis(options.range, panelTraces.concat(extras));
    if (natural) Object.assign(layout[`yaxis${axis}`], natural);
    placeInfinities(panelTraces, layout, axis);
    traces.push(...extras, ...panelTraces); // bands and chance lines under the values
  });
  layout.annotations = annotations.concat(layout.annotations || []);
  return { traces, layout };
}

/** rgba() of a "#rrggbb" or "#rgb" colour (other colours are returned as they are). */
export function rgba(color, alpha) {
  if (/^#[0-9a-f]{3}$/i.test(color || "")) color = `#${[1, 2, 3].map((i) => color[i] + color[i]).join("")}`;
  if (!/^#[0-9a-f]{6}$/i.test(color || "")) return color;
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(color.slice(i, i + 2), 16));
  return `rgba(${r},${g},${b},${alpha})`;
}

/** [start, end) index runs where every array holds a finite number. */
export function finiteRuns(n, ...arrays) {
  const runs = [];
  let start = -1;
  for (let i = 0; i <= n; i++) {
    const ok = i < n && arrays.every((a) => Number.isFinite(a[i]));
    if (ok && start < 0) start = i;
    if (!ok && start >= 0) { runs.push([start, i]); start = -1; }
  }
  return runs;
}

/** Polygon coordinates of the band between `low` and `high`, one closed piece per
 * run of points where both are finite, pieces separated by null. */
export function boundsPolygons(xs, low, high) {
  const x = [], y = [];
  for (const [a, b] of finiteRuns(xs.length, low, high)) {
    if (x.length) { x.push(null); y.push(null); }
    for (let i = a; i < b; i++) { x.push(xs[i]); y.push(high[i]); }
    for (let i = b - 1; i >= a; i--) { x.push(xs[i]); y.push(low[i]); }
  }
  return { x, y };
}

/** A polygon of boundsPolygons/bandPolygons as an SVG path for a layout shape. */
function polygonPath(band) {
  const pieces = [];
  band.x.forEach((v, i) => {
    if (v == null) return;
    const first = i === 0 || band.x[i - 1] == null;
    const last = i === band.x.length - 1 || band.x[i + 1] == null;
    pieces.push(`${first ? "M" : "L"}${v},${band.y[i]}${last ? " Z" : ""}`);
  });
  return pieces.join(" ");
}

/** Polygon coordinates of value ± stderr, one closed piece per run of finite
 * points, pieces separated by null (plotly's fill "toself" closes each). */
export function bandPolygons(xs, values, stderr) {
  const x = [], y = [];
  for (const [a, b] of finiteRuns(xs.length, values, stderr)) {
    if (x.length) { x.push(null); y.push(null); }
    for (let i = a; i < b; i++) { x.push(xs[i]); y.push(values[i] + stderr[i]); }
    for (let i = b - 1; i >= a; i--) { x.push(xs[i]); y.push(values[i] - stderr[i]); }
  }
  return { x, y };
}

/** Traces of a run's statistics on one line: the ± stderr band (clipped to
 * `range`, [lo, hi] or null) and the dotted chance line (empty when the run has neither). */
export function statTraces(xs, values, chance, stderr, color, runName, range = null) {
  const out = [];
  if (stderr && Array.from(stderr).some(Number.isFinite)) {
    const v = Array.from(values), e = Array.from(stderr);
    const clipped = range && clipInterval(v.map((a, i) => a - e[i]), v.map((a, i) => a + e[i]), range);
    const band = clipped ? boundsPolygons(xs, clipped.low, clipped.high) : bandPolygons(xs, v, e);
    if (band.x.length) {
      out.push({
        type: "scatter", mode: "lines", meta: "stderr", name: `± stderr · ${esc(runName)}`,
        x: band.x, y: band.y, fill: "toself", fillcolor: rgba(color, 0.18),
        line: { width: 0, color: rgba(color, 0) }, hoverinfo: "skip",
      });
    }
  }
  if (chance && Array.from(chance).some(Number.isFinite)) {
    out.push({
      type: "scatter", mode: "lines", meta: "chance", name: `chance · ${esc(runName)}`,
      x: Array.from(xs), y: Array.from(chance, (v) => (Number.isFinite(v) ? v : null)),
      line: Object.assign({ color }, CHANCE_LINE), opacity: CHANCE_OPACITY, hoverinfo: "skip", connectgaps: false,
    });
  }
  return out;
}

/** Per-point hover lines of the statistics ("<br>chance … · ± stderr …"), with
 * a note where value ± stderr leaves `range` (the band is drawn clipped). */
function statsHover(n, chance, stderr, values = null, range = null) {
  return Array.from({ length: n }, (_, i) => {
    let text = statsText(chance ? chance[i] : NaN, stderr ? stderr[i] : NaN);
    const e = stderr ? stderr[i] : NaN, v = values ? values[i] : NaN;
    if (range && Number.isFinite(e) && Number.isFinite(v) && (v - e < range[0] || v + e > range[1])) {
      text += clippedNote(range);
    }
    return text ? `<br>${esc(text)}` : "";
  });
}

/** One run on a panel; `xs`: its x values (default: the event steps), `xTitle`
 * the x axis's name for the hover, `range` the measure's ([lo, hi] or null).
 * Baseline runs: dashed (lineStyle), diamond markers, "(baseline)" in the legend. */
function runTrace(x, ys, name, lineStyle, chance = null, stderr = null, xs = x.steps, xTitle = "epoch", range = null) {
  const style = lineStyle(x.run);
  const hasStats = Boolean(chance || stderr);
  const trace = {
    x: Array.from(xs), y: Array.from(ys), name: esc(x.baseline ? `${x.run} (baseline)` : x.run), line: style,
    hovertemplate: `${esc(x.run)}<br>${esc(name)}<br>${esc(xTitle)} %{x}<br>%{text}${hasStats ? "%{hovertext}" : ""}<extra></extra>`,
  };
  if (x.baseline) trace.marker = { size: 6, symbol: "diamond" };
  if (hasStats) trace.hovertext = statsHover(x.steps.length, chance, stderr, ys, range);
  return {
    group: x.run,
    trace,
    extras: hasStats ? statTraces(Array.from(xs), ys, chance, stderr, style.color, x.run, range) : [],
  };
}

/** A run's line with its margin above chance and interval added to the hover (docs/measures.md
 * §7; a part's: the mean of its layers'); the line as it was without a margin. */
function withMargin(line, margin, low) {
  if (!margin || !line.trace.hovertext) return line;
  line.trace.hovertext = line.trace.hovertext.map((h, j) => {
    const text = marginText(margin[j], low ? low[j] : NaN);
    return text ? `${h}<br>${esc(text)}` : h;
  });
  return line;
}

/** Hover text of a group's points: the interval (and whether it was drawn clipped
 * to the measure's range) and how many runs have a value. */
function groupHover(g, low, high, n, interval, clipped = null, range = null) {
  return Array.from({ length: g.xs.length }, (_, j) => esc(
    `${Number.isFinite(low[j]) ? `${interval}: ${fmt(low[j])} to ${fmt(high[j])}` : "no interval (one run)"}` +
    `${clipped && clipped[j] ? clippedNote(range) : ""} · ${plural(n[j], "run")} of ${g.runs.length}`));
}

/** A group's mean over runs on one panel: its interval band (clipped to `range`)
 * and, given `chance` (the members' mean chance level on this panel), a dotted
 * chance line as extra traces. */
export function groupLine(g, k, prefix, name, style, interval, xTitle = "epoch", range = null, chance = null) {
  const mean = Array.from(g[`${prefix}mean`][k]);
  const low = Array.from(g[`${prefix}low`][k]), high = Array.from(g[`${prefix}high`][k]);
  const n = Array.from(g[`${prefix}n`][k]);
  const extras = [];
  const clipped = clipInterval(low, high, range);
  const band = boundsPolygons(g.xs, clipped.low, clipped.high);
  if (band.x.length) {
    extras.push({
      type: "scatter", mode: "lines", meta: "group-band", name: esc(`${interval} · ${g.name}`),
      x: band.x, y: band.y, fill: "toself", fillcolor: rgba(style.color, 0.22),
      line: { width: 0, color: rgba(style.color, 0) }, hoverinfo: "skip",
    });
  }
  if (chance && Array.from(chance).some(Number.isFinite)) {
    extras.push({
      type: "scatter", mode: "lines", meta: "group-chance", name: esc(`chance · ${g.name} (mean of its runs')`),
      x: Array.from(g.xs), y: Array.from(chance, (v) => (Number.isFinite(v) ? v : null)),
      line: Object.assign({ color: style.color }, CHANCE_LINE), opacity: CHANCE_OPACITY, hoverinfo: "skip",
      connectgaps: false,
    });
  }
  return {
    group: `group\u0000${g.name}`,
    trace: {
      x: Array.from(g.xs), y: mean, meta: "group-mean", line: style,
      name: esc(`${g.name} · mean of ${plural(g.runs.length, "run")}`),
      customdata: groupHover(g, low, high, n, interval, clipped.clipped, range),
      hovertemplate: `${esc(g.name)} (group mean)<br>${esc(name)}<br>${esc(xTitle)} %{x}<br>mean %{text}<br>%{customdata}<extra></extra>`,
    },
    extras,
  };
}

/** Curves over epochs: per depth part (the server's part means) and per layer,
 * with each run's chance level (dotted) and ± stderr band where it has them.
 * options: groups, groupStyle, interval, xOf, xTitle, sharedY; members(g) (the
 * group's loaded runs: its mean chance level); fitToData (a bounded measure's
 * y axes fit the data instead of its natural range). */
export function curvesFigures(series, layers, knownParts, measure, lineStyle, options = {}) {
  const groups = options.groups || [];
  const groupStyle = options.groupStyle;
  const interval = options.interval || "interval over runs";
  const xOf = options.xOf || ((x) => x.steps);
  const xTitle = options.xTitle || "epoch";
  const range = declaredRange(measure);
  const chanceOf = new Map(groups.map((g) => [g, options.members ? groupChance(g, options.members(g), xOf) : null]));
  const xs = series.flatMap((x) => Array.from(xOf(x))).concat(groups.flatMap((g) => g.xs));
  const panel = { xs, sharedY: Boolean(options.sharedY), xTitle, range, fitToData: Boolean(options.fitToData) };
  const parts = orderParts(series.flatMap((x) => x.part_names).concat(groups.flatMap((g) => g.part_names)), knownParts);
  const perPart = panelsFigure(parts, (p) => p, (part) => groups
    .filter((g) => g.part_names.includes(part))
    .map((g) => {
      const k = g.part_names.indexOf(part), chance = chanceOf.get(g);
      return groupLine(g, k, "part_", part, groupStyle(g), interval, xTitle, range, chance && chance.part[k]);
    })
    .concat(series
      .filter((x) => x.part_names.includes(part))
      .map((x) => withMargin(runTrace(x, x.part_values[x.part_names.indexOf(part)], part, lineStyle,
        partStatRow(x, "chance", part), partStatRow(x, "stderr", part), xOf(x), xTitle, range),
      partStatRow(x, "margin", part), partStatRow(x, "margin_low", part)))), measure, panel);
  const perLayer = panelsFigure(layers, (l) => l, (layer) => groups
    .filter((g) => g.layers.includes(layer))
    .map((g) => {
      const k = g.layers.indexOf(layer), chance = chanceOf.get(g);
      return groupLine(g, k, "", layer, groupStyle(g), interval, xTitle, range, chance && chance.layer[k]);
    })
    .concat(series
      .filter((x) => x.layers.includes(layer))
      .map((x) => {
        const i = x.layers.indexOf(layer);
        const chance = statRows(x, "chance"), stderr = statRows(x, "stderr");
        const margin = statRows(x, "margin"), low = statRows(x, "margin_low");
        const line = runTrace(x, x.values[i], layer, lineStyle, chance && chance[i], stderr && stderr[i], xOf(x),
          xTitle, range);
        return withMargin(line, margin && margin[i], low && low[i]);
      })), measure, panel);
  return { perPart, perLayer };
}

/** Index of the point to show for `step` (last one at or before it). */
export function pointAt(x, step) {
  if (step == null) return x.steps.length - 1;
  let best = -1;
  x.steps.forEach((s, i) => { if (s <= step) best = i; });
  return best;
}

/** SVG path through the finite points (a new "M" after each gap). */
function linePath(xs, ys) {
  return finiteRuns(xs.length, xs, ys)
    .map(([a, b]) => xs.slice(a, b).map((v, k) => `${k ? "L" : "M"}${v},${ys[a + k]}`).join(" "))
    .join(" ");
}

/** Index of the point of a group at `step` (its last x at or before it). */
function groupPointAt(g, step) {
  return pointAt({ steps: g.xs }, step);
}

/** Layer profile at one epoch: relative depth on x, one line per run; each
 * run's chance level (dotted) and ± stderr band are layout shapes. With
 * `options.groups` (two or more runs each) a group's mean over runs is a line
 * (meta "group-mean") and its interval over runs a shape named "group-band";
 * with `options.members(g)` the members' mean chance level a dotted shape named
 * "group-chance". Intervals are clipped to a bounded measure's range, on which
 * the y axis is drawn unless `options.fitToData`. */
export function profileFigure(series, step, measure, lineStyle, options = {}) {
  const traces = [];
  const shapes = [];
  const interval = options.interval || "interval over runs";
  const xOf = options.xOf || ((x) => x.steps);
  const xTitle = options.xTitle || "epoch";
  const range = declaredRange(measure);
  for (const g of options.groups || []) {
    // the group's x values are in the axis's units: groupX is the chosen step's
    const t = groupPointAt(g, step == null ? null : (options.groupX == null ? step : options.groupX));
    if (t < 0) continue;
    const L = g.layers.length;
    const style = options.groupStyle(g);
    const xs = g.layers.map((_, i) => (L > 1 ? i / (L - 1) : 0));
    const low = g.low.map((row) => row[t]), high = g.high.map((row) => row[t]);
    const clipped = clipInterval(low, high, range);
    const n = g.n.map((row) => row[t]);
    const names = layerNames(g.layers);
    traces.push({
      type: "scatter", mode: "lines+markers", meta: "group-mean",
      x: xs, y: g.mean.map((row) => row[t]),
      name: esc(`${g.name} · mean of ${plural(g.runs.length, "run")} · ${xTitle} ${g.xs[t]}`),
      line: style, marker: { size: 6, symbol: g.baseline ? "diamond" : "circle" },
      customdata: names.map((name, i) => esc(`${name} (${g.parts[i]})`)),
      hovertext: names.map((_, i) => esc(Number.isFinite(low[i])
        ? `${interval}: ${fmt(low[i])} to ${fmt(high[i])}${clipped.clipped[i] ? clippedNote(range) : ""}` +
          ` · ${plural(n[i], "run")} of ${g.runs.length}`
        : `no interval · ${plural(n[i], "run")} of ${g.runs.length}`)),
      hovertemplate: `${esc(g.name)} (group mean)<br>%{customdata}<br>depth %{x:.2f}<br>mean %{text}<br>%{hovertext}<extra></extra>`,
    });
    const path = polygonPath(boundsPolygons(xs, clipped.low, clipped.high));
    if (path) {
      shapes.push({
        type: "path", name: "group-band", xref: "x", yref: "y", layer: "below", path,
        fillcolor: rgba(style.color, 0.22), line: { width: 0 },
      });
    }
    const chance = options.members ? groupChance(g, options.members(g), xOf) : null;
    const chancePath = chance ? linePath(xs, chance.layer.map((row) => row[t])) : "";
    if (chancePath) {
      shapes.push({
        type: "path", name: "group-chance", xref: "x", yref: "y", layer: "below", path: chancePath,
        line: Object.assign({ color: style.color }, CHANCE_LINE), opacity: CHANCE_OPACITY,
      });
    }
  }
  for (const x of series) {
    const t = pointAt(x, step);
    if (t < 0) continue;
    const L = x.layers.length;
    const names = layerNames(x.layers);
    const style = lineStyle(x.run);
    const xs = x.layers.map((_, i) => (L > 1 ? i / (L - 1) : 0));
    const ys = x.values.map((row) => row[t]);
    const chanceRows = statRows(x, "chance"), stderrRows = statRows(x, "stderr");
    const chance = chanceRows ? chanceRows.map((row) => row[t]) : null;
    const stderr = stderrRows ? stderrRows.map((row) => row[t]) : null;
    const hasStats = Boolean(chance || stderr);
    const trace = {
      type: "scatter", mode: "lines+markers",
      x: xs,
      y: ys,
      customdata: names.map((name, i) => esc(`${name} (${x.parts[i]})`)),
      name: esc(`${x.run}${x.baseline ? " (baseline)" : ""} · ${xTitle} ${xOf(x)[t]}`),
      line: style,
      marker: { size: 5, symbol: x.baseline ? "diamond" : "circle" },
      hovertemplate: `${esc(x.run)}<br>%{customdata}<br>depth %{x:.2f}<br>%{text}${hasStats ? "%{hovertext}" : ""}<extra></extra>`,
    };
    if (hasStats) trace.hovertext = statsHover(L, chance, stderr, ys, range);
    traces.push(trace);
    if (stderr) {
      const clipped = range && clipInterval(ys.map((v, i) => v - stderr[i]), ys.map((v, i) => v + stderr[i]), range);
      const path = polygonPath(clipped ? boundsPolygons(xs, clipped.low, clipped.high) : bandPolygons(xs, ys, stderr));
      if (path) {
        shapes.push({
          type: "path", name: "stderr", xref: "x", yref: "y", layer: "below", path,
          fillcolor: rgba(style.color, 0.18), line: { width: 0 },
        });
      }
    }
    const path = chance ? linePath(xs, chance) : "";
    if (path) {
      shapes.push({
        type: "path", name: "chance", xref: "x", yref: "y", layer: "below", path,
        line: Object.assign({ color: style.color }, CHANCE_LINE), opacity: CHANCE_OPACITY,
      });
    }
  }
  const layout = baseLayout({
    height: 460,
    margin: { l: 60, r: 20, t: 10, b: 50 },
    xaxis: { title: { text: "relative depth" }, range: [-0.02, 1.02], zeroline: false },
    yaxis: { title: { text: esc(measure) }, zeroline: false },
    legend: { orientation: "h", y: -0.18, yanchor: "top" },
  });
  if (shapes.length) layout.shapes = shapes;
  const natural = options.fitToData ? null : rangeAxis(range, traces);
  if (natural) Object.assign(layout.yaxis, natural);
  placeInfinities(traces, layout);
  return { traces, layout };
}

/** Bars of one layer's channels at point `t`, on the heatmap's colour scale. */
export function channelBarsFigure(body, t, range, measure) {
  const C = body.channels;
  const channelIds = Array.from({ length: C }, (_, c) => c);
  const values = t >= 0 ? body.values.map((row) => row[t]) : [];
  // Bar colours on the heatmap's scale; ±∞ take its ends.
  const colors = values.map((v) => (v === Infinity ? range.hi : v === -Infinity ? range.lo : v));
  const bar = {
    type: "bar", x: channelIds, y: values, textposition: "none",
    marker: {
      color: colors, cmin: range.lo, cmax: range.hi, colorscale: "Viridis",
      reversescale: body.higher_is_better === false,
    },
    hovertemplate: "channel %{x}<br>%{text}<extra></extra>",
  };
  const layout = baseLayout({
    height: 260,
    xaxis: { title: { text: "channel" }, zeroline: false, tickformat: "d", dtick: niceStride(Math.max(1, Math.ceil(C / 24))) },
    yaxis: { title: { text: esc(measure) }, zeroline: false },
  });
  placeInfinities([bar], layout);
  return { traces: [bar], layout };
}

/** What the Spearman scatter's markers mean (plain text), with or without groups. */
export function spearmanMarkerNote(parts, knownParts, grouped) {
  if (!grouped) {
    return "One marker per run and depth part: colour = part (legend); ● run, ◇ baseline run.";
  }
  const symbols = parts.map((p) => `${partSymbol(p, knownParts, true)} ${p}`).join(", ");
  return `One marker per run and depth part: colour = run group (legend), symbol = part (${symbols}); open symbols: baseline runs.`;
}

/** Spearman's rho per part (bars) and the per-run values (scatter). Part means
 * and scalars in `body.points` are numbers (±Infinity, NaN) already. With
 * `groups` ({groupOf(run) -> {name, color} or null}) the scatter's colours are
 * the runs' groups and its symbols the parts; rho stays over all runs. */
export function spearmanFigures(body, knownParts, scalar, measure, groups = null) {
  const bar = {
    traces: [{
      type: "bar", x: body.parts.map((p) => esc(p.part)), y: body.parts.map((p) => p.rho),
      marker: { color: body.parts.map((p) => partColor(p.part, knownParts)) },
      text: body.parts.map((p) => (p.rho == null ? "" : p.rho.toFixed(2))), textposition: "outside",
      hovertemplate: "%{x}<br>ρ = %{y:.3f}<extra></extra>",
    }],
    layout: baseLayout({
      height: 280,
      yaxis: { range: [-1.15, 1.15], title: { text: "Spearman ρ" }, zeroline: true },
    }),
  };
  const parts = orderParts(body.points.flatMap((pt) => Object.keys(pt.parts)), knownParts);
  let traces;
  if (groups) {
    const byGroup = new Map();
    for (const pt of body.points) {
      const g = groups.groupOf(pt.run);
      const key = g ? g.name : "";
      if (!byGroup.has(key)) byGroup.set(key, { g, pts: [] });
      byGroup.get(key).pts.push(pt);
    }
    const keys = [...byGroup.keys()].sort((a, b) => (a === "") - (b === "") || (a < b ? -1 : a > b ? 1 : 0));
    traces = keys.map((key) => {
      const { g, pts } = byGroup.get(key);
      const flat = pts.flatMap((pt) => parts.filter((p) => p in pt.parts).map((p) => [pt, p]));
      return {
        type: "scatter", mode: "markers", meta: "group-points",
        name: esc(g ? `${g.name} (${plural(pts.length, "run")})` : `no group (${plural(pts.length, "run")})`),
        x: flat.map(([pt]) => pt.scalar), y: flat.map(([pt, p]) => pt.parts[p]),
        customdata: flat.map(([pt, p]) => `${esc(pt.run)}<br>${esc(p)}`),
        marker: {
          size: 9, color: g ? g.color : "#212121",
          symbol: flat.map(([pt, p]) => partSymbol(p, knownParts) + (pt.baseline ? "-open" : "")),
        },
        hovertemplate: `%{customdata}<br>${esc(scalar)} %{x:.4f}<br>${esc(measure)} %{text}<extra></extra>`,
      };
    });
  } else {
    traces = parts.map((part) => {
      const pts = body.points.filter((pt) => part in pt.parts);
      return {
        type: "scatter", mode: "markers", name: esc(part),
        x: pts.map((pt) => pt.scalar), y: pts.map((pt) => pt.parts[part]),
        customdata: pts.map((pt) => esc(pt.run)),
        marker: { size: 9, color: partColor(part, knownParts), symbol: pts.map((pt) => (pt.baseline ? "diamond-open" : "circle")) },
        hovertemplate: `%{customdata}<br>${esc(part)}<br>${esc(scalar)} %{x:.4f}<br>${esc(measure)} %{text}<extra></extra>`,
      };
    });
  }
  const layout = baseLayout({
    height: 340,
    xaxis: { title: { text: esc(scalar) }, zeroline: false },
    yaxis: { title: { text: esc(measure) }, zeroline: false },
  });
  placeInfinities(traces, layout);
  return { bar, scatter: { traces, layout }, note: spearmanMarkerNote(parts, knownParts, Boolean(groups)) };
}
