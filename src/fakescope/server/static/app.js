// The page: upload one file, poll its analysis, then show the verdict, timelines and heat maps.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name, never fetched
let maxUploadMb = null;

// Same colours as fakescope.reports.score_colour: green, yellow at the threshold, red.
const GREEN = [26, 152, 80], YELLOW = [240, 200, 40], RED = [215, 48, 39];
function scoreColour(score, threshold) {
  const [low, high, t] = score < threshold
    ? [GREEN, YELLOW, score / threshold]
    : [YELLOW, RED, (score - threshold) / (1 - threshold)];
  const c = Math.min(Math.max(t, 0), 1);
  return `rgb(${low.map((a, i) => Math.round(a + (high[i] - a) * c)).join(",")})`;
}

function show(id, visible) { $(id).hidden = !visible; }

function fail(message) {
  show("progress", false);
  $("error").textContent = message;
  show("error", true);
}

function setProgress(label, value) {
  show("progress", true);
  $("progress-label").textContent = label;
  $("progress-bar").value = value;
}

function start(file) {
  show("error", false);
  show("result", false);
  if (maxUploadMb !== null && file.size > maxUploadMb * 2 ** 20) {
    return fail(`${file.name} is ${(file.size / 2 ** 20).toFixed(0)} MB; the limit is ${maxUploadMb} MB.`);
  }
  const form = new FormData();
  form.append("file", file);
  const xhr = new XMLHttpRequest(); // not fetch: it reports upload progress
  xhr.open("POST", "/api/analyses");
  xhr.responseType = "json";
  xhr.upload.onprogress = (e) => e.lengthComputable && setProgress(`Uploading ${file.name}`, e.loaded / e.total);
  xhr.onload = () => {
    if (xhr.status === 202) return poll(xhr.response.status_url);
    fail((xhr.response && xhr.response.detail) || `upload failed (HTTP ${xhr.status})`);
  };
  xhr.onerror = () => fail("upload failed: the server closed the connection (file too big?)");
  setProgress(`Uploading ${file.name}`, 0);
  xhr.send(form);
}

async function poll(url) {
  let status;
  try {
    const response = await fetch(url);
    status = await response.json();
    if (!response.ok) return fail(status.detail || `HTTP ${response.status}`);
  } catch (error) {
    return fail(`lost contact with the server: ${error}`);
  }
  if (status.status === "done") return showResult(url, status);
  if (status.status === "failed") return fail(`analysis failed: ${status.error}`);
  const stage = status.status === "queued" ? "waiting for a free worker" : status.stage || "starting";
  setProgress(`Analysing ${status.name}: ${stage}`, status.progress);
  setTimeout(() => poll(url), 500);
}

function el(tag, attrs = {}, text = "") {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text) node.textContent = text;
  return node;
}

// P(fake) per face against time, as in the HTML report's timeline.
function timeline(track, threshold, realBelow, duration) {
  const width = 720, height = 170, left = 40, right = 12, top = 10, bottom = 30;
  const span = Math.max(duration, ...track.faces.map((f) => f.timestamp), 1e-6);
  const x = (t) => left + (width - left - right) * t / span;
  const y = (p) => top + (height - top - bottom) * (1 - p);
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "timeline", role: "img",
                              "aria-label": `P(fake) of track ${track.track_id} over time` });
  for (const p of [0, 0.5, 1]) {
    svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(p), y2: y(p), class: "grid" }));
    svg.append(el("svg:text", { x: left - 6, y: y(p) + 4, "text-anchor": "end" }, p.toFixed(1)));
  }
  for (const t of [0, span / 2, span]) {
    svg.append(el("svg:text", { x: x(t), y: height - 12, "text-anchor": "middle" }, `${t.toFixed(1)} s`));
  }
  const lines = [[threshold, `fake at ≥ ${threshold.toFixed(3)}`, -4]];
  if (realBelow < threshold) lines.push([realBelow, `real below ${realBelow.toFixed(3)}`, 12]);
  for (const [value, text, offset] of lines) {
    svg.append(el("svg:line", { x1: left, x2: width - right, y1: y(value), y2: y(value), class: "threshold" }));
    svg.append(el("svg:text", { x: width - right, y: y(value) + offset, "text-anchor": "end", class: "threshold-label" }, text));
  }
  svg.append(el("svg:polyline", { class: "score", points: track.faces.map((f) => `${x(f.timestamp)},${y(f.score)}`).join(" ") }));
  for (const f of track.faces) {
    const colour = scoreColour(f.score, threshold);  // faces not judged are hollow, as in the HTML report
    const paint = f.unjudged === null ? { fill: colour } : { fill: "white", stroke: colour, "stroke-width": 1.5 };
    const dot = el("svg:circle", { cx: x(f.timestamp), cy: y(f.score), r: 4, ...paint });
    const note = f.unjudged === null ? "" : `, not judged: ${f.unjudged}`;
    dot.append(el("svg:title", {}, `t=${f.timestamp.toFixed(2)} s, frame ${f.frame_index}: p(fake)=${f.score.toFixed(3)}${note}`));
    svg.append(dot);
  }
  return svg;
}

