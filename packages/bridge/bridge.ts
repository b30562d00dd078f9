/**
 * The bridge: the NIC-side process that owns the DPDK port and serves the wire.
 *
 * Start-up is DPDK's plain order (EAL, pool, port with one queue pair per worker), then one
 * QueueStack per queue: in this thread for a single queue, in Deno workers otherwise (af_packet
 * fanout spreads flows over the queues by hash, as RSS would on a NIC). `startBridge` returns a
 * handle whose `stop()` ends every loop and releases the port, so the same code runs under the
 * CLI, the tests and `mod.ts`.
 *
 * @module
 */
import { openDp } from "../../ffi/dp.ts";
import type { DmaKnobs } from "./dma.ts";
import { type DpdkPort, type PortDriver, type PortStats, startDpdkPort } from "./phy/dpdk_port.ts";
import type { FaultSettings } from "./phy/fault_injector.ts";
import type { BpfProgram } from "./phy/bpf.ts";
import type { CaptureSession } from "./phy/capture_tap.ts";
import { QueueStack, type QueueStackConfig, type QueueStats } from "./queue_stack.ts";
import { formatMac } from "./wire/ethernet.ts";
import { formatIpv4, parseCidr } from "./wire/ipv4.ts";
import {
  createStatsPage,
  GlobalPublisher,
  PUBLISH_INTERVAL_MS,
  type StatsPage,
  statsSchemaInput,
} from "./stats_publisher.ts";
import { libc } from "../../ffi/libc.ts";
import { unmap } from "../rings/region.ts";

/** What the bridge needs to start. */
export interface BridgeOptions {
  /** Interface DPDK takes over (the NIC's wire end). */
  iface: string;
  /**
   * The DPDK driver that takes it (see PortDriver). Default: af_xdp with one worker; af_packet
   * with more, since a veth has no RSS and af_packet's fanout hash stands in for it.
   */
  driver?: PortDriver;
  /** The bridge's address with its prefix, e.g. 10.88.0.2/24. */
  address: string;
  /** Queue pairs, one engine each; more than one runs them in Deno workers. */
  workers?: number;
  /** EAL --file-prefix; unique per running bridge. */
  filePrefix?: string;
  /** Run the in-bridge services echo (7), discard (9) and source (19); default true. */
  services?: boolean;
  /** Control socket where applications attach their regions (single queue only). */
  control?: string;
  /** In-bridge sockets get fixed 256 KiB rings allocated at open (no autotuning). */
  fixedBuffers?: boolean;
  /** Emulated PCIe link effects on application memory (latency, jitter, bandwidth cap). */
  dma?: Partial<DmaKnobs>;
  /** Capture every frame to this pcap file (one file per queue: FILE.qN with workers). */
  pcap?: string;
  /**
   * Impair the link at the port, both directions, as netem would (every queue; queue N draws
   * with seed + N). Absent: no injector at all.
   */
  faults?: FaultSettings;
}

/** The bridge's counters as reported by /stats: totals and each queue's own. */
export interface BridgeStats {
  mac: string;
  address: string;
  workers: number;
  /** The DPDK driver that took the interface. */
  driver: PortDriver;
  port: PortStats;
  /** Interface counters summed over the queues. */
  iface: Record<string, number | Record<string, number>>;
  /** TCP counters summed over the queues, and live connections. */
  tcp: Record<string, number | Record<string, number>>;
  /** Fault injector counters summed over the queues, when it runs. */
  faults?: Record<string, number>;
  queues: QueueStats[];
}

/** A running bridge. */
export interface Bridge {
  readonly port: DpdkPort;
  /** The stats page every queue publishes into (the proxy maps it; so does /live). */
  readonly statsPage: StatsPage;
  /** Everything countable, as plain data. */
  stats(): Promise<BridgeStats>;
  /** Every connection of every queue (state, windows, timers, counters). */
  connections(): Promise<Array<Record<string, number | string>>>;
  /**
   * Starts capturing what the port sends and receives (a single-queue bridge; throws
   * otherwise, or if a capture runs already).
   */
  capture(count: number, filter: BpfProgram | null): CaptureSession;
  /** Ends the loops and releases the port and EAL. */
  stop(): Promise<void>;
}

/** How the bridge reaches one queue's stack, wherever it runs. */
interface QueueHandle {
  stats(): Promise<QueueStats>;
  connections(): Promise<Array<Record<string, number | string>>>;
  stop(): Promise<void>;
}

