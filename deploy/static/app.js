// The review page: posts dropped or picked images to /v1/score?maps=true, shows each part
// with its score, decision, heat-map overlay and mask outline, and re-decides every part on
// the page when the threshold slider moves (a decision is raw_score > threshold, as the
// service and score.py take it), without asking the server again.
"use strict";

const state = { info: null, parts: [], threshold: 0, stored: 0, low: 0, high: 1 };
const $ = (id) => document.getElementById(id);

// A float as Python's repr writes it (score.py's CSV): the shortest round-trip digits,
// exponent form below 1e-4 and from 1e16 on, with a sign and at least two exponent digits.
function pyFloat(x) {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : (x > 0 ? "inf" : "-inf");
  if (x === 0) return Object.is(x, -0) ? "-0.0" : "0.0";
  const exp = Number(x.toExponential().split("e")[1]);
  if (exp < -4 || exp >= 16) {
    const [mant, e] = x.toExponential().split("e");
    const sign = e[0] === "-" ? "-" : "+";
    const digits = e.replace(/^[+-]/, "").padStart(2, "0");
    return `${mant}e${sign}${digits}`;
  }
  const text = String(x);
  return text.includes(".") ? text : text + ".0";
}

function csvField(text) {
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function decided(part) {
  return part.raw_score > state.threshold ? 1 : 0;
}

function csvText() {
  const maps = state.info && state.info.has_maps;
  const header = ["path", "raw_score", "normalized_score", "decision"].concat(maps ? ["defect_area_px"] : []);
  const lines = [header.join(",")];
  for (const p of state.parts) {
    const row = [csvField(p.path), pyFloat(p.raw_score), pyFloat(p.normalized_score), String(decided(p))];
    if (maps) row.push(String(p.defect_area_px));
    lines.push(row.join(","));
  }
  return lines.join("\n") + "\n";
}

function setStatus(text, ok) {
  $("status").textContent = text;
  $("status").className = ok ? "ok" : "";
}

function sliderRange() {
  const raws = state.parts.map((p) => p.raw_score).concat([state.stored, state.low, state.high]);
  let lo = Math.min(...raws), hi = Math.max(...raws);
  const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1e-3;
  lo -= pad; hi += pad;
  const slider = $("threshold");
  slider.min = lo; slider.max = hi; slider.step = (hi - lo) / 1000;
  slider.value = state.threshold;
}

function redecide() {
  let flagged = 0;
  for (const p of state.parts) {
    const d = decided(p);
    flagged += d;
    p.card.classList.toggle("flagged", d === 1);
    p.card.dataset.decision = String(d);
    const badge = p.card.querySelector(".decision");
    badge.textContent = d ? "flagged" : "normal";
    badge.className = "decision " + (d ? "flagged" : "normal");
    p.row.querySelector(".col-decision").textContent = String(d);
  }
  $("threshold-value").textContent = state.threshold.toPrecision(6);
  $("flag-count").textContent = `${flagged} of ${state.parts.length} flagged`;
}

// The mask's border drawn over the input: a pixel of the mask with a 4-neighbour outside it.
function drawOutline(canvas, maskImage) {
  const w = maskImage.naturalWidth, h = maskImage.naturalHeight;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(maskImage, 0, 0);
  const src = ctx.getImageData(0, 0, w, h).data;
  const out = ctx.createImageData(w, h);
  const on = (x, y) => x >= 0 && y >= 0 && x < w && y < h && src[(y * w + x) * 4] > 127;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (on(x, y) && !(on(x - 1, y) && on(x + 1, y) && on(x, y - 1) && on(x, y + 1))) {
        const i = (y * w + x) * 4;
        out.data[i] = 255; out.data[i + 1] = 255; out.data[i + 2] = 0; out.data[i + 3] = 255;
      }
    }
  }
  ctx.putImageData(out, 0, 0);
}

// A picture with its caption; the frame around the picture holds the outline canvas too.
function figure(src, caption, cls) {
  const fig = document.createElement("figure");
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.src = src; img.alt = caption; img.className = cls;
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  frame.append(img);
  fig.append(frame, cap);
  return [fig, img];
}

