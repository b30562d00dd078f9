/**
 * `pno bench --stats`: what serving the live stats costs the data path, side by side in one
 * run. The bridge's echo service (port 7) is driven from the client namespace (64-byte
 * request/response on one connection, then a bulk echo), in rounds that alternate:
 *
 * - quiet: nobody reads the stats;
 * - proxy: a client polls the proxy's GET /stats every 100 ms and follows GET /events at a
 *   100 ms interval (the page is read in the proxy's process; the bridge only publishes);
 * - bridge /live: the same polling of the bridge's own loopback /live endpoints (the HTTP
 *   server then runs in the bridge's process, beside the data path).
 *
 * Each kind runs `reps` times, interleaved, and the medians are compared with the quiet ones;
 * the spread of the quiet rounds is the noise the ratios are to be read against. The wire is
 * its own (namespace pno-tstbench, 10.246.0.0/24), so the bench runs beside other wires.
 *
 * @module
 */
import { BridgeProcess } from "../cli/bridge_process.ts";
import { cpuSeconds } from "../cli/processes.ts";
import { inNs, sh, testWire, wireDown, wireUp } from "../cli/wire.ts";

const CLIENT = `
import socket, sys, time, threading, json
host, rr, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, 7)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 64
t0 = time.time()
for i in range(rr):
    c.sendall(msg); got = 0
    while got < 64:
        b = c.recv(64 - got)
        if not b: raise SystemExit("eof")
        got += len(b)
rr_s = time.time() - t0
data = b"y" * (1 << 20); total = mib << 20; got = [0]
def rd():
    while got[0] < total:
        b = c.recv(1 << 16)
        if not b: break
        got[0] += len(b)
t = threading.Thread(target=rd); t1 = time.time(); t.start()
for i in range(mib): c.sendall(data)
t.join(); bulk_s = time.time() - t1
print(json.dumps({"rrPerSec": rr / rr_s, "bulkMiBs": mib / bulk_s}))
`;

/** One round's figures. */
interface Round {
  rrPerSec: number;
  bulkMiBs: number;
  /** Bridge CPU per round, ms; stats requests answered during the round. */
  bridgeCpuMs: number;
  polls: number;
}

