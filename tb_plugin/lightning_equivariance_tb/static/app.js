// The "Equivariance" tab's application: state, data loading, the sidebar's
// controls, live updates. The views themselves are drawn by views.js: per-run
// heatmap (layers x epochs, on a canvas: heatmap.js), curves per part / layer over
// epochs, layer profile at one epoch, per-channel heatmap of one layer, and the
// Spearman correlation of each part with a scalar across runs (plotly figures from
// charts.js). The app polls for new epochs and keeps the user's selection.
//
// Run groups (issue 15): the sidebar groups the selected runs by their recorded
// run_group or by a regular expression on the run name (first capture group); the
// plugin computes each group's mean and 95% Student-t interval over runs
// (/groups, scipy), which the views draw for groups of two or more runs.
//
// Safety: names from the logs reach the DOM through el(..., {text}) only, canvases
// through fillText, plotly through the escaping figure builders of charts.js.

import { FIXED_RANGES, PALETTE, decodeMatrix, el, getJSON, plural, textWithCode } from "./util.js";
import { Views } from "./views.js";

export const POLL_MS = 4000;
/** The run-group pattern field waits this long after the last keystroke before asking /groups. */
export const PATTERN_DEBOUNCE_MS = 600;
const VIEWS = [
  ["heatmap", "Heatmap"],
  ["curves", "Curves"],
  ["profile", "Layer profile"],
  ["channels", "Channels"],
  ["spearman", "Spearman"],
];
const MAX_LAYER_PANELS = 6;

/** Decode the base64 matrices of a /series body (values, part means, stats). */
function decodeSeries(body) {
  decodeMatrix(body, "values");
  decodeMatrix(body, "part_values");
  for (const stat of Object.values(body.stats || {})) decodeMatrix(stat, "values");
  const missing = new Map();
  for (const m of body.missing || []) missing.set(`${m.layer},${m.point}`, m);
  body.missingAt = missing;
  return body;
}

