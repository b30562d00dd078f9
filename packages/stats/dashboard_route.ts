/**
 * `GET /`: the live dashboard. One HTML page that follows `/events` (SSE) and draws with
 * uPlot (npm `uplot`, served from node_modules: no CDN): throughput, packet rate, host versus
 * NIC CPU, ring occupancy, the applications and the connection table (`/connections`, once a
 * second). Paths are relative, so the page works wherever the app is mounted (the proxy's
 * root, the bridge's /live).
 *
 * @module
 */
import { type Context, Hono } from "hono";

const UPLOT_DIR = new URL("../../node_modules/uplot/dist/", import.meta.url);

/** The dashboard sub-app (mounted at the root of the stats server). */
export function dashboardRoute(): Hono {
  const app = new Hono();
  app.get("/", (c) => {
    // Under a prefix without its slash (/live), relative URLs would lose the prefix.
    const path = new URL(c.req.url).pathname;
    if (!path.endsWith("/")) return c.redirect(`${path}/`);
    return c.html(PAGE);
  });
  app.get("/uplot.js", (c) => asset(c, "uPlot.iife.min.js", "text/javascript"));
  app.get("/uplot.css", (c) => asset(c, "uPlot.min.css", "text/css"));
  return app;
}

async function asset(c: Context, file: string, type: string): Promise<Response> {
  try {
    const bytes = await Deno.readFile(new URL(file, UPLOT_DIR));
    return c.body(bytes, 200, { "content-type": type, "cache-control": "max-age=3600" });
  } catch (err) {
    return c.text(`uplot is not installed (deno install): ${(err as Error).message}`, 500);
  }
}

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>PnO live stats</title>
<link rel="stylesheet" href="uplot.css">
<style>
 body { font: 13px system-ui, sans-serif; margin: 12px; background: #fafafa; color: #222 }
 h1 { font-size: 18px; margin: 0 0 6px } h2 { font-size: 14px; margin: 14px 0 4px }
 .grid { display: grid; grid-template-columns: repeat(2, 560px); gap: 8px }
 .card { background: #fff; border: 1px solid #ddd; padding: 6px }
 table { border-collapse: collapse; font: 12px ui-monospace, monospace }
 td, th { border-bottom: 1px solid #eee; padding: 2px 8px; text-align: right }
 th { background: #f0f0f0 } td.l, th.l { text-align: left }
 #status { color: #666 }
</style></head>
<body>
<h1>PnO live stats</h1>
<div id="status">connecting...</div>
<div class="grid">
 <div class="card" id="g-tput"></div>
 <div class="card" id="g-rate"></div>
 <div class="card" id="g-cpu"></div>
 <div class="card" id="g-ring"></div>
</div>
<h2>Applications</h2>
<table id="apps"><thead><tr><th>pid</th><th class="l">name</th><th>connections</th>
<th>listeners</th><th>ring bytes</th><th>resident</th><th>from host</th><th>to host</th>
<th>host CPU s</th></tr></thead><tbody></tbody></table>
<h2>Connections <span id="conn-count"></span></h2>
<table id="conns"><thead><tr><th>pid</th><th>fd</th><th class="l">name</th><th class="l">local</th>
<th class="l">remote</th><th class="l">state</th><th>srtt ms</th><th>cwnd</th><th>bytes in</th>
<th>bytes out</th><th>retrans</th></tr></thead><tbody></tbody></table>
<script src="uplot.js"></script>
<script>
"use strict";
const KEEP = 120;
const dash = window.pnoDashboard = { samples: 0, updates: 0, connRows: 0, last: null, charts: null };
function chart(el, title, labels, colors) {
  const series = [{}].concat(labels.map((label, i) => ({ label, stroke: colors[i], width: 2 })));
  const data = [[]].concat(labels.map(() => []));
  const u = new uPlot({ title, width: 540, height: 200, series, axes: [{}, { size: 70 }] },
    data, document.getElementById(el));
  return { u, data };
}
const charts = {
  tput: chart("g-tput", "Throughput (Mbit/s)", ["rx", "tx"], ["#1f77b4", "#d62728"]),
  rate: chart("g-rate", "Packets and TCP segments per second",
    ["frames rx", "frames tx", "segments in"], ["#1f77b4", "#d62728", "#2ca02c"]),
  cpu: chart("g-cpu", "CPU (% of one core)", ["NIC (bridge)", "host (apps)"],
    ["#9467bd", "#ff7f0e"]),
  ring: chart("g-ring", "Bytes waiting in application rings", ["ring bytes"], ["#17becf"]),
};
dash.charts = charts;
function push(c, x, ys) {
  c.data[0].push(x);
  ys.forEach((y, i) => c.data[i + 1].push(y));
  if (c.data[0].length > KEEP) c.data.forEach((s) => s.shift());
  c.u.setData(c.data);
}
const fmt = (n) => Number(n).toLocaleString("en");
function rows(tbody, list, cells) {
  tbody.innerHTML = list.map((r) => "<tr>" + cells(r).map(([v, cls]) =>
    "<td" + (cls ? ' class="' + cls + '"' : "") + ">" + String(v).replace(/</g, "&lt;") +
    "</td>").join("") + "</tr>").join("");
}
function onStats(s) {
  const prev = dash.last;
  dash.last = s;
  dash.updates++;
  document.getElementById("status").textContent = "bridge pid " + s.bridge.pid + " at " +
    s.bridge.address + ", " + s.bridge.workers + " worker(s), up " +
    Math.round(s.bridge.uptimeMs / 1000) + " s";
  rows(document.querySelector("#apps tbody"), s.apps, (a) => [[a.pid], [a.name, "l"],
    [a.connections], [a.listeners], [fmt(a.ringBytes)], [fmt(a.residentBytes)],
    [fmt(a.bytesFromHost)], [fmt(a.bytesToHost)], [(a.hostCpuMs / 1000).toFixed(2)]]);
  if (!prev) return;
  const dt = (s.time - prev.time) / 1000;
  if (dt <= 0) return;
  const x = s.time / 1000;
  const d = (a, b) => Math.max(0, a - b) / dt;
  push(charts.tput, x, [d(s.port.ibytes, prev.port.ibytes) * 8 / 1e6,
    d(s.port.obytes, prev.port.obytes) * 8 / 1e6]);
  push(charts.rate, x, [d(s.port.ipackets, prev.port.ipackets),
    d(s.port.opackets, prev.port.opackets), d(s.tcp.segsIn, prev.tcp.segsIn)]);
  const hostMs = (x) => x.apps.reduce((t, a) => t + a.hostCpuMs, 0);
  push(charts.cpu, x, [d(s.bridge.cpuMs, prev.bridge.cpuMs) / 10, d(hostMs(s), hostMs(prev)) / 10]);
  push(charts.ring, x, [s.apps.reduce((t, a) => t + a.ringBytes, 0)]);
  dash.samples++;
}
const events = new EventSource("events?interval=500");
events.addEventListener("stats", (e) => onStats(JSON.parse(e.data)));
events.onerror = () => document.getElementById("status").textContent = "stats stream lost";
async function pollConnections() {
  try {
    const r = await fetch("connections?limit=200");
    const page = await r.json();
    dash.connRows = page.rows.length;
    document.getElementById("conn-count").textContent = "(" + page.total + " shown of " +
      (page.total + page.unlisted) + ")";
    rows(document.querySelector("#conns tbody"), page.rows, (c) => [[c.pid], [c.fd < 0 ? "-" : c.fd], [c.name, "l"],
      [c.local, "l"], [c.remote, "l"], [c.state, "l"], [c.srttMs.toFixed(1)], [fmt(c.cwnd)],
      [fmt(c.bytesReceived)], [fmt(c.bytesAcked)], [c.retransSegs]]);
  } catch (_) { /* the next round tries again */ }
  setTimeout(pollConnections, 1000);
}
pollConnections();
</script></body></html>
`;
