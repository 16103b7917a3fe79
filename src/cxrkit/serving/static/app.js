// cxrkit screening page: no framework, no build step. One request per file, so each card fills in as soon
// as its own answer arrives; all text is inserted with textContent (file names are never parsed as HTML).
"use strict";

const state = { models: [], current: null, maxBytes: Infinity };
const $ = (sel, root = document) => root.querySelector(sel);

async function loadModels() {
  const res = await fetch("/api/models");
  const body = await res.json();
  state.models = body.models;
  state.maxBytes = body.max_upload_mb * 1024 * 1024;
  const select = $("#model");
  for (const m of body.models) {
    const opt = document.createElement("option");
    opt.value = m.id;
    opt.textContent = `${m.id} (${m.arch}, ${m.format})`;
    select.appendChild(opt);
  }
  select.value = body.default;
  showCard(body.default);
  select.addEventListener("change", () => showCard(select.value));
}

function showCard(id) {
  const m = state.models.find((x) => x.id === id);
  state.current = m;
  const dl = $("#card-summary");
  dl.replaceChildren();
  const metrics = m.validation_metrics
    ? Object.entries(m.validation_metrics).filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k} ${Number.isInteger(v) ? v : v.toFixed(3)}`).join(", ")
    : "not recorded";
  const rows = [["Disclaimer", m.disclaimer], ["Intended use", m.intended_use], ["Architecture", m.arch],
    ["Classes", m.classes.join(", ")], ["Input", m.input], ["Format", m.format],
    ["Decision threshold", m.threshold === null ? "most probable class" :
      `P(${m.positive_class}) ≥ ${m.threshold.toFixed(3)}${m.threshold_rule ? ` (${m.threshold_rule} on validation)` : ""}`],
    ["Recipe", m.recipe || "unknown"], ["Validation metrics", metrics],
    ["Heatmap", m.heatmap ? "Grad-CAM available" : m.heatmap_note]];
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    dl.append(dt, dd);
  }
  $("#card-text").textContent = m.card_markdown || "No model card file ships with this model.";
}

function addCard(file) {
  const node = $("#result-template").content.firstElementChild.cloneNode(true);
  $(".name", node).textContent = file.name;
  $("#results").prepend(node);
  return node;
}

function showResult(node, r, model) {
  $(".status", node).textContent = "";
  const decision = $(".decision", node);
  decision.textContent = r.label;
  const positive = model.positive_class !== null && r.label === model.positive_class;
  decision.classList.add(positive ? "positive" : "negative");
  $(".uncertain", node).hidden = !r.uncertain;
  if (r.uncertain) node.classList.add("is-uncertain");
  const shown = model.positive_class !== null ? model.positive_class : r.label;
  const p = r.probabilities[shown];
  $(".bar-label", node).textContent = `P(${shown}) ${p.toFixed(3)}` + (model.threshold !== null ? ` · threshold ${model.threshold.toFixed(3)}` : "");
  const bar = $(".bar", node);
  bar.hidden = false;
  $(".fill", bar).style.width = `${(100 * p).toFixed(1)}%`;
  const cut = $(".cut", bar);
  if (model.threshold !== null) cut.style.left = `${(100 * model.threshold).toFixed(1)}%`; else cut.hidden = true;
  $(".probs", node).textContent = Object.entries(r.probabilities).map(([c, v]) => `P(${c}) = ${v.toFixed(3)}`).join(", ");
  $(".model-id", node).textContent = `model: ${model.id}`;
  const img = $(".film", node);
  img.src = r.preview;
  img.alt = `${r.file}, ${r.width}x${r.height}`;
  const toggle = $(".toggle", node);
  if (r.heatmap) {
    toggle.hidden = false;
    const box = $(".heat", node);
    box.addEventListener("change", () => { img.src = box.checked ? r.heatmap : r.preview; });
  } else if (r.heatmap_note) {
    $(".note", node).textContent = `No heatmap: ${r.heatmap_note}.`;
  }
}

function showError(node, body, status) {
  node.classList.add("error");
  const reasons = body && body.errors && body.errors.length ? body.errors.map((e) => e.reason).join("; ")
    : (body && body.detail) || `HTTP ${status}`;
  $(".status", node).textContent = `Not scored: ${reasons}`;
  $(".film", node).hidden = true;
}

async function upload(file) {
  const node = addCard(file);
  const model = state.current;
  if (file.size > state.maxBytes) {  // the server would answer 413; say so without sending it
    const mb = (n) => (n / 1024 / 1024).toFixed(1);
    showError(node, { detail: `${mb(file.size)} MB is over the server's ${mb(state.maxBytes)} MB upload limit` }, 413);
    return;
  }
  const form = new FormData();
  form.append("files", file, file.name);
  const query = new URLSearchParams({ heatmap: "true", preview: "true", model: model.id });
  try {
    const res = await fetch(`/api/predict?${query}`, { method: "POST", body: form });
    const body = await res.json().catch(() => null);
    if (res.ok) showResult(node, body.results[0], model); else showError(node, body, res.status);
  } catch (err) {
    showError(node, null, "network error");
  }
}

async function uploadAll(files) {
  const queue = Array.from(files);
  const worker = async () => { while (queue.length) await upload(queue.shift()); };
  await Promise.all([worker(), worker()]);  // two at a time: the server has few cores
}

function setUp() {
  const input = $("#files");
  input.addEventListener("change", () => { uploadAll(input.files); input.value = ""; });
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); uploadAll(e.dataTransfer.files); });
  loadModels();
}

document.addEventListener("DOMContentLoaded", setUp);
