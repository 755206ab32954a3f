// The main area of the "Equivariance" tab: one card per plot, the five views.
//
// Heatmaps are canvases (heatmap.js); the other views are plotly figures built by
// charts.js and drawn with the plotly.js bundle of the installed plotly package,
// loaded on first need or prefetched when the browser is idle. Cards are reused by
// id across live updates, so zoom and hover survive new epochs.
//
// The shareable HTML report (lightning_equivariance/report_page/report.js) draws
// with these modules too (inlined into its file): what it needs from here is exported.

import {
  FIXED_RANGES, decodeMatrix, directionHint, el, fmt, getJSON, layerNames, num, plural, statRows, textWithCode,
  uninformativeReason,
  marginText, notSignificantReason,
} from "./util.js";
import { CanvasHeatmap, heatmapHeight, valueRange } from "./heatmap.js";
import {
  PLOT_CONFIG, channelBarsFigure, curvesFigures, loadPlotly, pointAt, profileFigure, spearmanFigures,
} from "./charts.js";

const PLOTLY_VIEWS = new Set(["curves", "profile", "channels", "spearman"]);

/** Whether a layer is drawn as uninformative at a point: stats field informative = 0,
 * or significant = 0 (not significantly above chance, docs/measures.md §7). */
export function uninformativeAt(x) {
  const rows = statRows(x, "informative"), significant = statRows(x, "significant");
  if (!rows && !significant) return null;
  return (r, c) => (rows !== null && rows[r][c] === 0) || (significant !== null && significant[r][c] === 0);
}

/** Extra tooltip lines of a heatmap cell: why it has no value, its statistics
 * (the value itself first when the cells show how far above chance it is, or
 * when "significant only" leaves the cell uncoloured). */
export function cellNotes(x, showsAboveChance, significantOnly = false) {
  const informative = statRows(x, "informative");
  const chanceRows = statRows(x, "chance");
  const significant = statRows(x, "significant");
  const margin = statRows(x, "margin"), marginLow = statRows(x, "margin_low");
  return (r, c) => {
    const lines = [];
    const hidden = significantOnly && !(significant && significant[r][c] === 1);
    if (showsAboveChance || hidden) lines.push(`value ${fmt(x.values[r][c])}`);
    const m = x.missingAt.get(`${r},${c}`);
    if (m) lines.push(`not measured (${m.status.replace("_", " ")}): ${m.reason}`);
    if (informative && informative[r][c] === 0) {
      lines.push(uninformativeReason(chanceRows ? chanceRows[r][c] : NaN, x.higher_is_better));
    }
    if (significant && significant[r][c] === 0) lines.push(notSignificantReason(marginLow ? marginLow[r][c] : NaN));
    if (margin) {
      const text = marginText(margin[r][c], marginLow ? marginLow[r][c] : NaN);
      if (text) lines.push(text);
    }
    const stats = x.stats || {};
    for (const [field, label] of [["stderr", "± stderr"], ["chance", "chance"], ["non_finite", "non-finite images"]]) {
      const v = stats[field] && stats[field].values[r][c];
      if (v != null && !Number.isNaN(v)) lines.push(`${label} ${field === "non_finite" ? v : fmt(v)}`);
    }
    return lines;
  };
}

/** Extra tooltip lines of a group heatmap cell: the interval and the run count. */
export function groupCellNotes(g, interval) {
  return (r, c) => {
    const n = g.n[r][c], low = g.low[r][c], high = g.high[r][c];
    if (!n) return ["no run of the group has a value here"];
    return [
      Number.isFinite(low) ? `${interval}: ${fmt(low)} to ${fmt(high)}` : "no interval (one run has a value here)",
      `${plural(n, "run")} of ${g.runs.length}`,
    ];
  };
}

/** Draw a plotly figure, first hiding any hover label of the previous data (no
 * stale tooltip after the selection changes). */
function react(div, figure, config) {
  if (window.Plotly.Fx && div.classList.contains("js-plotly-plot")) window.Plotly.Fx.unhover(div);
  return window.Plotly.react(div, figure.traces, figure.layout, config);
}

/** The views of an App (its state, series and run styles) in its main area. */
export class Views {
  constructor(app, main) {
    this.app = app;
    this.main = main;
    this.cards = new Map();
  }

  empty(...parts) {
    this.main.replaceChildren(textWithCode("div", "eq-empty", parts));
  }

  /** plotly.js, loaded on first need (status shows while it loads). */
  async plotly() {
    if (window.Plotly) return window.Plotly;
    this.app.setStatus("loading plotly.js…");
    const plotly = await loadPlotly();
    this.app.setStatus(`updated ${new Date().toLocaleTimeString()}`);
    return plotly;
  }

