// tripletlab serve: the page. Plain JavaScript, no library, no request to another origin.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { k: 10, map: null, view: null, threshold: null };

function showError(message) {
  $("error").textContent = message || "";
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = { error: "the server answered " + response.status + " without JSON" };
  }
  if (!response.ok) {
    throw new Error((body && body.error) || "the server answered " + response.status);
  }
  return body;
}

function thumb(item, caption, onClick) {
  const li = document.createElement("li");
  li.className = "thumb";
  li.dataset.id = item.id;
  const img = document.createElement("img");
  img.src = item.thumbnail;
  img.alt = item.id;
  li.appendChild(img);
  for (const line of caption) {
    const span = document.createElement("span");
    span.textContent = line;
    li.appendChild(span);
  }
  li.title = item.id;
  li.addEventListener("click", () => onClick(item));
  return li;
}

function currentK() {
  const k = parseInt($("k").value, 10);
  return Number.isFinite(k) && k > 0 ? k : state.k;
}

function showResults(result, queryPicture) {
  showError("");
  const view = $("query-view");
  view.replaceChildren();
  if (queryPicture) {
    const img = document.createElement("img");
    img.src = queryPicture;
    img.alt = "query";
    view.appendChild(img);
  }
  const m = result.match;
  const verdict = $("verdict");
  if (m.known === null) {
    verdict.className = "";
    verdict.textContent = m.label === null ? "" : "nearest: " + m.label + " (no threshold)";
  } else if (m.known) {
    verdict.className = "known";
    verdict.textContent = "match: " + m.label;
  } else {
    verdict.className = "unknown";
    verdict.textContent = "unknown";
  }
  if (m.distance !== null && m.threshold !== null) {
    verdict.title = "nearest at " + m.distance.toFixed(4) + ", threshold " + m.threshold.toFixed(4);
  }
  const list = $("neighbors");
  list.replaceChildren();
  for (const n of result.neighbors) {
    const caption = ["#" + n.rank + " " + (n.label === null ? "-" : n.label), n.distance.toFixed(4)];
    list.appendChild(thumb(n, caption, (item) => searchItem(item.id, item.thumbnail)));
  }
}

async function searchFile(file) {
  if (!file) return;
  const form = new FormData();
  form.append("image", file);
  form.append("k", String(currentK()));
  const picture = URL.createObjectURL(file);
  try {
    showResults(await api("/api/search", { method: "POST", body: form }), picture);
  } catch (err) {
    showError(err.message);
  }
}

async function searchItem(id, picture) {
  $("item").value = id;
  const path = "/api/items/" + id.split("/").map(encodeURIComponent).join("/") + "/neighbors";
  try {
    showResults(await api(path + "?k=" + currentK()), picture);
  } catch (err) {
    showError(err.message);
  }
}

// An item's id as typed, or taken from a URL of this server (a thumbnail or neighbours URL).
function itemFromText(text) {
  text = text.trim();
  const row = text.match(/\/api\/thumbnails\/(\d+)\.png/);
  if (row && state.map) {
    const id = state.map.ids[parseInt(row[1], 10)];
    if (id !== undefined) return id;
  }
  const item = text.match(/\/api\/items\/(.+)\/neighbors/);
  if (item) return item[1].split("/").map(decodeURIComponent).join("/");
  return text;
}

function setUpQuery() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const text = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
    if (e.dataTransfer.files.length) searchFile(e.dataTransfer.files[0]);
    else if (text) searchItem(itemFromText(text));
  });
  $("item-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = itemFromText($("item").value);
    if (id) searchItem(id);
  });
}

// ------------------------------------------------------------------------------ the map

const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
  "#7f7f7f", "#bcbd22", "#17becf"];

function colour(label) {
  if (label < 0) return "#999";
  if (label < COLOURS.length) return COLOURS[label];
  return "hsl(" + ((label * 137.5) % 360) + ", 60%, 45%)";
}

function fitView(map, canvas) {
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (let i = 0; i < map.x.length; i++) {
    x0 = Math.min(x0, map.x[i]); x1 = Math.max(x1, map.x[i]);
    y0 = Math.min(y0, map.y[i]); y1 = Math.max(y1, map.y[i]);
  }
  const span = Math.max(x1 - x0, y1 - y0, 1e-9);
  const scale = 0.9 * Math.min(canvas.width, canvas.height) / span;
  return { scale, cx: (x0 + x1) / 2, cy: (y0 + y1) / 2 };
}

function toScreen(v, canvas, x, y) {
  return [canvas.width / 2 + (x - v.cx) * v.scale, canvas.height / 2 - (y - v.cy) * v.scale];
}

function drawMap() {
  const canvas = $("map"), map = state.map, v = state.view;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!map) return;
  for (let i = 0; i < map.x.length; i++) {
    const [sx, sy] = toScreen(v, canvas, map.x[i], map.y[i]);
    if (sx < -3 || sy < -3 || sx > canvas.width + 3 || sy > canvas.height + 3) continue;
    ctx.fillStyle = colour(map.labels[i]);
    ctx.fillRect(sx - 2, sy - 2, 4, 4);
  }
}

function canvasPoint(canvas, e) {
  const r = canvas.getBoundingClientRect();
  return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height];
}