function showResult(url, status) {
  const report = status.report, threshold = report.threshold;
  show("progress", false);
  const verdict = $("verdict");
  verdict.replaceChildren(el("div", { class: "label" }, report.label.replace("_", " ").toUpperCase()));
  verdict.dataset.label = report.label;
  // By the answer, as in fakescope.reports: grey for no face, slate blue when the model cannot tell.
  verdict.style.background = { no_face: "#6b7280", inconclusive: "#4b5b8f", real: `rgb(${GREEN})`, fake: `rgb(${RED})` }[report.label];
  const numbers = el("div", { class: "numbers" });
  if (report.fake_probability !== null) {
    numbers.append("P(fake) ", el("b", {}, report.fake_probability.toFixed(3)), el("br"));
  }
  numbers.append(`fake at ≥ ${threshold.toFixed(3)}, real below ${report.real_below.toFixed(3)} · ${report.strategy} strategy`);
  verdict.append(numbers, el("p", { class: "reason" }, `Why: ${report.reason}.`));
  // What the file declares about its origin (C2PA content credentials): facts beside the verdict.
  const provenance = report.provenance, credentials = $("provenance");
  credentials.className = provenance.declares_ai ? "provenance ai" : "provenance";
  credentials.replaceChildren(`Provenance: ${provenance.summary}.`);
  if (provenance.has_credentials) credentials.append(el("br"),
    el("span", { class: "muted" }, "A signature proves who signed the file, not that its content is true."));
  const faces = report.tracks.reduce((n, t) => n + t.faces.length, 0);
  $("summary").textContent = `${status.name}: ${report.kind}, ${report.frames_analysed.length} frame(s) analysed, ` +
    `${faces} face(s) in ${report.tracks.length} track(s); model ${report.model.name}.`;

  const timelines = $("timelines");
  timelines.replaceChildren();
  for (const track of report.tracks) {
    const judged = track.probability === null ? `not judged: ${track.unjudged}` : `P(fake) ${track.probability.toFixed(3)}`;
    timelines.append(el("div", {}, `Track ${track.track_id}: ${judged}`));
    if (track.evidence) timelines.append(el("p", { class: "evidence" }, track.evidence.evidence));
    if (report.kind === "video") timelines.append(timeline(track, threshold, report.real_below, report.media.duration));
  }
  if (!report.tracks.length) timelines.append(el("p", { class: "muted" }, "No face found."));

  const heatmaps = $("heatmaps");
  heatmaps.replaceChildren();
  for (const e of report.explanations) {
    const figure = el("figure");
    figure.append(el("img", { src: `${url}/files/${encodeURIComponent(e.comparison)}`, alt: `heat maps of frame ${e.frame_index}` }));
    const caption = el("figcaption", {}, `${e.timestamp.toFixed(2)} s · frame ${e.frame_index} · face P(fake) ${e.face_score.toFixed(3)}`);
    if (e.evidence) caption.append(el("br"), el("span", { class: "evidence" }, e.evidence));
    figure.append(caption);
    heatmaps.append(figure);
  }
  if (!report.explanations.length) heatmaps.append(el("p", { class: "muted" }, "No face, so no heat map."));
  $("report-link").href = `${url}/report`;
  $("json-link").href = `${url}/files/report.json`;
  show("result", true);
}

document.addEventListener("DOMContentLoaded", () => {
  fetch("/healthz").then((r) => r.json()).then((health) => {
    maxUploadMb = health.max_upload_mb;
    $("limit").textContent = `up to ${maxUploadMb} MB · model ${health.model}`;
  }).catch(() => {});
  const drop = $("drop"), input = $("file");
  input.addEventListener("change", () => {
    if (input.files.length) start(input.files[0]);
    input.value = ""; // so that choosing the same file again starts again
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) start(e.dataTransfer.files[0]);
  });
});
