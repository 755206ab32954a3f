(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("report-data").textContent);
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var CONFIG = {displaylogo: false, responsive: true, showLink: false, showSendToCloud: false, showEditInChartStudio: false};
  var state = {series: 0, axis: "step", heat: null, curve: "part:0", mode: "both"};

  function $(id) { return document.getElementById(id); }
  function num(v) { return v === "inf" ? Infinity : v === "-inf" ? -Infinity : v === null || v === undefined ? NaN : v; }
  function shown(v) { v = num(v); return isFinite(v) ? v : null; }  // lines: gaps for NaN and infinities
  function esc(s) { return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }
  function fmt(v) { v = num(v); return isNaN(v) ? "no value" : !isFinite(v) ? (v > 0 ? "+inf" : "-inf") : v.toFixed(4); }
  function rgba(hex, a) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16 & 255) + "," + (n >> 8 & 255) + "," + (n & 255) + "," + a + ")";
  }
  function option(select, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o); return o;
  }
  function series() { return DATA.series[state.series]; }
  function groupsOn() { return state.mode !== "runs" && series().groups.length > 0; }
  function runsOn(run) { return state.mode !== "groups" || !run.run_group || !series().groups.length; }

  function colours() {
    var s = series(), out = {}, k = 0;
    s.groups.forEach(function (g) { out["g:" + g.name] = PALETTE[k++ % PALETTE.length]; });
    s.runs.forEach(function (r) {
      out["r:" + r.run] = r.run_group ? out["g:" + r.run_group] : PALETTE[k++ % PALETTE.length];
    });
    return out;
  }

  function xsOf(run) {  // [x values, columns] along the chosen axis
    if (state.axis === "step") return [run.steps, run.steps.map(function (_, j) { return j; })];
    var last = {};
    run.epochs.forEach(function (e, j) { if (e !== null) last[e] = j; });
    var es = Object.keys(last).map(Number).sort(function (a, b) { return a - b; });
    return [es, es.map(function (e) { return last[e]; })];
  }
  function hasEpochs() { return series().runs.some(function (r) { return r.epochs.some(function (e) { return e !== null; }); }); }
  function axisTitle() { return state.axis === "step" ? "global step" : "epoch"; }

  // the margin above chance and its one-sided 95% interval (docs/measures.md §7), "" when not logged
  function marginText(r, i, j) {
    if (!r.margin || r.margin[i][j] === null) return "";
    var low = r.margin_low ? r.margin_low[i][j] : null, sig = r.significant ? r.significant[i][j] : null;
    var verdict = sig === 1 ? "<br>significantly above chance" : sig === 0 ? "<br>not significantly above chance" : "";
    return "<br>margin " + fmt(r.margin[i][j]) + (low === null ? " (no interval: fewer than 2 scored probe pairs)"
      : " (95% lower bound " + fmt(low) + ")") + verdict;
  }

  function band(x, low, high, colour, name, group) {
    return [
      {x: x, y: high.map(shown), mode: "lines", line: {width: 0, color: colour}, hoverinfo: "skip", showlegend: false, legendgroup: group},
      {x: x, y: low.map(shown), mode: "lines", line: {width: 0, color: colour}, fill: "tonexty", fillcolor: rgba(colour, 0.2),
       hoverinfo: "skip", name: name, showlegend: false, legendgroup: group}
    ];
  }

  // ---------------------------------------------------------------- controls
  function fillControls() {
    var s = $("series"); s.innerHTML = "";
    DATA.series.forEach(function (t, i) { option(s, i, t.measure + " / " + t.group); });
    s.value = state.series;
    var a = $("axis"); a.innerHTML = "";
    option(a, "step", "global step");
    if (hasEpochs()) option(a, "epoch", "epoch");
    if (!hasEpochs()) state.axis = "step";
    a.value = state.axis;
    var t = series();
    var h = $("heat"); h.innerHTML = "";
    t.groups.forEach(function (g) { option(h, "g:" + g.name, "group " + g.name + " (mean of " + g.runs.length + " runs)"); });
    t.runs.forEach(function (r) { option(h, "r:" + r.run, "run " + r.run); });
    if (!state.heat || !Array.prototype.some.call(h.options, function (o) { return o.value === state.heat; })) state.heat = h.options[0].value;
    h.value = state.heat;
    var c = $("curve"); c.innerHTML = "";
    var parts = [], layers = [];
    t.runs.forEach(function (r) {
      r.part_names.forEach(function (p) { if (parts.indexOf(p) < 0) parts.push(p); });
      r.layers.forEach(function (l) { if (layers.indexOf(l) < 0) layers.push(l); });
    });
    parts.forEach(function (p) { option(c, "part:" + p, "part " + p + " (mean of its layers)"); });
    layers.forEach(function (l) { option(c, "layer:" + l, "layer " + l); });
    if (!Array.prototype.some.call(c.options, function (o) { return o.value === state.curve; })) state.curve = c.options[0].value;
    c.value = state.curve;
    $("mode-box").style.display = t.groups.length ? "" : "none";
    $("mode").value = state.mode;
  }

  // ---------------------------------------------------------------- heatmap
  function drawHeatmap() {
    var t = series(), key = state.heat, layers, xs, z, text, title;
    if (key.slice(0, 2) === "g:") {
      var g = t.groups.filter(function (g) { return "g:" + g.name === key; })[0];
      var ax = g.axes[state.axis];
      layers = g.layers;
      var all = {};
      (ax ? ax.layers : []).forEach(function (b) { b.x.forEach(function (x) { all[x] = 1; }); });
      xs = Object.keys(all).map(Number).sort(function (a, b) { return a - b; });
      z = []; text = [];
      layers.forEach(function (l, i) {
        var b = ax ? ax.layers[i] : {x: [], mean: [], low: [], high: [], n: []};
        var at = {}; b.x.forEach(function (x, k) { at[x] = k; });
        z.push(xs.map(function (x) { return x in at ? num(b.mean[at[x]]) : NaN; }));
        text.push(xs.map(function (x) {
          if (!(x in at)) return "no run has a value";
          var k = at[x];
          return "mean " + fmt(b.mean[k]) + " over " + b.n[k] + " run(s)" + (b.low[k] === null ? "" : "<br>interval " + fmt(b.low[k]) + " .. " + fmt(b.high[k]));
        }));
      });
      title = "group " + esc(g.name) + ": mean over " + g.runs.length + " runs";
    } else {
      var r = t.runs.filter(function (r) { return "r:" + r.run === key; })[0];
      var xc = xsOf(r); xs = xc[0];
      layers = r.layers;
      z = r.values.map(function (row) { return xc[1].map(function (j) { return num(row[j]); }); });
      text = r.values.map(function (row, i) {
        return xc[1].map(function (j) {
          var s = "value " + fmt(row[j]);
          if (r.chance && r.chance[i][j] !== null) s += "<br>chance " + fmt(r.chance[i][j]);
          if (r.stderr && r.stderr[i][j] !== null) s += "<br>stderr " + fmt(r.stderr[i][j]);
          s += marginText(r, i, j);
          return s;
        });
      });
      title = "run " + esc(r.run);
    }
    var finite = [];
    z.forEach(function (row) { row.forEach(function (v) { if (isFinite(v)) finite.push(v); }); });
    var lo = finite.length ? Math.min.apply(null, finite) : 0, hi = finite.length ? Math.max.apply(null, finite) : 1;
    var zz = z.map(function (row) { return row.map(function (v) { return isNaN(v) ? null : v === Infinity ? hi : v === -Infinity ? lo : v; }); });
    var trace = {
      type: "heatmap", z: zz, x: xs.map(String), y: layers.map(esc), text: text, hoverongaps: false,
      hovertemplate: "%{y} @ " + axisTitle() + " %{x}<br>%{text}<extra></extra>",
      colorscale: "Viridis", reversescale: t.higher_is_better === false, zmin: lo, zmax: hi,
      colorbar: {title: {text: esc(t.measure), side: "right"}}
    };
    var height = Math.min(1400, Math.max(320, 120 + 16 * layers.length));
    Plotly.react("heatmap", [trace], {
      title: {text: title + " (" + esc(t.measure) + " / " + esc(t.group) + ")", font: {size: 14}},
      height: height, margin: {l: 180, r: 30, t: 40, b: 60},
      xaxis: {title: {text: axisTitle()}, type: "category"},
      yaxis: {autorange: "reversed", automargin: true, type: "category"},
      plot_bgcolor: "#d0d0d0"
    }, CONFIG);
  }

  // ---------------------------------------------------------------- curves
  function drawCurves() {
    var t = series(), col = colours(), traces = [];
    var what = state.curve.slice(0, state.curve.indexOf(":")), name = state.curve.slice(state.curve.indexOf(":") + 1);
    if (groupsOn()) {
      t.groups.forEach(function (g) {
        var ax = g.axes[state.axis]; if (!ax) return;
        var b = what === "part" ? ax.parts[name] : ax.layers[g.layers.indexOf(name)];
        if (!b) return;
        var c = col["g:" + g.name];
        traces = traces.concat(band(b.x, b.low, b.high, c, g.name, "g:" + g.name));
        traces.push({x: b.x, y: b.mean.map(shown), mode: "lines+markers", name: esc(g.name) + " (mean, n=" + g.runs.length + ")",
          legendgroup: "g:" + g.name, line: {color: c, width: 3, dash: g.baseline ? "dash" : "solid"},
          customdata: b.n, hovertemplate: "%{y:.4f} over %{customdata} run(s)<extra>" + esc(g.name) + "</extra>"});
      });
    }
    t.runs.forEach(function (r) {
      if (!runsOn(r)) return;
      var xc = xsOf(r), row;
      if (what === "part") { var k = r.part_names.indexOf(name); if (k < 0) return; row = r.part_values[k]; }
      else { var i = r.layers.indexOf(name); if (i < 0) return; row = r.values[i]; }
      var grouped = r.run_group && groupsOn();
      traces.push({x: xc[0], y: xc[1].map(function (j) { return shown(row[j]); }), mode: "lines+markers", name: esc(r.run),
        line: {color: col["r:" + r.run], width: grouped ? 1 : 2, dash: r.baseline ? "dash" : "solid"}, opacity: grouped ? 0.45 : 1,
        marker: {size: 4}, hovertemplate: "%{y:.4f}<extra>" + esc(r.run) + "</extra>"});
    });
    Plotly.react("curves", traces, {
      title: {text: (what === "part" ? "part " : "layer ") + esc(name) + ": " + esc(t.measure) + " / " + esc(t.group), font: {size: 14}},
      height: 420, margin: {l: 60, r: 30, t: 40, b: 50}, xaxis: {title: {text: axisTitle()}}, yaxis: {title: {text: esc(t.measure)}},
      legend: {orientation: "v"}
    }, CONFIG);
  }

  // ---------------------------------------------------------------- profile
  function drawProfile() {
    var t = series(), col = colours(), traces = [], layers = [];
    t.runs.forEach(function (r) { r.layers.forEach(function (l) { if (layers.indexOf(l) < 0) layers.push(l); }); });
    var y = function (l) { return esc(l); };
    if (groupsOn()) {
      t.groups.forEach(function (g) {
        var b = g.profile, c = col["g:" + g.name];
        var x = b.x.map(function (i) { return y(g.layers[i]); });
        traces = traces.concat(band(x, b.low, b.high, c, g.name, "g:" + g.name));
        traces.push({x: x, y: b.mean.map(shown), mode: "lines+markers", name: esc(g.name) + " (mean, n=" + g.runs.length + ")",
          legendgroup: "g:" + g.name, line: {color: c, width: 3, dash: g.baseline ? "dash" : "solid"},
          customdata: b.n, hovertemplate: "%{y:.4f} over %{customdata} run(s)<extra>" + esc(g.name) + "</extra>"});
      });
    }
    t.runs.forEach(function (r) {
      if (!runsOn(r)) return;
      var last = r.steps.length - 1, c = col["r:" + r.run], grouped = r.run_group && groupsOn();
      var x = r.layers.map(y);
      var v = r.values.map(function (row) { return shown(row[last]); });
      if (r.stderr && !grouped) {
        var se = r.stderr.map(function (row) { return num(row[last]); });
        traces = traces.concat(band(x, v.map(function (a, i) { return a === null || isNaN(se[i]) ? null : a - se[i]; }),
          v.map(function (a, i) { return a === null || isNaN(se[i]) ? null : a + se[i]; }), c, r.run, "r:" + r.run));
      }
      // layers not significantly above chance: hollow markers; the hover gives the margin and its interval
      var notSig = r.significant ? r.significant.map(function (row) { return row[last] === 0; }) : null;
      traces.push({x: x, y: v, mode: "lines+markers", name: esc(r.run) + " @ " + r.steps[last], legendgroup: "r:" + r.run,
        line: {color: c, width: grouped ? 1 : 2, dash: r.baseline ? "dash" : "solid"}, opacity: grouped ? 0.45 : 1,
        marker: {size: notSig ? 6 : 4,
          symbol: notSig ? notSig.map(function (n) { return n ? "circle-open" : "circle"; }) : "circle"},
        text: r.layers.map(function (_, i) { return marginText(r, i, last); }),
        hovertemplate: "%{y:.4f}%{text}<extra>" + esc(r.run) + "</extra>"});
      if (r.chance && !grouped) {
        traces.push({x: x, y: r.chance.map(function (row) { return shown(row[last]); }), mode: "lines", name: esc(r.run) + ": chance",
          legendgroup: "r:" + r.run, line: {color: c, width: 1, dash: "dot"}, hovertemplate: "chance %{y:.4f}<extra>" + esc(r.run) + "</extra>"});
      }
    });
    Plotly.react("profile", traces, {
      title: {text: "layer profile at each run's last measurement: " + esc(t.measure) + " / " + esc(t.group), font: {size: 14}},
      height: 460, margin: {l: 60, r: 30, t: 40, b: 140},
      xaxis: {type: "category", categoryorder: "array", categoryarray: layers.map(y), tickangle: -60, automargin: true},
      yaxis: {title: {text: esc(t.measure)}}
    }, CONFIG);
  }

  // ---------------------------------------------------------------- runs table
  function drawTable() {
    var t = series(), body = $("runs-body"); body.innerHTML = "";
    t.runs.forEach(function (r) {
      var tr = document.createElement("tr");
      [r.run, r.model, r.run_group || "", r.baseline ? "yes" : "", r.layers.length, r.steps.length,
       r.steps.length ? r.steps[r.steps.length - 1] : "", r.chance ? "yes" : "", r.stderr ? "yes" : ""].forEach(function (v) {
        var td = document.createElement("td"); td.textContent = String(v); tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    var notes = [];
    if (t.groups.length) notes.push("Groups: mean over the runs that have a value, band = " + DATA.interval_label + " (n runs shown on hover).");
    notes.push("Baselines dashed. Missing values are gaps (grey in the heatmap); infinite values are drawn at the colour scale's ends.");
    if (t.runs.some(function (r) { return r.significant; })) {
      notes.push("Profile: hollow markers are layers not significantly above chance (the margin's one-sided 95% " +
        "lower bound is not above 0); hover for the margin and its interval.");
    }
    $("notes").textContent = notes.join(" ");
  }

  function render() {
    // one measurement per run (MeasureReport.to_html): no curves to draw
    var over = series().runs.some(function (r) { return r.steps.length > 1; });
    $("curves-view").style.display = over ? "" : "none";
    fillControls(); drawHeatmap(); if (over) drawCurves(); drawProfile(); drawTable();
    document.body.dataset.rendered = String(Number(document.body.dataset.rendered || 0) + 1);
  }

  $("title").textContent = DATA.title;
  $("meta").textContent = "Generated " + DATA.generated + (DATA.sources.length ? " from " + DATA.sources.join(", ") : "") +
    (DATA.group_regex ? "; groups by the pattern " + DATA.group_regex : "") + ". Self-contained: no network needed.";
  $("series").onchange = function () { state.series = Number(this.value); state.heat = null; render(); };
  $("axis").onchange = function () { state.axis = this.value; render(); };
  $("heat").onchange = function () { state.heat = this.value; drawHeatmap(); };
  $("curve").onchange = function () { state.curve = this.value; drawCurves(); };
  $("mode").onchange = function () { state.mode = this.value; render(); };
  render();
})();
