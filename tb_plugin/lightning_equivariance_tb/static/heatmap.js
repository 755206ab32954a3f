// Canvas heatmaps of the "Equivariance" tab: layer x epoch (and channel x epoch)
// matrices drawn without plotly.js, so the default view needs no 4.8 MB bundle.
//
// Infinite values (docs/measures.md §5: nv/nd are x/0 = +inf) take the colour of
// the scale's end, hatched, with a "+∞"/"-∞" box on the colour bar. Missing values
// (a layer not measured at a step) are grey. Every label is drawn with fillText and
// the tooltip is set with textContent: names from the logs stay plain text.
//
// Layout: the rows (cells, layer names, parts) are one canvas in a box that
// scrolls when it is taller than the height it is given (spec.viewHeight: the
// window's, or the user's); the step axis above and below that box and the colour
// bar beside it are canvases of their own that do not scroll, so they stay in
// view at any scroll position, however many layers there are.

import { el, fmt, isMissing, niceStride, partColor, shorten } from "./util.js";

/** plotly's "Viridis" stops (the colour map the plotly views use). */
const VIRIDIS = [
  "#440154", "#482878", "#3e4989", "#31688e", "#26828e",
  "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725",
];
const CANVAS_FONT = "Roboto, Helvetica Neue, Arial, sans-serif";
const TICK_FONT = `10px ${CANVAS_FONT}`;
const TITLE_FONT = `12px ${CANVAS_FONT}`;
const MISSING_RGB = [224, 224, 224];

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

/** Heights (CSS px) of the step axes above and below the rows, and the room
 * kept for the rows box's scroll bar. */
const TOP_AXIS_H = 18;
const BOTTOM_AXIS_H = 36;
const SCROLLBAR_W = 16;
/** Top and bottom margins of the rows canvas, and what heatmapHeight() keeps
 * beyond the rows (the rows' height is spec.height less this). */
const ROWS_MARGIN = 4;
const HEIGHT_EXTRA = 46;

function sizeCanvas(canvas, W, H) {
  const dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(W * dpr);
  canvas.height = Math.round(H * dpr);
  canvas.style.width = `${W}px`;
  canvas.style.height = `${H}px`;
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  return ctx;
}

/** Rows of a layer heatmap are never thinner than this (CSS px): every row label fits. */
export const MIN_ROW_PX = 14;

/** Height in CSS px of a heatmap of `layers` rows: grows with the layer count
 * (the rows scroll past the height they are given), every row at least MIN_ROW_PX. */
export function heatmapHeight(layers) {
  return Math.max(180, MIN_ROW_PX * layers + 54);
}

/** Colour bar ticks: round values inside [lo, hi] and both ends, labelled. */
export function barTicksWithEnds(lo, hi, n) {
  const inner = niceTicks(lo, hi, n).filter((v) => v - lo > 0.08 * (hi - lo) && hi - v > 0.08 * (hi - lo));
  const texts = tickTexts(inner.length >= 2 ? inner : niceTicks(lo, hi, n));
  const endText = (v) => String(Number(v.toPrecision(3)));
  return {
    ticks: [lo, ...inner, hi],
    texts: [endText(lo), ...texts.slice(0, inner.length), endText(hi)],
  };
}

