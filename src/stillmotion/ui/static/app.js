// stillmotion web app: draw arrows and a mask on a photo, preview the motion, run the engines.
// Plain JS, no build step, no third-party code: the page must work offline and stay auditable.
"use strict";

const $ = (id) => document.getElementById(id);
const DRAG_PX = 6;          // a press that moves less than this (screen px) is a click
const SAME_POINT_PX = 4;    // clicks closer than this to the last point add nothing
const MASK_SIDE = 1024;     // the brush layer's resolution (longer side); the server resizes it
const POLL_MS = 400;

const state = {
  sid: null,
  info: null,
  img: null,               // HTMLImageElement of the photo as the server decoded it
  width: 0, height: 0,     // photo pixels (arrow coordinates live here)
  imageName: "photo.jpg",
  arrows: [],              // [{points: [[x, y], ...], strength}]
  pending: null,           // points of the arrow being clicked, or null
  hover: null,             // image point under the pointer
  highlight: -1,           // arrow under the pointer in the list
  tool: "arrow",
  mask: null,              // offscreen canvas: opaque = may move
  maskEmpty: true,
  undo: [],
  press: null,             // {x, y, sx, sy, moved}
  fieldTimer: null, previewTimer: null,
  previewJob: null, runJob: null,
};

// ------------------------------------------------------------------ server calls

async function api(path, options = {}) {
  // The server refuses changes without this header: other web sites cannot send it without asking.
  const headers = { ...(options.headers || {}), "X-Stillmotion": "1" };
  const res = await fetch(path, { ...options, headers });
  if (!res.ok) {
    let text = `${res.status} ${res.statusText}`;
    try { const j = await res.json(); if (j.error) text = j.error; } catch (_) { /* not JSON */ }
    throw new Error(text);
  }
  return res;
}
const sapi = (path, options) => api(`/api/s/${state.sid}${path}`, options);
const jsonBody = (obj) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });

function say(text, kind = "info") {
  const m = $("message");
  m.textContent = text || "";
  m.className = `message ${text ? kind : ""}`;
}

// ------------------------------------------------------------------ canvas geometry

const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function fitCanvas() {
  if (!state.img) return;
  const stage = $("stage");
  const maxW = stage.clientWidth;
  const maxH = Math.max(320, window.innerHeight - 230);
  const scale = Math.min(maxW / state.width, maxH / state.height);
  const cssW = Math.round(state.width * scale), cssH = Math.round(state.height * scale);
  const dpr = window.devicePixelRatio || 1;
  canvas.style.width = `${cssW}px`;
  canvas.style.height = `${cssH}px`;
  canvas.width = Math.round(cssW * dpr);
  canvas.height = Math.round(cssH * dpr);
  draw();
}

function toImage(ev) {
  const r = canvas.getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width * state.width;
  const y = (ev.clientY - r.top) / r.height * state.height;
  return [Math.min(Math.max(x, 0), state.width - 1), Math.min(Math.max(y, 0), state.height - 1)];
}

function screenDist(a, b) {
  const r = canvas.getBoundingClientRect();
  return Math.hypot((a[0] - b[0]) * r.width / state.width, (a[1] - b[1]) * r.height / state.height);
}

// ------------------------------------------------------------------ drawing

function drawArrow(points, color, dashed) {
  const k = canvas.width / state.width;
  const p = points.map(([x, y]) => [x * k, y * k]);
  const lw = Math.max(2.5, canvas.width / 300);
  ctx.save();
  ctx.lineCap = "round"; ctx.lineJoin = "round";
  if (dashed) ctx.setLineDash([lw * 3, lw * 2]);
  for (const [stroke, width] of [["rgba(0,0,0,0.6)", lw + 3], [color, lw]]) {
    ctx.strokeStyle = stroke; ctx.lineWidth = width;
    ctx.beginPath(); ctx.moveTo(p[0][0], p[0][1]);
    for (const q of p.slice(1)) ctx.lineTo(q[0], q[1]);
    ctx.stroke();
  }
  ctx.setLineDash([]);
  const [a, b] = [p[p.length - 2], p[p.length - 1]];
  const ang = Math.atan2(b[1] - a[1], b[0] - a[0]);
  const head = lw * 4.5;
  ctx.fillStyle = color; ctx.strokeStyle = "rgba(0,0,0,0.6)"; ctx.lineWidth = 1.5;
  ctx.beginPath();
  ctx.moveTo(b[0], b[1]);
  ctx.lineTo(b[0] - head * Math.cos(ang - 0.45), b[1] - head * Math.sin(ang - 0.45));
  ctx.lineTo(b[0] - head * Math.cos(ang + 0.45), b[1] - head * Math.sin(ang + 0.45));
  ctx.closePath(); ctx.fill(); ctx.stroke();
  ctx.beginPath(); ctx.arc(p[0][0], p[0][1], lw * 1.3, 0, 2 * Math.PI); ctx.fill(); ctx.stroke();
  ctx.restore();
}

