"""The live view's page: a tile per camera (its annotated stream, label, FPS, latency, faces and state:
live, stalled or ended) and panels fed by server-sent events (``/events``).

The page holds no figures of its own: every number comes from the status
document (``/api/status``, the same JSON that each ``/events`` message
carries). Each update also fires a ``edgepipe-status`` DOM event on
``window`` (its ``detail`` is the status), which tests and other scripts can
wait on. The tiles are made from the status document's ``cameras`` (in name
order) the first time a camera appears; each tile's image streams
``/stream/NAME.mjpg``. The first tile's image has the id ``stream`` and its
faces the id ``faces`` (with the one camera ``default`` the page looks as it
did before cameras had names).
"""

PAGE = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgepipe live view</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;background:#111;color:#ddd;font:14px/1.35 system-ui,sans-serif}
header{padding:6px 12px;background:#1b1b1b;display:flex;gap:16px;align-items:baseline}
header h1{font-size:16px;margin:0;color:#fff}
#conn{font-size:12px;color:#888}#conn.live{color:#6c6}
main{display:grid;grid-template-columns:minmax(320px,1.15fr) minmax(440px,1fr);gap:12px;padding:12px}
#tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:10px}
.tile{margin:0}.tile img{width:100%;height:auto;background:#000;display:block;border:1px solid #333}
.tile figcaption{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap;margin:4px 0}
.tile .label{color:#fff;font-weight:600}.tile .state{font-size:12px;padding:0 6px;border-radius:8px;background:#333}
.tile.live .state{background:#254;color:#9e9}.tile.stalled .state{background:#542;color:#fc8}
.tile.ended .state{background:#333;color:#aaa}.tile.stalled img,.tile.ended img{opacity:.55}
h2{font-size:13px;text-transform:uppercase;letter-spacing:.05em;color:#9ab;margin:14px 0 4px}
table{border-collapse:collapse;width:100%;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:2px 6px;text-align:right;border-bottom:1px solid #262626;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{color:#9ab;font-weight:normal}
td.warn{color:#fb4}a{color:#8bd}ul{margin:0;padding-left:18px}.muted{color:#777}
.face{color:#dfe;display:inline-block;margin:2px 8px 2px 0;padding:2px 8px;border-radius:10px;background:#233}
</style></head>
<body>
<header><h1>edgepipe</h1><span id="frame" class="muted">waiting for the pipeline</span>
<span id="conn">connecting</span></header>
<main>
<section>
<div id="tiles"></div>
</section>
<section>
<h2>Actors</h2>
<table id="actors"><thead><tr><th>actor</th><th title="frames out per second, last window">FPS</th>
<th title="share of the last window spent working">busy %</th>
<th title="capture-to-result latency where the actor measures it, else time per item">p50 ms</th>
<th>p99 ms</th><th title="frames or jobs waiting">queue</th><th>drops</th><th>restarts</th><th>runs on</th>
</tr></thead><tbody></tbody></table>
<h2>Where each role runs</h2><ul id="roles"></ul>
<div id="devices-box" hidden><h2>Devices</h2><ul id="devices"></ul></div>
<div id="resources-box" hidden><h2>Temperature and power</h2><ul id="resources"></ul></div>
<p class="muted"><a href="/snapshot.jpg">snapshot</a> &middot; <a href="/api/status">status JSON</a>
&middot; <a href="/stream.mjpg">bare stream</a> (the first camera's; each tile links its own)</p>
</section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const num = (v, d) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d);
function el(tag, text, cls) { const e = document.createElement(tag); e.textContent = text; if (cls) e.className = cls; return e; }
function frameText(f) {
  return f ? ("frame " + f.frame_id + ", " + f.width + "x" + f.height + ", " + num(f.fps, 1)
    + " FPS shown, " + num(f.latency_ms, 0) + " ms capture to result" + (f.partial ? ", partial" : "")) : "waiting for frames";
}
// a browser opens at most 6 connections to a host: the first tiles stream, the others (and /events) refresh
// their snapshot on each update
const MAX_STREAMS = 4;
function tile(c, first, streams) {
  let t = document.querySelector('.tile[data-camera="' + c.name + '"]');
  if (t) return t;
  t = document.createElement("figure"); t.className = "tile"; t.dataset.camera = c.name;
  const img = document.createElement("img"); img.className = "stream"; if (streams) img.src = c.stream;
  img.alt = "annotated live stream of " + c.label; if (first) img.id = "stream";
  const cap = document.createElement("figcaption");
  for (const cls of ["label", "state", "info muted"]) cap.appendChild(el("span", "", cls));
  const links = el("span", "", "muted");
  for (const [href, text] of [[c.snapshot, "snapshot"], [c.stream, "stream"]]) {
    const a = el("a", text); a.href = href; links.append(" ", a); }
  cap.appendChild(links);
  const faces = el("div", "none", "faces muted"); if (first) faces.id = "faces";
  t.append(img, cap, faces, el("div", "", "labels muted"));
  $("tiles").appendChild(t); return t;
}
function showFaces(box, list) {
  box.replaceChildren(); box.classList.toggle("muted", !list.length);
  if (!list.length) box.textContent = "no face";
  for (const x of list) {
    const label = x.smoothed || x.expression || "no expression yet";
    // this frame's confidence belongs to this frame's label; when the vote differs, say what the frame read
    const now = x.expression && x.expression !== label ? " (now " + x.expression + ")"
      : (x.confidence !== null ? " " + num(100 * x.confidence, 0) + "%" : "");
    box.appendChild(el("span", (x.track >= 0 ? "#" + x.track + " " : "") + label + now, "face"));
  }
}
function render(s) {
  const cams = s.cameras || [];
  $("frame").textContent = cams.length > 1 ? cams.length + " cameras" : frameText(s.frame);
  cams.forEach((c, i) => {
    const t = tile(c, i === 0, i < MAX_STREAMS);
    if (i >= MAX_STREAMS && c.shown > 0 && t.dataset.shown !== String(c.shown))
      t.querySelector("img").src = c.snapshot + "?n=" + c.shown;
    t.classList.remove("waiting", "live", "stalled", "ended"); t.classList.add(c.state);
    t.querySelector(".label").textContent = c.label;
    t.querySelector(".state").textContent = c.state;
    t.querySelector(".info").textContent = c.frame ? (num(c.fps, 1) + " FPS, " + num(c.latency_ms, 0) + " ms, "
      + c.frames + " frames, " + c.drops + " dropped") : "waiting for frames";
    t.dataset.shown = c.shown;
    showFaces(t.querySelector(".faces"), c.faces);
    t.querySelector(".labels").textContent = c.labels.map((l) => l[0] + " " + num(100 * l[1], 0) + "%").join(", ");
  });
  const body = $("actors").tBodies[0]; body.replaceChildren();
  for (const a of s.actors) {
    const tr = document.createElement("tr"); tr.dataset.actor = a.name;
    const cells = [[a.name, "name"], [num(a.fps, 1), "fps"], [num(a.busy_pct, 0), "busy"], [num(a.p50_ms, 1), "p50"],
      [num(a.p99_ms, 1), "p99"], [num(a.queue, 0), "queue"], [String(a.dropped), "drops"],
      [String(a.restarts), "restarts"], [a.runs_on.join(", ") || "-", "runs-on"]];
    for (const [text, cls] of cells) tr.appendChild(el("td", text, cls));
    if (a.dropped > 0) tr.children[6].classList.add("warn");
    if (a.restarts > 0) tr.children[7].classList.add("warn");
    if (a.stale) tr.classList.add("muted");
    body.appendChild(tr);
  }
  const roles = $("roles"); roles.replaceChildren();
  for (const [role, where] of Object.entries(s.roles)) roles.appendChild(el("li", where));
  const devs = Object.entries(s.devices); $("devices-box").hidden = !devs.length;
  $("devices").replaceChildren(...devs.map(([d, b]) => el("li", d + ": busy " + num(b, 0) + "%")));
  const res = Object.entries(s.resources); $("resources-box").hidden = !res.length;
  $("resources").replaceChildren(...res.map(([k, v]) => el("li", k + ": " + num(v, 1))));
}
window.edgepipe = {status: null, updates: 0};
function connect() {
  const es = new EventSource("/events");
  es.onopen = () => { $("conn").textContent = "live"; $("conn").className = "live"; };
  es.onerror = () => { $("conn").textContent = "reconnecting"; $("conn").className = ""; };
  es.onmessage = (e) => {
    const s = JSON.parse(e.data); window.edgepipe.status = s; window.edgepipe.updates += 1; render(s);
    window.dispatchEvent(new CustomEvent("edgepipe-status", {detail: s}));
  };
}
connect();
</script>
</body></html>
"""
