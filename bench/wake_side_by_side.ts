/**
 * `pno bench --wake`: how fast an idle bridge answers, and what idling costs it, with the loop
 * napping on timers only (PNO_WIRE_WAKE=0, as before) and with the wire's wakeup armed while
 * it sleeps (packages/bridge/phy/wire_wake.ts); the host kernel on the twin link alongside.
 *
 * For each: ping RTT while busy (pings 1 ms apart: the loop never gets to sleep), ping RTT
 * after a quiet second (pings 1.2 s apart), and the bridge's CPU over 5 s of silence. The
 * ratio is of medians: a busy bridge's average is pulled up by the few pings that meet a pause
 * of its loop (15 of 500 here while its I/O turn every 100 ms was a zero-delay timer, 1 to 4 ms
 * deaf to the wire; a few still meet the timer every tenth turn), and the quiet figure is
 * about the wakeup, not those.
 *
 * Run: ./pno bench --wake
 *
 * @module
 */
import { BridgeProcess } from "../cli/bridge_process.ts";
import { cpuSeconds } from "../cli/processes.ts";
import { inNs, sh, testWire, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";

/** The bench's own wire: namespace pno-twbwake, 10.78.0.0/24 and the twin on 10.79.0.0/24. */
const WIRE = testWire("twbwake", 78, true);

interface PingFigures {
  avgMs: number;
  medianMs: number;
  maxMs: number;
}

async function ping(w: WireConfig, dst: string, count: number, interval: string) {
  const out = await sh(
    inNs(w, "ping", "-c", String(count), "-i", interval, "-W", "2", dst),
    true,
  );
  const times = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (times.length === 0) throw new Error(`ping ${dst}: ${out.trim()}`);
  times.sort((a, b) => a - b);
  return {
    avgMs: times.reduce((a, b) => a + b, 0) / times.length,
    medianMs: times[Math.floor(times.length / 2)],
    maxMs: times[times.length - 1],
  } as PingFigures;
}

/** Sleeps of the bridge's poll loop that a frame ended. */
async function wireWakes(bridge: BridgeProcess): Promise<number> {
  const stats = (await bridge.stats()) as unknown as { queues: { loop: Record<string, number> }[] };
  return stats.queues[0].loop.wireWakes ?? 0;
}

interface Row {
  name: string;
  busy: PingFigures;
  quiet: PingFigures;
  idleCpuPercent: number | null;
  wireWakes: number | null;
}

/** Runs the comparison; returns the report's lines. */
export async function wakeSideBySide(quietPings = 10): Promise<string[]> {
  const w = WIRE;
  const rows: Row[] = [];
  let bridge: BridgeProcess | null = null;
  try {
    await wireUp(w);
    const kernel = w.twin!.hostAddress.split("/")[0];
    await ping(w, kernel, 1, "0.2"); // ARP
    rows.push({
      name: "Linux (host kernel, twin link)",
      busy: await ping(w, kernel, 500, "0.001"),
      quiet: await ping(w, kernel, quietPings, "1.2"),
      idleCpuPercent: null,
      wireWakes: null,
    });
    const runs = [[false, "af_xdp"], [true, "af_xdp"], [true, "af_packet"]] as const;
    for (const [wake, driver] of runs) {
      Deno.env.set("PNO_WIRE_WAKE", wake ? "1" : "0");
      bridge = await BridgeProcess.start(w, ["--driver", driver]);
      Deno.env.delete("PNO_WIRE_WAKE");
      const dst = w.bridgeAddress.split("/")[0];
      await ping(w, dst, 1, "0.2"); // ARP, both ways
      const busy = await ping(w, dst, 500, "0.001");
      const before = await wireWakes(bridge);
      const quiet = await ping(w, dst, quietPings, "1.2");
      const after = await wireWakes(bridge);
      await new Promise((r) => setTimeout(r, 1000));
      const cpu0 = cpuSeconds(bridge.ready.pid), t0 = performance.now();
      await new Promise((r) => setTimeout(r, 5000));
      const cpu = (cpuSeconds(bridge.ready.pid) - cpu0) / ((performance.now() - t0) / 1000);
      rows.push({
        name: `PnO ${driver}, ${wake ? "wire wakeup armed" : "timer naps (PNO_WIRE_WAKE=0)"}`,
        busy,
        quiet,
        idleCpuPercent: cpu * 100,
        wireWakes: after - before,
      });
      await bridge.stop();
      bridge = null;
    }
  } finally {
    Deno.env.delete("PNO_WIRE_WAKE");
    if (bridge) await (bridge as BridgeProcess).stop();
    await wireDown(w);
  }
  const lines = [
    `ping RTT from ${w.ns}: busy (500 pings 1 ms apart) and after a quiet second ` +
    `(${quietPings} pings 1.2 s apart); the bridge's CPU over 5 s of silence`,
    "target                                     | busy median/avg ms | quiet median/avg/max ms | quiet/busy (medians) | idle CPU % | woke on wire",
  ];
  const ms = (f: PingFigures, all: boolean) =>
    [f.medianMs, f.avgMs, ...(all ? [f.maxMs] : [])].map((x) => x.toFixed(3)).join("/");
  for (const r of rows) {
    lines.push(
      `${r.name.padEnd(42)} | ${ms(r.busy, false).padStart(18)} | ${
        ms(r.quiet, true).padStart(23)
      } | ${(r.quiet.medianMs / r.busy.medianMs).toFixed(1).padStart(20)} | ${
        (r.idleCpuPercent === null ? "-" : r.idleCpuPercent.toFixed(2)).padStart(10)
      } | ${r.wireWakes === null ? "-" : `${r.wireWakes} of ${quietPings}`}`,
    );
  }
  return lines;
}

if (import.meta.main) console.log((await wakeSideBySide()).join("\n"));