function showCounts() {
  const n = state.arrows.length;
  const parts = [`${n} arrow${n === 1 ? "" : "s"}`];
  parts.push(state.maskEmpty ? "no mask (everything may move)" : "mask set");
  $("counts").textContent = parts.join(" · ");
  $("finish-arrow").classList.toggle("hidden", !state.pending);
}

function draw() {
  if (!state.img) return;
  showCounts();
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(state.img, 0, 0, canvas.width, canvas.height);
  if (!state.maskEmpty) {
    // Darken what stays still, so the moving region reads at a glance.
    const tint = document.createElement("canvas");
    tint.width = canvas.width; tint.height = canvas.height;
    const t = tint.getContext("2d");
    t.fillStyle = "rgba(8,12,30,0.55)"; t.fillRect(0, 0, tint.width, tint.height);
    t.globalCompositeOperation = "destination-out";
    t.drawImage(state.mask, 0, 0, tint.width, tint.height);
    ctx.drawImage(tint, 0, 0);
  }
  state.arrows.forEach((a, i) => drawArrow(a.points, i === state.highlight ? "#ff8fd8" : "#ffd23f", false));
  if (state.pending) {
    const pts = state.hover ? [...state.pending, state.hover] : state.pending;
    if (pts.length >= 2) drawArrow(pts, "#5fe3ff", true);
    const k = canvas.width / state.width;
    ctx.fillStyle = "#5fe3ff";
    for (const [x, y] of state.pending) { ctx.beginPath(); ctx.arc(x * k, y * k, 5, 0, 2 * Math.PI); ctx.fill(); }
  }
  if (state.hover && state.tool !== "arrow") {
    const k = canvas.width / state.width;
    const r = brushRadiusImage() * k;
    ctx.strokeStyle = state.tool === "brush" ? "#5fe3ff" : "#ff7a7a";
    ctx.lineWidth = 1.5;
    ctx.beginPath(); ctx.arc(state.hover[0] * k, state.hover[1] * k, r, 0, 2 * Math.PI); ctx.stroke();
  }
}

// ------------------------------------------------------------------ undo

function snapshot() {
  const m = document.createElement("canvas");
  m.width = state.mask.width; m.height = state.mask.height;
  m.getContext("2d").drawImage(state.mask, 0, 0);
  return { arrows: JSON.parse(JSON.stringify(state.arrows)), mask: m, maskEmpty: state.maskEmpty };
}

function pushUndo() {
  state.undo.push(snapshot());
  if (state.undo.length > 40) state.undo.shift();
}

function undo() {
  if (state.pending) { state.pending = null; draw(); return; }
  const s = state.undo.pop();
  if (!s) { say("nothing to undo"); return; }
  const maskChanged = s.maskEmpty !== state.maskEmpty || !s.maskEmpty;
  state.arrows = s.arrows;
  const c = state.mask.getContext("2d");
  c.clearRect(0, 0, state.mask.width, state.mask.height);
  c.drawImage(s.mask, 0, 0);
  state.maskEmpty = s.maskEmpty;
  draw();
  if (maskChanged) sendMask(); else edited();
}

// ------------------------------------------------------------------ arrows: drag, or clicks

function finishPending() {
  const pts = state.pending;
  state.pending = null;
  if (!pts) return;
  if (pts.length < 2) {
    say("An arrow needs a start and an end: drag, or click a second point.", "warn");
    draw();
    return;
  }
  addArrow(pts);
}

