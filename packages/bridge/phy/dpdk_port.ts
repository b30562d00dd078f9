/**
 * A DPDK ethdev queue as a FrameDevice: one port, one queue, over libpno_dp.
 *
 * The mbuf pool is one contiguous area viewed as a single Uint8Array, so an rx burst is only
 * a fast FFI call that fills (offset, length) pairs in a metadata array viewed once here.
 *
 * @module
 */
import { DP_BURST, DP_STATS_FIELDS, dpLastError, type DpLibrary } from "../../../ffi/dp.ts";
import type { FrameDevice } from "./device.ts";

/** Port counters as plain numbers. */
export type PortStats = Record<(typeof DP_STATS_FIELDS)[number], number>;

export class DpdkQueue implements FrameDevice {
  readonly rxBuf: Uint8Array;
  readonly txBuf: Uint8Array;
  readonly frameRoom: number;
  private readonly rxMeta: Uint32Array;
  private readonly txMeta: Uint32Array;
  private reserved = 0;
  private used = 0;

  constructor(
    private readonly dp: DpLibrary,
    readonly port: number,
    readonly queue: number,
    pool: Uint8Array,
  ) {
    this.rxBuf = pool;
    this.txBuf = pool;
    this.frameRoom = dp.pno_dp_frame_room();
    this.rxMeta = metaView(dp.pno_dp_rx_meta(queue));
    this.txMeta = metaView(dp.pno_dp_tx_meta(queue));
  }

  receive(): number {
    return this.dp.pno_dp_rx_burst(this.port, this.queue);
  }

  rxOffset(i: number): number {
    return this.rxMeta[2 * i];
  }

  rxLength(i: number): number {
    return this.rxMeta[2 * i + 1];
  }

  reserve(): number {
    if (this.used === this.reserved) {
      if (this.used === DP_BURST) this.flush();
      this.reserved = this.dp.pno_dp_tx_reserve(this.queue, DP_BURST);
      if (this.used === this.reserved) return -1;
    }
    return this.txMeta[2 * this.used];
  }

  commit(len: number): void {
    this.txMeta[2 * this.used + 1] = len;
    this.used++;
  }

  flush(): number {
    if (this.used === 0) return 0;
    const sent = this.dp.pno_dp_tx_flush(this.port, this.queue, this.used);
    this.reserved -= this.used;
    this.used = 0;
    return sent;
  }
}

function metaView(ptr: Deno.PointerValue): Uint32Array {
  if (ptr === null) throw new Error("libpno_dp returned no metadata array");
  return new Uint32Array(Deno.UnsafePointerView.getArrayBuffer(ptr, DP_BURST * 8));
}

/**
 * The DPDK driver that takes the interface, as a NIC's PMD would on a DPU.
 * - `af_xdp`: an XDP program hands each frame to an AF_XDP socket per queue (one copy into
 *   the mbuf pool, no skb on receive); the interface needs as many queues as the bridge, and
 *   the socket is the queue's RX interrupt (pno_dp_rx_wake_fd).
 * - `af_packet`: a packet socket ring per queue (two copies and the kernel's packet path for
 *   every frame); works on any interface, and wakes through a socket of its own (WireWake).
 */
export type PortDriver = "af_xdp" | "af_packet";

export const PORT_DRIVERS: readonly PortDriver[] = ["af_xdp", "af_packet"];

/** Options of the DPDK port. */
export interface PortOptions {
  /** Interface DPDK drives. */
  iface: string;
  /** Which DPDK driver takes it. */
  driver: PortDriver;
  /** RX/TX queue pairs (af_packet: fanout spreads flows by hash; af_xdp: the NIC's queues). */
  queues: number;
  /** EAL --file-prefix, unique per bridge so several can run at once. */
  filePrefix: string;
  /** Mbufs in the pool. */
  mbufs?: number;
  /** Memory for EAL, MiB. */
  memoryMb?: number;
}

/** The started port: the pool view, the MAC, and access to counters. */
export interface DpdkPort {
  readonly dp: DpLibrary;
  readonly driver: PortDriver;
  readonly portId: number;
  readonly pool: Uint8Array;
  readonly mac: Uint8Array;
  queue(q: number): DpdkQueue;
  stats(): PortStats;
  link(): { speedMbps: number; up: boolean };
  shutdown(): void;
}

/**
 * Descriptors per RX and TX queue. With 1,024, the AF_XDP socket's RX ring overflowed while the
 * bridge was off its core (it shares 2 cores with the sender and the forwarder): 430 frames
 * over 6 forwarded bulk runs, each a retransmission. 4,096 (12 ms of frames at 300 MB/s)
 * dropped none; the pool below holds them plus what the fill ring lends the kernel.
 */
