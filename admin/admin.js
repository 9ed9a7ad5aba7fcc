// The ops page: one EventSource on this same handler (?stream), which is a
// roomcast connection that receives a snapshot of every instance's Stats
// each second as a "direct" frame. Rates are differences of counters
// between snapshots, per instance, so a restarted instance (counters back
// to zero) never shows a negative rate.

const WINDOW = 120; // seconds of history in the charts
const $ = (id) => document.getElementById(id);
const series = { messages: [], deliveries: [] };
let previous = new Map(); // instance -> its last Stats
let source = null;

function connect(room) {
  if (source) source.close();
  const url = "?stream=1" + (room ? "&presence=" + encodeURIComponent(room) : "");
  source = new EventSource(url);
  source.onopen = () => status("live", false);
  source.onerror = () => status("reconnecting…", true);
  source.onmessage = (ev) => {
    const frame = JSON.parse(ev.data);
    if (frame.type === "direct" && frame.to === "conn") render(frame.data);
    if (frame.type === "close") status("closed by server: " + frame.reason, true);
  };
}

function status(text, down) {
  const el = $("status");
  el.textContent = text;
  el.className = down ? "down" : "";
}

function rate(now, prev, field) {
  if (!prev) return 0;
  const dt = (Date.parse(now.at) - Date.parse(prev.at)) / 1000;
  const d = now[field] - prev[field];
  return dt > 0 && d >= 0 ? d / dt : 0;
}

function render(snap) {
  const seen = new Map();
  let msgs = 0, dels = 0;
  const rows = [];
  for (const s of snap.cluster) {
    const p = previous.get(s.instance);
    const m = rate(s, p, "published_server") + rate(s, p, "published_client");
    const d = rate(s, p, "deliveries");
    const w = rate(s, p, "writes");
    msgs += m; dels += d;
    seen.set(s.instance, s);
    rows.push([s.instance + (s.instance === snap.instance ? " (this)" : ""), s.websocket_conns, s.sse_conns,
      s.rooms, Math.round(d), w > 0 ? (d / w).toFixed(1) : "–", s.slow_consumers, s.queue_high_water, s.nats_reconnects]);
  }
  const first = previous.size === 0;
  previous = seen;
  if (!first) {
    push(series.messages, msgs);
    push(series.deliveries, dels);
  }
  draw($("chart-messages"), series.messages, "#2563eb");
  draw($("chart-deliveries"), series.deliveries, "#059669");

  const sum = (f) => snap.cluster.reduce((a, s) => a + f(s), 0);
  kpis([
    ["instances", snap.cluster.length + (snap.partial ? " (partial)" : "")],
    ["WebSocket", sum((s) => s.websocket_conns)],
    ["SSE", sum((s) => s.sse_conns)],
    ["messages/s", Math.round(msgs)],
    ["deliveries/s", Math.round(dels)],
    ["slow-consumer closes", sum((s) => s.slow_consumers)],
    ["resumes", sum((s) => s.resumes)],
    ["history messages", Math.max(...snap.cluster.map((s) => s.history_messages))],
  ]);
  table($("instances"), rows);

  const rooms = new Map();
  for (const s of snap.cluster) for (const r of s.top_rooms || []) rooms.set(r.room, (rooms.get(r.room) || 0) + r.subscribers);
  table($("rooms"), [...rooms].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, 10));

  const denied = new Map();
  for (const s of snap.cluster) for (const [k, n] of Object.entries(s.denied || {})) denied.set(k, (denied.get(k) || 0) + n);
  table($("denied"), [...denied].sort());

  if (snap.room) {
    const p = snap.presence;
    $("presence-summary").textContent = p
      ? `${snap.room}: ${p.count} users, ${p.conns} connections`
      : `${snap.room}: ${snap.error}`;
    table($("presence"), p ? p.members.map((m) => [m.user, m.conns]) : []);
  }
}

function push(arr, v) {
  arr.push(v);
  if (arr.length > WINDOW) arr.shift();
}

function kpis(items) {
  const el = $("kpis");
  el.replaceChildren(...items.map(([label, value]) => {
    const d = document.createElement("div");
    d.className = "kpi";
    const b = document.createElement("b");
    b.textContent = value;
    const s = document.createElement("span");
    s.textContent = label;
    d.append(b, s);
    return d;
  }));
}

// table fills a tbody with text cells (never HTML: room and user names
// come from clients).
function table(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c;
      if (typeof c === "number") td.className = "n";
      tr.append(td);
    }
    return tr;
  }));
}

function draw(canvas, data, color) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 18;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...data);
  ctx.fillStyle = "#5b6474";
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(Math.round(max).toLocaleString(), 2, 11);
  ctx.strokeStyle = "#eef0f3";
  ctx.beginPath();
  ctx.moveTo(0, h - pad + 0.5);
  ctx.lineTo(w, h - pad + 0.5);
  ctx.stroke();
  if (data.length < 2) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  data.forEach((v, i) => {
    const x = w - (data.length - 1 - i) * (w / (WINDOW - 1));
    const y = h - pad - (v / max) * (h - pad - 14);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
  canvas.dataset.points = data.length;
  canvas.dataset.last = Math.round(data[data.length - 1]);
}

$("presence-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $("presence-room").value.trim();
  connect(room);
});

connect("");