function addArrow(points) {
  pushUndo();
  state.arrows.push({ points: points.map(([x, y]) => [round2(x), round2(y)]), strength: 1.0 });
  say(`${state.arrows.length} arrow${state.arrows.length > 1 ? "s" : ""}`);
  draw();
  edited();
}

const round2 = (v) => Math.round(v * 100) / 100;

function addPoint(p) {
  if (!state.pending) { state.pending = [p]; say("Click more points; double-click or Enter to finish, Esc to cancel."); }
  else if (screenDist(p, state.pending[state.pending.length - 1]) >= SAME_POINT_PX) state.pending.push(p);
  draw();
}

// ------------------------------------------------------------------ brush

function brushRadiusImage() {
  // The slider is in screen pixels: the brush looks the same size whatever the photo's size.
  const r = canvas.getBoundingClientRect();
  return Number($("brush-size").value) / 2 * state.width / r.width;
}

function paint(from, to) {
  const k = state.mask.width / state.width;
  const c = state.mask.getContext("2d");
  c.save();
  c.globalCompositeOperation = state.tool === "eraser" ? "destination-out" : "source-over";
  c.strokeStyle = "#fff"; c.fillStyle = "#fff";
  c.lineCap = "round"; c.lineJoin = "round";
  c.lineWidth = brushRadiusImage() * 2 * k;
  c.beginPath(); c.moveTo(from[0] * k, from[1] * k); c.lineTo(to[0] * k, to[1] * k); c.stroke();
  c.restore();
  state.maskEmpty = false;  // recomputed when the stroke ends
  draw();
}

function maskIsEmpty() {
  const c = state.mask.getContext("2d");
  const d = c.getImageData(0, 0, state.mask.width, state.mask.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 127) return false;
  return true;
}

async function sendMask() {
  state.maskEmpty = maskIsEmpty();
  draw();
  try {
    if (state.maskEmpty) {
      await sapi("/mask", { method: "DELETE" });
    } else {
      const blob = await new Promise((ok) => state.mask.toBlob(ok, "image/png"));
      const fd = new FormData(); fd.append("file", blob, "brush.png");
      await sapi("/mask", { method: "POST", body: fd });
    }
    edited();
  } catch (e) { say(`Mask not saved: ${e.message}`, "error"); }
}

// ------------------------------------------------------------------ pointer and keys

canvas.addEventListener("pointerdown", (ev) => {
  if (!state.img || ev.button !== 0) return;
  canvas.setPointerCapture(ev.pointerId);
  const p = toImage(ev);
  state.press = { p, sx: ev.clientX, sy: ev.clientY, moved: false, last: p };
  if (state.tool !== "arrow") { pushUndo(); paint(p, p); }
});

canvas.addEventListener("pointermove", (ev) => {
  if (!state.img) return;
  const p = toImage(ev);
  state.hover = p;
  const press = state.press;
  if (press) {
    if (Math.hypot(ev.clientX - press.sx, ev.clientY - press.sy) >= DRAG_PX) press.moved = true;
    if (state.tool !== "arrow") { paint(press.last, p); press.last = p; return; }
    if (press.moved && !state.pending) { draw(); drawArrow([press.p, p], "#5fe3ff", true); return; }
  }
  draw();
});

canvas.addEventListener("pointerup", (ev) => {
  const press = state.press;
  state.press = null;
  if (!press || !state.img) return;
  const p = toImage(ev);
  if (state.tool !== "arrow") { sendMask(); return; }
  if (press.moved && !state.pending) {
    if (screenDist(press.p, p) < SAME_POINT_PX) { say("An arrow needs a start and an end.", "warn"); draw(); return; }
    addArrow([press.p, p]);
  } else {
    addPoint(press.moved ? p : press.p);
  }
});

canvas.addEventListener("pointerleave", () => { state.hover = null; draw(); });

canvas.addEventListener("dblclick", (ev) => {
  ev.preventDefault();
  if (state.tool === "arrow") finishPending();
});