function nearestPoint(px, py) {
  const canvas = $("map"), map = state.map, v = state.view;
  let best = -1, bestD = 36; // within 6 canvas pixels
  for (let i = 0; i < map.x.length; i++) {
    const [sx, sy] = toScreen(v, canvas, map.x[i], map.y[i]);
    const d = (sx - px) * (sx - px) + (sy - py) * (sy - py);
    if (d < bestD) { bestD = d; best = i; }
  }
  return best;
}

function labelName(label) {
  if (label < 0) return "-";
  return state.map.classes[label] !== undefined ? state.map.classes[label] : String(label);
}

function setUpMap(map) {
  const canvas = $("map"), tip = $("tip");
  state.map = map;
  state.view = fitView(map, canvas);
  $("map-method").textContent = "(" + map.method + ", " + map.x.length + " items)";
  drawMap();
  let drag = null, moved = false;
  canvas.addEventListener("mousedown", (e) => {
    drag = canvasPoint(canvas, e);
    moved = false;
  });
  window.addEventListener("mouseup", () => { drag = null; });
  canvas.addEventListener("mousemove", (e) => {
    const [px, py] = canvasPoint(canvas, e);
    if (drag) {
      const dx = px - drag[0], dy = py - drag[1];
      if (Math.abs(dx) + Math.abs(dy) > 2) moved = true;
      state.view.cx -= dx / state.view.scale;
      state.view.cy += dy / state.view.scale;
      drag = [px, py];
      drawMap();
      return;
    }
    const i = nearestPoint(px, py);
    if (i < 0) { tip.hidden = true; return; }
    $("tip-img").src = "/api/thumbnails/" + i + ".png";
    $("tip-text").textContent = map.ids[i] + " (" + labelName(map.labels[i]) + ")";
    const r = canvas.getBoundingClientRect();
    tip.style.left = (e.clientX - r.left + 12) + "px";
    tip.style.top = (e.clientY - r.top + 12) + "px";
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
  canvas.addEventListener("click", (e) => {
    if (moved) return;
    const [px, py] = canvasPoint(canvas, e);
    const i = nearestPoint(px, py);
    if (i >= 0) searchItem(map.ids[i], "/api/thumbnails/" + i + ".png");
  });
  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    const [px, py] = canvasPoint(canvas, e);
    const v = state.view;
    const wx = v.cx + (px - canvas.width / 2) / v.scale;
    const wy = v.cy - (py - canvas.height / 2) / v.scale;
    v.scale *= e.deltaY < 0 ? 1.2 : 1 / 1.2;
    v.cx = wx - (px - canvas.width / 2) / v.scale;
    v.cy = wy + (py - canvas.height / 2) / v.scale;
    drawMap();
  }, { passive: false });
}

// ------------------------------------------------------------------------- the metrics

function format(value) {
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(4);
  if (value === null) return "-";
  return String(value);
}

function showMetrics(panel) {
  const table = $("metrics");
  table.replaceChildren();
  const rows = [];
  const walk = (prefix, obj) => {
    for (const [key, value] of Object.entries(obj)) {
      if (value !== null && typeof value === "object") walk(prefix + key + ".", value);
      else rows.push([prefix + key, format(value)]);
    }
  };
  if (panel.metrics) walk("", panel.metrics);
  else rows.push(["metrics", "the run has no metrics.json"]);
  for (const [name, value] of rows) {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.textContent = name;
    tr.appendChild(th);
    tr.insertCell().textContent = value;
  }
  const body = $("classes").tBodies[0];
  body.replaceChildren();
  $("classes-status").textContent = panel.status === "computing"
    ? "computing precision@1 per class over " + panel.items + " items..." : "";
  for (const c of panel.per_class) {
    const tr = body.insertRow();
    tr.dataset.label = String(c.label_id);
    tr.insertCell().textContent = c.label;
    tr.insertCell().textContent = c.precision_at_1.toFixed(4);
    tr.insertCell().textContent = String(c.items);
    tr.addEventListener("click", () => showHardest(c.label_id));
  }
}

async function showHardest(label) {
  try {
    const hardest = await api("/api/classes/" + label + "/hardest?n=12");
    $("hardest-title").textContent = "Hardest queries of " + hardest.label;
    const list = $("hardest");
    list.replaceChildren();
    for (const item of hardest.items) {
      const caption = [item.id, "nearest: " + (item.nearest_label === null ? "-" : item.nearest_label)];
      list.appendChild(thumb(item, caption, (it) => searchItem(it.id, it.thumbnail)));
    }
  } catch (err) {
    showError(err.message);
  }
}

// ---------------------------------------------------------------------------- start

async function start() {
  setUpQuery();
  try {
    const health = await api("/api/health");
    state.k = health.k;
    $("k").value = String(health.k);
    $("k").max = String(health.max_k);
    const t = health.threshold === null ? "no threshold" : "threshold " + health.threshold_name +
      " = " + health.threshold.toFixed(4);
    $("status").textContent = health.items + " items, " + health.distance + " distance, " + t;
  } catch (err) {
    showError(err.message);
    return;
  }
  api("/api/map").then(setUpMap).catch((err) => {
    $("map-method").textContent = "(" + err.message + ")";
  });
  loadMetrics();
}

// The per-class panel is computed once in the server's background: ask until it is ready.
function loadMetrics() {
  api("/api/metrics").then((panel) => {
    showMetrics(panel);
    if (panel.status === "computing") setTimeout(loadMetrics, 500);
  }).catch((err) => {
    $("hardest-title").textContent = err.message;
  });
}

document.addEventListener("DOMContentLoaded", start);
