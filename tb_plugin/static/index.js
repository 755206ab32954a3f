// Frontend of the "Equivariance" TensorBoard tab.
//
// TensorBoard loads this ES module inside an iframe whose <base> is the
// plugin's route prefix (data/plugin/equivariance/) and whose CSP allows
// same-origin scripts only, so every URL here is relative and plotly.js is
// served by the plugin itself from the installed plotly package.
//
// Views: per-run heatmap (layers x epochs), curves per part / layer over
// epochs, layer profile at one epoch, per-channel heatmap of one layer, and
// the Spearman correlation of each part with a scalar across runs.
//
// Speed: the default view, the heatmaps, is drawn by our own small canvas
// renderer (CanvasHeatmap below). plotly.js (4.8 MB, ~2 s to compile on a
// slow machine) is loaded only when a plotly view is opened, or prefetched
// when the browser is idle after the heatmaps are drawn.
//
// Infinite values: MEASURES.md section 4 defines nv/nd with x/0 = +inf, a
// value, not an error. The routes send them as IEEE infinities (base64) or
// the strings "Infinity"/"-Infinity" (JSON); here they show as "∞"/"-∞",
// take the colour of the scale's end in heatmaps (hatched, with a "+∞" box
// on the colour bar), and sit on a dotted "+∞"/"-∞" line at the y-axis
// ends of line and bar plots, drawn as triangles. Part means follow the
// server's rule: one +∞ layer makes the part +∞; +∞ with -∞ is undefined.
//
// Safety: run, layer and model names come from the log directory. They are
// put in the DOM with textContent only, drawn on canvases with fillText
// (plain text), and strings handed to plotly (which renders a subset of
// HTML in labels) go through esc().

const POLL_MS = 4000;
const PARTS = ["Early", "Middle", "Late", "Pool", "Final"];
const PART_COLORS = {
  Early: "#1f77b4", Middle: "#2ca02c", Late: "#ff7f0e", Pool: "#9467bd", Final: "#d62728",
};
const PALETTE = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
  "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];
const VIEWS = [
  ["heatmap", "Heatmap"],
  ["curves", "Curves"],
  ["profile", "Layer profile"],
  ["channels", "Channels"],
  ["spearman", "Spearman"],
];
const MAX_LAYER_PANELS = 6;
const PLOTLY_VIEWS = new Set(["curves", "profile", "channels", "spearman"]);
/** plotly's "Viridis" stops (the colour map the plotly heatmaps used). */
const VIRIDIS = [
  "#440154", "#482878", "#3e4989", "#31688e", "#26828e",
  "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725",
];
const CANVAS_FONT = "Roboto, Helvetica Neue, Arial, sans-serif";
const MISSING_RGB = [224, 224, 224];
const FONT = { family: "Roboto, Helvetica Neue, Arial, sans-serif", size: 12, color: "#212121" };
const PLOT_CONFIG = {
  responsive: true,
  displayModeBar: "hover",
  displaylogo: false,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
};