document.addEventListener("keydown", (ev) => {
  if (ev.target.matches("input, select, textarea")) return;
  if (ev.key === "Enter" && state.pending) { ev.preventDefault(); finishPending(); }
  else if (ev.key === "Escape" && state.pending) { state.pending = null; say(""); draw(); }
  else if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") { ev.preventDefault(); undo(); }
  else if (ev.key === "a") setTool("arrow");
  else if (ev.key === "b") setTool("brush");
  else if (ev.key === "e") setTool("eraser");
});

function setTool(tool) {
  if (tool !== "arrow" && state.pending) finishPending();
  state.tool = tool;
  document.querySelectorAll(".tool").forEach((b) => b.classList.toggle("active", b.dataset.tool === tool));
  canvas.classList.toggle("brushing", tool !== "arrow");
  draw();
}
document.querySelectorAll(".tool").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));

// ------------------------------------------------------------------ photo, mask and arrows files

async function uploadPhoto(file) {
  if (!file) return;
  say(`Uploading ${file.name}…`);
  const fd = new FormData(); fd.append("file", file, file.name);
  try {
    const info = await (await sapi("/image", { method: "POST", body: fd })).json();
    const img = new Image();
    img.src = `/api/s/${state.sid}/image.jpg?t=${Date.now()}`;
    await img.decode();
    Object.assign(state, { img, width: info.width, height: info.height, imageName: info.name,
      arrows: [], pending: null, undo: [] });
    const k = Math.min(1, MASK_SIDE / Math.max(info.width, info.height));
    state.mask = document.createElement("canvas");
    state.mask.width = Math.max(1, Math.round(info.width * k));
    state.mask.height = Math.max(1, Math.round(info.height * k));
    state.maskEmpty = true;
    $("drop-hint").classList.add("hidden");
    document.body.classList.add("has-photo");
    fitCanvas();
    say(`${info.name}: ${info.width}×${info.height}. Now draw an arrow.`);
    edited();
  } catch (e) { say(e.message, "error"); }
}

async function uploadMask(file) {
  if (!file || !state.img) { if (!state.img) say("Upload a photo first.", "warn"); return; }
  const fd = new FormData(); fd.append("file", file, file.name);
  try {
    pushUndo();
    await sapi("/mask", { method: "POST", body: fd });
    // Load the server's reading of it into the brush layer, so it can be painted on further.
    const img = new Image();
    img.src = `/api/s/${state.sid}/mask.png?t=${Date.now()}`;
    await img.decode();
    const c = state.mask.getContext("2d");
    c.clearRect(0, 0, state.mask.width, state.mask.height);
    c.drawImage(img, 0, 0, state.mask.width, state.mask.height);
    const d = c.getImageData(0, 0, state.mask.width, state.mask.height);
    for (let i = 0; i < d.data.length; i += 4) { d.data[i + 3] = d.data[i]; d.data[i] = d.data[i + 1] = d.data[i + 2] = 255; }
    c.putImageData(d, 0, 0);
    state.maskEmpty = maskIsEmpty();
    draw(); edited();
    say(`Mask ${file.name} loaded.`);
  } catch (e) { say(e.message, "error"); }
}

async function importArrows(file) {
  if (!file || !state.img) { if (!state.img) say("Upload a photo first.", "warn"); return; }
  const fd = new FormData(); fd.append("file", file, file.name);
  try {
    const out = await (await sapi("/arrows/import", { method: "POST", body: fd })).json();
    pushUndo();
    state.arrows = out.arrows.map((a) => ({ points: a.points, strength: a.strength }));
    draw(); edited();
    say([`${out.arrows.length} arrows imported.`, ...out.notes].join(" "));
  } catch (e) { say(e.message, "error"); }
}

async function exportArrows() {
  if (!state.img) { say("Upload a photo first.", "warn"); return; }
  if (!state.arrows.length) { say("Draw an arrow first.", "warn"); return; }
  try {
    const blob = await (await sapi("/arrows/export", jsonBody({ arrows: state.arrows }))).blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = "drawing.json";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 5000);
  } catch (e) { say(e.message, "error"); }
}

