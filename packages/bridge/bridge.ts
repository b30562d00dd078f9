/**
 * The bridge: the NIC-side process that owns the DPDK port and serves the wire.
 *
 * Start-up is DPDK's plain order (EAL, pool, port, queues), then one interface per queue and
 * the poll loop. `startBridge` returns a handle whose `stop()` ends the loop and releases the
 * port, so the same code runs under the CLI, the tests and `mod.ts`.
 *
 * @module
 */
import { openDp } from "../../ffi/dp.ts";
import { Interface } from "./iface.ts";
import { type DpdkPort, startDpdkPort } from "./phy/dpdk_port.ts";
import { type LoopCounters, PollLoop } from "./poll_loop.ts";
import { formatMac } from "./wire/ethernet.ts";
import { formatIpv4, parseCidr } from "./wire/ipv4.ts";

/** What the bridge needs to start. */
export interface BridgeOptions {
  /** Interface DPDK takes over through net_af_packet (the NIC's wire end). */
  iface: string;
  /** The bridge's address with its prefix, e.g. 10.88.0.2/24. */
  address: string;
  /** EAL --file-prefix; unique per running bridge. */
  filePrefix?: string;
}

/** A running bridge. */
export interface Bridge {
  readonly port: DpdkPort;
  readonly iface: Interface;
  readonly loop: PollLoop;
  /** Resolves when the loop has ended. */
  readonly done: Promise<void>;
  /** Everything countable, as plain data. */
  stats(): BridgeStats;
  /** Ends the loop and releases the port and EAL. */
  stop(): Promise<void>;
}

/** The bridge's counters as reported by /stats. */
export interface BridgeStats {
  mac: string;
  address: string;
  port: ReturnType<DpdkPort["stats"]>;
  iface: ReturnType<Interface["counters"]["snapshot"]>;
  loop: LoopCounters;
  neighbours: number;
}

/** Brings the bridge up and starts its poll loop. */
export function startBridge(opts: BridgeOptions): Bridge {
  const { addr, prefix } = parseCidr(opts.address);
  const dp = openDp();
  const port = startDpdkPort(dp, {
    iface: opts.iface,
    queues: 1,
    filePrefix: opts.filePrefix ?? `pno-bridge-${Deno.pid}`,
  });
  const device = port.queue(0);
  const iface = new Interface(device, { mac: port.mac, ip: addr, prefix });
  const loop = new PollLoop((now) => {
    const n = iface.poll(now);
    device.flush();
    return n;
  });
  const done = loop.run();
  let stopped = false;
  return {
    port,
    iface,
    loop,
    done,
    stats: () => ({
      mac: formatMac(port.mac),
      address: `${formatIpv4(addr)}/${prefix}`,
      port: port.stats(),
      iface: iface.counters.snapshot(),
      loop: { ...loop.counters },
      neighbours: iface.arp.size(performance.now()),
    }),
    async stop() {
      if (stopped) return;
      stopped = true;
      loop.stop();
      await done;
      port.shutdown();
    },
  };
}