function addPart(answer, file) {
  const card = document.createElement("article");
  card.className = "part";
  card.dataset.rawScore = String(answer.raw_score);
  card.dataset.name = answer.path;
  const title = document.createElement("h3");
  title.textContent = answer.path;
  const pictures = document.createElement("div");
  pictures.className = "pictures";
  const [inputFig, input] = figure(URL.createObjectURL(file), "input", "input");
  pictures.append(inputFig);
  if (answer.overlay_png) {
    const [overlayFig] = figure("data:image/png;base64," + answer.overlay_png, "anomaly map", "overlay");
    pictures.append(overlayFig);
    const canvas = document.createElement("canvas");
    canvas.className = "outline";
    input.parentElement.append(canvas);
    const mask = new Image();
    mask.onload = () => drawOutline(canvas, mask);
    mask.src = "data:image/png;base64," + answer.mask_png;
  }
  const numbers = document.createElement("div");
  numbers.className = "numbers";
  const area = answer.defect_area_px === undefined ? "" :
    ` · defect area <span class="area">${answer.defect_area_px}</span> px in ${answer.regions.length} region(s)`;
  numbers.innerHTML = `<span class="decision"></span> raw <span class="raw">${answer.raw_score.toPrecision(6)}</span>` +
    ` · normalised <span class="norm">${answer.normalized_score.toFixed(3)}</span>${area}`;
  card.append(title, pictures, numbers);
  $("parts").prepend(card);

  const row = document.createElement("tr");
  const cells = [answer.path, pyFloat(answer.raw_score), pyFloat(answer.normalized_score), ""]
    .concat(answer.defect_area_px === undefined ? [] : [String(answer.defect_area_px)]);
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (i === 3) td.className = "col-decision";
    row.append(td);
  });
  $("scores").querySelector("tbody").append(row);
  state.parts.push(Object.assign({}, answer, { card, row }));
}

async function score(files) {
  files = Array.from(files);
  if (!files.length) return;
  const body = new FormData();
  for (const f of files) body.append("image", f, f.name);
  setStatus(`scoring ${files.length} image(s)…`, true);
  let reply;
  try {
    const response = await fetch("/v1/score?maps=true", { method: "POST", body });
    reply = await response.json();
    if (!response.ok) { setStatus(reply.error || `the server answered ${response.status}`); return; }
  } catch (err) {
    setStatus(`the server cannot be reached: ${err}`);
    return;
  }
  reply.images.forEach((answer, i) => addPart(answer, files[i]));
  setStatus(`scored ${reply.images.length} image(s)`, true);
  $("download").disabled = false;
  sliderRange();
  redecide();
}

async function start() {
  const response = await fetch("/v1/info");
  const info = await response.json();
  state.info = info;
  state.threshold = state.stored = info.threshold;
  state.low = info.score_range ? info.score_range[0] : info.threshold;
  state.high = info.score_range ? info.score_range[1] : info.threshold;
  $("export-info").textContent = `${info.model_type || "model"} · ${info.detector} · input ` +
    `${(info.input_shape || []).slice(0, 2).join("×")} · threshold ${info.threshold.toPrecision(6)}` +
    ` (${info.threshold_source})` + (info.has_maps ? " · anomaly maps" : "");
  document.querySelectorAll(".maps-only").forEach((el) => el.classList.toggle("hidden", !info.has_maps));
  sliderRange();
  redecide();
}

$("pick").addEventListener("change", (e) => { score(e.target.files); e.target.value = ""; });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); score(e.dataTransfer.files); });
$("threshold").addEventListener("input", (e) => { state.threshold = Number(e.target.value); redecide(); });
$("reset-threshold").addEventListener("click", () => { state.threshold = state.stored; sliderRange(); redecide(); });
$("download").addEventListener("click", () => {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([csvText()], { type: "text/csv" }));
  link.download = "scores.csv";
  link.click();
});
start().catch((err) => setStatus(`the export's description cannot be read: ${err}`));