$("photo-input").addEventListener("change", (ev) => { uploadPhoto(ev.target.files[0]); ev.target.value = ""; });
$("mask-input").addEventListener("change", (ev) => { uploadMask(ev.target.files[0]); ev.target.value = ""; });
$("arrows-input").addEventListener("change", (ev) => { importArrows(ev.target.files[0]); ev.target.value = ""; });
$("export-arrows").addEventListener("click", exportArrows);
$("export-arrows-2").addEventListener("click", exportArrows);
$("undo").addEventListener("click", undo);
$("finish-arrow").addEventListener("click", finishPending);
$("clear-arrows").addEventListener("click", () => {
  if (!state.arrows.length && !state.pending) return;
  pushUndo(); state.arrows = []; state.pending = null; draw(); edited();
});
$("clear-mask").addEventListener("click", () => {
  if (!state.mask || state.maskEmpty) return;
  pushUndo();
  state.mask.getContext("2d").clearRect(0, 0, state.mask.width, state.mask.height);
  sendMask();
});
const stage = $("stage");
stage.addEventListener("dragover", (ev) => { ev.preventDefault(); stage.classList.add("over"); });
stage.addEventListener("dragleave", () => stage.classList.remove("over"));
stage.addEventListener("drop", (ev) => {
  ev.preventDefault(); stage.classList.remove("over");
  if (ev.dataTransfer.files.length) uploadPhoto(ev.dataTransfer.files[0]);
});
window.addEventListener("resize", fitCanvas);

// ------------------------------------------------------------------ settings

function settings() {
  const v = (id) => $(id).value;
  return {
    engine: v("engine"), strength: Number(v("strength")), frames: Number(v("frames")), fps: Number(v("fps")),
    size: Number(v("size")), loop: $("loop").checked, steps: Number(v("steps")), seed: Number(v("seed")),
    gamma: Number(v("gamma")), omega: Number(v("omega")), long_method: v("long_method"), control: v("control"),
    prompt: v("prompt"),
  };
}

function syncSettings() {
  $("strength-out").textContent = Number($("strength").value).toFixed(1);
  const diffusion = $("engine").value === "diffusion";
  $("diffusion-settings").disabled = !diffusion;
  $("diffusion-settings").classList.toggle("dim", !diffusion);
  // The diffusion model works at its own size; the size choice is the warp engine's.
  $("size").disabled = diffusion;
  $("loop").disabled = diffusion;  // seamless loops are the warp engine's (symmetric splatting)
  $("size-label").title = diffusion ? "diffusion renders at the size its model accepts" : "";
}

$("settings").addEventListener("input", (ev) => {
  syncSettings();
  if (ev.target.id === "strength") edited(); else updateCommand();
});
$("settings").addEventListener("change", () => { syncSettings(); updateCommand(); });

// ------------------------------------------------------------------ the list of arrows: strength, delete

function renderArrowList() {
  const list = $("arrow-list");
  list.replaceChildren();
  state.arrows.forEach((a, i) => {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = `#${i + 1} · ${a.points.length === 2 ? "arrow" : `${a.points.length}-point path`}`;
    const strength = document.createElement("input");
    Object.assign(strength, { type: "number", min: 0, max: 10, step: 0.1, value: a.strength });
    strength.title = "This arrow's speed factor (1 = its tail reaches its head in 25 frames)";
    strength.setAttribute("aria-label", `strength of arrow ${i + 1}`);
    strength.addEventListener("change", () => {
      const v = Number(strength.value);
      if (!(v >= 0 && v <= 10)) { strength.value = a.strength; say("An arrow's strength is between 0 and 10.", "warn"); return; }
      pushUndo();
      a.strength = v;
      edited(false);
    });
    const del = document.createElement("button");
    Object.assign(del, { type: "button", className: "btn small", textContent: "✕", title: `Delete arrow ${i + 1}` });
    del.addEventListener("click", () => { pushUndo(); state.arrows.splice(i, 1); state.highlight = -1; draw(); edited(); });
    li.addEventListener("mouseenter", () => { state.highlight = i; draw(); });
    li.addEventListener("mouseleave", () => { state.highlight = -1; draw(); });
    const strengthLabel = document.createElement("label");
    strengthLabel.append("strength ", strength);
    li.append(label, strengthLabel, del);
    list.appendChild(li);
  });
}

// ------------------------------------------------------------------ live field, command, quick preview

