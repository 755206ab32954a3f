// Frontend of the "Equivariance" TensorBoard tab: the entry point.
//
// TensorBoard loads this ES module inside an iframe whose <base> is the plugin's
// route prefix (data/plugin/equivariance/) and whose CSP allows same-origin
// scripts only, so every URL here is relative and plotly.js is served by the
// plugin itself from the installed plotly package. The modules:
//
//   util.js     DOM, fetching, numbers and labels (esc: escaping for plotly)
//   heatmap.js  the canvas heatmap (the default view needs no plotly.js)
//   charts.js   the plotly figures, built by pure functions
//   app.js      state, data loading, controls, views
//
// Infinite values: docs/measures.md §5 defines nv/nd with x/0 = +inf, a value,
// not an error. The routes send matrices as base64 float32 (IEEE infinities) and
// other numbers as JSON with "Infinity"/"-Infinity" strings; here they show as
// "∞"/"-∞". Part means are the server's (one +∞ layer makes the part +∞, +∞ with
// -∞ is undefined, layers not measured are skipped).
//
// Safety: run, layer, part and model names come from the log directory and are
// never parsed as markup (see util.js).

import { App } from "./app.js";
import { el, getJSON } from "./util.js";

export {
  FIXED_RANGES, directionHint, esc, fmt, num, orderParts, partColor, partStatRow, partSymbol, plural, statsText,
  uninformativeReason,
  marginText, notSignificantReason,
} from "./util.js";
export {
  bandPolygons, boundsPolygons, channelBarsFigure, curvesFigures, finiteRuns, groupLine, integerAxis, profileFigure,
  spearmanFigures, spearmanMarkerNote, statTraces,
} from "./charts.js";
export { clipInterval, declaredRange, groupChance, rangeAxis } from "./charts.js";
export { barTicksWithEnds, heatmapHeight } from "./heatmap.js";

function loadStyle() {
  return new Promise((resolve) => {
    const link = el("link", { rel: "stylesheet", href: "./style.css" });
    link.addEventListener("load", resolve);
    link.addEventListener("error", resolve);
    document.head.append(link);
  });
}

/** Entry point called by TensorBoard's plugin_entry.html. */
export async function render() {
  const root = el("div", { class: "eq-app" });
  document.body.append(root);
  const style = loadStyle();
  const app = new App(root);
  // The heatmaps need no plotly.js: data and style only. plotly.js comes when a
  // plotly view is opened, or when the browser is idle afterwards.
  const data = getJSON("./runs").then((index) => {
    app.setIndex(index);
    return app.loadSeries().then(() => app.loadGroups());
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
    resizeTimer = setTimeout(() => app.views.resizeCanvases(), 150);
  });
  app.startPolling();
}
