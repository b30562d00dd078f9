/**
 * nginx, unmodified, on PnO and on the kernel, side by side in one run: Debian's nginx-light
 * with a master and 1 or 2 workers serving a 1 KiB file, wrk with keep-alive from the client
 * namespace against
 *   - nginx under the shim (`pno run`): its TCP in the bridge, reached on pno0,
 *   - the same nginx on the host kernel, reached over the twin veth (the baseline).
 * For each: requests per second, p50/p99 latency, errors, host CPU per request (the master's
 * and the workers' utime + stime from /proc) and for PnO the bridge's CPU per request; then
 * the ratios PnO/kernel. The host kernel must hold no TCP connection of the offloaded nginx.
 *
 * Run: ./pno bench --nginx [--seconds N] [--connections N]
 *
 * @module
 */
import {
  AppProcess,
  childPids,
  kernelEstablished,
  processAlive,
  runInNs,
  tcpOpen,
  waitUntil,
} from "../cli/apps.ts";
import { BridgeProcess } from "../cli/bridge_process.ts";
import { cpuSeconds } from "../cli/processes.ts";
import { DEFAULT_WIRE, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";

/** What to measure. */
export interface NginxBenchOptions {
  /** Worker counts to compare (one PnO run and one kernel run each). */
  workers: number[];
  /** Seconds of wrk per run. */
  seconds: number;
  /** wrk -c. */
  connections: number;
  log: (line: string) => void;
}

/** One run's figures. */
export interface NginxRun {
  side: "PnO" | "kernel";
  workers: number;
  requestsPerSec: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  /** Socket errors plus non-2xx responses. */
  errors: number;
  /** nginx's CPU seconds (master and workers) over the run. */
  hostCpu: number;
  /** The bridge's CPU seconds over the run (PnO only). */
  nicCpu: number | null;
  /** Host-kernel ESTABLISHED connections on nginx's port seen during the run. */
  kernelConnections: number;
}

const FILE_BYTES = 1024;
const PNO_PORT = 8080;
const KERNEL_PORT = 18080;

function config(dir: string, workers: number, listen: string): string {
  return `worker_processes ${workers};
daemon off;
master_process on;
pid ${dir}/nginx-${workers}.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  access_log off;
  client_body_temp_path ${dir}/tmp;
  proxy_temp_path ${dir}/tmp;
  fastcgi_temp_path ${dir}/tmp;
  uwsgi_temp_path ${dir}/tmp;
  scgi_temp_path ${dir}/tmp;
  server {
    listen ${listen};
    root ${dir}/www;
  }
}
`;
}

/** Parses wrk --latency output: req/s, requests, p50/p99 in ms, errors. */
export function parseWrkLatency(text: string): {
  requestsPerSec: number;
  requests: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
} {
  const ms = (v: string, unit: string) =>
    Number(v) * (unit === "us" ? 0.001 : unit === "s" ? 1000 : unit === "m" ? 60000 : 1);
  const pct = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, "m").exec(text);
    return m ? ms(m[1], m[2]) : NaN;
  };
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(text);
  const total = /(\d+) requests in/.exec(text);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  const errors = (sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0) +
    (non2xx ? Number(non2xx[1]) : 0);
  return {
    requestsPerSec: rps ? Number(rps[1]) : 0,
    requests: total ? Number(total[1]) : 0,
    p50Ms: pct("50"),
    p99Ms: pct("99"),
    errors,
  };
}

/** nginx's master and its workers now. */
function nginxPids(master: number): number[] {
  return [master, ...childPids(master)].filter(processAlive);
}

function cpuOf(pids: number[]): number {
  let sum = 0;
  for (const pid of pids) {
    try {
      sum += cpuSeconds(pid);
    } catch {
      // exited meanwhile
    }
  }
  return sum;
}

