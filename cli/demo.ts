/**
 * `pno demo`: the end-to-end demonstration on a fresh machine. It brings up the wire, starts
 * the bridge on its DPDK port, has the Linux kernel in the client namespace reach it, prints
 * what the bridge counted, and takes everything down again.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { BridgeProcess } from "./bridge_process.ts";
import { DEFAULT_WIRE, inNs, sh, wireDown, wireUp } from "./wire.ts";

export const DEMO_HELP = `pno demo: the end-to-end demo on the emulated wire

Usage: pno demo [--count N]

Creates the wire (pno wire up), starts the bridge on pno1 (10.88.0.2), pings it N times
(default 20) from the kernel in namespace pno-client, shows the client's neighbour entry
for the bridge and the bridge's counters, then stops the bridge and removes the wire.`;

/** Runs the demo; resolves with 0 when every ping was answered. */
export async function demoMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["count"],
    boolean: ["help"],
    alias: { h: "help" },
    default: { count: "20" },
  });
  if (flags.help) {
    console.log(DEMO_HELP);
    return 0;
  }
  const w = DEFAULT_WIRE;
  const bridgeIp = w.bridgeAddress.split("/")[0];
  let bridge: BridgeProcess | null = null;
  try {
    console.log("== wire up: namespace pno-client (pno0 10.88.0.1) <-> pno1 (DPDK)");
    await wireUp(w);
    bridge = await BridgeProcess.start(w);
    console.log(
      `== bridge ready: pid ${bridge.ready.pid}, ${bridge.ready.address}, ` +
        `MAC ${bridge.ready.mac}, stats at ${bridge.ready.stats}`,
    );
    console.log(`== ping -c ${flags.count} ${bridgeIp} from pno-client (Linux kernel)`);
    const out = await sh(
      inNs(w, "ping", "-c", flags.count, "-i", "0.05", "-W", "2", bridgeIp),
      true,
    );
    console.log(out.trim().split("\n").slice(-3).join("\n"));
    const neigh = (await sh(inNs(w, "ip", "neigh", "show", bridgeIp))).trim();
    console.log(`== client's neighbour table: ${neigh}`);
    const stats = await bridge.stats();
    console.log("== bridge counters");
    console.log(`   port: rx ${stats.port.ipackets} frames, tx ${stats.port.opackets} frames`);
    console.log(
      `   icmp echo: in ${stats.iface.icmpEchoIn}, out ${stats.iface.icmpEchoOut}; ` +
        `arp replies out ${stats.iface.arpRepliesOut}; dropped ${sumDrops(stats.iface)}`,
    );
    const received = Number(out.match(/(\d+) received/)?.[1] ?? 0);
    const ok = received === Number(flags.count);
    console.log(ok ? "== demo ok" : `== demo FAILED: ${received}/${flags.count} replies`);
    return ok ? 0 : 1;
  } finally {
    if (bridge) await bridge.stop();
    await wireDown(w);
    console.log("== wire down");
  }
}

function sumDrops(iface: Record<string, unknown>): number {
  let sum = 0;
  for (const [key, value] of Object.entries(iface)) {
    if (key.startsWith("drop") && typeof value === "number") sum += value;
    if (key === "dropIpv4") {
      sum += Object.values(value as Record<string, number>).reduce((a, b) => a + b, 0);
    }
  }
  return sum;
}