export class App {
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
      heatColor: "value", // heatmap cells: "value" | "above_chance"
      heatScale: "data", // heatmap colour scale: "data" (the runs' range) | "fixed"
      significantOnly: false, // heatmap: colour only the layers significantly above chance
      sharedY: false, // curves: one y-range for every panel
      fitY: false, // curves and profile: a bounded measure's y axis fits the data instead of its range
      heatHeight: "fit", // heatmap rows box: "fit" (the window's height) | "all" (no scrolling) | CSS px
      xAxis: null, // "epoch" | "global_step"; null = epoch when every run has one point per epoch
      groupBy: null, // "none" | "recorded" | "pattern"; null = recorded when runs have a run_group
      groupPattern: "", // regular expression (RE2 syntax) whose first capture group names the group
    };
    this.groups = null; // /groups body (decoded) while grouping is on
    this.groupsKey = null;
    this.groupsError = null;
    // pattern -> why /groups refused it: never sent again (a poll, a toggled run, the same text retyped)
    this.refusedPatterns = new Map();
    this.patternTimer = null;
    this.index = null; // /runs
    this.series = new Map(); // run -> /series body for state.measure/group
    this.seriesKey = new Map(); // run -> signature of what is in this.series
    this.seriesErrors = new Map(); // run -> why its series could not be read
    this.scalarTags = null;
    this.renderCount = 0;
    this.build();
  }

  // ---- skeleton ---------------------------------------------------------

  build() {
    this.measureSelect = el("select", { onchange: () => this.onMeasure() });
    this.groupSelect = el("select", { onchange: () => this.onGroup() });
    this.xAxisSelect = el("select", {
      class: "eq-x-axis",
      onchange: () => {
        this.state.xAxis = this.xAxisSelect.value;
        this.reloadAndRender();
      },
    });
    this.tabs = el("div", { class: "eq-tabs" }, VIEWS.map(([id, label]) =>
      el("button", { text: label, "data-view": id, onclick: () => this.setView(id) })));
    this.status = el("span", { class: "eq-status", text: "loading…" });
    const toolbar = el("div", { class: "eq-toolbar" }, [
      el("label", {}, ["Measure", this.measureSelect]),
      el("label", {}, ["Group", this.groupSelect]),
      el("label", {}, ["X axis", this.xAxisSelect]),
      this.tabs,
      this.status,
    ]);
    this.banner = el("div", { class: "eq-banner", hidden: true });
    this.runList = el("div", { class: "eq-runs" });
    this.viewControls = el("div", { class: "eq-view-controls" });
    this.groupControls = el("div", { class: "eq-group-controls" });
    const sidebar = el("div", { class: "eq-sidebar" }, [
      el("h3", { text: "Runs" }),
      el("div", { class: "eq-run-tools" }, [
        el("button", { text: "all", onclick: () => this.setAllRuns(true) }),
        el("button", { text: "none", onclick: () => this.setAllRuns(false) }),
      ]),
      this.runList,
      this.groupControls,
      this.viewControls,
    ]);
    this.main = el("div", { class: "eq-main" });
    this.views = new Views(this, this.main);
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

  get knownParts() {
    return (this.index && this.index.parts) || [];
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
    const changedGroups = await this.loadGroups();
    this.setStatus(`updated ${new Date().toLocaleTimeString()}`);
    return changedIndex || changedSeries || changedGroups;
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

  /**
   * Fetch, in one request, the series of visible runs that changed. When that
   * fails (a run's event file holds data that cannot be read), fetch them one by
   * one: the readable runs are drawn, the others are named with the reason.
   */
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
    let bodies;
    try {
      bodies = (await getJSON("./series_batch", { run: stale, measure, group })).series;
    } catch (batchError) {
      const settled = await Promise.allSettled(stale.map((run) => getJSON("./series", { run, measure, group })));
      bodies = [];
      settled.forEach((result, i) => {
        if (result.status === "fulfilled") bodies.push(result.value);
        else this.seriesErrors.set(stale[i], result.reason.message);
      });
    }
    if (measure !== this.state.measure || group !== this.state.group) return false; // superseded
    for (const x of bodies) {
      this.series.set(x.run, decodeSeries(x));
      this.seriesKey.set(x.run, keys.get(x.run));
      this.seriesErrors.delete(x.run);
    }
    for (const run of stale) if (this.seriesErrors.has(run)) this.seriesKey.set(run, keys.get(run));
    return true;
  }

  // ---- x axis ------------------------------------------------------------
  //
  // The callback logs at the global step with the epoch in each point's record;
  // runs written without records use the event step, by convention the epoch.

  /** "epoch" or "global_step": the user's choice, else epoch when every loaded run
   * has at most one point per epoch. */
  xAxisMode() {
    if (this.state.xAxis) return this.state.xAxis;
    const distinct = (x) => {
      const xs = this.xValues(x, "epoch");
      return xs.every((v, i) => i === 0 || v > xs[i - 1]);
    };
    return this.loadedSeries().every(distinct) ? "epoch" : "global_step";
  }

  xLabel() {
    return this.xAxisMode() === "epoch" ? "epoch" : "global step";
  }

  /** "1 epoch", "3 global steps": a count of points in the x axis's words. */
  xCount(n) {
    return plural(n, this.xLabel());
  }

  /** The x value of each point of a /series body (recorded epoch or global step; the
   * event step where a point has no record). */
  xValues(x, mode = this.xAxisMode()) {
    const recorded = mode === "epoch" ? x.epochs : x.global_steps;
    return x.steps.map((step, j) => (recorded && recorded[j] != null ? recorded[j] : step));
  }

  /** The x value of an event step (from the first loaded run that has it). */
  xAtStep(step) {
    for (const x of this.loadedSeries()) {
      const j = x.steps.indexOf(step);
      if (j >= 0) return this.xValues(x)[j];
    }
    return step;
  }

  // ---- run groups -------------------------------------------------------

  /** How runs are grouped now: "none", "recorded" or "pattern". */
  groupMode() {
    const by = this.state.groupBy;
    if (by) return by;
    return this.index && this.index.runs.some((r) => r.run_group) ? "recorded" : "none";
  }

  /**
   * Fetch the groups of the visible runs (/groups) when grouping is on and the
   * selection, the data or the grouping changed; true when they changed. An
   * invalid pattern is kept as groupsError (shown under the pattern field); a
   * pattern the plugin refused is remembered and not sent again.
   */
  async loadGroups() {
    const s = this.state;
    const mode = this.groupMode();
    const runs = this.index ? this.visibleRuns().map((r) => r.run) : [];
    const pattern = mode === "pattern" ? s.groupPattern.trim() : "";
    const x = this.xAxisMode();
    const key = JSON.stringify([mode, pattern, x, s.measure, s.group, runs, runs.map((r) => this.seriesKey.get(r) || "")]);
    if (key === this.groupsKey) return false;
    this.groupsKey = key;
    this.groupsError = null;
    if (mode === "none" || !s.measure || !runs.length || (mode === "pattern" && !pattern)) {
      const had = this.groups != null;
      this.groups = null;
      return had;
    }
    if (pattern && this.refusedPatterns.has(pattern)) {
      this.groups = null;
      this.groupsError = this.refusedPatterns.get(pattern);
      return true;
    }
    const params = { run: runs, measure: s.measure, group: s.group, x };
    if (pattern) params.pattern = pattern;
    try {
      const body = await getJSON("./groups", params);
      if (key !== this.groupsKey) return false; // superseded
      for (const g of body.groups) {
        for (const prefix of ["mean", "low", "high", "n", "part_mean", "part_low", "part_high", "part_n"]) decodeMatrix(g, prefix);
      }
      this.groups = body;
    } catch (e) {
      if (pattern && e.argument === "pattern") this.refusedPatterns.set(pattern, e.message);
      if (key !== this.groupsKey) return false;
      this.groups = null;
      this.groupsError = e.message;
    }
    return true;
  }

  /** Take the pattern field's text (debounced typing, Enter, leaving the field). */
  setPattern(text) {
    clearTimeout(this.patternTimer);
    this.patternTimer = null;
    if (text === this.state.groupPattern) return;
    this.state.groupPattern = text;
    this.reloadAndRender();
  }

  /** Groups drawn as groups (two or more runs) and the loaded runs drawn on their
   * own (in no group, or alone in theirs: a group of one run is shown as the run). */
  groupedView() {
    const groups = this.groups ? this.groups.groups.filter((g) => g.runs.length > 1) : [];
    const members = new Set(groups.flatMap((g) => g.runs));
    return { groups, runs: this.loadedSeries().filter((x) => !members.has(x.run)), members };
  }

  /** The group (of two or more runs) a run is drawn in, or null. */
  groupOf(run) {
    const { groups } = this.groupedView();
    const g = groups.find((x) => x.runs.includes(run));
    return g ? { name: g.name, color: this.groupColor(g) } : null;
  }

  /** A group's colour: that of its first run (which is not drawn on its own). */
  groupColor(g) {
    return this.runColor(g.runs[0]);
  }

  groupStyle(g, width = 2.5) {
    return { color: this.groupColor(g), width, dash: g.baseline ? "dash" : "solid" };
  }

  get intervalLabel() {
    return (this.groups && this.groups.interval) || "95% Student-t interval over runs";
  }

  /** The sidebar's "Run groups" section: how to group, the pattern, the groups. */
  updateGroupControls() {
    const s = this.state;
    const mode = this.groupMode();
    const by = el("select", {
      class: "eq-group-by",
      onchange: () => {
        s.groupBy = by.value;
        this.updateGroupControls();
        this.reloadAndRender();
      },
    }, [
      el("option", { value: "none", text: "no grouping" }),
      el("option", { value: "recorded", text: "recorded run group" }),
      el("option", { value: "pattern", text: "regex on run name" }),
    ]);
    by.value = mode;
    const children = [el("h3", { text: "Run groups" }), by];
    if (mode === "pattern") {
      // One field, kept across updates: a live update never drops what is being typed.
      if (!this.patternInput) {
        const input = this.patternInput = el("input", {
          type: "text", class: "eq-group-pattern", value: s.groupPattern, spellcheck: false,
          placeholder: "e.g. ^(.*)_seed\\d+$",
          title: "Regular expression (RE2 syntax: no backreferences or lookaround); "
            + "its first capture group names the group",
          // Typing asks /groups once the field rests (PATTERN_DEBOUNCE_MS); Enter or leaving the field at once.
          oninput: () => {
            clearTimeout(this.patternTimer);
            this.patternTimer = setTimeout(() => this.setPattern(input.value), PATTERN_DEBOUNCE_MS);
          },
          onchange: () => this.setPattern(input.value),
        });
      }
      const input = this.patternInput;
      if (document.activeElement !== input) input.value = s.groupPattern;
      children.push(input, el("div", { class: "eq-hint", text: "The first capture group of the match names the group; runs that do not match stay ungrouped." }));
    }
    if (this.groupsError) children.push(el("div", { class: "eq-hint eq-error eq-group-error", text: this.groupsError }));
    if (mode !== "none" && this.groups) {
      const list = this.groups.groups.map((g) => el("div", { class: "eq-group-entry", "data-group": g.name }, [
        el("span", {
          class: "eq-swatch" + (g.baseline ? " eq-dashed" : ""),
          style: g.baseline ? `border-color:${this.groupColor(g)}` : `background:${this.groupColor(g)}`,
        }),
        el("span", { class: "eq-run-name", text: g.name }),
        el("span", { class: "eq-tag", text: g.runs.length > 1 ? plural(g.runs.length, "run") : "1 run (shown as the run)" }),
      ]));
      if (!list.length) list.push(el("div", { class: "eq-hint", text: "No selected run is in a group." }));
      children.push(...list, el("div", {
        class: "eq-hint eq-interval-note",
        text: `Groups: mean over their runs, band = ${this.intervalLabel} (computed by the plugin with scipy); a group of one run is shown as the run; dashed: baseline groups.`,
      }));
    }
    this.groupControls.replaceChildren(...children);
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
    this.seriesErrors.clear();
    this.updateControls();
    await this.reloadAndRender();
  }

  async reloadAndRender() {
    await this.safely(async () => {
      await this.loadSeries();
      await this.loadGroups();
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
    await this.reloadAndRender();
  }

  async toggleRun(name, visible) {
    if (visible) this.state.hidden.delete(name);
    else this.state.hidden.add(name);
    await this.reloadAndRender();
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
    this.fillSelect(this.xAxisSelect, ["epoch", "global_step"], this.xAxisMode(), (v) => v.replace("_", " "));
    const runs = this.runsWithSeries();
    this.runList.replaceChildren(...runs.map((run) => this.runEntry(run)));
    if (!runs.length) {
      this.runList.replaceChildren(el("div", { class: "eq-hint", text: "No runs yet." }));
    }
    this.updateGroupControls();
    this.updateViewControls();
    this.updateBanner();
  }

  /** One run of the sidebar: checkbox, colour, name, tags, model (all text). */
  runEntry(run) {
    const s = this.state;
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
    const tags = [];
    if (run.baseline) tags.push(el("span", { class: "eq-tag", text: "baseline" }));
    if (run.run_group) tags.push(el("span", { class: "eq-tag eq-group", text: run.run_group, title: "run group" }));
    const grouped = this.groupMode() === "pattern" && this.groups &&
      this.groups.groups.find((g) => g.runs.includes(run.run));
    if (grouped) tags.push(el("span", { class: "eq-tag eq-group", text: `≈ ${grouped.name}`, title: "group from the pattern" }));
    if (loaded && loaded.downsampled) {
      tags.push(el("span", { class: "eq-tag eq-warn", text: "sampled", title: "TensorBoard kept only some epochs of this run" }));
    }
    if (this.seriesErrors.has(run.run)) {
      tags.push(el("span", { class: "eq-tag eq-warn", text: "unreadable", title: this.seriesErrors.get(run.run) }));
    }
    const model = run.model ? el("div", { class: "eq-run-model", text: run.model }) : null;
    const name = el("span", { class: "eq-run-name", text: run.run });
    return el("label", { class: "eq-run", "data-run": run.run }, [box, swatch, el("div", {}, [name, ...tags, model])]);
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
    const visible = new Set(this.visibleRuns().map((r) => r.run));
    const unreadable = [...this.seriesErrors].filter(([run]) => visible.has(run));
    if (unreadable.length) {
      const [run, why] = unreadable[0];
      notes.push(el("div", { text: `${unreadable.length} run(s) not shown, e.g. ${run}: ${why}` }));
    }
    this.banner.hidden = !notes.length;
    this.banner.replaceChildren(...notes);
  }

  /** Layer names of all loaded runs, merged in depth order: a layer only some
   * runs have goes right after its predecessor in its own run. */
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
    const view = this.state.view;
    const controls = [];
    if (view === "heatmap") controls.push(...this.heatmapControls());
    if (view === "curves") controls.push(...this.layerControls());
    if (view === "profile" || view === "channels") controls.push(...this.epochControls());
    if (view === "profile" && FIXED_RANGES[this.state.measure]) {
      controls.push(el("h3", { text: "Y axis" }), this.fitYControl());
    }
    if (view === "channels") controls.push(...this.channelControls());
    if (view === "spearman") controls.push(...this.scalarControls());
    this.viewControls.replaceChildren(...controls);
  }

  /** Heatmap: colour by value or by how far above chance; data range or fixed scale. */
  heatmapControls() {
    const s = this.state;
    const hasAbove = this.loadedSeries().some((x) => x.stats && x.stats.above_chance);
    const color = el("select", {
      class: "eq-heat-color",
      onchange: () => {
        s.heatColor = color.value;
        this.updateViewControls();
        this.safely(() => this.renderView());
      },
    }, [
      el("option", { value: "value", text: "value" }),
      el("option", { value: "above_chance", text: "above chance", disabled: !hasAbove }),
    ]);
    color.value = hasAbove ? s.heatColor : "value";
    const bounded = (s.heatColor === "above_chance" && hasAbove) || FIXED_RANGES[s.measure] != null;
    const fixed = FIXED_RANGES[s.heatColor === "above_chance" && hasAbove ? "above_chance" : s.measure];
    const scale = el("select", {
      class: "eq-heat-scale",
      onchange: () => {
        s.heatScale = scale.value;
        this.safely(() => this.renderView());
      },
    }, [
      el("option", { value: "data", text: "data range" }),
      el("option", { value: "fixed", text: fixed ? `fixed ${fixed[0]} to ${fixed[1]}` : "fixed (bounded measures)", disabled: !bounded }),
    ]);
    scale.value = bounded ? s.heatScale : "data";
    const height = el("select", {
      class: "eq-heat-height",
      onchange: () => {
        s.heatHeight = height.value;
        this.safely(() => this.renderView());
      },
    }, [
      el("option", { value: "fit", text: "fit the window" }),
      ...[400, 800, 1200].map((px) => el("option", { value: String(px), text: `${px} px` })),
      el("option", { value: "all", text: "all rows (no scrolling)" }),
    ]);
    height.value = s.heatHeight;
    const hasSignificance = this.loadedSeries().some((x) => x.stats && x.stats.significant);
    const significantOnly = el("input", {
      type: "checkbox", class: "eq-significant-only",
      checked: s.significantOnly && hasSignificance, disabled: !hasSignificance,
      onchange: () => {
        s.significantOnly = significantOnly.checked;
        this.safely(() => this.renderView());
      },
    });
    return [
      el("h3", { text: "Colour" }), color,
      el("div", { class: "eq-hint", text: hasAbove ? "above chance: (v - c) / (best - c), 1 = perfect, 0 = chance." : "No chance level logged for this measure." }),
      el("label", { class: "eq-check" }, [significantOnly, "significant only"]),
      el("h3", { text: "Scale" }), scale,
      el("h3", { text: "Height" }), height,
      el("div", {
        class: "eq-hint", text: "Taller heatmaps scroll their rows; the step axis and the colour bar stay in view.",
      }),
    ];
  }

  layerControls() {
    const layers = this.allLayers();
    const selected = new Set(this.selectedLayers(layers));
    const select = el("select", {
      multiple: true,
      size: Math.min(12, Math.max(4, layers.length)),
      onchange: () => {
        this.state.layers = [...select.selectedOptions].map((o) => o.value);
        this.safely(() => this.renderView());
      },
    }, layers.map((name) => el("option", { value: name, text: name, selected: selected.has(name) })));
    const shared = el("input", {
      type: "checkbox", class: "eq-shared-y", checked: this.state.sharedY,
      onchange: () => {
        this.state.sharedY = shared.checked;
        this.safely(() => this.renderView());
      },
    });
    return [el("h3", { text: "Layers" }), select,
      el("div", { class: "eq-hint", text: `Ctrl/Shift-click to pick up to ${MAX_LAYER_PANELS} layers.` }),
      el("h3", { text: "Y axis" }),
      el("label", { class: "eq-check" }, [shared, "same y-range on every panel"]),
      ...(FIXED_RANGES[this.state.measure] ? [this.fitYControl()] : [])];
  }

  /** A bounded measure's y axes: its natural range (default) or fitted to the data. */
  fitYControl() {
    const range = FIXED_RANGES[this.state.measure];
    const fit = el("input", {
      type: "checkbox", class: "eq-fit-y", checked: this.state.fitY,
      onchange: () => {
        this.state.fitY = fit.checked;
        this.safely(() => this.renderView());
      },
    });
    return el("label", { class: "eq-check", title: `unchecked: the measure's range ${range[0]} to ${range[1]}` },
      [fit, "fit to data"]);
  }

  epochControls() {
    const s = this.state;
    const steps = this.allSteps();
    const label = el("div", { class: "eq-hint" });
    const slider = el("input", { type: "range", class: "eq-epoch", min: 0, max: Math.max(steps.length - 1, 0), step: 1 });
    const current = s.epoch == null ? steps.length - 1 : Math.max(0, steps.findIndex((x) => x >= s.epoch));
    slider.value = String(current);
    const word = this.xLabel();
    const describe = () => {
      const i = Number(slider.value);
      label.textContent = steps.length
        ? `${word} ${this.xAtStep(steps[i])}${i === steps.length - 1 ? ` (latest, follows new ${word}s)` : ""}`
        : `no ${word}s`;
    };
    describe();
    slider.addEventListener("input", describe);
    slider.addEventListener("change", () => {
      const i = Number(slider.value);
      s.epoch = i === steps.length - 1 ? null : steps[i];
      this.safely(() => this.renderView());
    });
    return [el("h3", { text: word }), slider, label];
  }

  channelControls() {
    const s = this.state;
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
    return [el("h3", { text: "Run" }), runSelect, el("h3", { text: "Layer" }), layerSelect];
  }

  scalarControls() {
    const s = this.state;
    const tags = (this.scalarTags || []).map((t) => t.tag);
    const select = el("select", {
      onchange: () => {
        s.scalar = select.value;
        this.safely(() => this.renderView());
      },
    });
    this.fillSelect(select, tags, s.scalar);
    return [el("h3", { text: "Scalar" }), select,
      el("div", { class: "eq-hint", text: "Last value of this scalar in each run vs. each part's mean at the run's last epoch." })];
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

  async renderView() {
    const started = performance.now();
    const generation = (this.generation = (this.generation || 0) + 1);
    if (!this.index.runs.length) {
      this.views.purge();
      this.views.empty(
        "No equivariance data in this log directory yet. Log reports with ",
        { code: "lightning_equivariance_tb.summary.write_report(writer, report, step)" },
        " or train with the ",
        { code: "EquivarianceCallback" },
        `; this page checks for new data every ${POLL_MS / 1000} s.`,
      );
    } else if (!this.visibleRuns().length) {
      this.views.purge();
      this.views.empty("No run selected: tick at least one run on the left.");
    } else {
      await this.views.render(generation);
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