async function oneRun(
  w: WireConfig,
  dir: string,
  o: NginxBenchOptions,
  side: "PnO" | "kernel",
  workers: number,
  bridge: BridgeProcess | null,
  control: string,
): Promise<NginxRun> {
  const host = side === "PnO" ? w.bridgeAddress.split("/")[0] : w.twin!.hostAddress.split("/")[0];
  const port = side === "PnO" ? PNO_PORT : KERNEL_PORT;
  const conf = `${dir}/nginx-${side}-${workers}.conf`;
  // Under the shim nginx listens on any address (the bridge's is one of them); on the kernel
  // on the twin link's host address only.
  await Deno.writeTextFile(
    conf,
    config(dir, workers, side === "PnO" ? `${port}` : `${host}:${port}`),
  );
  const argv = ["nginx", "-p", `${dir}/`, "-c", conf, "-e", `${dir}/error.log`];
  const app = AppProcess.start(argv, {
    name: `nginx ${side}`,
    ...(side === "PnO" ? { control } : {}),
  });
  try {
    await waitUntil(async () => {
      if (!app.alive()) throw new Error(`nginx (${side}) exited:\n${app.output}`);
      return childPids(app.pid).length >= workers && await tcpOpen(w, host, port);
    }, `nginx (${side}, ${workers} workers) answers on ${host}:${port}`);
    const url = `http://${host}:${port}/1k.bin`;
    // A second of warm-up: connections open, workers' rings and caches are touched.
    await runInNs(w, ["wrk", "-t", "2", "-c", String(o.connections), "-d", "1s", url], 30);
    const pids = nginxPids(app.pid);
    const cpu0 = cpuOf(pids);
    const nic0 = bridge ? cpuSeconds(bridge.child.pid) : 0;
    let seen = 0, sampling = true;
    const sampler = (async () => {
      while (sampling) {
        seen += (await kernelEstablished(port)).length;
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const r = await runInNs(w, [
      "wrk",
      "-t",
      "2",
      "-c",
      String(o.connections),
      "-d",
      `${o.seconds}s`,
      "--latency",
      url,
    ], o.seconds + 30);
    sampling = false;
    await sampler;
    const cpu1 = cpuOf(pids);
    const nic1 = bridge ? cpuSeconds(bridge.child.pid) : 0;
    if (r.code !== 0) throw new Error(`wrk failed (${r.code}): ${r.stdout}${r.stderr}`);
    const parsed = parseWrkLatency(r.stdout);
    o.log(
      `   ${side} ${workers} worker(s): ${parsed.requestsPerSec.toFixed(0)} req/s, p50 ${
        parsed.p50Ms.toFixed(3)
      } ms, p99 ${parsed.p99Ms.toFixed(3)} ms, errors ${parsed.errors}`,
    );
    return {
      side,
      workers,
      ...parsed,
      hostCpu: cpu1 - cpu0,
      nicCpu: bridge ? nic1 - nic0 : null,
      kernelConnections: side === "PnO" ? seen : 0,
    };
  } finally {
    await app.stop("SIGTERM", 10_000);
  }
}

/** Runs every worker count on PnO then on the kernel, on the default wire; tears it down. */
export async function nginxSideBySide(o: NginxBenchOptions): Promise<NginxRun[]> {
  const w = DEFAULT_WIRE;
  const dir = await Deno.makeTempDir({ prefix: "pno-nginx-bench-" });
  // nginx's workers run as nobody: the tree must be readable to them.
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/www`, { mode: 0o755 });
  await Deno.mkdir(`${dir}/tmp`, { mode: 0o755 });
  const body = new Uint8Array(FILE_BYTES);
  crypto.getRandomValues(body);
  await Deno.writeFile(`${dir}/www/1k.bin`, body, { mode: 0o644 });
  const control = `${dir}/bridge.sock`;
  let bridge: BridgeProcess | null = null;
  const runs: NginxRun[] = [];
  try {
    o.log(`== wire up: ${w.ns}; bridge on ${w.bridge}; twin ${w.twin!.host}`);
    await wireUp(w);
    bridge = await BridgeProcess.start(w, ["--control", control]);
    for (const workers of o.workers) {
      o.log(`== ${workers} worker(s): wrk -t 2 -c ${o.connections} -d ${o.seconds}s, keep-alive`);
      runs.push(await oneRun(w, dir, o, "PnO", workers, bridge, control));
      runs.push(await oneRun(w, dir, o, "kernel", workers, null, control));
    }
  } finally {
    if (bridge) await bridge.stop();
    await wireDown(w);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return runs;
}

/** The table of a comparison, with the ratios PnO/kernel per worker count. */
export function formatNginxTable(runs: NginxRun[]): string {
  const us = (cpu: number, n: number) => (n > 0 ? (cpu * 1e6) / n : NaN);
  const lines = [
    "nginx 1 KiB file, keep-alive (wrk from pno-client)",
    "workers side      req/s    p50 ms  p99 ms  errors  host CPU us/req  NIC CPU us/req  kernel conns",
  ];
  for (const r of runs) {
    lines.push(
      [
        String(r.workers).padStart(7),
        r.side.padEnd(7),
        r.requestsPerSec.toFixed(0).padStart(9),
        r.p50Ms.toFixed(3).padStart(8),
        r.p99Ms.toFixed(3).padStart(7),
        String(r.errors).padStart(7),
        us(r.hostCpu, r.requests).toFixed(2).padStart(16),
        (r.nicCpu === null ? "-" : us(r.nicCpu, r.requests).toFixed(2)).padStart(15),
        String(r.kernelConnections).padStart(13),
      ].join(" "),
    );
  }
  for (const workers of new Set(runs.map((r) => r.workers))) {
    const p = runs.find((r) => r.workers === workers && r.side === "PnO");
    const k = runs.find((r) => r.workers === workers && r.side === "kernel");
    if (!p || !k) continue;
    lines.push(
      `ratio PnO/kernel, ${workers} worker(s): req/s ${
        (p.requestsPerSec / k.requestsPerSec).toFixed(2)
      }x, host CPU per request ${
        (us(p.hostCpu, p.requests) / us(k.hostCpu, k.requests)).toFixed(2)
      }x`,
    );
  }
  return lines.join("\n");
}