/** Brings the bridge up and starts serving every queue. */
export async function startBridge(opts: BridgeOptions): Promise<Bridge> {
  const { addr, prefix } = parseCidr(opts.address);
  const workers = opts.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1 || workers > 8) {
    throw new Error(`--workers ${opts.workers}: 1 to 8 queues are supported`);
  }
  if (opts.control && workers > 1) {
    throw new Error("application regions (--control) are served by a single-queue bridge for now");
  }
  const dp = openDp();
  const port = startDpdkPort(dp, {
    iface: opts.iface,
    driver: opts.driver ?? (workers === 1 ? "af_xdp" : "af_packet"),
    queues: workers,
    filePrefix: opts.filePrefix ?? `pno-bridge-${Deno.pid}`,
  });
  let statsPage: StatsPage;
  try {
    statsPage = createStatsPage(statsSchemaInput({
      address: `${formatIpv4(addr)}/${prefix}`,
      mac: formatMac(port.mac),
      queues: workers,
    }));
  } catch (err) {
    port.shutdown();
    throw err;
  }
  const page = { fd: statsPage.mapping.fd, schema: statsPage.schema };
  // One set of TCP secrets for every queue's engine: a SYN cookie made on one queue must hold
  // on the queue its ACK lands on, and the timestamps it started must continue there.
  const tcpKeys = Array.from(crypto.getRandomValues(new Uint32Array(12)));
  const config = (queue: number): QueueStackConfig => ({
    portId: port.portId,
    iface: opts.iface,
    driver: port.driver,
    queue,
    mac: port.mac,
    ip: addr,
    prefix,
    pcap: opts.pcap && (workers === 1 ? opts.pcap : `${opts.pcap}.q${queue}`),
    faults: opts.faults && { ...opts.faults, seed: (opts.faults.seed ?? 1) + queue },
    services: opts.services ?? true,
    fixedBuffers: opts.fixedBuffers ?? false,
    control: queue === 0 ? opts.control : undefined,
    dma: opts.dma,
    multiQueue: workers > 1,
    statsPage: page,
    tcpKeys,
  });
  let handles: QueueHandle[];
  let single: QueueStack | null = null;
  if (workers === 1) {
    const stack = single = new QueueStack(dp, port.pool, config(0));
    const running = stack.loop.run();
    handles = [{
      stats: () => Promise.resolve(stack.stats()),
      connections: () => Promise.resolve(stack.connections()),
      stop: async () => {
        stack.loop.stop();
        await running;
        stack.finish();
      },
    }];
  } else {
    try {
      handles = await Promise.all(
        Array.from({ length: workers }, (_, q) => startWorker(config(q))),
      );
    } catch (err) {
      port.shutdown();
      throw err;
    }
  }
  const globalPublisher = new GlobalPublisher(
    statsPage.mapping.buffer,
    statsPage.schema,
    () => port.stats(),
  );
  globalPublisher.publish();
  const publishTimer = setInterval(() => globalPublisher.publish(), PUBLISH_INTERVAL_MS);
  Deno.unrefTimer(publishTimer);
  let stopped = false;
  return {
    port,
    statsPage,
    capture(count, filter) {
      if (single === null) {
        throw new Error(`capture needs a single-queue bridge (this one has ${workers} workers)`);
      }
      return single.tap.start(count, filter);
    },
    async connections() {
      return (await Promise.all(handles.map((h) => h.connections()))).flat();
    },
    async stats() {
      const queues = await Promise.all(handles.map((h) => h.stats()));
      const faults = queues.flatMap((q) => q.faults ? [q.faults] : []);
      return {
        mac: formatMac(port.mac),
        address: `${formatIpv4(addr)}/${prefix}`,
        workers,
        driver: port.driver,
        port: port.stats(),
        iface: sumCounters(queues.map((q) => q.iface)),
        tcp: sumCounters(
          queues.map((q) => ({ ...q.tcp.counters, connections: q.tcp.connections })),
        ),
        ...(faults.length > 0 ? { faults: sumCounters(faults) as Record<string, number> } : {}),
        queues,
      };
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(publishTimer);
      await Promise.all(handles.map((h) => h.stop()));
      globalPublisher.publish();
      port.shutdown();
      unmap(statsPage.mapping);
      libc().close(statsPage.mapping.fd);
    },
  };
}

/** Starts a worker for one queue and waits until it serves. */
function startWorker(config: QueueStackConfig): Promise<QueueHandle> {
  const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
  // Replies come back in order per type; each request waits for the next reply of its type.
  const waiting = new Map<string, Array<(data: Record<string, unknown>) => void>>();
  const expect = (reply: string) =>
    new Promise<Record<string, unknown>>((resolve) => {
      const list = waiting.get(reply) ?? [];
      list.push(resolve);
      waiting.set(reply, list);
    });
  const call = (type: string, reply: string) => {
    const answer = expect(reply);
    worker.postMessage({ type });
    return answer;
  };
  return new Promise((resolve, reject) => {
    worker.onmessage = (e: MessageEvent) => {
      const data = e.data as Record<string, unknown>;
      if (data.type === "error") {
        reject(new Error(`worker for queue ${config.queue}: ${data.message}`));
        return;
      }
      waiting.get(String(data.type))?.shift()?.(data);
    };
    worker.onerror = (e) => {
      e.preventDefault();
      reject(new Error(`worker for queue ${config.queue}: ${e.message}`));
    };
    expect("started").then(() =>
      resolve({
        stats: async () => (await call("stats", "stats")).stats as QueueStats,
        connections: async () =>
          (await call("connections", "connections")).list as Array<Record<string, number | string>>,
        stop: async () => {
          await call("stop", "stopped");
          worker.terminate();
        },
      })
    );
    worker.postMessage({ type: "start", config });
  });
}

/** Adds up counter records field by field (nested records too). */
function sumCounters(
  records: Array<Record<string, number | Record<string, number>>>,
): Record<string, number | Record<string, number>> {
  const out: Record<string, number | Record<string, number>> = {};
  for (const r of records) {
    for (const [key, value] of Object.entries(r)) {
      if (typeof value === "number") out[key] = ((out[key] as number) ?? 0) + value;
      else {out[key] = sumCounters([(out[key] as Record<string, number>) ?? {}, value]) as Record<
          string,
          number
        >;}
    }
  }
  return out;
}