/** Escape text for plotly labels, titles, legends and hover text. */
export function esc(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function el(tag, props = {}, children = []) {
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
function textWithCode(tag, cls, parts) {
  return el(tag, { class: cls }, parts.map((p) =>
    typeof p === "string" ? document.createTextNode(p) : el("code", { text: p.code })));
}

async function getJSON(route, params = {}) {
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
  if (!response.ok) throw new Error(body.error || `${route}: HTTP ${response.status}`);
  return body;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Turn a `values_base64` body (row-major float32) into `values` rows. */
function decodeMatrix(body) {
  if (body.values_base64 == null) return body;
  const [rows, cols] = body.values_shape;
  const bin = atob(body.values_base64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  let all;
  if (LITTLE_ENDIAN) {
    all = new Float32Array(bytes.buffer);
  } else {
    const view = new DataView(bytes.buffer);
    all = new Float32Array(rows * cols);
    for (let i = 0; i < all.length; i++) all[i] = view.getFloat32(4 * i, true);
  }
  body.values = Array.from({ length: rows }, (_, r) => all.subarray(r * cols, (r + 1) * cols));
  delete body.values_base64;
  return body;
}

let plotlyPromise = null;

/** Load plotly.js once (a <script>, compiled off the main thread by the
 * browser where it can); a failed load may be retried. */
function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyPromise) {
    plotlyPromise = new Promise((resolve, reject) => {
      const script = el("script", { src: "./plotly.min.js", async: true });
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

function loadStyle() {
  return new Promise((resolve) => {
    const link = el("link", { rel: "stylesheet", href: "./style.css" });
    link.addEventListener("load", resolve);
    link.addEventListener("error", resolve);
    document.head.append(link);
  });
}

function heatmapHeight(layers) {
  return Math.min(420, Math.max(180, 16 * layers + 60));
}

function shorten(text, n) {
  text = String(text);
  return text.length <= n ? text : `…${text.slice(text.length - n + 1)}`;
}

/** A number from a JSON route: "Infinity"/"-Infinity" strings are the
 * infinities (JSON has none), null is missing (NaN). */
export function num(value) {
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  if (value == null) return NaN;
  return Number(value);
}

function isMissing(value) {
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

/** Mean of the present values (null/NaN are missing and skipped). One +∞
 * makes the mean +∞ (-∞ likewise); +∞ together with -∞ has no mean: null.
 * The same rule as the server's part means (plugin.part_means). */
export function mean(xs) {
  let sum = 0, n = 0;
  for (const x of xs) if (!isMissing(x)) { sum += x; n += 1; }
  return n && !Number.isNaN(sum) ? sum / n : null;
}

/** Finite range of some rows of values and whether ±∞ occur in them. */
function valueRange(rowsList) {
  let lo = Infinity, hi = -Infinity, pos = 0, neg = 0;
  for (const rows of rowsList) {
    for (const row of rows) {
      for (let i = 0; i < row.length; i++) {
        const v = row[i];
        if (v === Infinity) pos += 1;
        else if (v === -Infinity) neg += 1;
        else if (!isMissing(v)) {
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
    }
  }
  if (!(hi > lo)) {
    lo = Number.isFinite(lo) ? lo - 0.5 : 0;
    hi = lo + 1;
  }
  return { lo, hi, pos, neg };
}

/**
 * Put the ±∞ points of plotly traces at the ends of their y axis, clearly
 * marked: a dotted line labelled "+∞" / "-∞", triangles for the points,
 * and "∞" in the hover (every trace gets `text` = its formatted values, so
 * hovertemplates use %{text}). `axis` is "" or the subplot number.
 */
function placeInfinities(traces, layout, axis = "") {
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

// ---- canvas heatmap ------------------------------------------------------

function hexRgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

/** 256-entry RGB lookup table interpolated from colour stops. */
function buildLut(stops) {
  const rgb = stops.map(hexRgb);
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (rgb.length - 1);
    const k = Math.min(rgb.length - 2, Math.floor(x));
    const f = x - k;
    for (let c = 0; c < 3; c++) lut[3 * i + c] = Math.round(rgb[k][c] * (1 - f) + rgb[k + 1][c] * f);
  }
  return lut;
}

const LUT = buildLut(VIRIDIS);

/**
 * Layer x epoch (or channel x epoch) heatmap on a <canvas>: one image pixel
 * per cell scaled up without smoothing, viridis colours, part separators and
 * labels, axis ticks and titles, a colour bar, and a text tooltip.
 *
 * The canvas carries data-rows / data-cols (the matrix drawn) and
 * data-infinite (cells that are ±∞); `canvas.eqHeatmap` is this object, whose
 * row(i) / valueAt(r, c) / colorOf(v) read what is drawn (tests use them).
 */
class CanvasHeatmap {
  constructor() {
    this.canvas = el("canvas", { class: "eq-canvas" });
    this.tip = el("div", { class: "eq-tip", hidden: true });
    this.node = el("div", { class: "eq-heat" }, [this.canvas, this.tip]);
    this.canvas.eqHeatmap = this;
    this.spec = null;
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
  }

  /** Value at row r, column c (what the tooltip shows). */
  valueAt(r, c) {
    return this.spec.values[r][c];
  }

  row(r) {
    return Array.from(this.spec.values[r]);
  }

  /** [r, g, b] of a value under the current scale; ±∞ take the ends. */
  colorOf(v) {
    const { zmin, zmax, reverse } = this.spec;
    if (isMissing(v)) return MISSING_RGB;
    let t = v === Infinity ? 1 : v === -Infinity ? 0 : (v - zmin) / (zmax - zmin);
    t = Math.min(1, Math.max(0, t));
    if (reverse) t = 1 - t;
    const i = 3 * Math.round(t * 255);
    return [LUT[i], LUT[i + 1], LUT[i + 2]];
  }

  /**
   * spec: {values: rows of numbers, cols: column labels (epochs),
   * rowLabels, parts (one per row, or null), zmin, zmax, reverse (lower is
   * better), height (CSS px), title (first tooltip line), rowKind ("layer" |
   * "channel"), xTitle}.
   */
  draw(spec, width) {
    this.spec = spec;
    this.width = Math.max(320, Math.floor(width || 800));
    this.redraw();
  }

  redraw(width) {
    if (width) this.width = Math.max(320, Math.floor(width));
    const s = this.spec;
    const rows = s.values.length;
    const cols = s.cols.length;
    const W = this.width, H = s.height;
    const dpr = window.devicePixelRatio || 1;
    const canvas = this.canvas;
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
    canvas.style.width = `${W}px`;
    canvas.style.height = `${H}px`;
    canvas.dataset.rows = String(rows);
    canvas.dataset.cols = String(cols);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, W, H);

    // Layout: y tick labels | plot | part bars+labels | colour bar + ticks.
    const tickFont = `10px ${CANVAS_FONT}`;
    const titleFont = `12px ${CANVAS_FONT}`;
    ctx.font = tickFont;
    const top = 8, bottom = 38;
    const ph = Math.max(20, H - top - bottom);
    const rowH = rows ? ph / rows : ph;
    const yStride = Math.max(1, Math.ceil(12 / rowH));
    const yTicks = [];
    for (let r = 0; r < rows; r += yStride) yTicks.push(r);
    const yText = yTicks.map((r) => shorten(s.rowLabels[r], 32));
    const labelW = Math.min(220, Math.max(16, ...yText.map((t) => ctx.measureText(t).width)));
    const left = 22 + labelW + 6;
    const partsW = s.parts ? 52 : 0;
    const barTicks = niceTicks(s.zmin, s.zmax, Math.max(4, Math.floor(ph / 30)));
    const barText = tickTexts(barTicks);
    const barLabelW = Math.max(24, ...barText.map((t) => ctx.measureText(t).width), ctx.measureText("+∞").width);
    const right = 8 + partsW + 12 + 4 + barLabelW + 6;
    const pw = Math.max(40, W - left - right);
    this.plot = { left, top, pw, ph, rows, cols };

    // Cells: one pixel per cell, scaled up without smoothing.
    let infinite = 0;
    if (rows && cols) {
      const image = new ImageData(cols, rows);
      const px = image.data;
      for (let r = 0; r < rows; r++) {
        const row = s.values[r];
        for (let c = 0; c < cols; c++) {
          const v = row[c];
          if (v === Infinity || v === -Infinity) infinite += 1;
          const [R, G, B] = this.colorOf(v);
          const o = 4 * (r * cols + c);
          px[o] = R; px[o + 1] = G; px[o + 2] = B; px[o + 3] = 255;
        }
      }
      const off = document.createElement("canvas");
      off.width = cols;
      off.height = rows;
      off.getContext("2d").putImageData(image, 0, 0);
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(off, left, top, pw, ph);
      if (infinite) {
        // Hatch the ±∞ cells: they carry the end colour, the stripes say
        // "beyond the scale".
        const colW = pw / cols;
        for (const sign of [Infinity, -Infinity]) {
          ctx.fillStyle = hatch(ctx, this.colorOf(sign));
          for (let r = 0; r < rows; r++) {
            const row = s.values[r];
            for (let c = 0; c < cols; c++) {
              if (row[c] === sign) ctx.fillRect(left + c * colW, top + r * rowH, colW, rowH);
            }
          }
        }
      }
    }
    canvas.dataset.infinite = String(infinite);

    // Part separators (white lines across the plot) and labels.
    if (s.parts) {
      const bands = [];
      let start = 0;
      for (let i = 1; i <= rows; i++) {
        if (i === rows || s.parts[i] !== s.parts[start]) {
          bands.push([s.parts[start], start, i]);
          start = i;
        }
      }
      ctx.strokeStyle = "#fff";
      ctx.lineWidth = 1.5;
      for (const [, , end] of bands.slice(0, -1)) {
        const y = top + end * rowH;
        ctx.beginPath();
        ctx.moveTo(left, y);
        ctx.lineTo(left + pw, y);
        ctx.stroke();
      }
      ctx.font = tickFont;
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      let previous = -Infinity;
      const placed = bands.map(([part, a, b]) => {
        const y = Math.max(top + ((a + b) / 2) * rowH, previous + 11);
        previous = y;
        return [part, a, b, y];
      });
      const overflow = placed.length ? placed[placed.length - 1][3] - (top + ph - 4) : 0;
      for (const [part, a, b, y0] of placed) {
        const color = PART_COLORS[part] || "#616161";
        ctx.fillStyle = color;
        ctx.fillRect(left + pw + 3, top + a * rowH, 4, Math.max(1, (b - a) * rowH));
        const y = overflow > 0 ? Math.max(top + 4, y0 - overflow) : y0;
        ctx.fillText(part, left + pw + 11, y);
      }
    }

    // Y ticks (row names) and title.
    ctx.fillStyle = "#424242";
    ctx.font = tickFont;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    yTicks.forEach((r, k) => ctx.fillText(yText[k], left - 4, top + (r + 0.5) * rowH));
    ctx.save();
    ctx.font = titleFont;
    ctx.fillStyle = "#616161";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.translate(3, top + ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(s.rowKind === "channel" ? "channel" : "layer (input → output)", 0, 0);
    ctx.restore();

    // X ticks (epochs): nice strides, at least 44 px apart.
    ctx.font = tickFont;
    ctx.fillStyle = "#424242";
    ctx.strokeStyle = "#9e9e9e";
    ctx.lineWidth = 1;
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const colW = cols ? pw / cols : pw;
    const stride = niceStride(Math.max(1, Math.ceil(cols / Math.max(2, Math.floor(pw / 44)))));
    let lastX = -Infinity, lastBucket = null;
    for (let c = 0; c < cols; c++) {
      const label = s.cols[c];
      const bucket = Math.floor(Number(label) / stride);
      const x = left + (c + 0.5) * colW;
      if (bucket !== lastBucket && x - lastX >= 40) {
        ctx.beginPath();
        ctx.moveTo(x, top + ph);
        ctx.lineTo(x, top + ph + 4);
        ctx.stroke();
        ctx.fillText(String(label), x, top + ph + 5);
        lastX = x;
        lastBucket = bucket;
      }
    }
    ctx.font = titleFont;
    ctx.fillStyle = "#616161";
    ctx.fillText(s.xTitle || "epoch", left + pw / 2, top + ph + 21);

    // Colour bar; ±∞ get boxes beyond its ends.
    const bx = left + pw + 8 + partsW;
    const posBox = this.hasValue(Infinity), negBox = this.hasValue(-Infinity);
    const boxH = 12, gap = 9;
    const barTop = top + (posBox ? boxH + gap : 0);
    const barH = ph - (posBox ? boxH + gap : 0) - (negBox ? boxH + gap : 0);
    for (let y = 0; y < barH; y++) {
      const v = s.zmax - (y / Math.max(1, barH - 1)) * (s.zmax - s.zmin);
      const [R, G, B] = this.colorOf(v);
      ctx.fillStyle = `rgb(${R},${G},${B})`;
      ctx.fillRect(bx, barTop + y, 12, 1.2);
    }
    ctx.font = tickFont;
    ctx.fillStyle = "#424242";
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    barTicks.forEach((v, k) => {
      const y = barTop + ((s.zmax - v) / (s.zmax - s.zmin)) * (barH - 1);
      ctx.fillRect(bx + 12, y - 0.5, 3, 1);
      ctx.fillText(barText[k], bx + 17, y);
    });
    for (const [present, sign, y, label] of [
      [posBox, Infinity, top, "+∞"],
      [negBox, -Infinity, top + ph - boxH, "-∞"],
    ]) {
      if (!present) continue;
      const [R, G, B] = this.colorOf(sign);
      ctx.fillStyle = `rgb(${R},${G},${B})`;
      ctx.fillRect(bx, y, 12, boxH);
      ctx.fillStyle = hatch(ctx, [R, G, B]);
      ctx.fillRect(bx, y, 12, boxH);
      ctx.strokeStyle = "#757575";
      ctx.strokeRect(bx + 0.5, y + 0.5, 11, boxH - 1);
      ctx.fillStyle = "#212121";
      ctx.fillText(label, bx + 17, y + boxH / 2);
    }
  }

  hasValue(sign) {
    return this.spec.values.some((row) => Array.prototype.includes.call(row, sign));
  }

  /** {r, c} of the cell under a mouse event, or null. */
  cellAt(event) {
    const p = this.plot;
    if (!p) return null;
    const box = this.canvas.getBoundingClientRect();
    const x = event.clientX - box.left - p.left;
    const y = event.clientY - box.top - p.top;
    if (x < 0 || y < 0 || x >= p.pw || y >= p.ph || !p.rows || !p.cols) return null;
    return { r: Math.floor((y / p.ph) * p.rows), c: Math.floor((x / p.pw) * p.cols) };
  }

  /** Tooltip text of a cell (plain text; shown with textContent). */
  describe(r, c) {
    const s = this.spec;
    const lines = [];
    if (s.title) lines.push(s.title);
    if (s.rowKind === "channel") lines.push(`channel ${s.rowLabels[r]}`);
    else lines.push(`layer ${s.rowLabels[r]}${s.parts ? ` (${s.parts[r]})` : ""}`);
    lines.push(`epoch ${s.cols[c]}`);
    lines.push(`value ${fmt(this.valueAt(r, c))}`);
    return lines.join("\n");
  }

  hover(event) {
    const cell = this.cellAt(event);
    if (!cell) {
      this.tip.hidden = true;
      return;
    }
    this.tip.textContent = this.describe(cell.r, cell.c);
    this.tip.hidden = false;
    const box = this.canvas.getBoundingClientRect();
    const x = event.clientX - box.left, y = event.clientY - box.top;
    const flip = x > this.width - 260;
    this.tip.style.left = flip ? "" : `${x + 14}px`;
    this.tip.style.right = flip ? `${this.width - x + 14}px` : "";
    this.tip.style.top = `${Math.max(0, y - 10)}px`;
  }
}

/** Diagonal stripes over a colour: dark on light colours, white on dark. */
function hatch(ctx, [R, G, B]) {
  const tile = document.createElement("canvas");
  tile.width = tile.height = 6;
  const g = tile.getContext("2d");
  g.strokeStyle = 0.299 * R + 0.587 * G + 0.114 * B > 140 ? "rgba(0,0,0,0.65)" : "rgba(255,255,255,0.9)";
  g.lineWidth = 1.3;
  g.beginPath();
  g.moveTo(0, 6); g.lineTo(6, 0);
  g.moveTo(-1, 1); g.lineTo(1, -1);
  g.moveTo(5, 7); g.lineTo(7, 5);
  g.stroke();
  return ctx.createPattern(tile, "repeat");
}

/** Round tick values inside [lo, hi], at most about `n` of them. */
function niceTicks(lo, hi, n) {
  const step = niceStride((hi - lo) / Math.max(1, n));
  const ticks = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return ticks.length >= 2 ? ticks : [lo, hi];
}

/** Tick labels with just enough decimals to tell neighbours apart. */
function tickTexts(ticks) {
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
  const big = Math.max(...ticks.map(Math.abs));
  if (big >= 1e5 || (step < 1e-4 && big < 1e-3)) return ticks.map((v) => v.toExponential(1));
  const decimals = Math.min(6, Math.max(0, -Math.floor(Math.log10(step) + 1e-9)));
  return ticks.map((v) => v.toFixed(decimals));
}

/** The smallest of 1, 2, 5 x 10^k that is >= x (x > 0). */
function niceStride(k) {
  const p = 10 ** Math.floor(Math.log10(k));
  for (const m of [1, 2, 5, 10]) if (m * p >= k) return m * p;
  return 10 * p;
}

/** Unique layer labels as plain text (duplicate names get a #index). */
function layerNames(layers) {
  const seen = new Set();
  return layers.map((name, i) => {
    const label = seen.has(name) ? `${name} #${i}` : name;
    seen.add(name);
    return label;
  });
}

/** The same, escaped for plotly. */
function layerLabels(layers) {
  return layerNames(layers).map(esc);
}

function baseLayout(extra = {}) {
  return Object.assign({
    font: FONT,
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    margin: { l: 60, r: 20, t: 10, b: 40 },
    uirevision: "keep",
    hoverlabel: { namelength: -1 },
  }, extra);
}

class App {
  constructor(root) {
    this.root = root;
    this.state = {
      view: "heatmap",
      measure: null,
      group: null,
      hidden: new Set(), // runs the user unchecked; new runs show up checked
      layers: null, // selected layer names for curves; null = default
      epoch: null, // step for profile/channels; null = follow the latest
      channelRun: null,
      channelLayer: null,
      scalar: null,
    };
    this.index = null; // /runs
    this.series = new Map(); // run -> /series body for state.measure/group
    this.seriesKey = new Map(); // run -> signature of what is in this.series
    this.scalarTags = null;
    this.renderCount = 0;
    this.build();
  }

  // ---- skeleton ---------------------------------------------------------

  build() {
    this.measureSelect = el("select", { onchange: () => this.onMeasure() });
    this.groupSelect = el("select", { onchange: () => this.onGroup() });
    this.tabs = el("div", { class: "eq-tabs" }, VIEWS.map(([id, label]) =>
      el("button", { text: label, "data-view": id, onclick: () => this.setView(id) })));
    this.status = el("span", { class: "eq-status", text: "loading…" });
    const toolbar = el("div", { class: "eq-toolbar" }, [
      el("label", {}, ["Measure", this.measureSelect]),
      el("label", {}, ["Group", this.groupSelect]),
      this.tabs,
      this.status,
    ]);
    this.banner = el("div", { class: "eq-banner", hidden: true });
    this.runList = el("div", { class: "eq-runs" });
    this.viewControls = el("div", { class: "eq-view-controls" });
    const sidebar = el("div", { class: "eq-sidebar" }, [
      el("h3", { text: "Runs" }),
      el("div", { class: "eq-run-tools" }, [
        el("button", { text: "all", onclick: () => this.setAllRuns(true) }),
        el("button", { text: "none", onclick: () => this.setAllRuns(false) }),
      ]),
      this.runList,
      this.viewControls,
    ]);
    this.main = el("div", { class: "eq-main" });
    this.root.append(toolbar, this.banner, el("div", { class: "eq-body" }, [sidebar, this.main]));
    this.updateTabs();
  }

  setStatus(text, isError = false) {
    this.status.textContent = text;
    this.status.classList.toggle("eq-error", isError);
  }

  updateTabs() {
    for (const button of this.tabs.children) {
      button.classList.toggle("eq-active", button.dataset.view === this.state.view);
    }
  }

  // ---- data -------------------------------------------------------------

  /** Take a /runs body; true when it differs from the previous one. */
  setIndex(index) {
    const changed = JSON.stringify(index) !== JSON.stringify(this.index);
    this.index = index;
    this.fixSelection();
    return changed;
  }

  /** Fetch /runs and the changed series; true when anything changed. */
  async fetchData() {
    const changedIndex = this.setIndex(await getJSON("./runs"));
    const changedSeries = await this.loadSeries();
    this.setStatus(`updated ${new Date().toLocaleTimeString()}`);
    return changedIndex || changedSeries;
  }

  /** Poll step: re-render only when the data changed. */
  async refresh() {
    const changed = await this.fetchData();
    if (changed || this.renderCount === 0) {
      this.updateControls();
      await this.renderView();
    }
  }

  fixSelection() {
    const measures = Object.keys(this.index.measures);
    const s = this.state;
    if (!measures.includes(s.measure)) {
      s.measure = measures.includes("equivariance") ? "equivariance" : (measures[0] || null);
    }
    const groups = s.measure ? this.index.measures[s.measure] : [];
    if (!groups.includes(s.group)) s.group = groups[0] || null;
  }

  /** Runs that have the selected measure/group (checked or not). */
  runsWithSeries() {
    const { measure, group } = this.state;
    return this.index.runs.filter((r) =>
      r.series.some((x) => x.measure === measure && x.group === group));
  }

  visibleRuns() {
    return this.runsWithSeries().filter((r) => !this.state.hidden.has(r.run));
  }

  seriesInfo(run) {
    const { measure, group } = this.state;
    return run.series.find((x) => x.measure === measure && x.group === group);
  }

  /** Fetch, in one request, the series of visible runs that changed. */
  async loadSeries() {
    const { measure, group } = this.state;
    const stale = [];
    const keys = new Map();
    for (const run of this.visibleRuns()) {
      const info = this.seriesInfo(run);
      const key = `${measure}\u0000${group}\u0000${info.last_step}\u0000${info.wall_time}`;
      if (this.seriesKey.get(run.run) !== key) {
        stale.push(run.run);
        keys.set(run.run, key);
      }
    }
    if (!stale.length) return false;
    const body = await getJSON("./series_batch", { run: stale, measure, group, encoding: "base64" });
    if (measure !== this.state.measure || group !== this.state.group) return false; // superseded
    for (const x of body.series) {
      this.series.set(x.run, decodeMatrix(x));
      this.seriesKey.set(x.run, keys.get(x.run));
    }
    return true;
  }

  runColor(name) {
    const i = this.index.runs.findIndex((r) => r.run === name);
    return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
  }

  isBaseline(name) {
    const run = this.index.runs.find((r) => r.run === name);
    return run ? run.baseline : false;
  }

  lineStyle(name, width = 2) {
    const baseline = this.isBaseline(name);
    return { color: this.runColor(name), width: baseline ? width + 0.5 : width, dash: baseline ? "dash" : "solid" };
  }

  /** Loaded series of the visible runs, in run order. */
  loadedSeries() {
    return this.visibleRuns().map((r) => this.series.get(r.run)).filter(Boolean);
  }

  // ---- controls ---------------------------------------------------------

  onMeasure() {
    this.state.measure = this.measureSelect.value;
    const groups = this.index.measures[this.state.measure] || [];
    if (!groups.includes(this.state.group)) this.state.group = groups[0] || null;
    this.reloadSelection();
  }

  onGroup() {
    this.state.group = this.groupSelect.value;
    this.reloadSelection();
  }

  async reloadSelection() {
    this.series.clear();
    this.seriesKey.clear();
    this.updateControls();
    await this.safely(async () => {
      await this.loadSeries();
      this.updateControls();
      await this.renderView();
    });
  }

  setView(view) {
    this.state.view = view;
    this.updateTabs();
    this.updateControls();
    this.safely(() => this.renderView());
  }

  async setAllRuns(visible) {
    for (const run of this.runsWithSeries()) {
      if (visible) this.state.hidden.delete(run.run);
      else this.state.hidden.add(run.run);
    }
    this.updateControls();
    await this.safely(async () => {
      await this.loadSeries();
      this.updateControls();
      await this.renderView();
    });
  }

  async toggleRun(name, visible) {
    if (visible) this.state.hidden.delete(name);
    else this.state.hidden.add(name);
    await this.safely(async () => {
      await this.loadSeries();
      this.updateControls();
      await this.renderView();
    });
  }

  async safely(fn) {
    try {
      await fn();
    } catch (e) {
      console.error(e);
      this.setStatus(`error: ${e.message}`, true);
    }
  }

  fillSelect(select, values, current, label = (v) => v) {
    const same = select.options.length === values.length &&
      values.every((v, i) => select.options[i].value === String(v));
    if (!same) {
      select.replaceChildren(...values.map((v) => el("option", { value: String(v), text: label(v) })));
    }
    if (current != null) select.value = String(current);
  }

  updateControls() {
    const s = this.state;
    this.fillSelect(this.measureSelect, Object.keys(this.index.measures), s.measure);
    this.fillSelect(this.groupSelect, s.measure ? this.index.measures[s.measure] : [], s.group);
    this.measureSelect.disabled = this.groupSelect.disabled = !s.measure;

    const runs = this.runsWithSeries();
    this.runList.replaceChildren(...runs.map((run) => {
      const box = el("input", {
        type: "checkbox",
        checked: !s.hidden.has(run.run),
        onchange: () => this.toggleRun(run.run, box.checked),
      });
      const swatch = el("span", {
        class: "eq-swatch" + (run.baseline ? " eq-dashed" : ""),
        style: run.baseline ? `border-color:${this.runColor(run.run)}` : `background:${this.runColor(run.run)}`,
      });
      const loaded = this.series.get(run.run);
      const name = el("span", { class: "eq-run-name", text: run.run });
      const tags = [];
      if (run.baseline) tags.push(el("span", { class: "eq-tag", text: "baseline" }));
      if (loaded && loaded.downsampled) {
        tags.push(el("span", { class: "eq-tag eq-warn", text: "sampled", title: "TensorBoard kept only some epochs of this run" }));
      }
      const model = run.model ? el("div", { class: "eq-run-model", text: run.model }) : null;
      return el("label", { class: "eq-run", "data-run": run.run }, [box, swatch, el("div", {}, [name, ...tags, model])]);
    }));
    if (!runs.length) {
      this.runList.replaceChildren(el("div", { class: "eq-hint", text: "No runs yet." }));
    }
    this.updateViewControls();
    this.updateBanner();
  }

  updateBanner() {
    const notes = [];
    const sampled = this.loadedSeries().filter((x) => x.downsampled);
    if (sampled.length) {
      notes.push(textWithCode("div", "", [
        `TensorBoard down-sampled ${sampled.length} run(s): it keeps a random sample of points per tag, so some epochs are missing. Restart TensorBoard with `,
        { code: this.index.samples_flag },
        " to keep every epoch (0 means keep all).",
      ]));
    }
    const skipped = this.index.skipped || [];
    if (skipped.length) {
      const first = skipped[0];
      notes.push(el("div", {
        text: `${skipped.length} tag(s) skipped, e.g. run ${first.run}, tag ${first.tag}: ${first.reason}`,
      }));
    }
    this.banner.hidden = !notes.length;
    this.banner.replaceChildren(...notes);
  }

  /** Layer names of all loaded runs, merged in depth order: a layer only
   * some runs have goes right after its predecessor in its own run. */
  allLayers() {
    const names = [];
    for (const x of this.loadedSeries()) {
      let at = -1; // where x's previous layer sits in `names`
      for (const name of x.layers) {
        const i = names.indexOf(name);
        if (i >= 0) at = i;
        else names.splice(++at, 0, name);
      }
    }
    return names;
  }

  allSteps() {
    const steps = new Set();
    for (const x of this.loadedSeries()) for (const step of x.steps) steps.add(step);
    return [...steps].sort((a, b) => a - b);
  }

  updateViewControls() {
    const s = this.state;
    const controls = [];
    if (s.view === "curves") {
      const layers = this.allLayers();
      const selected = new Set(this.selectedLayers(layers));
      const select = el("select", {
        multiple: true,
        size: Math.min(12, Math.max(4, layers.length)),
        onchange: () => {
          s.layers = [...select.selectedOptions].map((o) => o.value);
          this.safely(() => this.renderView());
        },
      }, layers.map((name) => el("option", { value: name, text: name, selected: selected.has(name) })));
      controls.push(el("h3", { text: "Layers" }), select,
        el("div", { class: "eq-hint", text: `Ctrl/Shift-click to pick up to ${MAX_LAYER_PANELS} layers.` }));
    }
    if (s.view === "profile" || s.view === "channels") {
      const steps = this.allSteps();
      const label = el("div", { class: "eq-hint" });
      const slider = el("input", { type: "range", class: "eq-epoch", min: 0, max: Math.max(steps.length - 1, 0), step: 1 });
      const current = s.epoch == null ? steps.length - 1 : Math.max(0, steps.findIndex((x) => x >= s.epoch));
      slider.value = String(current);
      const describe = () => {
        const i = Number(slider.value);
        label.textContent = steps.length
          ? `epoch ${steps[i]}${i === steps.length - 1 ? " (latest, follows new epochs)" : ""}`
          : "no epochs";
      };
      describe();
      slider.addEventListener("input", describe);
      slider.addEventListener("change", () => {
        const i = Number(slider.value);
        s.epoch = i === steps.length - 1 ? null : steps[i];
        this.safely(() => this.renderView());
      });
      controls.push(el("h3", { text: "Epoch" }), slider, label);
    }
    if (s.view === "channels") {
      const runs = this.visibleRuns().filter((r) => this.seriesInfo(r).has_channels).map((r) => r.run);
      if (!runs.includes(s.channelRun)) s.channelRun = runs[0] || null;
      const runSelect = el("select", {
        onchange: () => {
          s.channelRun = runSelect.value;
          s.channelLayer = null;
          this.updateViewControls();
          this.safely(() => this.renderView());
        },
      });
      this.fillSelect(runSelect, runs, s.channelRun);
      const x = s.channelRun ? this.series.get(s.channelRun) : null;
      const layers = x ? x.layers : [];
      if (!layers.includes(s.channelLayer)) s.channelLayer = layers[0] || null;
      const layerSelect = el("select", {
        onchange: () => {
          s.channelLayer = layerSelect.value;
          this.safely(() => this.renderView());
        },
      });
      this.fillSelect(layerSelect, layers, s.channelLayer);
      controls.push(el("h3", { text: "Run" }), runSelect, el("h3", { text: "Layer" }), layerSelect);
    }
    if (s.view === "spearman") {
      const tags = (this.scalarTags || []).map((t) => t.tag);
      const select = el("select", {
        onchange: () => {
          s.scalar = select.value;
          this.safely(() => this.renderView());
        },
      });
      this.fillSelect(select, tags, s.scalar);
      controls.push(el("h3", { text: "Scalar" }), select,
        el("div", { class: "eq-hint", text: "Last value of this scalar in each run vs. each part's mean at the run's last epoch." }));
    }
    this.viewControls.replaceChildren(...controls);
  }

  selectedLayers(layers) {
    if (this.state.layers) {
      const picked = this.state.layers.filter((name) => layers.includes(name));
      if (picked.length) return picked.slice(0, MAX_LAYER_PANELS);
    }
    if (layers.length <= 3) return layers;
    return [layers[0], layers[Math.floor((layers.length - 1) / 2)], layers[layers.length - 1]];
  }

  // ---- views ------------------------------------------------------------

  empty(...parts) {
    this.main.replaceChildren(textWithCode("div", "eq-empty", parts));
  }

  /** plotly.js, loaded on first need (status shows while it loads). */
  async plotly() {
    if (window.Plotly) return window.Plotly;
    this.setStatus("loading plotly.js…");
    const plotly = await loadPlotly();
    this.setStatus(`updated ${new Date().toLocaleTimeString()}`);
    return plotly;
  }

  /** Load plotly.js when the browser is idle, once the heatmaps are up,
   * so that opening a plotly view later is quick. */
  prefetchPlotly() {
    if (this.prefetched || window.Plotly) return;
    this.prefetched = true;
    const go = () => loadPlotly().catch(() => { this.prefetched = false; });
    if (window.requestIdleCallback) window.requestIdleCallback(go, { timeout: 5000 });
    else setTimeout(go, 1000);
  }

  async renderView() {
    const started = performance.now();
    const generation = (this.generation = (this.generation || 0) + 1);
    if (!this.index.runs.length) {
      this.purge();
      this.empty(
        "No equivariance data in this log directory yet. Log reports with ",
        { code: "tb_plugin.summary.write_report(writer, report, step)" },
        " or train with the ",
        { code: "EquivarianceCallback" },
        `; this page checks for new data every ${POLL_MS / 1000} s.`,
      );
    } else if (!this.visibleRuns().length) {
      this.purge();
      this.empty("No run selected: tick at least one run on the left.");
    } else {
      const view = this.state.view;
      try {
        if (PLOTLY_VIEWS.has(view) && !window.Plotly) {
          this.main.replaceChildren(el("div", { class: "eq-hint eq-loading", text: "loading plotly.js…" }));
          await this.plotly();
          if (generation !== this.generation) return; // a newer render took over
        }
        if (view === "heatmap") this.renderHeatmaps(generation);
        else if (view === "curves") this.renderCurves();
        else if (view === "profile") this.renderProfile();
        else if (view === "channels") await this.renderChannels();
        else if (view === "spearman") await this.renderSpearman();
      } catch (e) {
        console.error(e);
        this.purge();
        this.main.replaceChildren(el("div", { class: "eq-empty eq-error", text: `Could not draw this view: ${e.message}` }));
        this.setStatus(`error: ${e.message}`, true);
      }
    }
    this.renderCount += 1;
    const ms = performance.now() - started;
    document.body.dataset.renderCount = String(this.renderCount);
    document.body.dataset.view = this.state.view;
    if (window.eqFirstRenderMs == null && this.index.runs.length) {
      window.eqFirstRenderMs = performance.now();
      window.eqFirstRenderDurationMs = ms;
    }
    window.eqLastRenderMs = ms;
  }

  purge() {
    if (!window.Plotly) return;
    for (const node of this.main.querySelectorAll(".js-plotly-plot")) Plotly.purge(node);
  }

  /** Reuse the card of the same id if present (keeps zoom on live update). */
  card(container, id, title, subtitle) {
    let card = this.cards.get(id);
    if (!card) {
      const plot = el("div", { class: "eq-plot" });
      card = el("div", { class: "eq-card" }, [
        el("div", { class: "eq-card-title" }, [el("span", {}), el("span", { class: "eq-card-sub" })]),
        plot,
      ]);
      card.plot = plot;
    }
    card.firstChild.firstChild.textContent = title;
    card.firstChild.lastChild.textContent = subtitle || "";
    container.append(card);
    return card;
  }

  /** Replace the main area's cards, reusing plots by id. */
  withCards(fn) {
    const old = new Map();
    for (const card of this.main.querySelectorAll(".eq-card[data-id]")) old.set(card.dataset.id, card);
    this.cards = old;
    const container = el("div");
    const used = fn(container) || [];
    for (const [id, card] of old) {
      if (!used.includes(id)) {
        const plot = card.querySelector(".js-plotly-plot");
        if (plot && window.Plotly) Plotly.purge(plot);
      }
    }
    this.main.replaceChildren(...container.childNodes);
  }

  /** Width available to a card's plot (its own, or the main area's). */
  plotWidth(card) {
    return card.plot.clientWidth || this.main.clientWidth - 40 || 800;
  }

  /** The canvas heatmap living in a card (created once, kept on updates). */
  heatmapOf(card) {
    if (!card.heatmap) {
      card.heatmap = new CanvasHeatmap();
      card.plot.replaceChildren(card.heatmap.node);
    }
    return card.heatmap;
  }

  renderHeatmaps(generation) {
    const all = this.loadedSeries();
    const range = valueRange(all.map((x) => x.values));
    const higher = all.length ? all[0].higher_is_better : true;
    const plots = [];
    const infinite = range.pos + range.neg;
    this.withCards((container) => {
      container.append(el("div", {
        class: "eq-hint",
        text: `Rows: layers in depth order (top = input side). Columns: epochs. One colour scale for all runs; ${higher ? "higher" : "lower"} is more equivariant.` +
          (infinite ? " Hatched cells are +∞ / -∞ (e.g. nv = x/0), coloured as the scale's end." : ""),
      }));
      const ids = [];
      for (const x of all) {
        const id = `heatmap\u0000${x.run}`;
        ids.push(id);
        const last = x.steps.length ? x.steps[x.steps.length - 1] : 0;
        const epochs = x.downsampled
          ? `${x.steps.length} of ${last + 1} epochs kept by TensorBoard (down-sampled)`
          : `${x.steps.length} epochs`;
        const sub = [x.model, `${x.layers.length} layers`, epochs, x.baseline ? "baseline" : ""]
          .filter(Boolean).join(" · ");
        const card = this.card(container, id, x.run, sub);
        card.dataset.id = id;
        card.classList.add("eq-heatmap");
        card.dataset.run = x.run;
        card.dataset.rows = String(x.layers.length);
        card.dataset.cols = String(x.steps.length);
        card.plot.style.minHeight = `${heatmapHeight(x.layers.length)}px`;
        plots.push([card, x]);
      }
      return ids;
    });
    // Draw what is on screen now; the rest follows in later tasks, so the
    // view shows quickly however many runs there are.
    const bottom = window.innerHeight;
    const draw = ([card, x]) => {
      this.heatmapOf(card).draw({
        values: x.values,
        cols: x.steps,
        rowLabels: layerNames(x.layers),
        parts: x.parts,
        zmin: range.lo,
        zmax: range.hi,
        reverse: !x.higher_is_better,
        height: heatmapHeight(x.layers.length),
        title: x.run,
        rowKind: "layer",
        xTitle: "epoch",
      }, this.plotWidth(card));
      card.dataset.drawn = "1";
    };
    const later = [];
    for (const item of plots) {
      if (item[0].getBoundingClientRect().top < bottom) draw(item);
      else later.push(item);
    }
    const drawRest = () => {
      if (generation !== this.generation) return; // a newer render took over
      if (later.length) {
        draw(later.shift());
        setTimeout(drawRest, 0);
      } else {
        window.eqAllDrawnMs = performance.now();
        this.prefetchPlotly();
      }
    };
    drawRest();
  }

  /** Redraw the canvases at the new width (window resized). */
  resizeCanvases() {
    for (const card of this.main.querySelectorAll(".eq-card")) {
      if (card.heatmap && card.heatmap.spec) card.heatmap.redraw(this.plotWidth(card));
    }
  }

  /** Small multiples: one panel per key, one line per run. */
  panels(div, keys, title, lines, yTitle) {
    const n = keys.length;
    const columns = n <= 3 ? n : 3;
    const rowsN = Math.ceil(n / columns);
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
      layout[`xaxis${axis}`] = { domain: [x0, x0 + w], anchor: `y${axis}`, title: { text: "epoch", standoff: 2 }, zeroline: false };
      layout[`yaxis${axis}`] = { domain: [y1 - h, y1], anchor: `x${axis}`, zeroline: false, title: col === 0 ? { text: yTitle } : undefined };
      annotations.push({
        text: `<b>${esc(title(key))}</b>`, xref: "paper", yref: "paper", x: x0 + w / 2, y: y1,
        xanchor: "center", yanchor: "bottom", showarrow: false, font: { size: 12 },
      });
      const panelTraces = [];
      for (const line of lines(key)) {
        panelTraces.push(Object.assign({
          type: "scatter", mode: "lines+markers", xaxis: `x${axis}`, yaxis: `y${axis}`,
          legendgroup: line.group, showlegend: !legendSeen.has(line.group), marker: { size: 4 },
        }, line.trace));
        legendSeen.add(line.group);
      }
      placeInfinities(panelTraces, layout, axis);
      traces.push(...panelTraces);
    });
    layout.annotations = annotations.concat(layout.annotations || []);
    Plotly.react(div, traces, layout, PLOT_CONFIG);
  }

  renderCurves() {
    const all = this.loadedSeries();
    const layers = this.selectedLayers(this.allLayers());
    const partsPresent = PARTS.filter((p) => all.some((x) => x.parts.includes(p)));
    const measure = esc(this.state.measure);
    const runTrace = (x, ys, name) => ({
      group: x.run,
      trace: {
        x: x.steps, y: ys, name: esc(x.run), line: this.lineStyle(x.run),
        hovertemplate: `${esc(x.run)}<br>${esc(name)}<br>epoch %{x}<br>%{text}<extra></extra>`,
      },
    });
    let partDiv, layerDiv;
    this.withCards((container) => {
      const a = this.card(container, "curves-parts", "Per part", "mean over the part's layers (Early / Middle / Late split the feature maps before pooling)");
      a.dataset.id = "curves-parts";
      partDiv = a.plot;
      const b = this.card(container, "curves-layers", "Selected layers", layers.length ? "" : "no layer selected");
      b.dataset.id = "curves-layers";
      layerDiv = b.plot;
      return ["curves-parts", "curves-layers"];
    });
    this.panels(partDiv, partsPresent, (p) => p, (part) => all.filter((x) => x.parts.includes(part)).map((x) => {
      const idx = x.parts.map((p, i) => (p === part ? i : -1)).filter((i) => i >= 0);
      // The part's mean (one +∞ layer makes it +∞; +∞ with -∞: no value).
      const ys = x.steps.map((_, t) => mean(idx.map((i) => x.values[i][t])));
      return runTrace(x, ys, part);
    }), measure);
    this.panels(layerDiv, layers, (l) => l, (layer) => all.filter((x) => x.layers.includes(layer)).map((x) =>
      runTrace(x, x.values[x.layers.indexOf(layer)], layer)), measure);
  }

  /** Index of the point to show for `step` (last one at or before it). */
  pointAt(x, step) {
    if (step == null) return x.steps.length - 1;
    let best = -1;
    x.steps.forEach((s, i) => { if (s <= step) best = i; });
    return best;
  }

  renderProfile() {
    const all = this.loadedSeries();
    const step = this.state.epoch;
    const traces = [];
    for (const x of all) {
      const t = this.pointAt(x, step);
      if (t < 0) continue;
      const L = x.layers.length;
      const labels = layerLabels(x.layers);
      traces.push({
        type: "scatter", mode: "lines+markers",
        x: x.layers.map((_, i) => (L > 1 ? i / (L - 1) : 0)),
        y: x.values.map((row) => row[t]),
        customdata: labels.map((label, i) => `${label} (${x.parts[i]})`),
        name: esc(`${x.run} · epoch ${x.steps[t]}`),
        line: this.lineStyle(x.run),
        marker: { size: 5, symbol: x.baseline ? "diamond" : "circle" },
        hovertemplate: `${esc(x.run)}<br>%{customdata}<br>depth %{x:.2f}<br>%{text}<extra></extra>`,
      });
    }
    const layout = baseLayout({
      height: 460,
      margin: { l: 60, r: 20, t: 10, b: 50 },
      xaxis: { title: { text: "relative depth" }, range: [-0.02, 1.02], zeroline: false },
      yaxis: { title: { text: esc(this.state.measure) }, zeroline: false },
      legend: { orientation: "h", y: -0.18, yanchor: "top" },
    });
    placeInfinities(traces, layout);
    let div;
    const title = step == null ? "latest epoch" : `epoch ${step}`;
    this.withCards((container) => {
      const card = this.card(container, "profile", `Layer profile at the ${title}`,
        "x: relative depth (0 = first measured layer, 1 = last); dashed: baseline runs");
      card.dataset.id = "profile";
      div = card.plot;
      return ["profile"];
    });
    Plotly.react(div, traces, layout, PLOT_CONFIG);
  }

  async renderChannels() {
    const s = this.state;
    if (!s.channelRun || !s.channelLayer) {
      this.purge();
      this.empty("No per-channel data for this measure and group. Log it with ",
        { code: "write_report(..., per_channel=True)" }, ".");
      return;
    }
    const body = decodeMatrix(await getJSON("./channels", {
      run: s.channelRun, measure: s.measure, group: s.group, layer: s.channelLayer, encoding: "base64",
    }));
    const C = body.channels;
    const t = this.pointAt(body, s.epoch);
    let heatCard, barDiv;
    this.withCards((container) => {
      const a = this.card(container, "channels-heat", `${body.run} — ${body.layer}`,
        `${body.part} · ${C} channels · ${body.steps.length} epochs`);
      a.dataset.id = "channels-heat";
      a.dataset.rows = String(C);
      a.dataset.cols = String(body.steps.length);
      heatCard = a;
      const b = this.card(container, "channels-bar", t >= 0 ? `Channels at epoch ${body.steps[t]}` : "Channels", "");
      b.dataset.id = "channels-bar";
      barDiv = b.plot;
      return ["channels-heat", "channels-bar"];
    });
    const range = valueRange([body.values]);
    const channelIds = Array.from({ length: C }, (_, c) => c);
    this.heatmapOf(heatCard).draw({
      values: body.values,
      cols: body.steps,
      rowLabels: channelIds.map(String),
      parts: null,
      zmin: range.lo,
      zmax: range.hi,
      reverse: !body.higher_is_better,
      height: Math.min(520, Math.max(220, 6 * C + 80)),
      title: `${body.run} — ${body.layer}`,
      rowKind: "channel",
      xTitle: "epoch",
    }, this.plotWidth(heatCard));
    heatCard.dataset.drawn = "1";
    const values = t >= 0 ? body.values.map((row) => row[t]) : [];
    // Bar colours on the heatmap's scale; ±∞ take its ends.
    const colors = values.map((v) => (v === Infinity ? range.hi : v === -Infinity ? range.lo : v));
    const bar = {
      type: "bar", x: channelIds, y: values, textposition: "none",
      marker: { color: colors, cmin: range.lo, cmax: range.hi, colorscale: "Viridis", reversescale: !body.higher_is_better },
      hovertemplate: "channel %{x}<br>%{text}<extra></extra>",
    };
    const layout = baseLayout({
      height: 260,
      xaxis: { title: { text: "channel" }, zeroline: false, tickformat: "d", dtick: niceStride(Math.max(1, Math.ceil(C / 24))) },
      yaxis: { title: { text: esc(s.measure) }, zeroline: false },
    });
    placeInfinities([bar], layout);
    Plotly.react(barDiv, [bar], layout, PLOT_CONFIG);
  }

  async renderSpearman() {
    const s = this.state;
    if (this.scalarTags == null || this.spearmanStale) {
      this.scalarTags = (await getJSON("./scalar_tags")).tags;
      this.spearmanStale = false;
      const tags = this.scalarTags.map((t) => t.tag);
      if (!tags.includes(s.scalar)) {
        s.scalar = tags.find((t) => /acc/i.test(t) && /(val|test)/i.test(t)) ||
          tags.find((t) => /acc/i.test(t)) || tags[0] || null;
      }
      this.updateViewControls();
    }
    if (!s.scalar) {
      this.purge();
      this.empty("No scalar tags in the runs with equivariance data. Log a final metric such as ",
        { code: "val/acc" }, " with the same logger to correlate it with each part's equivariance.");
      return;
    }
    const body = await getJSON("./spearman", {
      measure: s.measure, group: s.group, scalar: s.scalar, run: this.visibleRuns().map((r) => r.run),
    });
    let barDiv, scatterDiv;
    const table = el("table", { class: "eq-table" }, [
      el("tr", {}, ["Part", "Spearman ρ", "p-value", "runs"].map((h) => el("th", { text: h }))),
      ...body.parts.map((p) => {
        const left = p.excluded || [];
        return el("tr", { "data-part": p.part }, [
          el("td", { text: p.part }),
          el("td", { text: p.rho == null ? "–" : p.rho.toFixed(3), title: p.note || "" }),
          el("td", { text: p.p == null ? "–" : fmt(p.p, 3) }),
          el("td", {
            text: left.length ? `${p.n} (${left.length} left out)` : String(p.n),
            title: left.map((x) => `${x.run}: ${x.why}`).join("\n"),
          }),
        ]);
      }),
    ]);
    // Part means and scalars may be "Infinity" strings (JSON has no ∞).
    for (const pt of body.points) {
      pt.scalar = num(pt.scalar);
      for (const part of Object.keys(pt.parts)) pt.parts[part] = num(pt.parts[part]);
    }
    const infParts = body.points.some((pt) => Object.values(pt.parts).some((v) => v === Infinity || v === -Infinity));
    this.withCards((container) => {
      const a = this.card(container, "spearman-bar", `Spearman ρ across ${body.points.length} runs`,
        `${s.measure} / ${s.group} at each run's last epoch vs. last ${s.scalar}`);
      a.dataset.id = "spearman-bar";
      a.insertBefore(table, a.plot);
      barDiv = a.plot;
      const b = this.card(container, "spearman-scatter", "Per-run values",
        "one point per run and part" + (infParts ? "; ±∞ part means (ranked above/below every number) sit on the dotted lines" : ""));
      b.dataset.id = "spearman-scatter";
      scatterDiv = b.plot;
      return ["spearman-bar", "spearman-scatter"];
    });
    Plotly.react(barDiv, [{
      type: "bar", x: body.parts.map((p) => p.part), y: body.parts.map((p) => p.rho),
      marker: { color: body.parts.map((p) => PART_COLORS[p.part]) },
      text: body.parts.map((p) => (p.rho == null ? "" : p.rho.toFixed(2))), textposition: "outside",
      hovertemplate: "%{x}<br>ρ = %{y:.3f}<extra></extra>",
    }], baseLayout({
      height: 280,
      yaxis: { range: [-1.15, 1.15], title: { text: "Spearman ρ" }, zeroline: true },
    }), PLOT_CONFIG);
    const traces = PARTS.filter((part) => body.points.some((pt) => part in pt.parts)).map((part) => {
      const pts = body.points.filter((pt) => part in pt.parts);
      return {
        type: "scatter", mode: "markers", name: part,
        x: pts.map((pt) => pt.scalar), y: pts.map((pt) => pt.parts[part]),
        customdata: pts.map((pt) => esc(pt.run)),
        marker: { size: 9, color: PART_COLORS[part], symbol: pts.map((pt) => (pt.baseline ? "diamond-open" : "circle")) },
        hovertemplate: `%{customdata}<br>${part}<br>${esc(s.scalar)} %{x:.4f}<br>${esc(s.measure)} %{text}<extra></extra>`,
      };
    });
    const layout = baseLayout({
      height: 340,
      xaxis: { title: { text: esc(s.scalar) }, zeroline: false },
      yaxis: { title: { text: esc(s.measure) }, zeroline: false },
    });
    placeInfinities(traces, layout);
    Plotly.react(scatterDiv, traces, layout, PLOT_CONFIG);
  }

  // ---- live updates -----------------------------------------------------

  startPolling() {
    const tick = async () => {
      if (!document.hidden) {
        this.spearmanStale = true;
        await this.safely(() => this.refresh());
      }
      this.timer = setTimeout(tick, POLL_MS);
    };
    this.timer = setTimeout(tick, POLL_MS);
  }
}

/** Entry point called by TensorBoard's plugin_entry.html. */
export async function render() {
  const root = el("div", { class: "eq-app" });
  document.body.append(root);
  const style = loadStyle();
  const app = new App(root);
  window.eqApp = app;
  // The heatmaps need no plotly.js: data and style only. plotly.js comes
  // when a plotly view is opened, or when the browser is idle afterwards.
  const data = getJSON("./runs").then((index) => {
    app.setIndex(index);
    return app.loadSeries();
  });
  data.then(() => performance.mark("eq-data"), () => {});
  await style;
  await app.safely(async () => {
    await data;
    app.setStatus(`updated ${new Date().toLocaleTimeString()}`);
    app.updateControls();
    await app.renderView();
  });
  if (!app.index) {
    // /runs failed: show why, keep polling (the server may come back).
    root.querySelector(".eq-main").replaceChildren(el("div", {
      class: "eq-empty eq-error", text: `Equivariance tab: ${app.status.textContent}`,
    }));
  }
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => app.resizeCanvases(), 150);
  });
  app.startPolling();
}
