/**
 * The whole stack that serves one RX/TX queue pair: device, interface and poll loop (and the
 * TCP engine as it lands). A bridge runs one per queue: in the main thread when it has a
 * single queue, otherwise one per Deno worker, each with its own tables and timers, so NIC
 * cores scale without sharing state on the data path.
 *
 * @module
 */
import { DP_BURST, type DpLibrary } from "../../ffi/dp.ts";
import type { DmaKnobs } from "./dma.ts";
import { Interface } from "./iface.ts";
import type { FrameDevice } from "./phy/device.ts";
import { DpdkQueue } from "./phy/dpdk_port.ts";
import { FaultInjector, type FaultSettings } from "./phy/fault_injector.ts";
import { PcapWriter } from "./phy/pcap_writer.ts";
import { CaptureTap } from "./phy/capture_tap.ts";
import { registerNativeMemory } from "../rings/_native.ts";
import { MemoryReclaimer } from "./memory_reclaimer.ts";
import { trimQuietBuffers } from "./tcp/autotune.ts";
import { DEFAULT_BACKOFF, type Parking, PollLoop, WOKE_KICK } from "./poll_loop.ts";
import { WireWake } from "./phy/wire_wake.ts";
import type { PortDriver } from "./phy/dpdk_port.ts";
import { Waker } from "../rings/waker.ts";
import { RegionServer } from "./region_server.ts";
import { RingService } from "./ring_service.ts";
import { TcpEngine } from "./tcp/engine.ts";
import { type Services, startServices } from "./tcp/services.ts";
import { InterfaceTcpLink } from "./tcp_link.ts";
import { QueuePublisher } from "./stats_publisher.ts";
import { mapFd, type Mapping, unmap } from "../rings/region.ts";
import type { StatsSchema } from "@pno/stats";

/** What one queue's stack is told when it starts. */
export interface QueueStackConfig {
  portId: number;
  /** The interface DPDK drives: a frame on it wakes a sleeping loop (null: naps only). */
  iface: string | null;
  /** The driver DPDK drives it with: how a frame wakes the loop (default af_packet). */
  driver?: PortDriver;
  queue: number;
  mac: Uint8Array;
  ip: number;
  prefix: number;
  /** Record every frame of this queue in a pcap file. */
  pcap?: string;
  /** Impair this queue's link in both directions (loss, delay, reordering, duplication). */
  faults?: FaultSettings;
  /** Run the in-bridge services (echo 7, discard 9, source 19). */
  services: boolean;
  /** Fixed rings allocated at open instead of buffers that grow with the flow (autotune.ts). */
  fixedBuffers?: boolean;
  /** Serve application regions, taken over this control socket path. */
  control?: string;
  /** Emulated PCIe link effects on every copy to or from application memory. */
  dma?: Partial<DmaKnobs>;
  /** Other queues of the port run engines of their own. */
  multiQueue: boolean;
  /** The stats page's memfd (shared by every queue of the process) and its schema. */
  statsPage?: { fd: number; schema: StatsSchema };
  /** The TCP engines' secret keys, shared by the port's queues (see TcpEngineOptions.keys). */
  tcpKeys?: number[];
}

/** Counters of one queue's stack, as plain data. */
export interface QueueStats {
  queue: number;
  iface: ReturnType<Interface["counters"]["snapshot"]>;
  tcp: ReturnType<TcpEngine["snapshot"]>;
  memoryReclaims: number;
  apps: ReturnType<RingService["snapshot"]>;
  loop: Record<string, number>;
  neighbours: number;
  /** The fault injector's counters, when it runs. */
  faults?: Record<string, number>;
  /** The control socket: attaches and wake fds refused, and why (the last few). */
  control?: { refused: number; lastErrors: string[] };
}

