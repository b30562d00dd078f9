/**
 * `pno stats`: the dashboard's figures in the terminal, refreshed in place like top(1);
 * `--json` prints the /stats JSON once for scripts. Reads the same live stats server as
 * `pno ls` (the proxy's, else the bridge's /live; see stats_client.ts).
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import type { StatsSnapshot } from "@pno/stats";
import { findStats } from "./stats_client.ts";

export const STATS_HELP = `pno stats: live figures of the bridge and its applications, like top

Usage: pno stats [--json] [--interval S] [--count N] [--stats URL]

  --json        print the /stats JSON once and exit (schema: packages/stats/stats.schema.json)
  --interval S  seconds between refreshes (default: 1)
  --count N     refresh N times, then exit (default: until Ctrl-C)
  --stats URL   the live stats server (default: the proxy's http://127.0.0.1:9464/, else the
                bridge's http://127.0.0.1:7081/live/)`;

const fmt = (n: number) => Math.round(n).toLocaleString("en");

/** One screen of figures: totals, rates since `prev`, workers, applications. */
export function renderStats(s: StatsSnapshot, prev: StatsSnapshot | null): string {
  const dt = prev ? (s.time - prev.time) / 1000 : 0;
  const rate = (a: number, b: number | undefined) =>
    dt > 0 && b !== undefined ? Math.max(0, a - b) / dt : 0;
  const p = s.port, pp = prev?.port;
  const hostMs = (x: StatsSnapshot) => x.apps.reduce((t, a) => t + a.hostCpuMs, 0);
  const lines = [
    `pno bridge pid ${s.bridge.pid} at ${s.bridge.address} (${s.bridge.mac}), ` +
    `${s.bridge.workers} worker(s), up ${fmt(s.bridge.uptimeMs / 1000)} s, ` +
    `RSS ${fmt(s.bridge.rssBytes / 1048576)} MiB`,
    `port   rx ${fmt(rate(p.ipackets, pp?.ipackets))} pkt/s ` +
    `${(rate(p.ibytes, pp?.ibytes) * 8 / 1e6).toFixed(1)} Mbit/s   tx ` +
    `${fmt(rate(p.opackets, pp?.opackets))} pkt/s ` +
    `${(rate(p.obytes, pp?.obytes) * 8 / 1e6).toFixed(1)} Mbit/s   missed ${fmt(p.imissed)} ` +
    `errors ${fmt(p.ierrors + p.oerrors)}`,
    `cpu    NIC (bridge) ${(rate(s.bridge.cpuMs, prev?.bridge.cpuMs) / 10).toFixed(1)}%   ` +
    `host (apps) ${(prev ? rate(hostMs(s), hostMs(prev)) / 10 : 0).toFixed(1)}%`,
    `tcp    connections ${fmt(s.tcp.connections)}  opens ${fmt(s.tcp.activeOpens)} active ` +
    `${fmt(s.tcp.passiveOpens)} passive  retrans ${fmt(s.tcp.retransSegs)}  RTOs ` +
    `${fmt(s.tcp.rtoEvents)}  recoveries ${fmt(s.tcp.sackRecoveries + s.tcp.renoRecoveries)}` +
    `  resets ${fmt(s.tcp.rstIn)} in ${fmt(s.tcp.rstOut)} out`,
    `dma    transfers ${fmt(s.dma.transfers)}  to host ${fmt(s.dma.bytesWritten)} B  from host ` +
    `${fmt(s.dma.bytesRead)} B  injected ${(s.dma.injectedNs / 1e6).toFixed(1)} ms`,
    "",
    "WORKER  CPU%   BUSY-POLLS   IDLE-POLLS   FRAMES/POLL  RX-FRAMES     TX-FRAMES",
    ...s.workers.map((w) => {
      const pw = prev?.workers[w.worker];
      return [
        String(w.worker).padEnd(6),
        (rate(w.cpuMs, pw?.cpuMs) / 10).toFixed(1).padStart(5),
        fmt(w.busyPolls).padStart(12),
        fmt(w.idlePolls).padStart(12),
        w.framesPerBusyPoll.toFixed(2).padStart(13),
        fmt(w.iface.rxFrames ?? 0).padStart(10),
        fmt(w.iface.txFrames ?? 0).padStart(13),
      ].join(" ");
    }),
    "",
    "PID      NAME             CONNS  LISTEN  RING-BYTES  RESIDENT      IN-BYTES      OUT-BYTES  HOST-CPU%",
    ...s.apps.map((a) => {
      const pa = prev?.apps.find((x) => x.id === a.id);
      return [
        String(a.pid).padEnd(8),
        a.name.slice(0, 16).padEnd(16),
        fmt(Number(a.connections)).padStart(5),
        fmt(Number(a.listeners)).padStart(7),
        fmt(Number(a.ringBytes)).padStart(11),
        fmt(Number(a.residentBytes)).padStart(9),
        fmt(Number(a.bytesToHost)).padStart(13),
        fmt(Number(a.bytesFromHost)).padStart(14),
        (rate(a.hostCpuMs, pa?.hostCpuMs) / 10).toFixed(1).padStart(10),
      ].join(" ");
    }),
  ];
  return lines.join("\n");
}

/** Runs `pno stats`. */
export async function statsMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["stats", "interval", "count"],
    boolean: ["help", "json"],
    alias: { h: "help" },
    default: { interval: "1" },
    unknown: (arg: string) => {
      throw new Error(`unknown option ${arg}; see pno stats --help`);
    },
  });
  if (flags.help) {
    console.log(STATS_HELP);
    return 0;
  }
  const interval = Number(flags.interval);
  if (!(interval > 0)) throw new Error(`--interval ${flags.interval}: seconds, above 0`);
  const count = flags.count === undefined ? Infinity : Number(flags.count);
  if (!(count >= 1)) throw new Error(`--count ${flags.count}: at least 1`);
  const stats = await findStats(flags.stats);
  if (flags.json) {
    console.log(JSON.stringify(await stats.snapshot()));
    return 0;
  }
  const tty = Deno.stdout.isTerminal();
  let prev: StatsSnapshot | null = null;
  for (let i = 0; i < count; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, interval * 1000));
    const s = await stats.snapshot();
    // In place on a terminal (home, clear to end), as top does; one screen after another else.
    const screen = renderStats(s, prev) + `\n\n(${stats.base}, every ${interval} s)`;
    console.log(tty ? `\x1b[H\x1b[2J${screen}` : `${screen}\n`);
    prev = s;
  }
  return 0;
}