function edited(relist = true) {
  if (relist) renderArrowList();
  clearTimeout(state.fieldTimer);
  state.fieldTimer = setTimeout(updateField, 150);
  clearTimeout(state.previewTimer);
  if ($("auto-preview").checked) state.previewTimer = setTimeout(() => startPreview(false), 900);
}

async function updateField() {
  if (!state.img) return;
  try {
    const res = await sapi("/field", jsonBody({ arrows: state.arrows, strength: Number($("strength").value) }));
    const blob = await res.blob();
    const img = $("field-img");
    const old = img.src;
    img.src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
    const stats = JSON.parse(res.headers.get("X-Field-Stats") || "{}");
    $("field-stats").textContent = state.arrows.length
      ? `max ${stats.max_speed} px/frame · ${(100 * stats.moving_fraction).toFixed(0)}% moves` : "no arrows yet";
  } catch (e) { say(e.message, "error"); }
  updateCommand();
}

async function updateCommand() {
  if (!state.img) return;
  try {
    const out = await (await sapi("/command", jsonBody({ ...settings(), arrows: [] }))).json();
    $("command").textContent = out.command;
    $("command").classList.remove("empty");
    $("mask-note").classList.toggle("hidden", !out.has_mask);
    $("dl-mask").href = `/api/s/${state.sid}/mask.png`;
  } catch (_) { /* the command is informative only */ }
}

$("copy-command").addEventListener("click", async () => {
  try { await navigator.clipboard.writeText($("command").textContent); say("Command copied."); }
  catch (_) { say("Select the command and copy it (the clipboard is not available here).", "warn"); }
});

async function submit(kind, explicit) {
  // An arrow being clicked is the user's, not the timer's: automatic previews leave it alone.
  if (state.pending && explicit) {
    if (state.pending.length < 2) { state.pending = null; draw(); say("An arrow needs a start and an end.", "warn"); return null; }
    finishPending();
  }
  if (!state.img) { say("Upload a photo first.", "warn"); return null; }
  if (!state.arrows.length) { if (kind === "full") say("Draw at least one arrow first.", "warn"); return null; }
  const res = await sapi("/jobs", jsonBody({ ...settings(), kind, arrows: state.arrows }));
  return res.json();
}

async function startPreview(explicit) {
  try {
    const job = await submit("preview", explicit);
    if (!job) { if (explicit && state.arrows.length === 0) say("Draw an arrow first.", "warn"); return; }
    state.previewJob = job.id;
    follow(job, (j) => {
      if (state.previewJob !== j.id) return false;
      $("preview-state").textContent = describe(j);
      if (j.state === "done") {
        const v = $("preview-video");
        v.src = `${j.files.mp4}?t=${Date.now()}`;
        v.play().catch(() => {});
      }
      return true;
    }, () => state.previewJob === job.id);
  } catch (e) { $("preview-state").textContent = e.message; }
}
$("preview-btn").addEventListener("click", () => startPreview(true));

function describe(j) {
  if (j.state === "queued") return j.position > 1 ? `waiting: ${j.position - 1} job(s) ahead of you` : "waiting: next in line";
  if (j.state === "running") {
    const t = j.elapsed !== undefined ? ` · ${Math.round(j.elapsed)} s` : "";
    return `${j.message} · ${Math.round(100 * j.progress)}%${t}`;
  }
  if (j.state === "done") return j.report && j.report.seconds_total ? `done in ${j.report.seconds_total.toFixed(1)} s` : "done";
  if (j.state === "error") return `failed: ${j.error}`;
  return j.state;
}

function follow(job, onUpdate, wanted = () => true) {
  const tick = async () => {
    if (!wanted()) return;  // a newer job replaced it: its files may already be gone
    let j;
    try { j = await (await sapi(`/jobs/${job.id}`)).json(); }
    catch (e) { onUpdate({ ...job, state: "error", error: e.message }); return; }
    if (onUpdate(j) === false) return;
    if (j.state === "queued" || j.state === "running") setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, 100);
}