export class QueueStack {
  readonly device: FrameDevice;
  private readonly capture: PcapWriter | null = null;
  /** Capture on demand (`pno capture`): outermost, so it sees what the stack sends and gets. */
  readonly tap: CaptureTap;
  /** The fault injector between the DPDK queue and everything else, when configured. */
  readonly faults: FaultInjector | null = null;
  readonly iface: Interface;
  readonly loop: PollLoop;
  readonly engine: TcpEngine;
  /** Returns connections' memory to the system once many of them have gone. */
  readonly reclaimer: MemoryReclaimer = new MemoryReclaimer();
  readonly services: Services | null;
  readonly rings: RingService;
  private readonly regionServer: RegionServer | null;
  /** This queue's section of the stats page, when there is a page. */
  private readonly statsMapping: Mapping | null = null;
  private readonly publisher: QueuePublisher | null = null;
  /** Wakes the sleeping loop on a frame (PNO_WIRE_WAKE=0 turns it off, for comparison). */
  private readonly wireWake: WireWake | null;
  /** The eventfd a sleeping loop also waits on: the region server's, or one of its own. */
  private readonly waker: Waker | null;
  /** rte_eth_dev_rx_intr_enable's answer for this queue (net_af_packet: -ENOTSUP). */
  private readonly rxInterrupt: number;

  constructor(dp: DpLibrary, pool: Uint8Array, readonly config: QueueStackConfig) {
    // The pool is native memory: ring copies between it and a region are one memcpy each.
    registerNativeMemory(pool.buffer, dp.pno_dp_pool_base());
    const queue = new DpdkQueue(dp, config.portId, config.queue, pool);
    // The injector plays the impaired network, so it sits next to the port, and a capture
    // wraps it: the pcap shows what the stack's port saw (inbound after loss, delay and
    // reordering, stamped when delivered; outbound as sent, before the injector loses any),
    // as tcpdump on a host behind a netem link would.
    let device: FrameDevice = queue;
    if (config.faults) device = this.faults = new FaultInjector(queue, config.faults);
    if (config.pcap) device = this.capture = PcapWriter.open(device, config.pcap);
    this.device = this.tap = new CaptureTap(device);
    this.iface = new Interface(this.device, {
      mac: config.mac,
      ip: config.ip,
      prefix: config.prefix,
    });
    this.engine = new TcpEngine(new InterfaceTcpLink(this.iface), {
      localIp: config.ip,
      multiQueue: config.multiQueue,
      autotune: !config.fixedBuffers,
      keys: config.tcpKeys && Uint32Array.from(config.tcpKeys),
    });
    this.iface.tcpHandler = (buf, off, len, src, dst, now) =>
      this.engine.input(buf, off, len, src, dst, now);
    this.iface.tcpPmtuHandler = (lip, lport, rip, rport, seq, mtu) =>
      this.engine.icmpFragNeeded(lip, lport, rip, rport, seq, mtu);
    this.services = config.services ? startServices(this.engine) : null;
    this.rings = new RingService(this.engine, config.ip, config.dma);
    this.regionServer = config.control
      ? new RegionServer(config.control, this.rings, undefined, config.ip, config.statsPage?.fd)
      : null;

    const rs = this.regionServer, rings = this.rings;
    this.rxInterrupt = dp.pno_dp_rx_intr_probe(config.portId, config.queue);
    const wake = this.wireWake = config.iface === null || Deno.env.get("PNO_WIRE_WAKE") === "0"
      ? null
      : config.driver === "af_xdp"
      ? WireWake.onXsk(dp, config.queue)
      : WireWake.open(dp, config.iface);
    // The loop parks on the wire's wake socket (a frame ends the nap, as an RX interrupt would)
    // and on the region server's eventfd (an application posting commands to a parked bridge
    // kicks it); stop() kicks the eventfd, so a bridge without regions gets one of its own.
    const waker = this.waker = rs !== null ? rs.waker : wake !== null ? Waker.create() : null;
    const parking: Parking | null = waker === null ? null : {
      park: () => {
        if (rs !== null && !rings.park()) return false;
        wake?.arm();
        return true;
      },
      unpark: () => {
        if (rs !== null) rings.unpark();
        wake?.disarm();
      },
      wait: wake !== null
        ? (ms) => wake.wait(waker.fd, ms)
        : async (ms) => (await waker.wait(ms)) ? WOKE_KICK : 0,
      ...(wake !== null ? { waitHere: (ms: number) => wake.waitHere(waker.fd, ms) } : {}),
      kick: () => waker.kick(),
    };
    const faults = this.faults, engine = this.engine;
    this.loop = new PollLoop(
      (now) => this.step(now),
      // Held frames fall due on their own: the loop must not nap past them.
      faults === null
        ? () => engine.nextDeadline()
        : () => Math.min(engine.nextDeadline(), faults.nextDue()),
      // A frame wakes the loop, so an idle one may sleep until its next deadline (capped: the
      // memory reclaimer looks at idle rounds).
      wake !== null ? { ...DEFAULT_BACKOFF, maxSleepMs: 100 } : DEFAULT_BACKOFF,
      parking,
      () => rings.takeControlPending(),
    );
    if (config.statsPage) {
      this.statsMapping = mapFd(config.statsPage.fd);
      this.publisher = new QueuePublisher(this.statsMapping.buffer, config.statsPage.schema, {
        queue: config.queue,
        iface: this.iface.counters,
        loop: this.loop.counters,
        engine: this.engine,
        rings: this.rings,
      });
    }
  }