const PORT_RING_SIZE = 4096;
/** Mbufs in the pool by default (2^n - 1, as DPDK's mempool prefers). */
const POOL_MBUFS = 16383;

/**
 * Brings up EAL, the mbuf pool and the port, in DPDK's plain order (l2fwd's): each step is
 * checked and a failure names the step.
 */
export function startDpdkPort(dp: DpLibrary, opts: PortOptions): DpdkPort {
  if (opts.driver === "af_xdp") checkXdpQueues(opts.iface, opts.queues);
  const args = [
    "pno-bridge",
    "--no-huge",
    "-m",
    String(opts.memoryMb ?? 256),
    "--no-pci",
    "--no-telemetry",
    `--file-prefix=${opts.filePrefix}`,
    opts.driver === "af_xdp"
      ? `--vdev=net_af_xdp0,iface=${opts.iface},start_queue=0,queue_count=${opts.queues}`
      // A deep af_packet ring (8192 frames per queue, not 512): fewer drops under bursts, and
      // fewer flows rolled over to another queue (DPDK sets PACKET_FANOUT_FLAG_ROLLOVER).
      : `--vdev=net_af_packet0,iface=${opts.iface},qpairs=${opts.queues},framecnt=8192`,
    "-l",
    "0",
    "--log-level=lib.eal:error",
    `--log-level=pmd.net.${opts.driver}:error`,
  ];
  const block = new TextEncoder().encode(args.join("\0") + "\0");
  check(dp, dp.pno_dp_eal_init(block, block.length), "EAL init");
  check(dp, dp.pno_dp_pool_create(opts.mbufs ?? POOL_MBUFS), "mbuf pool");
  const base = dp.pno_dp_pool_base();
  if (base === null) throw new Error("mbuf pool has no base address");
  const pool = new Uint8Array(
    Deno.UnsafePointerView.getArrayBuffer(base, Number(dp.pno_dp_pool_size())),
  );
  const portId = check(dp, dp.pno_dp_port_by_name(encodeCString(`net_${opts.driver}0`)), "port");
  check(dp, dp.pno_dp_port_start(portId, opts.queues, PORT_RING_SIZE), "port start");
  const mac = new Uint8Array(6);
  check(dp, dp.pno_dp_mac(portId, mac), "MAC address");
  const queues = new Map<number, DpdkQueue>();
  const statsBuf = new BigUint64Array(DP_STATS_FIELDS.length);
  const linkBuf = new Uint32Array(3);
  return {
    dp,
    driver: opts.driver,
    portId,
    pool,
    mac,
    queue(q) {
      let queue = queues.get(q);
      if (!queue) queues.set(q, queue = new DpdkQueue(dp, portId, q, pool));
      return queue;
    },
    stats() {
      check(dp, dp.pno_dp_stats(portId, statsBuf), "port stats");
      const out = {} as PortStats;
      DP_STATS_FIELDS.forEach((name, i) => out[name] = Number(statsBuf[i]));
      return out;
    },
    link() {
      check(dp, dp.pno_dp_link(portId, linkBuf), "link status");
      return { speedMbps: linkBuf[0], up: linkBuf[1] === 1 };
    },
    shutdown() {
      check(dp, dp.pno_dp_shutdown(portId), "port shutdown");
    },
  };
}

/**
 * An XDP program sees one RX queue's frames, and net_af_xdp binds a socket to each of the
 * first `queues` queues: frames on any other queue would go to the kernel instead of the
 * bridge, so the interface must have exactly that many (veth: `numrxqueues` at creation).
 */
function checkXdpQueues(iface: string, queues: number): void {
  let rx = 0;
  try {
    for (const e of Deno.readDirSync(`/sys/class/net/${iface}/queues`)) {
      if (e.name.startsWith("rx-")) rx++;
    }
  } catch {
    throw new Error(`--driver af_xdp: no interface ${iface}`);
  }
  if (rx !== queues) {
    throw new Error(
      `--driver af_xdp: ${iface} has ${rx} RX queue(s) and the bridge ${queues} worker(s); ` +
        "they must match (or use --driver af_packet, whose fanout hash stands in for RSS)",
    );
  }
}

function check(dp: DpLibrary, ret: number, step: string): number {
  if (ret < 0) throw new Error(`DPDK ${step} failed: ${dpLastError(dp) || `error ${ret}`}`);
  return ret;
}

function encodeCString(text: string): Uint8Array {
  return new TextEncoder().encode(text + "\0");
}
