/**
 * `pno demo`: the end-to-end demonstration on a fresh machine. It brings up the wire, starts
 * the bridge on its DPDK port, and has the Linux kernel in the client namespace reach it three
 * ways: ping (ARP, ICMP), TCP to the bridge's own echo service, and TCP to an echo server on
 * the host whose TCP runs in the bridge through the rings (the host kernel holds no socket for
 * it). It prints what the bridge counted and takes everything down again.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { BridgeProcess } from "./bridge_process.ts";
import { firstLine, startRingEchoServer } from "./processes.ts";
import { DEFAULT_WIRE, inNs, sh, wireDown, wireUp } from "./wire.ts";

export const DEMO_HELP = `pno demo: the end-to-end demo on the emulated wire

Usage: pno demo [--count N] [--mib N]

1. creates the wire (pno wire up) and starts the bridge on pno1 (10.88.0.2)
2. pings it N times (default 20) from the kernel in namespace pno-client
3. sends M MiB (default 16) through the bridge's echo service (TCP port 7) with nc and
   compares SHA-256 of what went and what came back
4. starts examples/ring_echo_server.ts on the host (TCP on the NIC side, rings to the host)
   and does the same against it on port 8007; checks the host kernel has no socket for it
5. prints the bridge's counters, stops the bridge and removes the wire`;

/** Runs the demo; resolves with 0 when every step checked out. */
export async function demoMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["count", "mib"],
    boolean: ["help"],
    alias: { h: "help" },
    default: { count: "20", mib: "16" },
  });
  if (flags.help) {
    console.log(DEMO_HELP);
    return 0;
  }
  const w = DEFAULT_WIRE;
  const bridgeIp = w.bridgeAddress.split("/")[0];
  const control = `/tmp/pno-demo-${Deno.pid}.sock`;
  let bridge: BridgeProcess | null = null;
  let app: Deno.ChildProcess | null = null;
  const file = await Deno.makeTempFile({ prefix: "pno-demo-" });
  let failures = 0;
  const check = (ok: boolean, what: string) => {
    console.log(`   ${ok ? "ok" : "FAILED"}: ${what}`);
    if (!ok) failures++;
  };
  try {
    console.log("== 1. wire up: namespace pno-client (pno0 10.88.0.1) <-> pno1 (DPDK)");
    await wireUp(w);
    bridge = await BridgeProcess.start(w, ["--control", control]);
    console.log(
      `   bridge pid ${bridge.ready.pid}, ${bridge.ready.address}, MAC ${bridge.ready.mac}, ` +
        `stats at ${bridge.ready.stats}`,
    );

    console.log(`== 2. ping -c ${flags.count} ${bridgeIp} from pno-client (Linux kernel)`);
    const out = await sh(
      inNs(w, "ping", "-c", flags.count, "-i", "0.05", "-W", "2", bridgeIp),
      true,
    );
    console.log(out.trim().split("\n").slice(-2).map((l) => `   ${l}`).join("\n"));
    check(
      Number(out.match(/(\d+) received/)?.[1] ?? 0) === Number(flags.count),
      "every ping answered",
    );
    const neigh = (await sh(inNs(w, "ip", "neigh", "show", bridgeIp))).trim();
    check(neigh.includes(bridge.ready.mac), `client's neighbour entry: ${neigh}`);

    const mib = Number(flags.mib);
    await sh(["sh", "-c", `head -c ${mib << 20} /dev/urandom > ${file}`]);
    const want = (await sh(["sha256sum", file])).split(" ")[0];
    const echo = async (port: number) => {
      const t0 = performance.now();
      const got = await sh(
        inNs(w, "sh", "-c", `timeout 60 nc -N ${bridgeIp} ${port} < ${file} | sha256sum`),
      );
      return { ok: got.split(" ")[0] === want, secs: (performance.now() - t0) / 1000 };
    };
    console.log(
      `== 3. ${mib} MiB through the bridge's TCP echo service (port 7), nc from pno-client`,
    );
    const e1 = await echo(7);
    check(e1.ok, `SHA-256 of the echo matches (${e1.secs.toFixed(2)} s)`);

    console.log(
      "== 4. a host echo server whose TCP runs in the bridge (examples/ring_echo_server.ts)",
    );
    app = startRingEchoServer(control);
    const first = await firstLine(app);
    check(
      first.includes("listening"),
      "the host server attached its region and listens on 8007",
    );
    const e2 = await echo(8007);
    check(e2.ok, `${mib} MiB echoed by the host server, SHA-256 matches (${e2.secs.toFixed(2)} s)`);
    const kernelSockets = await sh(["ss", "-tanpH"]);
    check(
      !kernelSockets.includes(`pid=${app.pid},`),
      "the host kernel holds no TCP socket of the server",
    );

    const stats = await bridge.stats() as unknown as {
      port: Record<string, number>;
      iface: Record<string, number>;
      tcp: Record<string, number>;
    };
    console.log("== 5. bridge counters");
    console.log(`   port: rx ${stats.port.ipackets} frames, tx ${stats.port.opackets} frames`);
    console.log(
      `   icmp echo in ${stats.iface.icmpEchoIn} / out ${stats.iface.icmpEchoOut}; tcp segments ` +
        `in ${stats.tcp.segsIn} / out ${stats.tcp.segsOut}, retransmitted ${stats.tcp.retransSegs}`,
    );
    console.log(failures === 0 ? "== demo ok" : `== demo FAILED: ${failures} check(s)`);
    return failures === 0 ? 0 : 1;
  } finally {
    if (app) {
      try {
        app.kill("SIGTERM");
      } catch {
        // already gone
      }
      await app.status;
    }
    if (bridge) await bridge.stop();
    await wireDown(w);
    await Deno.remove(file).catch(() => {});
    console.log("== wire down");
  }
}