/** Polls `base`stats every 100 ms and follows `base`events?interval=100 until stopped. */
function startPolling(base: string): { stop(): Promise<number> } {
  let polls = 0;
  let stopped = false;
  const abort = new AbortController();
  const poll = (async () => {
    while (!stopped) {
      const t = performance.now();
      try {
        await (await fetch(`${base}stats`, { signal: abort.signal })).arrayBuffer();
        polls++;
      } catch {
        if (stopped) break;
      }
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - (performance.now() - t))));
    }
  })();
  const events = (async () => {
    try {
      const res = await fetch(`${base}events?interval=100`, { signal: abort.signal });
      for await (const chunk of res.body!) {
        polls += new TextDecoder().decode(chunk).split("event: stats").length - 1;
      }
    } catch {
      // aborted
    }
  })();
  return {
    async stop() {
      stopped = true;
      abort.abort();
      await Promise.all([poll, events]);
      return polls;
    },
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** Runs the rounds; returns the report's lines. */
export async function statsSideBySide(
  opts: { reps: number; rr: number; mib: number; log: (line: string) => void },
): Promise<string[]> {
  const w = testWire("tstbench", 246);
  const dir = await Deno.makeTempDir({ prefix: "pno-bench-stats-" });
  const ip = w.bridgeAddress.split("/")[0];
  let bridge: BridgeProcess | null = null;
  let proxy: Deno.ChildProcess | null = null;
  try {
    await wireUp(w);
    bridge = await BridgeProcess.start(w, ["--control", `${dir}/bridge.sock`]);
    const bridgeLive = bridge.ready.stats.replace(/\/stats$/, "/live/");
    proxy = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-ffi",
        new URL("../cli/proxy.ts", import.meta.url).pathname,
        "--listen",
        `${dir}/proxy.sock`,
        "--bridge",
        `${dir}/bridge.sock`,
        "--stats-port",
        "none",
        "--stats-address",
        "127.0.0.1:0",
      ],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    const reader = proxy.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let first = "";
    while (!first.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`pno proxy exited: ${first}`);
      first += value;
    }
    void (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
    const proxyLive = (JSON.parse(first.split("\n")[0]) as { live: string }).live;
    const kinds: Array<[string, string | null]> = [
      ["quiet", null],
      ["proxy /stats+/events", proxyLive],
      ["bridge /live/stats+events", bridgeLive],
    ];
    const rounds = new Map<string, Round[]>(kinds.map(([k]) => [k, []]));
    const client = () =>
      sh(inNs(w, "python3", "-c", CLIENT, ip, String(opts.rr), String(opts.mib)));
    await client(); // warm-up: ARP, JIT, pools
    for (let rep = 0; rep < opts.reps; rep++) {
      for (const [kind, base] of kinds) {
        const poller = base === null ? null : startPolling(base);
        if (poller) await new Promise((r) => setTimeout(r, 300)); // polling in full swing
        const cpu0 = cpuSeconds(bridge.child.pid);
        const r = JSON.parse((await client()).trim().split("\n").pop()!);
        const cpu1 = cpuSeconds(bridge.child.pid);
        const polls = poller ? await poller.stop() : 0;
        const round = { ...r, bridgeCpuMs: (cpu1 - cpu0) * 1e3, polls } as Round;
        rounds.get(kind)!.push(round);
        opts.log(
          `round ${rep + 1} ${kind}: ${Math.round(round.rrPerSec)} req/s, ` +
            `${round.bulkMiBs.toFixed(1)} MiB/s, bridge CPU ${round.bridgeCpuMs.toFixed(0)} ms` +
            (poller ? `, ${polls} stats answers` : ""),
        );
      }
    }
    const quiet = rounds.get("quiet")!;
    const spread = (xs: number[]) => (Math.max(...xs) / Math.min(...xs) - 1) * 100;
    const lines = [
      `live stats cost on the data path: bridge echo (port 7) from the namespace, ` +
      `${opts.rr} x 64 B request/response then ${opts.mib} MiB bulk echo, ${opts.reps} ` +
      `interleaved rounds per kind, medians`,
      "",
      "ratio: the median over reps of (this round / the quiet round of the same rep), so that",
      "a load that drifts across the run (other programs on the host) cancels out",
      "",
      "kind                        req/s     ratio   bulk MiB/s  ratio   bridge CPU ms  answers/round",
    ];
    for (const [kind] of kinds) {
      const rs = rounds.get(kind)!;
      const rr = median(rs.map((r) => r.rrPerSec)), bulk = median(rs.map((r) => r.bulkMiBs));
      const paired = (f: (r: Round) => number) => median(rs.map((r, i) => f(r) / f(quiet[i])));
      lines.push(
        [
          kind.padEnd(26),
          String(Math.round(rr)).padStart(7),
          paired((r) => r.rrPerSec).toFixed(3).padStart(8),
          bulk.toFixed(1).padStart(12),
          paired((r) => r.bulkMiBs).toFixed(3).padStart(7),
          median(rs.map((r) => r.bridgeCpuMs)).toFixed(0).padStart(15),
          String(median(rs.map((r) => r.polls))).padStart(15),
        ].join(" "),
      );
    }
    // The page's own cost to the loop, measured by the loop: what publishing takes each time.
    const live = await (await fetch(`${bridgeLive}stats`)).json() as {
      workers: Array<{ publishes: number; publishUs: number }>;
    };
    const wk = live.workers[0];
    const perPublish = wk.publishUs / Math.max(1, wk.publishes);
    lines.push(
      "",
      `publishing into the stats page, measured by the bridge's loop: ${wk.publishes} ` +
        `publications, ${perPublish.toFixed(1)} µs each, ${(perPublish * 10).toFixed(0)} µs ` +
        `per second (every 100 ms) = ${(perPublish * 10 / 1e4).toFixed(3)}% of one core, ` +
        `readers or not`,
      `noise: the quiet rounds spread ${spread(quiet.map((r) => r.rrPerSec)).toFixed(1)}% ` +
        `(req/s) and ${spread(quiet.map((r) => r.bulkMiBs)).toFixed(1)}% (bulk) from lowest ` +
        `to highest; host load average ${Deno.loadavg()[0].toFixed(1)} on ` +
        `${navigator.hardwareConcurrency} cores`,
    );
    return lines;
  } finally {
    if (proxy) {
      try {
        proxy.kill("SIGTERM");
      } catch {
        // gone
      }
      await proxy.status;
    }
    if (bridge) await bridge.stop();
    await wireDown(w);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