/** Finite range of some rows of values and how many ±∞ occur in them. */
export function valueRange(rowsList) {
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

/** Runs of equal parts: [part, first row, end row] in row order. */
function partBands(parts) {
  const bands = [];
  let start = 0;
  for (let i = 1; i <= parts.length; i++) {
    if (i === parts.length || parts[i] !== parts[start]) {
      bands.push([parts[start], start, i]);
      start = i;
    }
  }
  return bands;
}

/**
 * A matrix on a <canvas>: one image pixel per cell scaled up without smoothing,
 * viridis colours, part separators and labels, axis ticks and titles, a colour bar,
 * and a text tooltip.
 *
 * The canvas carries data-rows / data-cols (the matrix drawn) and data-infinite
 * (cells that are ±∞); `canvas.eqHeatmap` is this object, whose row(i) /
 * valueAt(r, c) / colorOf(v) read what is drawn (tests use them). The canvas
 * scrolls in `rowsBox`; `topAxis`, `bottomAxis` (the steps) and `bar` (the colour
 * bar) are canvases outside it.
 */
export class CanvasHeatmap {
  constructor() {
    this.canvas = el("canvas", { class: "eq-canvas" });
    this.tip = el("div", { class: "eq-tip", hidden: true });
    this.rowsBox = el("div", { class: "eq-plot eq-heat-rows" }, [this.canvas, this.tip]);
    this.topAxis = el("canvas", { class: "eq-heat-axis eq-heat-axis-top" });
    this.bottomAxis = el("canvas", { class: "eq-heat-axis eq-heat-axis-bottom" });
    this.bar = el("canvas", { class: "eq-heat-bar" });
    // the rows canvas first in the document (the grid places the axes around it)
    this.node = el("div", { class: "eq-heat" }, [this.rowsBox, this.topAxis, this.bottomAxis, this.bar]);
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
   * spec: {values: rows of numbers, cols: column labels (epochs), rowLabels, parts
   * (one per row, or null), knownParts, zmin, zmax, reverse (lower is better),
   * height (CSS px), title (first tooltip line), rowKind ("layer" | "channel"),
   * xTitle, notes(r, c) (extra tooltip lines, optional), barTitle (colour bar title,
   * optional), valueLabel (what the cells hold, default "value"), uninformative(r, c)
   * (cells to grey and hatch, optional), viewHeight (CSS px the rows may take before
   * they scroll, or a function giving it; none: every row shows)}.
   */
  draw(spec, width) {
    this.spec = spec;
    this.tip.hidden = true; // new data: no tooltip of the old one stays up
    this.width = Math.max(320, Math.floor(width || 800));
    this.redraw();
  }

  redraw(width) {
    if (width) this.width = Math.max(320, Math.floor(width));
    const s = this.spec;
    this.canvas.dataset.rows = String(s.values.length);
    this.canvas.dataset.cols = String(s.cols.length);
    const plot = this.layout(this.canvas.getContext("2d"));
    this.plot = plot;
    const ctx = sizeCanvas(this.canvas, plot.canvasW, plot.canvasH);
    this.rowsBox.style.maxHeight = plot.boxH < plot.canvasH ? `${plot.boxH}px` : "";
    this.rowsBox.style.width = `${plot.canvasW + SCROLLBAR_W}px`;
    this.canvas.dataset.infinite = String(this.drawCells(ctx, plot));
    this.canvas.dataset.uninformative = String(this.drawUninformative(ctx, plot));
    if (s.parts) this.drawParts(ctx, plot);
    this.drawRowAxis(ctx, plot);
    const top = sizeCanvas(this.topAxis, plot.canvasW, TOP_AXIS_H);
    this.drawColumnAxis(top, plot, TOP_AXIS_H - 1, true);
    const bottom = sizeCanvas(this.bottomAxis, plot.canvasW, BOTTOM_AXIS_H);
    this.drawColumnAxis(bottom, plot, 1, false);
    const bar = sizeCanvas(this.bar, plot.barW, TOP_AXIS_H + plot.boxH + BOTTOM_AXIS_H);
    this.drawColorBar(bar, plot);
  }

  /** Layout: y tick labels | plot | part bars+labels in the rows canvas; colour
   * bar + ticks (+ title) in its own canvas on the right. */
  layout(ctx) {
    const s = this.spec;
    const rows = s.values.length, cols = s.cols.length;
    ctx.font = TICK_FONT;
    const top = ROWS_MARGIN;
    const ph = Math.max(20, s.height - HEIGHT_EXTRA);
    const rowH = rows ? ph / rows : ph;
    const canvasH = top + ph + ROWS_MARGIN;
    const wanted = typeof s.viewHeight === "function" ? s.viewHeight() : s.viewHeight;
    const boxH = wanted ? Math.max(120, Math.min(canvasH, Math.floor(wanted))) : canvasH;
    // Layer rows: every label (the height grows with the layer count); channel
    // rows may be thinner than a label and are labelled at a stride.
    const yStride = s.rowKind === "channel" ? Math.max(1, Math.ceil(12 / rowH)) : 1;
    const yTicks = [];
    for (let r = 0; r < rows; r += yStride) yTicks.push(r);
    const yText = yTicks.map((r) => shorten(s.rowLabels[r], 32));
    const labelW = Math.min(220, Math.max(16, ...yText.map((t) => ctx.measureText(t).width)));
    const left = 22 + labelW + 6;
    const partsW = s.parts ? 52 : 0;
    const barPh = boxH - 2 * ROWS_MARGIN;
    const bar = barTicksWithEnds(s.zmin, s.zmax, Math.max(4, Math.floor(Math.min(barPh, 400) / 30)));
    const barTicks = bar.ticks, barText = bar.texts;
    const barLabelW = Math.max(24, ...barText.map((t) => ctx.measureText(t).width), ctx.measureText("+∞").width);
    const barTitleW = s.barTitle ? 16 : 0;
    const barW = Math.ceil(8 + 12 + 4 + barLabelW + 6 + barTitleW + 4);
    const canvasW = Math.max(200, this.width - barW - SCROLLBAR_W);
    const pw = Math.max(40, canvasW - left - 8 - partsW);
    return {
      left, top, pw, ph, rows, cols, rowH, yTicks, yText, partsW, barTicks, barText, barLabelW,
      canvasW, canvasH, boxH, barW, barTop: TOP_AXIS_H + ROWS_MARGIN, barPh,
    };
  }

  /** Cells: one pixel per cell, scaled up; ±∞ hatched. Returns the ±∞ count. */
  drawCells(ctx, p) {
    const s = this.spec;
    const { rows, cols, left, top, pw, ph, rowH } = p;
    if (!rows || !cols) return 0;
    let infinite = 0;
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
      // The ±∞ cells carry the end colour; the stripes say "beyond the scale".
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
    return infinite;
  }

  /** Uninformative cells (spec.uninformative(r, c): chance too close to the best
   * value, docs/measures.md §7). A cell without a value (e.g. above chance, which
   * is missing there) is greyed and hatched all over; a cell with one keeps its
   * colour (the value is real) and gets a hatched grey corner flag. Returns their count. */
  drawUninformative(ctx, p) {
    const s = this.spec;
    const { rows, cols, left, top, pw, rowH } = p;
    if (!s.uninformative || !rows || !cols) return 0;
    const colW = pw / cols;
    const light = hatch(ctx, [255, 255, 255]);
    let count = 0;
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        if (!s.uninformative(r, c)) continue;
        count += 1;
        const x = left + c * colW, y = top + r * rowH;
        if (isMissing(s.values[r][c])) {
          ctx.fillStyle = "rgba(238,238,238,0.9)";
          ctx.fillRect(x, y, colW, rowH);
          ctx.fillStyle = light;
          ctx.fillRect(x, y, colW, rowH);
        } else {
          const size = 0.6 * Math.min(colW, rowH);
          ctx.beginPath();
          ctx.moveTo(x, y);
          ctx.lineTo(x + size, y);
          ctx.lineTo(x, y + size);
          ctx.closePath();
          ctx.fillStyle = "#eeeeee";
          ctx.fill();
          ctx.fillStyle = light;
          ctx.fill();
          ctx.strokeStyle = "#757575";
          ctx.lineWidth = 0.8;
          ctx.stroke();
        }
      }
    }
    return count;
  }

  /** Part separators (white lines across the plot), colour bars and labels. */
  drawParts(ctx, p) {
    const s = this.spec;
    const { left, top, pw, ph, rowH } = p;
    const bands = partBands(s.parts);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1.5;
    for (const [, , end] of bands.slice(0, -1)) {
      ctx.beginPath();
      ctx.moveTo(left, top + end * rowH);
      ctx.lineTo(left + pw, top + end * rowH);
      ctx.stroke();
    }
    ctx.font = TICK_FONT;
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
      ctx.fillStyle = partColor(part, s.knownParts || []);
      ctx.fillRect(left + pw + 3, top + a * rowH, 4, Math.max(1, (b - a) * rowH));
      const y = overflow > 0 ? Math.max(top + 4, y0 - overflow) : y0;
      ctx.fillText(shorten(part, 8), left + pw + 11, y);
    }
  }

  /** Y ticks (row names) and the axis title. */
  drawRowAxis(ctx, p) {
    const s = this.spec;
    ctx.fillStyle = "#424242";
    ctx.font = TICK_FONT;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const cols = p.cols;
    p.yTicks.forEach((r, k) => {
      // a layer uninformative at the last epoch: its label greyed
      ctx.fillStyle = s.uninformative && cols && s.uninformative(r, cols - 1) ? "#bdbdbd" : "#424242";
      ctx.fillText(p.yText[k], p.left - 4, p.top + (r + 0.5) * p.rowH);
    });
    ctx.save();
    ctx.font = TITLE_FONT;
    ctx.fillStyle = "#616161";
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    ctx.translate(3, p.top + p.ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(s.rowKind === "channel" ? "channel" : "layer (input → output)", 0, 0);
    ctx.restore();
  }

  /** X ticks (epochs) on an axis canvas, its line at `y0`: nice strides, at least
   * 40 px apart; below the line with the title, or above it (`up`, no title). */
  drawColumnAxis(ctx, p, y0, up) {
    const s = this.spec;
    const { left, pw, cols } = p;
    ctx.font = TICK_FONT;
    ctx.fillStyle = "#424242";
    ctx.strokeStyle = "#9e9e9e";
    ctx.lineWidth = 1;
    ctx.textAlign = "center";
    ctx.textBaseline = up ? "bottom" : "top";
    const colW = cols ? pw / cols : pw;
    const stride = niceStride(Math.max(1, Math.ceil(cols / Math.max(2, Math.floor(pw / 44)))));
    let lastX = -Infinity, lastBucket = null;
    for (let c = 0; c < cols; c++) {
      const label = s.cols[c];
      const bucket = Math.floor(Number(label) / stride);
      const x = left + (c + 0.5) * colW;
      if (bucket !== lastBucket && x - lastX >= 40) {
        ctx.beginPath();
        ctx.moveTo(x, y0);
        ctx.lineTo(x, up ? y0 - 4 : y0 + 4);
        ctx.stroke();
        ctx.fillText(String(label), x, up ? y0 - 5 : y0 + 5);
        lastX = x;
        lastBucket = bucket;
      }
    }
    if (up) return;
    ctx.font = TITLE_FONT;
    ctx.fillStyle = "#616161";
    ctx.fillText(s.xTitle || "epoch", left + pw / 2, y0 + 20);
  }

  /** Colour bar on its own canvas, beside the visible rows; ±∞ get boxes beyond its ends. */
  drawColorBar(ctx, p) {
    const s = this.spec;
    const { barTicks, barText } = p;
    const top = p.barTop, ph = p.barPh;
    const bx = 8;
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
    ctx.font = TICK_FONT;
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
    if (s.barTitle) {
      ctx.save();
      ctx.font = TITLE_FONT;
      ctx.fillStyle = "#616161";
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      ctx.translate(bx + 17 + p.barLabelW + 16, barTop + barH / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.fillText(shorten(s.barTitle, 40), 0, 0);
      ctx.restore();
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
    lines.push(`${s.xTitle || "epoch"} ${s.cols[c]}`);
    lines.push(`${s.valueLabel || "value"} ${fmt(this.valueAt(r, c))}`);
    if (s.notes) lines.push(...s.notes(r, c));
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
    const W = this.plot.canvasW;
    const flip = x > W - 260;
    this.tip.style.left = flip ? "" : `${x + 14}px`;
    this.tip.style.right = flip ? `${W - x + 14}px` : "";
    this.tip.style.top = `${Math.max(0, y - 10)}px`;
  }
}
