// Small helpers of the "Equivariance" tab: DOM, fetching, numbers, labels.
//
// Safety: run, layer, part and model names come from the log directory. In the
// DOM they are set with textContent only (el(..., {text})), on canvases drawn
// with fillText (plain text), and every string handed to plotly (which renders a
// subset of HTML in labels, legends and hover text) goes through esc().

export const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
/** Colours of the known depth parts, by their position in /runs' `parts`. */
const PART_PALETTE = ["#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#d62728"];
const UNKNOWN_PART_COLOR = "#757575";

/** Escape text for plotly labels, titles, legends and hover text. */
export function esc(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** A DOM element; `text` is set as textContent, never as markup. */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key === "style") node.setAttribute("style", value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child != null) node.append(child);
  }
  return node;
}

/** An element whose text mixes plain strings and <code> fragments. */
export function textWithCode(tag, cls, parts) {
  return el(tag, { class: cls }, parts.map((p) =>
    typeof p === "string" ? document.createTextNode(p) : el("code", { text: p.code })));
}

/** GET a JSON route; a non-2xx answer throws its `error` text (the error's `status` is the HTTP
 * status, its `argument` the query parameter the route refused, where it names one). */
export async function getJSON(route, params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    for (const v of Array.isArray(value) ? value : [value]) search.append(key, v);
  }
  const query = search.toString();
  const response = await fetch(query ? `${route}?${query}` : route);
  let body;
  try {
    body = await response.json();
  } catch (e) {
    throw new Error(`${route}: HTTP ${response.status}`);
  }
  if (!response.ok) {
    const error = new Error(body.error || `${route}: HTTP ${response.status}`);
    error.status = response.status;
    error.argument = body.argument || null;
    throw error;
  }
  return body;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Float32 (or, with `double`, float64) values of a `{prefix}_base64` (little-endian) field. */
function decodeFloats(b64, count, double = false) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const Type = double ? Float64Array : Float32Array;
  if (LITTLE_ENDIAN) return new Type(bytes.buffer);
  const view = new DataView(bytes.buffer);
  const all = new Type(count);
  for (let i = 0; i < count; i++) all[i] = double ? view.getFloat64(8 * i, true) : view.getFloat32(4 * i, true);
  return all;
}

/**
 * Turn `{prefix}_base64` + `{prefix}_shape` of `body` into `body[prefix]`: rows
 * (Float32Array each) of a 2-D matrix, or a Float32Array of a vector
 * (Float64Array when `{prefix}_dtype` is "float64").
 */
export function decodeMatrix(body, prefix = "values") {
  const b64 = body[`${prefix}_base64`];
  if (b64 == null) return body;
  const shape = body[`${prefix}_shape`];
  const count = shape.reduce((a, b) => a * b, 1);
  const all = decodeFloats(b64, count, body[`${prefix}_dtype`] === "float64");
  if (shape.length === 1) {
    body[prefix] = all;
  } else {
    const [rows, cols] = shape;
    body[prefix] = Array.from({ length: rows }, (_, r) => all.subarray(r * cols, (r + 1) * cols));
  }
  delete body[`${prefix}_base64`];
  return body;
}

/** A number from a JSON route: "Infinity"/"-Infinity" strings are the
 * infinities (JSON has none), null is missing (NaN). */
export function num(value) {
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  if (value == null) return NaN;
  return Number(value);
}

export function isMissing(value) {
  return value == null || Number.isNaN(value);
}

/** Text of a value: "∞" / "-∞" for the infinities, "–" when missing. */
export function fmt(value, digits = 4) {
  if (value === Infinity) return "∞";
  if (value === -Infinity) return "-∞";
  if (isMissing(value)) return "–";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e4)) return value.toExponential(2);
  return value.toFixed(digits);
}

export function shorten(text, n) {
  text = String(text);
  return text.length <= n ? text : `…${text.slice(text.length - n + 1)}`;
}

/** Unique layer labels as plain text (duplicate names get a #index). */
export function layerNames(layers) {
  const seen = new Set();
  return layers.map((name, i) => {
    const label = seen.has(name) ? `${name} #${i}` : name;
    seen.add(name);
    return label;
  });
}

/** Colour of a depth part: known parts by position, any other name grey. */
export function partColor(part, knownParts) {
  const i = knownParts.indexOf(part);
  return i >= 0 ? PART_PALETTE[i % PART_PALETTE.length] : UNKNOWN_PART_COLOR;
}

/** Parts in display order: the known ones in depth order, then the others as met. */
export function orderParts(names, knownParts) {
  const seen = [...new Set(names)];
  return knownParts.filter((p) => seen.includes(p)).concat(seen.filter((p) => !knownParts.includes(p)));
}