  /** Load plotly.js when the browser is idle, once the heatmaps are up, so that
   * opening a plotly view later is quick. */
  prefetchPlotly() {
    if (this.prefetched || window.Plotly) return;
    this.prefetched = true;
    const go = () => loadPlotly().catch(() => { this.prefetched = false; });
    if (window.requestIdleCallback) window.requestIdleCallback(go, { timeout: 5000 });
    else setTimeout(go, 1000);
  }

  /** Draw the chosen view (plotly.js loaded first for the plotly views). */
  async render(generation) {
    const view = this.app.state.view;
    try {
      if (PLOTLY_VIEWS.has(view) && !window.Plotly) {
        this.main.replaceChildren(el("div", { class: "eq-hint eq-loading", text: "loading plotly.js…" }));
        await this.plotly();
        if (generation !== this.app.generation) return; // a newer render took over
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
      this.app.setStatus(`error: ${e.message}`, true);
    }
  }

  purge() {
    if (!window.Plotly) return;
    for (const node of this.main.querySelectorAll(".js-plotly-plot")) window.Plotly.purge(node);
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
    card.dataset.id = id;
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
        if (plot && window.Plotly) window.Plotly.purge(plot);
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

  /** What the heatmap cells show: {aboveChance, significantOnly, matrix(x), range, reverse(x), title}. */
  heatmapMode(all) {
    const s = this.app.state;
    const aboveChance = s.heatColor === "above_chance" && all.some((x) => statRows(x, "above_chance"));
    // "significant only": the cells of layers not significantly above chance are left uncoloured
    const significantOnly = Boolean(s.significantOnly) && all.some((x) => statRows(x, "significant"));
    const shown = (x) => (aboveChance
      ? statRows(x, "above_chance") || x.values.map((row) => row.map(() => NaN)) : x.values);
    const matrix = !significantOnly ? shown : (x) => {
      const significant = statRows(x, "significant");
      return shown(x).map((row, r) => row.map((v, c) => (significant && significant[r][c] === 1 ? v : NaN)));
    };
    const fixed = FIXED_RANGES[aboveChance ? "above_chance" : s.measure];
    const range = s.heatScale === "fixed" && fixed
      ? Object.assign(valueRange(all.map(matrix)), { lo: fixed[0], hi: fixed[1] })
      : valueRange(all.map(matrix));
    return {
      aboveChance,
      significantOnly,
      matrix,
      range,
      fixed: Boolean(s.heatScale === "fixed" && fixed),
      reverse: (x) => !aboveChance && x.higher_is_better === false,
      title: aboveChance ? "above chance (1 = perfect, 0 = chance)" : s.measure,
    };
  }

  /** CSS px a heatmap's rows may take before they scroll: the user's choice, or
   * what the window leaves below the toolbar, the card's title and the step axes
   * (the whole heatmap in view); null: every row shows ("all rows"). */
  heatmapViewHeight() {
    const chosen = this.app.state.heatHeight;
    if (chosen === "all") return null;
    if (Number(chosen) > 0) return Number(chosen);
    return Math.max(200, window.innerHeight - 150);
  }

  /** Height reserved for a heatmap card's plot before it is drawn (no jumps). */
  heatmapBoxHeight(layers) {
    const rows = heatmapHeight(layers) - 38;
    const view = this.heatmapViewHeight();
    return (view ? Math.min(rows, view) : rows) + 54;
  }

  renderHeatmaps(generation) {
    const loaded = this.app.loadedSeries();
    const mode = this.heatmapMode(loaded);
    // Groups of two or more runs: one card of the group mean each (value colouring;
    // with "above chance" every run is drawn on its own).
    const grouped = mode.aboveChance ? { groups: [], runs: loaded } : this.app.groupedView();
    const all = grouped.runs;
    const groups = grouped.groups;
    if (groups.length) {
      const both = valueRange(all.map(mode.matrix).concat(groups.map((g) => g.mean)));
      mode.range = mode.fixed ? Object.assign(both, { lo: mode.range.lo, hi: mode.range.hi }) : both;
    }
    const range = mode.range;
    const direction = mode.aboveChance ? true : loaded.length ? loaded[0].higher_is_better : true;
    const anyUninformative = all.some((x) => (statRows(x, "informative") || []).some((row) => row.includes(0)));
    const anyNotSignificant = all.some((x) => (statRows(x, "significant") || []).some((row) => row.includes(0)));
    const plots = [];
    const word = this.app.xLabel();
    this.withCards((container) => {
      container.append(el("div", {
        class: "eq-hint",
        text: `Rows: layers in depth order (top = input side). Columns: ${word}s. ` +
          (mode.aboveChance
            ? "Colour: how far above chance the value is ((v - c) / (best - c): 1 = perfect, 0 = chance); "
            : "") +
          `One colour scale for all runs${mode.fixed ? ` (fixed: ${range.lo} to ${range.hi})` : ""}; ${directionHint(direction, this.app.state.measure)}.` +
          (anyUninformative ? " Greyed, hatched cells: uninformative layers (the chance level leaves no room, hover for it)." : "") +
          (anyNotSignificant
            ? " Hatched cells: layers not significantly above chance (the margin's one-sided 95% interval reaches 0;" +
              " hover for it)." : "") +
          (mode.significantOnly ? " Only layers significantly above chance are coloured." : "") +
          (range.pos + range.neg ? " Hatched cells are +∞ / -∞ (e.g. nv = x/0), coloured as the scale's end." : "") +
          (all.some((x) => x.missing.length) ? ` Grey cells: layer not measured at that ${word} (hover for why).` : "") +
          (groups.length ? ` Group cards: the mean over the group's runs (hover: ${this.app.intervalLabel}, number of runs).` : ""),
      }));
      const groupIds = groups.map((g) => {
        const id = `heatmap-group\u0000${g.name}`;
        const sub = [g.models.join(", "), `mean of ${plural(g.runs.length, "run")}`, plural(g.layers.length, "layer"),
          plural(g.xs.length, word), g.baseline ? "baseline" : ""].filter(Boolean).join(" · ");
        const card = this.card(container, id, `${g.name} (group mean)`, sub);
        card.classList.add("eq-heatmap-group");
        card.dataset.group = g.name;
        card.dataset.runs = String(g.runs.length);
        card.plot.style.minHeight = `${this.heatmapBoxHeight(g.layers.length)}px`;
        plots.push([card, null, g]);
        return id;
      });
      return groupIds.concat(all.map((x) => {
        const id = `heatmap\u0000${x.run}`;
        const last = x.steps.length ? x.steps[x.steps.length - 1] : 0;
        // Down-sampled: without records the steps are epochs (0, 1, ...), so the count is known.
        const recorded = x.epochs && x.epochs.some((e) => e != null);
        const epochs = !x.downsampled ? plural(x.steps.length, word)
          : recorded ? `${plural(x.steps.length, word)} kept by TensorBoard (down-sampled)`
            : `${x.steps.length} of ${plural(last + 1, "epoch")} kept by TensorBoard (down-sampled)`;
        const sub = [x.model, x.run_group, plural(x.layers.length, "layer"), epochs, x.baseline ? "baseline" : ""]
          .filter(Boolean).join(" · ");
        const card = this.card(container, id, x.run, sub);
        card.classList.add("eq-heatmap");
        card.dataset.run = x.run;
        card.dataset.rows = String(x.layers.length);
        card.dataset.cols = String(x.steps.length);
        card.plot.style.minHeight = `${this.heatmapBoxHeight(x.layers.length)}px`;
        plots.push([card, x]);
        return id;
      }));
    });
    const interval = this.app.intervalLabel;
    const draw = ([card, x, g]) => {
      if (g) {
        this.heatmapOf(card).draw({
          values: g.mean,
          cols: g.xs,
          rowLabels: layerNames(g.layers),
          parts: g.parts,
          knownParts: this.app.knownParts,
          zmin: range.lo,
          zmax: range.hi,
          reverse: g.higher_is_better === false,
          height: heatmapHeight(g.layers.length),
          viewHeight: () => this.heatmapViewHeight(),
          title: `${g.name} (group mean of ${plural(g.runs.length, "run")})`,
          rowKind: "layer",
          xTitle: word,
          notes: groupCellNotes(g, interval),
          barTitle: this.app.state.measure, // the card title says "group mean"
          valueLabel: "mean",
        }, this.plotWidth(card));
        card.dataset.drawn = "1";
        return;
      }
      this.heatmapOf(card).draw({
        values: mode.matrix(x),
        cols: this.app.xValues(x),
        rowLabels: layerNames(x.layers),
        parts: x.parts,
        knownParts: this.app.knownParts,
        zmin: range.lo,
        zmax: range.hi,
        reverse: mode.reverse(x),
        height: heatmapHeight(x.layers.length),
        viewHeight: () => this.heatmapViewHeight(),
        title: x.run,
        rowKind: "layer",
        xTitle: word,
        notes: cellNotes(x, mode.aboveChance, mode.significantOnly),
        barTitle: mode.title,
        valueLabel: mode.aboveChance ? "above chance" : "value",
        uninformative: uninformativeAt(x),
      }, this.plotWidth(card));
      card.dataset.drawn = "1";
    };
    // Draw what is on screen now; the rest follows in later tasks, so the view
    // shows quickly however many runs there are.
    const bottom = window.innerHeight;
    const later = [];
    for (const item of plots) {
      if (item[0].getBoundingClientRect().top < bottom) draw(item);
      else later.push(item);
    }
    const drawRest = () => {
      if (generation !== this.app.generation) return; // a newer render took over
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

  /** Subtitle words about the groups drawn ("" when none). */
  groupsNote(groups) {
    if (!groups.length) return "";
    return `; thick lines: group means (${groups.map((g) => `${g.name}: ${plural(g.runs.length, "run")}`).join(", ")}), ` +
      `shaded: ${this.app.intervalLabel}, dotted in the group's colour: its runs' mean chance level, ` +
      "dashed: baseline groups";
  }

  /** The loaded series of a group's runs (its mean chance level is theirs). */
  groupMembers(g) {
    return g.runs.map((run) => this.app.series.get(run)).filter(Boolean);
  }

  /** Subtitle words about the y axis of a bounded measure ("" for others). */
  rangeNote() {
    const range = FIXED_RANGES[this.app.state.measure];
    if (!range) return "";
    return this.app.state.fitY ? "; y axis fitted to the data"
      : `; y axis: the measure's range ${range[0]} to ${range[1]} (intervals clipped to it)`;
  }

  renderCurves() {
    const layers = this.app.selectedLayers(this.app.allLayers());
    const { groups, runs } = this.app.groupedView();
    const { perPart, perLayer } = curvesFigures(
      runs, layers, this.app.knownParts, this.app.state.measure, (run) => this.app.lineStyle(run), {
        groups, groupStyle: (g) => this.app.groupStyle(g), interval: this.app.intervalLabel, sharedY: this.app.state.sharedY,
        xOf: (x) => this.app.xValues(x), xTitle: this.app.xLabel(), members: (g) => this.groupMembers(g),
        fitToData: this.app.state.fitY,
      });
    let partDiv, layerDiv;
    const shared = (this.app.state.sharedY ? "; one y-range for all panels" : "") + this.rangeNote();
    this.withCards((container) => {
      partDiv = this.card(container, "curves-parts", "Per part",
        "mean over the part's measured layers (Early / Middle / Late split the feature maps before pooling); " +
        "solid with dots: values, dashed with diamonds: baseline runs, dotted: chance level, band: ± stderr" +
        this.groupsNote(groups) + shared).plot;
      layerDiv = this.card(container, "curves-layers", "Selected layers",
        (layers.length ? "" : "no layer selected") + this.groupsNote(groups).replace(/^; /, layers.length ? "" : "; ") + shared).plot;
      return ["curves-parts", "curves-layers"];
    });
    react(partDiv, perPart, PLOT_CONFIG);
    react(layerDiv, perLayer, PLOT_CONFIG);
  }

  renderProfile() {
    const step = this.app.state.epoch;
    const { groups, runs } = this.app.groupedView();
    const word = this.app.xLabel();
    const figure = profileFigure(runs, step, this.app.state.measure, (run) => this.app.lineStyle(run), {
      groups, groupStyle: (g) => this.app.groupStyle(g), interval: this.app.intervalLabel,
      xOf: (x) => this.app.xValues(x), xTitle: word, groupX: step == null ? null : this.app.xAtStep(step),
      members: (g) => this.groupMembers(g), fitToData: this.app.state.fitY,
    });
    let div;
    const title = step == null ? `at the latest ${word}` : `at ${word} ${this.app.xAtStep(step)}`;
    this.withCards((container) => {
      div = this.card(container, "profile", `Layer profile ${title}`,
        "x: relative depth (0 = first measured layer, 1 = last); dashed with diamonds: baseline runs; " +
        "dotted: chance level, band: ± stderr" + this.groupsNote(groups) + this.rangeNote()).plot;
      return ["profile"];
    });
    react(div, figure, PLOT_CONFIG);
  }

  async renderChannels() {
    const s = this.app.state;
    if (!s.channelRun || !s.channelLayer) {
      this.purge();
      this.empty("No per-channel data for this measure and group. Log it with ",
        { code: "write_report(..., per_channel=True)" }, ".");
      return;
    }
    const body = decodeMatrix(await getJSON("./channels", {
      run: s.channelRun, measure: s.measure, group: s.group, layer: s.channelLayer,
    }));
    const C = body.channels;
    const t = pointAt(body, s.epoch);
    const word = this.app.xLabel();
    const run = this.app.series.get(body.run);
    const cols = run ? body.steps.map((step) => {
      const j = run.steps.indexOf(step);
      return j >= 0 ? this.app.xValues(run)[j] : step;
    }) : body.steps;
    let heatCard, barDiv;
    this.withCards((container) => {
      heatCard = this.card(container, "channels-heat", `${body.run} — ${body.layer}`,
        `${body.part} · ${plural(C, "channel")} · ${plural(body.steps.length, word)}`);
      heatCard.dataset.rows = String(C);
      heatCard.dataset.cols = String(body.steps.length);
      barDiv = this.card(container, "channels-bar", t >= 0 ? `Channels at ${word} ${cols[t]}` : "Channels", "").plot;
      return ["channels-heat", "channels-bar"];
    });
    const range = valueRange([body.values]);
    this.heatmapOf(heatCard).draw({
      values: body.values,
      cols,
      rowLabels: Array.from({ length: C }, (_, c) => String(c)),
      parts: null,
      zmin: range.lo,
      zmax: range.hi,
      reverse: body.higher_is_better === false,
      height: Math.min(520, Math.max(220, 6 * C + 80)),
      title: `${body.run} — ${body.layer}`,
      rowKind: "channel",
      xTitle: word,
    }, this.plotWidth(heatCard));
    heatCard.dataset.drawn = "1";
    const figure = channelBarsFigure(body, t, range, s.measure);
    react(barDiv, figure, PLOT_CONFIG);
  }

  async renderSpearman() {
    const s = this.app.state;
    if (this.app.scalarTags == null || this.app.spearmanStale) {
      this.app.scalarTags = (await getJSON("./scalar_tags")).tags;
      this.app.spearmanStale = false;
      const tags = this.app.scalarTags.map((t) => t.tag);
      if (!tags.includes(s.scalar)) {
        s.scalar = tags.find((t) => /acc/i.test(t) && /(val|test)/i.test(t)) ||
          tags.find((t) => /acc/i.test(t)) || tags[0] || null;
      }
      this.app.updateViewControls();
    }
    if (!s.scalar) {
      this.purge();
      this.empty("No scalar tags in the runs with equivariance data. Log a final metric such as ",
        { code: "val/acc" }, " with the same logger to correlate it with each part's equivariance.");
      return;
    }
    const body = await getJSON("./spearman", {
      measure: s.measure, group: s.group, scalar: s.scalar, run: this.app.visibleRuns().map((r) => r.run),
    });
    // Part means and scalars may be "Infinity" strings (JSON has no ∞).
    for (const pt of body.points) {
      pt.scalar = num(pt.scalar);
      for (const part of Object.keys(pt.parts)) pt.parts[part] = num(pt.parts[part]);
    }
    const infParts = body.points.some((pt) => Object.values(pt.parts).some((v) => v === Infinity || v === -Infinity));
    const grouped = this.app.groupedView().groups.length > 0;
    const figures = spearmanFigures(body, this.app.knownParts, s.scalar, s.measure,
      grouped ? { groupOf: (run) => this.app.groupOf(run) } : null);
    let barDiv, scatterDiv;
    this.withCards((container) => {
      const a = this.card(container, "spearman-bar", `Spearman ρ across ${plural(body.points.length, "run")}`,
        `${s.measure} / ${s.group} at each run's last epoch vs. last ${s.scalar}`);
      for (const stale of a.querySelectorAll(".eq-table")) stale.remove();
      a.insertBefore(this.spearmanTable(body), a.plot);
      barDiv = a.plot;
      const b = this.card(container, "spearman-scatter", "Per-run values",
        "one point per run and part" + (grouped ? "; ρ is over all runs, colours are the runs' groups" : "") +
        (infParts ? "; ±∞ part means (ranked above/below every number) sit on the dotted lines" : ""));
      const note = b.querySelector(".eq-marker-note") || el("div", { class: "eq-hint eq-marker-note" });
      note.textContent = figures.note;
      b.insertBefore(note, b.plot);
      scatterDiv = b.plot;
      return ["spearman-bar", "spearman-scatter"];
    });
    react(barDiv, figures.bar, PLOT_CONFIG);
    react(scatterDiv, figures.scatter, PLOT_CONFIG);
  }

  spearmanTable(body) {
    return el("table", { class: "eq-table" }, [
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
  }
}