  /** One round: receive and process a burst, run TCP timers and output, send the frames. */
  step(nowMs: number): number {
    const n = this.iface.poll(nowMs);
    const commands = this.rings.poll(nowMs);
    // A full burst leaves frames in the port: timers that wait for ACKs look again next round.
    this.engine.inputPending = this.iface.lastBurst >= DP_BURST;
    this.engine.poll(nowMs);
    // Edges the engine raised this round reach the applications' waiters before we sleep.
    this.rings.flushEvents();
    const sent = this.device.flush();
    // A wakeup's disarm, after the answer to the frame that woke us is on its way.
    this.wireWake?.settle();
    // Frames the engine sent to our own address are received next round: work, not a nap.
    const work = n + commands + sent + this.iface.loopbackPending;
    if (work === 0) {
      this.reclaimer.idle(this.engine.connectionCount(), nowMs);
      this.reclaimer.released(trimQuietBuffers(this.engine, nowMs), nowMs);
    }
    this.publisher?.maybePublish(nowMs);
    return work;
  }

  /** Sends what is pending and closes the capture file, once the loop has ended. */
  finish(): void {
    this.regionServer?.close();
    this.wireWake?.close();
    if (this.waker !== null && this.regionServer === null) this.waker.close();
    this.device.flush();
    this.capture?.close();
    this.publisher?.publish();
    if (this.statsMapping) unmap(this.statsMapping);
  }

  /** Every connection of this queue's engine, with its TCB and counters. */
  connections(): Array<Record<string, number | string>> {
    return (this.engine.snapshot(true).perConnection ?? []).map((c) => ({
      queue: this.config.queue,
      ...c,
    }));
  }

  stats(): QueueStats {
    return {
      queue: this.config.queue,
      iface: this.iface.counters.snapshot(),
      tcp: this.engine.snapshot(),
      memoryReclaims: this.reclaimer.reclaims,
      apps: this.rings.snapshot(),
      loop: {
        ...this.loop.counters,
        wireWake: this.wireWake ? 1 : 0,
        rxInterrupt: this.rxInterrupt,
      },
      neighbours: this.iface.arp.size(performance.now()),
      ...(this.faults ? { faults: this.faults.counters.snapshot() } : {}),
      ...(this.regionServer
        ? {
          control: {
            refused: this.regionServer.refused,
            lastErrors: [...this.regionServer.lastErrors],
          },
        }
        : {}),
    };
  }
}

/** Views the mbuf pool of an initialised libpno_dp (any thread of the process). */
export function poolView(dp: DpLibrary): Uint8Array {
  const base = dp.pno_dp_pool_base();
  if (base === null) throw new Error("libpno_dp has no mbuf pool yet");
  return new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(base, Number(dp.pno_dp_pool_size())));
}
