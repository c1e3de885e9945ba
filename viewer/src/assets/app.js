// lclstream view: draws the latest frame and trends from the viewer's API.
"use strict";

const $ = (id) => document.getElementById(id);

// Colour maps as a few stops, interpolated linearly.
const CMAPS = {
  viridis: [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]],
  magma: [[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]],
  gray: [[0, 0, 0], [255, 255, 255]],
};

function lut(name) {
  const stops = CMAPS[name] || CMAPS.viridis;
  const table = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const k = Math.min(Math.floor(x), stops.length - 2);
    const f = x - k;
    for (let c = 0; c < 3; c++) table[i * 3 + c] = stops[k][c] + (stops[k + 1][c] - stops[k][c]) * f;
  }
  return table;
}

let frame = null; // {width, height, values}
let frameSeq = 0;
let fetching = false;
let paused = false;

function draw() {
  if (!frame) return;
  const { width, height, values } = frame;
  const canvas = $("image");
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  let lo = Number($("min").value), hi = Number($("max").value);
  if ($("auto").checked) {
    lo = Infinity; hi = -Infinity;
    for (const v of values) if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    $("min").value = lo.toPrecision(4);
    $("max").value = hi.toPrecision(4);
  }
  const log = $("scale").value === "log";
  const tf = (v) => (log ? Math.log10(Math.max(v - lo, 0) + 1) : v - lo);
  const span = Math.max(tf(hi), 1e-12);
  const table = lut($("cmap").value);
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    const o = i * 4;
    if (!Number.isFinite(v)) { img.data[o + 3] = 255; continue; }
    const k = Math.max(0, Math.min(255, Math.round((tf(v) / span) * 255))) * 3;
    img.data[o] = table[k]; img.data[o + 1] = table[k + 1]; img.data[o + 2] = table[k + 2]; img.data[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

async function fetchFrame(seq) {
  if (fetching) return; // a slow browser skips frames instead of queueing them
  fetching = true;
  try {
    const r = await fetch("/api/frame");
    if (r.ok) {
      const buf = await r.arrayBuffer();
      const dv = new DataView(buf);
      const width = dv.getUint32(0, true), height = dv.getUint32(4, true);
      frame = { width, height, values: new Float32Array(buf.slice(8)) };
      frameSeq = seq;
      draw();
    }
  } finally {
    fetching = false;
  }
}

function human(bytesPerSecond) {
  const units = ["B/s", "kB/s", "MB/s", "GB/s"];
  let v = bytesPerSecond, u = 0;
  while (v >= 1000 && u < units.length - 1) { v /= 1000; u++; }
  return v.toFixed(1) + " " + units[u];
}

function plot(canvas, label, points) {
  const w = (canvas.width = canvas.clientWidth || 400), h = (canvas.height = 90);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#0b0b0b"; ctx.fillRect(0, 0, w, h);
  const ok = points.filter((p) => Number.isFinite(p[1]));
  ctx.fillStyle = "#aaa"; ctx.font = "11px sans-serif";
  if (ok.length < 2) { ctx.fillText(label + ": waiting for events", 4, 12); return; }
  let t0 = ok[0][0], t1 = ok[ok.length - 1][0], y0 = Infinity, y1 = -Infinity;
  for (const p of ok) { if (p[1] < y0) y0 = p[1]; if (p[1] > y1) y1 = p[1]; }
  if (y1 === y0) { y1 += 1; y0 -= 1; }
  if (t1 === t0) t1 = t0 + 1;
  ctx.strokeStyle = "#79c0ff"; ctx.beginPath();
  ok.forEach((p, i) => {
    const x = ((p[0] - t0) / (t1 - t0)) * (w - 8) + 4, y = h - 4 - ((p[1] - y0) / (y1 - y0)) * (h - 20);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillText(`${label}  last ${ok[ok.length - 1][1].toPrecision(6)}  [${y0.toPrecision(4)} .. ${y1.toPrecision(4)}]  ${(t1 - t0).toFixed(1)} s`, 4, 12);
}

function trends(status) {
  const series = { "ROI sum": status.trend.map((p) => [p.t, p.roi == null ? NaN : p.roi]) };
  const names = new Set();
  for (const p of status.trend) for (const k of Object.keys(p.scalars)) names.add(k);
  for (const k of [...names].sort()) series[k] = status.trend.map((p) => [p.t, k in p.scalars ? p.scalars[k] : NaN]);
  const box = $("trends");
  for (const [label, points] of Object.entries(series)) {
    const id = "trend-" + label.replace(/[^a-zA-Z0-9_]/g, "_");
    let canvas = document.getElementById(id);
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.id = id; canvas.className = "trend";
      box.appendChild(canvas);
    }
    plot(canvas, label, points);
  }
  $("trend-n").textContent = status.trend.length;
}

let knownFields = "";
let firstStatus = true;
function update(status) {
  $("error").textContent = status.error || "";
  $("mode").textContent = status.mode + (status.paused ? " (paused)" : "");
  if (firstStatus) { $("source").value = status.source; firstStatus = false; }
  if (status.fields.join() !== knownFields) {
    knownFields = status.fields.join();
    $("field").innerHTML = "";
    for (const f of status.fields) $("field").add(new Option(f, f));
  }
  if (status.field) $("field").value = status.field;
  if (document.activeElement !== $("roi")) $("roi").value = status.roi.join(",");
  $("events").textContent = status.events;
  $("rate").textContent = status.event_rate_hz.toFixed(1);
  $("raw-rate").textContent = human(status.raw_bytes_per_s);
  $("wire-rate").textContent = human(status.wire_bytes_per_s);
  $("ratio").textContent = status.compression_ratio == null ? "-" : status.compression_ratio.toFixed(2);
  $("lag").textContent = status.lag_events == null ? "-" : status.lag_events + " events";
  $("frame-info").textContent = status.frame_seq
    ? `#${status.frame_seq} ${status.field} ${status.frame_dtype} [${status.frame_shape.join(" x ")}]`
    : "none";
  document.body.dataset.frameSeq = status.frame_seq;
  if (status.frame_seq === 0) { frame = null; const c = $("image"); c.getContext("2d").clearRect(0, 0, c.width, c.height); }
  if (!paused && status.frame_seq && status.frame_seq !== frameSeq) fetchFrame(status.frame_seq);
  trends(status);
}

function control(params) {
  const token = document.querySelector('meta[name="lclstream-token"]').content;
  return fetch("/api/control?" + new URLSearchParams(params), {
    method: "POST",
    headers: { "X-Lclstream-Token": token },
  });
}

$("apply").onclick = () => { frameSeq = 0; control({ source: $("source").value }); };
$("field").onchange = () => control({ field: $("field").value });
$("pause").onclick = () => {
  paused = !paused;
  $("pause").textContent = paused ? "resume" : "pause";
  control({ pause: paused ? "1" : "0" });
};
$("set-roi").onclick = () => control({ roi: $("roi").value });
for (const id of ["scale", "cmap", "min", "max", "auto"]) $(id).onchange = draw;

const events = new EventSource("/api/events");
events.onmessage = (m) => update(JSON.parse(m.data));
events.onerror = () => { $("error").textContent = "lost the connection to the viewer; retrying"; };
