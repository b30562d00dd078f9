/**
 * `GET /metrics`: the stats snapshot in Prometheus's text exposition format (version 0.0.4).
 * A small typed writer rather than a client library: the figures are already counted by the
 * bridge, we only print them; prom-client's registry of live metric objects has nothing to do
 * here. Counters end in `_total`, gauges do not; every family is printed once with all its
 * samples (what `promtool check metrics` asks).
 *
 * @module
 */
import type { StatsSnapshot } from "./reader.ts";

/** The exposition's content type. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Record<string, string | number>;

/** Collects families, then prints them. */
export class Exposition {
  private readonly families = new Map<
    string,
    { type: "counter" | "gauge"; help: string; samples: string[] }
  >();

  /** Adds a sample of counter `name` (which must end in _total). */
  counter(name: string, help: string, value: number, labels: Labels = {}): void {
    if (!name.endsWith("_total")) throw new Error(`counter ${name} must end in _total`);
    this.add(name, "counter", help, value, labels);
  }

  /** Adds a sample of gauge `name`. */
  gauge(name: string, help: string, value: number, labels: Labels = {}): void {
    this.add(name, "gauge", help, value, labels);
  }

  private add(name: string, type: "counter" | "gauge", help: string, v: number, l: Labels) {
    let f = this.families.get(name);
    if (f === undefined) this.families.set(name, f = { type, help, samples: [] });
    const labels = Object.entries(l).map(([k, x]) => `${k}="${escapeLabel(String(x))}"`);
    const text = Number.isFinite(v) ? String(v) : Number.isNaN(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";
    f.samples.push(`${name}${labels.length ? `{${labels.join(",")}}` : ""} ${text}`);
  }

  /** The exposition text. */
  toString(): string {
    const out: string[] = [];
    for (const [name, f] of this.families) {
      // The family name of a counter is its name without _total (OpenMetrics); the 0.0.4 text
      // format names it in full, as promtool expects.
      out.push(`# HELP ${name} ${f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}`);
      out.push(`# TYPE ${name} ${f.type}`);
      out.push(...f.samples);
    }
    return out.join("\n") + "\n";
  }
}

function escapeLabel(s: string): string {
  return s.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** camelCase to snake_case: "icmpEchoIn" -> "icmp_echo_in". */
export function snake(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").replace(/[^a-zA-Z0-9_]/g, "_")
    .toLowerCase();
}

/** Port counters by DPDK field: metric name and help. */
const PORT: Record<string, [string, string]> = {
  ipackets: ["pno_port_rx_packets_total", "Frames received by the port"],
  opackets: ["pno_port_tx_packets_total", "Frames sent by the port"],
  ibytes: ["pno_port_rx_bytes_total", "Bytes received by the port"],
  obytes: ["pno_port_tx_bytes_total", "Bytes sent by the port"],
  imissed: ["pno_port_rx_missed_total", "Frames the port dropped for want of room"],
  ierrors: ["pno_port_rx_errors_total", "Receive errors of the port"],
  oerrors: ["pno_port_tx_errors_total", "Transmit errors of the port"],
  rxNoMbuf: ["pno_port_rx_nombuf_total", "Receives that found no mbuf"],
  txDropped: ["pno_port_tx_dropped_total", "Frames the port could not send"],
  rxRingFull: [
    "pno_port_rx_ring_full_total",
    "Frames the kernel dropped for a full AF_XDP RX ring (net_af_xdp)",
  ],
  rxFillEmpty: [
    "pno_port_rx_fill_empty_total",
    "Frames the kernel dropped for an empty AF_XDP fill ring (net_af_xdp)",
  ],
};

/** The exposition of a snapshot. */
export function metricsText(s: StatsSnapshot): string {
  const e = new Exposition();
  for (const [field, [name, help]] of Object.entries(PORT)) {
    if (s.port[field] !== undefined) e.counter(name, help, s.port[field]);
  }
  if (s.port.mbufsFree !== undefined) {
    e.gauge("pno_port_mbufs_free", "Free mbufs in the pool", s.port.mbufsFree);
  }
  e.counter(
    "pno_bridge_cpu_seconds_total",
    "CPU time of the bridge (NIC side)",
    s.bridge.cpuMs / 1e3,
  );
  e.gauge("pno_bridge_resident_bytes", "Resident memory of the bridge", s.bridge.rssBytes);
  e.gauge("pno_bridge_uptime_seconds", "Seconds since the bridge started", s.bridge.uptimeMs / 1e3);
  e.gauge("pno_bridge_workers", "Queues (one engine each) of the bridge", s.bridge.workers);
  for (const w of s.workers) {
    const worker = w.worker;
    e.counter("pno_worker_polls_total", "Poll rounds of a worker's loop", w.busyPolls, {
      worker,
      kind: "busy",
    });
    e.counter("pno_worker_polls_total", "Poll rounds of a worker's loop", w.idlePolls, {
      worker,
      kind: "idle",
    });
    e.counter("pno_worker_cpu_seconds_total", "CPU time of a worker's thread", w.cpuMs / 1e3, {
      worker,
    });
    e.counter("pno_worker_stats_publishes_total", "Publications into the stats page", w.publishes, {
      worker,
    });
    e.counter(
      "pno_worker_stats_publish_seconds_total",
      "Time a worker's loop spent publishing into the stats page",
      w.publishUs / 1e6,
      { worker },
    );
    e.counter("pno_worker_sleeps_total", "Naps of a worker's loop", w.loop.sleeps ?? 0, { worker });
    e.gauge(
      "pno_worker_frames_per_busy_poll",
      "Frames received per busy poll round",
      w.framesPerBusyPoll,
      {
        worker,
      },
    );
    for (const [k, v] of Object.entries(w.iface)) {
      if (k.startsWith("drop")) {
        e.counter("pno_iface_drops_total", "Frames the interface dropped, by reason", v, {
          worker,
          reason: snake(k.replace(/^dropIpv4\./, "ipv4_").replace(/^drop/, "")).replace(/^_/, ""),
        });
      } else e.counter(`pno_iface_${snake(k)}_total`, `Interface counter ${k}`, v, { worker });
    }
    for (const [k, v] of Object.entries(w.tcp)) {
      if (k === "connections") {
        e.gauge("pno_tcp_connections", "TCP sockets in the engine's table", v, { worker });
      } else if (k.startsWith("drop")) {
        e.counter("pno_tcp_drops_total", "Segments the TCP engine dropped, by reason", v, {
          worker,
          reason: snake(k.slice(4)),
        });
      } else e.counter(`pno_tcp_${snake(k)}_total`, `TCP counter ${k}`, v, { worker });
    }
  }
  e.counter(
    "pno_dma_transfers_total",
    "Transfers over the emulated PCIe link",
    s.dma.transfers ?? 0,
  );
  e.counter("pno_dma_bytes_total", "Bytes over the emulated PCIe link", s.dma.bytesWritten ?? 0, {
    direction: "to_host",
  });
  e.counter("pno_dma_bytes_total", "Bytes over the emulated PCIe link", s.dma.bytesRead ?? 0, {
    direction: "from_host",
  });
  e.counter(
    "pno_dma_injected_seconds_total",
    "Latency the emulated link added to the data path",
    (s.dma.injectedNs ?? 0) / 1e9,
  );
  for (const a of s.apps) {
    const l = { app: a.id, pid: a.pid, name: a.name };
    e.gauge("pno_app_connections", "Open connections of an application", Number(a.connections), l);
    e.gauge("pno_app_listeners", "Listening sockets of an application", Number(a.listeners), l);
    e.gauge(
      "pno_app_sockets_open",
      "Sockets of an application in the bridge",
      Number(a.socketsOpen),
      l,
    );
    e.gauge(
      "pno_app_ring_bytes",
      "Bytes waiting in an application's rings",
      Number(a.ringBytes),
      l,
    );
    e.gauge(
      "pno_app_resident_bytes",
      "Resident pages of an application's region, in bytes",
      Number(a.residentBytes),
      l,
    );
    e.counter("pno_app_commands_total", "Commands an application posted", Number(a.commands), l);
    e.counter(
      "pno_app_events_total",
      "Readiness events posted to an application",
      Number(a.events),
      l,
    );
    e.counter(
      "pno_app_kicks_total",
      "Wakeups sent to an application's sleeping waiters",
      Number(a.kicks),
      l,
    );
    e.counter(
      "pno_app_bytes_total",
      "Payload bytes between an application and the bridge",
      Number(a.bytesFromHost),
      {
        ...l,
        direction: "from_host",
      },
    );
    e.counter(
      "pno_app_bytes_total",
      "Payload bytes between an application and the bridge",
      Number(a.bytesToHost),
      {
        ...l,
        direction: "to_host",
      },
    );
    e.counter(
      "pno_app_host_cpu_seconds_total",
      "CPU time of the application's process (host side)",
      a.hostCpuMs / 1e3,
      l,
    );
  }
  return e.toString();
}
