/**
 * `pno bridge`: runs the NIC-side bridge in the foreground until SIGINT or SIGTERM.
 *
 * Prints one JSON line when ready ({"event":"ready",...}) and one with the final counters
 * when stopped, so scripts and tests can follow it.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { startBridge } from "./bridge.ts";
import type { FaultSettings } from "./phy/fault_injector.ts";
import { PORT_DRIVERS, type PortDriver } from "./phy/dpdk_port.ts";
import { statsApp } from "./stats_server.ts";

export const BRIDGE_HELP =
  `pno bridge: run the NIC-side bridge (DPDK port, TCP/IP engine) in the foreground

Usage: pno bridge [options]

Options:
  --iface NAME        interface DPDK drives                      (default: pno1)
  --driver NAME       DPDK driver: af_xdp (one copy per frame; the interface needs as
                      many RX queues as workers) or af_packet (any interface; its
                      fanout hash spreads flows over workers)
                                        (default: af_xdp, af_packet with --workers > 1)
  --address CIDR      the bridge's IPv4 address                  (default: 10.88.0.2/24)
  --stats-port N      serve GET /stats on 127.0.0.1:N, 0 = any   (default: 7081)
  --workers N         queue pairs, one engine (Deno worker) each (default: 1)
  --control PATH      control socket where applications attach their rings
                      (default: /run/pno/bridge.sock; "none" to serve no applications)
  --dma-latency-ns N  emulated PCIe: latency added to every copy to/from application memory
  --dma-jitter-ns N   emulated PCIe: uniform extra latency in [0, N)
  --dma-bandwidth-mbps N  emulated PCIe: bandwidth cap in MB/s on those copies
  --no-services       do not run echo (7), discard (9) and source (19) in the bridge
  --fixed-buffers     the in-bridge sockets' rings fixed at 256 KiB each, allocated at open
                      (default: 64 KiB / 32 KiB growing with the flow up to 4 MiB, with memory
                      behind them only as bytes arrive; \`pno bench --memory\` compares)
  --pcap FILE         record every frame in FILE (FILE.qN per worker) for tshark
  --file-prefix NAME  DPDK EAL file prefix, unique per bridge    (default: pno-bridge-PID)
  -h, --help          show this help

Impairments at the port, both directions, like tc netem (which this kernel may lack):
  --loss PCT          drop PCT% of frames
  --delay MS          hold every frame MS ms
  --jitter MS         vary the delay uniformly by +-MS ms (needs --delay)
  --reorder PCT       PCT% of frames skip the delay and overtake (needs --delay)
  --duplicate PCT     send PCT% of frames twice
  --fault-seed N      seed of the injector's PRNG (queue q uses N + q) (default: 1)
  Without any of these there is no injector. Counters: "faults" in /stats.

Stops cleanly on SIGINT or SIGTERM. Run \`pno wire up\` first to create pno1.`;

const FAULT_FLAGS = ["loss", "delay", "jitter", "reorder", "duplicate", "fault-seed"] as const;

function portDriver(name: string): PortDriver {
  const driver = PORT_DRIVERS.find((d) => d === name);
  if (driver === undefined) {
    throw new Error(`--driver ${name}: one of ${PORT_DRIVERS.join(", ")}`);
  }
  return driver;
}

/** Runs the bridge CLI with `args`; resolves with the exit code. */
export async function bridgeMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: [
      "iface",
      "driver",
      "address",
      "stats-port",
      "file-prefix",
      "workers",
      "pcap",
      "control",
      "dma-latency-ns",
      "dma-jitter-ns",
      "dma-bandwidth-mbps",
      ...FAULT_FLAGS,
    ],
    boolean: ["help", "services", "fixed-buffers"],
    negatable: ["services"],
    alias: { h: "help" },
    default: {
      iface: "pno1",
      address: "10.88.0.2/24",
      "stats-port": "7081",
      workers: "1",
      services: true,
    },
    unknown: (arg: string) => {
      throw new Error(`unknown option ${arg}; see pno bridge --help`);
    },
  });
  if (flags.help) {
    console.log(BRIDGE_HELP);
    return 0;
  }
  const control = flags.control === "none"
    ? undefined
    : flags.control || (Number(flags.workers) === 1 ? "/run/pno/bridge.sock" : undefined);
  const bridge = await startBridge({
    iface: flags.iface,
    driver: flags.driver === undefined ? undefined : portDriver(flags.driver),
    address: flags.address,
    workers: Number(flags.workers),
    filePrefix: flags["file-prefix"],
    pcap: flags.pcap,
    services: flags.services,
    fixedBuffers: flags["fixed-buffers"],
    control,
    dma: {
      latencyNs: Number(flags["dma-latency-ns"] ?? 0),
      jitterNs: Number(flags["dma-jitter-ns"] ?? 0),
      bandwidthBytesPerSec: Number(flags["dma-bandwidth-mbps"] ?? 0) * 1e6,
    },
    faults: faultSettings(flags),
  });
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: Number(flags["stats-port"]),
    onListen: () => {},
  }, statsApp(bridge).fetch);
  let stop = () => {};
  const stopped = new Promise<void>((resolve) => stop = resolve);
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  const { mac, address, workers, driver } = await bridge.stats();
  console.log(JSON.stringify({
    event: "ready",
    pid: Deno.pid,
    iface: flags.iface,
    driver,
    mac,
    address,
    workers,
    control: control ?? null,
    stats: `http://127.0.0.1:${server.addr.port}/stats`,
  }));
  await stopped;
  const final = await bridge.stats();
  await bridge.stop();
  await server.shutdown();
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  console.log(JSON.stringify({ event: "stopped", stats: final }));
  return 0;
}

/** The injector's settings from the flags, or undefined when no fault flag was given. */
function faultSettings(
  flags: Partial<Record<(typeof FAULT_FLAGS)[number], string>>,
): FaultSettings | undefined {
  if (FAULT_FLAGS.every((f) => flags[f] === undefined)) return undefined;
  const num = (name: (typeof FAULT_FLAGS)[number]): number | undefined => {
    const text = flags[name];
    if (text === undefined) return undefined;
    const n = Number(text);
    if (text.trim() === "" || !Number.isFinite(n)) {
      throw new Error(`--${name} ${text}: not a number`);
    }
    return n;
  };
  const settings: FaultSettings = {
    lossPercent: num("loss"),
    delayMs: num("delay"),
    jitterMs: num("jitter"),
    reorderPercent: num("reorder"),
    duplicatePercent: num("duplicate"),
    seed: num("fault-seed"),
  };
  if (settings.jitterMs && !settings.delayMs) throw new Error("--jitter spreads --delay: give it");
  if (settings.reorderPercent && !settings.delayMs) {
    throw new Error("--reorder makes frames skip the delay: give --delay too");
  }
  return settings;
}

if (import.meta.main) {
  try {
    Deno.exit(await bridgeMain(Deno.args));
  } catch (err) {
    console.error(`pno bridge: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
