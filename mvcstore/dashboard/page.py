"""The dashboard's one page: HTML, CSS and script inline, drawing in SVG.

The page asks the JSON API of ``server`` for the lineage every two seconds
and redraws when it changed, so new epochs appear while a trainer runs. It
loads nothing from any other address. ``#session=NAME`` in the URL selects a
session when the page opens.
"""

from __future__ import annotations

from typing import Final

__all__ = ["PAGE"]

PAGE: Final = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>mvc dashboard</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
  header { background: #263238; color: #fff; padding: 8px 16px; }
  header h1 { font-size: 17px; margin: 0; display: inline; }
  header span { margin-left: 16px; opacity: .8; }
  main { display: grid; grid-template-columns: minmax(260px, 1fr) 2fr; gap: 12px; padding: 12px; }
  section { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px; }
  h2 { font-size: 15px; margin: 0 0 8px; }
  .session-label { cursor: pointer; font-weight: 600; }
  .session-label.selected { text-decoration: underline; }
  #sessions li { list-style: none; margin: 2px 0; }
  #sessions { padding: 0; }
  #sessions button { border: 1px solid #bbb; background: #f4f4f4; border-radius: 4px; cursor: pointer; padding: 2px 8px; }
  #sessions button.selected { background: #1f77b4; color: #fff; border-color: #1f77b4; }
  table { border-collapse: collapse; }
  td, th { border-bottom: 1px solid #eee; padding: 3px 8px; text-align: left; vertical-align: top; }
  .muted { color: #777; }
  #error { color: #b00020; }
</style>
</head>
<body>
<header><h1>mvc dashboard</h1><span id="status">loading…</span></header>
<main>
  <section id="lineage-panel">
    <h2>Lineage</h2>
    <ul id="sessions"></ul>
    <svg id="lineage" width="100%" height="200" role="img" aria-label="lineage of all sessions"></svg>
  </section>
  <section id="curve-panel">
    <h2 id="curve-title">Select a session</h2>
    <label>metric <select id="metric"></select></label>
    <div id="curve-info" class="muted"></div>
    <svg id="curve" width="100%" height="320" role="img" aria-label="metric curve"></svg>
    <div id="metric-table"></div>
  </section>
  <section id="compare-panel" style="grid-column: 1 / span 2">
    <h2>Compare</h2>
    <div id="compare-choices"></div>
    <button id="compare-button">Compare</button>
    <div id="compare-result"></div>
  </section>
</main>
<div id="error"></div>
<script>
"use strict";
const COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"];
const NS = "http://www.w3.org/2000/svg";
const state = { lineage: null, lineageText: "", session: null, metric: null, colour: {} };

function el(tag, attrs, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(NS, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
function fmt(value) {
  if (value === null || value === undefined) return "-";
  return Number(value).toPrecision(6).replace(/\.?0+$/, "").replace(/\.?0+e/, "e");
}
async function api(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function renderSessions() {
  const list = document.getElementById("sessions");
  list.replaceChildren();
  const choices = document.getElementById("compare-choices");
  const checked = new Set([...choices.querySelectorAll("input:checked")].map(i => i.value));
  choices.replaceChildren();
  state.lineage.sessions.forEach((s, i) => {
    state.colour[s.name] = COLOURS[i % COLOURS.length];
    const button = el("button", { "class": "session-label", "data-session": s.name }, s.name);
    if (s.name === state.session) button.classList.add("selected");
    button.addEventListener("click", () => selectSession(s.name));
    const item = el("li");
    item.append(button, el("span", { "class": "muted" }, `  #${s.number} · step ${s.step}`));
    list.append(item);
    const box = el("input", { type: "checkbox", value: s.name, id: "cmp-" + s.name, "data-session": s.name });
    if (checked.has(s.name)) box.checked = true;
    const label = el("label", { "for": "cmp-" + s.name }, s.name + "  ");
    choices.append(box, label);
  });
}

function renderLineage() {
  const svg = document.getElementById("lineage");
  svg.replaceChildren();
  const epochs = state.lineage.epochs;
  const names = state.lineage.sessions.map(s => s.name);
  for (const e of epochs) if (!names.includes(e.session)) names.push(e.session);
  const column = Object.fromEntries(names.map((n, i) => [n, i]));
  const maxNumber = Math.max(1, ...epochs.map(e => e.number));
  const x = n => 40 + 70 * column[n];
  const y = n => 30 + 24 * (maxNumber - n);
  svg.setAttribute("height", String(60 + 24 * maxNumber));
  svg.setAttribute("width", String(80 + 70 * names.length));
  const byId = Object.fromEntries(epochs.map(e => [e.id, e]));
  for (const e of epochs) {
    for (const p of e.parents) {
      const parent = byId[p];
      if (!parent) continue;
      svg.append(el("svg:line", { x1: x(parent.session), y1: y(parent.number), x2: x(e.session), y2: y(e.number),
        stroke: "#999", "stroke-width": 2 }));
    }
  }
  for (const e of epochs) {
    const dot = el("svg:circle", { cx: x(e.session), cy: y(e.number), r: 7, fill: state.colour[e.session] || "#555",
      "data-epoch": `${e.session}#${e.number}`, "class": "epoch" });
    dot.append(el("svg:title", {}, `${e.session}#${e.number} step ${e.step} ${e.id.slice(0, 12)}`));
    dot.addEventListener("click", () => selectSession(e.session));
    svg.append(dot);
  }
  names.forEach(n => {
    const label = el("svg:text", { x: x(n), y: 14, "text-anchor": "middle", "class": "session-label", "data-session": n }, n);
    label.addEventListener("click", () => selectSession(n));
    svg.append(label);
  });
}

async function refreshLineage() {
  try {
    const response = await fetch("/api/lineage", { cache: "no-store" });
    const text = await response.text();
    if (text !== state.lineageText) {
      state.lineageText = text;
      state.lineage = JSON.parse(text);
      renderSessions();
      renderLineage();
      if (state.session) await loadCurve();
    }
    const count = state.lineage.epochs.length;
    document.getElementById("status").textContent =
      `${state.lineage.sessions.length} sessions · ${count} epochs · updated ${new Date().toLocaleTimeString()}`;
    document.getElementById("error").textContent = "";
  } catch (err) {
    document.getElementById("error").textContent = "error: " + err.message;
  }
}

async function selectSession(name) {
  state.session = name;
  history.replaceState(null, "", "#session=" + encodeURIComponent(name));
  document.querySelectorAll(".session-label").forEach(
    node => node.classList.toggle("selected", node.dataset.session === name));
  await loadCurve();
}

async function loadCurve() {
  const params = new URLSearchParams({ rev: state.session });
  if (state.metric) params.set("metric", state.metric);
  let view;
  try {
    view = await api("/api/view?" + params);
  } catch (err) {
    document.getElementById("curve-info").textContent = "error: " + err.message;
    return;
  }
  state.metric = view.metric;
  const select = document.getElementById("metric");
  select.replaceChildren(...view.metrics.map(m => el("option", { value: m.name }, m.name)));
  if (view.metric) select.value = view.metric;
  document.getElementById("curve-title").textContent = `${view.revision}: ${view.metric || "no metric"}`;
  document.getElementById("curve-info").textContent =
    `${view.count} points of ${view.metric} (${view.inherited} inherited, ${view.own} own) over ${view.epochs} epochs`;
  drawCurve(view);
  const rows = view.metrics.map(m => `<tr><td>${escapeHtml(m.name)}</td><td>${m.count}</td>` +
    `<td>${fmt(m.latest.value)} (step ${m.latest.step})</td><td>${fmt(m.min.value)} (step ${m.min.step})</td>` +
    `<td>${fmt(m.max.value)} (step ${m.max.step})</td></tr>`).join("");
  document.getElementById("metric-table").innerHTML =
    `<table><tr><th>metric</th><th>count</th><th>latest</th><th>min</th><th>max</th></tr>${rows}</table>`;
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function drawCurve(view) {
  const svg = document.getElementById("curve");
  svg.replaceChildren();
  const points = view.points.filter(p => p.value !== null);
  if (!points.length) return;
  const width = svg.clientWidth || 700, height = 320, pad = 48;
  const steps = points.map(p => p.step), values = points.map(p => p.value);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  let [y0, y1] = [Math.min(...values), Math.max(...values)];
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const sx = s => pad + (width - 2 * pad) * (x1 === x0 ? 0.5 : (s - x0) / (x1 - x0));
  const sy = v => height - pad + (2 * pad - height) * (v - y0) / (y1 - y0);
  svg.append(el("svg:line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, stroke: "#444" }));
  svg.append(el("svg:line", { x1: pad, y1: pad / 2, x2: pad, y2: height - pad, stroke: "#444" }));
  svg.append(el("svg:text", { x: pad, y: height - pad + 16, "font-size": 11 }, String(x0)));
  svg.append(el("svg:text", { x: width - pad, y: height - pad + 16, "font-size": 11, "text-anchor": "end" }, String(x1)));
  svg.append(el("svg:text", { x: 4, y: sy(y1) + 4, "font-size": 11 }, fmt(y1)));
  svg.append(el("svg:text", { x: 4, y: sy(y0) + 4, "font-size": 11 }, fmt(y0)));
  svg.append(el("svg:text", { x: width / 2, y: height - 10, "font-size": 12, "text-anchor": "middle" }, "step"));
  const inherited = points.filter(p => !p.own), own = points.filter(p => p.own);
  // the own part starts from the last inherited point, so the curve is unbroken
  const ownLine = inherited.length && own.length ? [inherited[inherited.length - 1], ...own] : own;
  const path = list => list.map(p => `${sx(p.step).toFixed(1)},${sy(p.value).toFixed(1)}`).join(" ");
  if (inherited.length) svg.append(el("svg:polyline", { points: path(inherited), fill: "none", stroke: "#9e9e9e",
    "stroke-width": 2, "stroke-dasharray": "5 4", id: "curve-inherited", "data-points": inherited.length }));
  if (own.length) svg.append(el("svg:polyline", { points: path(ownLine), fill: "none",
    stroke: state.colour[view.session] || "#1f77b4", "stroke-width": 2, id: "curve-own", "data-points": own.length }));
  if (inherited.length && own.length) {
    const fork = inherited[inherited.length - 1];
    svg.append(el("svg:circle", { cx: sx(fork.step), cy: sy(fork.value), r: 4, fill: "#000" }));
    svg.append(el("svg:text", { x: sx(fork.step) + 6, y: sy(fork.value) - 6, "font-size": 11, id: "fork-label" },
      `fork at ${fork.session}#${fork.number}`));
  }
}

async function runCompare() {
  const chosen = [...document.querySelectorAll("#compare-choices input:checked")].map(i => i.value);
  const target = document.getElementById("compare-result");
  if (chosen.length < 2) { target.textContent = "choose two or more sessions"; return; }
  let result;
  try {
    result = await api("/api/compare?" + chosen.map(n => "rev=" + encodeURIComponent(n)).join("&"));
  } catch (err) { target.textContent = "error: " + err.message; return; }
  const models = result.models;
  const names = [...new Set(models.flatMap(m => Object.keys(m.metrics)))].sort();
  const row = (title, cells) => `<tr><th>${escapeHtml(title)}</th>${cells.map(c => `<td>${escapeHtml(c)}</td>`).join("")}</tr>`;
  let html = `<table id="compare-table"><tr><th></th>${models.map(m => `<th class="model">${escapeHtml(m.revision)}</th>`).join("")}</tr>`;
  html += row("head", models.map(m => m.head));
  html += row("fork point", models.map(m => m.fork_point || "-"));
  html += row("epochs (own)", models.map(m => `${m.epochs} (${m.own_epochs})`));
  for (const n of names) {
    html += row(`${n} final`, models.map(m => m.metrics[n] ? fmt(m.metrics[n].latest.value) : "-"));
    html += row(`${n} min`, models.map(m => m.metrics[n] ? fmt(m.metrics[n].min.value) : "-"));
    html += row(`${n} max`, models.map(m => m.metrics[n] ? fmt(m.metrics[n].max.value) : "-"));
  }
  html += row("params", models.map(m => m.params === null ? "-" : m.params.toLocaleString()));
  html += row("graph nodes", models.map(m => m.nodes === null ? "-" : String(m.nodes)));
  html += row("pruning plans", models.map(m => m.plans.join(", ") || "-"));
  html += row("graph changes", models.map(m => m.graph_changes.map(n => "#" + n).join(", ") || "-"));
  target.innerHTML = html + "</table>";
}

document.getElementById("metric").addEventListener("change", event => {
  state.metric = event.target.value;
  loadCurve();
});
document.getElementById("compare-button").addEventListener("click", runCompare);

(async () => {
  await refreshLineage();
  const wanted = new URLSearchParams(location.hash.slice(1)).get("session");
  if (wanted) await selectSession(wanted);
  setInterval(refreshLineage, 2000);
})();
</script>
</body>
</html>
"""  # noqa: E501