/** Measures of invariance (the others measure equivariance): for the hints. */
const INVARIANCE_MEASURES = new Set(["invariance", "tv", "nv", "td", "nd", "anova", "goodfellow"]);

/**
 * What a measure's direction means, for hints: `higher_is_better` true, false,
 * or null (no preferred direction, e.g. sv and sd). Never says "lower is
 * better" for null. `measure` (optional) picks "invariant" or "equivariant".
 */
export function directionHint(higherIsBetter, measure) {
  const what = INVARIANCE_MEASURES.has(measure) ? "invariant" : "equivariant";
  if (higherIsBetter === true) return `higher is more ${what}`;
  if (higherIsBetter === false) return `lower is more ${what}`;
  return "this measure has no preferred direction";
}

/** The fixed colour scale of a bounded measure ([lo, hi], the metric classes'
 * plot bounds; above_chance: 0 = chance, 1 = perfect), or undefined. */
export const FIXED_RANGES = {
  equivariance: [0, 1],
  invariance: [0, 1],
  anova: [0, 1],
  geed_channel: [-1, 1],
  above_chance: [0, 1],
};

/** Room above chance under which a layer is uninformative (docs/measures.md §7). */
export const INFORMATIVE_ROOM = 0.05;

/** Why a layer is uninformative (plain text), from its chance level. */
export function uninformativeReason(chance, higherIsBetter) {
  const bound = (1 - INFORMATIVE_ROOM).toFixed(2);
  return higherIsBetter === false
    ? `uninformative: chance ${fmt(chance, 3)} < -${bound}`
    : `uninformative: chance ${fmt(chance, 3)} > ${bound}`;
}

/** The margin above chance with its one-sided 95% interval (docs/measures.md §7),
 * plain text; "" without a margin. */
export function marginText(margin, low) {
  if (!Number.isFinite(margin)) return "";
  return Number.isFinite(low)
    ? `margin ${fmt(margin)}, 95% interval [${fmt(low)}, ∞)`
    : `margin ${fmt(margin)}, no interval (fewer than 2 scored probe pairs)`;
}

/** Why a layer is not significantly above chance (plain text), from its lower bound. */
export function notSignificantReason(low) {
  return Number.isFinite(low)
    ? `not significantly above chance: 95% lower bound ${fmt(low, 3)} ≤ 0`
    : "not significantly above chance: fewer than 2 scored probe pairs, no interval";
}

/** One statistic (stderr, chance, ...) of a /series body as rows per layer, or
 * null when the run has none. */
export function statRows(x, field) {
  const stat = x.stats && x.stats[field];
  return stat && stat.values ? stat.values : null;
}

/**
 * A statistic's mean over a part's layers per point (docs/measures.md §7: a
 * part's chance and stderr are the means of its layers'); NaN where no layer
 * of the part has it. null when the run has no such statistic.
 */
export function partStatRow(x, field, part) {
  const rows = statRows(x, field);
  if (!rows) return null;
  const n = x.steps.length;
  const sums = new Float64Array(n), counts = new Uint32Array(n);
  x.parts.forEach((p, i) => {
    if (p !== part || !rows[i]) return;
    for (let j = 0; j < n; j++) {
      const v = rows[i][j];
      if (Number.isFinite(v)) { sums[j] += v; counts[j] += 1; }
    }
  });
  return Float64Array.from(sums, (s, j) => (counts[j] ? s / counts[j] : NaN));
}

/** The statistics of a point for a hover (plain text; "" when none). */
export function statsText(chance, stderr) {
  const out = [];
  if (Number.isFinite(chance)) out.push(`chance ${fmt(chance)}`);
  if (Number.isFinite(stderr)) out.push(`± stderr ${fmt(stderr)}`);
  return out.join(" · ");
}

/** The smallest of 1, 2, 5 x 10^k that is >= x (x > 0). */
export function niceStride(k) {
  const p = 10 ** Math.floor(Math.log10(k));
  for (const m of [1, 2, 5, 10]) if (m * p >= k) return m * p;
  return 10 * p;
}

/** "1 epoch", "3 epochs", "0 runs": a count with its noun, singular or plural. */
export function plural(n, word, many = `${word}s`) {
  return `${n} ${n === 1 ? word : many}`;
}

/** Symbols of the depth parts (Spearman with groups: colour = group, symbol = part). */
export const PART_SYMBOLS = ["circle", "square", "diamond", "triangle-up", "x"];
const PART_GLYPHS = ["●", "■", "◆", "▲", "✕"];

/** Marker symbol of a part (known parts by position; others "star"). */
export function partSymbol(part, knownParts, glyph = false) {
  const i = knownParts.indexOf(part);
  if (glyph) return i >= 0 ? PART_GLYPHS[i % PART_GLYPHS.length] : "★";
  return i >= 0 ? PART_SYMBOLS[i % PART_SYMBOLS.length] : "star";
}