$("settings").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const job = await submit("full", true);
    if (!job) return;
    state.runJob = job.id;
    $("run").disabled = true; $("cancel").disabled = false;
    $("progress-bar").style.width = "0%";
    $("run-state").textContent = describe(job);
    follow(job, (j) => {
      // Until the first model call or frame (model loading, the motion field) there is no fraction: a moving bar.
      const waiting = j.state === "running" && j.progress < 0.02;
      $("progress").classList.toggle("indeterminate", waiting);
      $("progress-bar").style.width = waiting ? "30%" : `${Math.round(100 * (j.state === "done" ? 1 : j.progress))}%`;
      $("run-state").textContent = describe(j);
      if (j.state !== "queued" && j.state !== "running") {
        $("run").disabled = false; $("cancel").disabled = true;
      }
      if (j.state === "done") showResult(j);
      if (j.state === "error") say(j.error, "error");
      return true;
    });
  } catch (e) { say(e.message, "error"); }
});

// The server makes a run's GIF through the queue and never keeps a request waiting for it: start it,
// follow it, then download the file the usual way.
$("dl-gif").addEventListener("click", async (ev) => {
  const a = $("dl-gif");
  if (a.dataset.ready === "1") return;  // made: the browser downloads it
  ev.preventDefault();
  if (a.dataset.making === "1") return;
  a.dataset.making = "1";
  const jid = a.dataset.job;
  try {
    let g = await (await sapi(`/jobs/${jid}/gif`, { method: "POST" })).json();
    while (g.state === "queued" || g.state === "running") {
      say(g.state === "queued" ? `Making the GIF: ${describe(g)}.` : `Making the GIF: ${Math.round(100 * g.progress)}%.`);
      await new Promise((r) => setTimeout(r, POLL_MS));
      if (a.dataset.job !== jid) return;  // a newer run replaced this one
      g = await (await sapi(`/jobs/${jid}/gif`)).json();
    }
    if (g.state !== "done") { say(`The GIF could not be made: ${g.error || g.state}`, "error"); return; }
    a.dataset.ready = "1";
    say("GIF ready: downloading.");
    a.click();
  } catch (e) { say(e.message, "error"); }
  finally { a.dataset.making = "0"; }
});
$("cancel").addEventListener("click", async () => {
  if (!state.runJob) return;
  try { await sapi(`/jobs/${state.runJob}/cancel`, { method: "POST" }); } catch (e) { say(e.message, "error"); }
});

function showResult(j) {
  $("result-card").classList.remove("hidden");
  const v = $("result-video");
  v.src = `${j.files.mp4}?t=${Date.now()}`;
  v.play().catch(() => {});
  $("dl-mp4").href = `${j.files.mp4}`;
  $("dl-mp4").download = "stillmotion.mp4";
  $("dl-gif").href = `/api/s/${state.sid}/jobs/${j.id}/video.gif`;
  $("dl-gif").download = "stillmotion.gif";
  $("dl-gif").dataset.job = j.id;
  $("dl-gif").dataset.ready = "0";
  const r = j.report || {};
  $("result-stats").textContent = r.frames ? `${r.frames} frames · ${r.width}×${r.height} · ${r.fps} fps` : "";
  $("result-card").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

// ------------------------------------------------------------------ start

async function start() {
  syncSettings();
  try {
    state.info = await (await api("/api/info")).json();
    state.sid = (await (await api("/api/session", { method: "POST" })).json()).session;
  } catch (e) { say(e instanceof TypeError ? `Server not reachable: ${e.message}` : e.message, "error"); return; }
  $("limit-mb").textContent = state.info.max_upload_mb;
  const box = $("engines");
  for (const [name, st] of Object.entries(state.info.engines)) {
    const b = document.createElement("span");
    b.className = `badge ${st.available ? "ok" : "off"}`;
    b.textContent = `${name}: ${st.available ? "ready" : "unavailable"}`;
    b.title = st.reason || st.model || "";
    box.appendChild(b);
    const opt = $("engine").querySelector(`option[value="${name}"]`);
    if (opt && !st.available) { opt.disabled = true; opt.textContent += " — unavailable"; }
  }
  const d = state.info.engines.diffusion;
  $("prompt-label").hidden = d.backbone !== "wan";  // a text prompt is a Wan model's input
  $("engine-note").textContent = d.available ? "" : `Diffusion unavailable: ${d.reason}.`;
  if (!state.info.engines.warp.available) $("engine-note").textContent += ` Warp unavailable: ${state.info.engines.warp.reason}.`;
}
start();
