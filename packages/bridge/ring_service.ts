/**
 * The ring service: serves applications' regions with the TCP engine.
 *
 * Each attached region brings G-rings (one command ring and one completion/event ring per
 * application thread) and S-rings (a TX and an RX byte ring per socket). A poll round reads
 * every thread's new commands, checks each (the region is untrusted: opcodes, socket ids and
 * fields are validated, and a socket id must name a socket of this region that is open),
 * runs it against the engine and writes the completion. A socket's S-rings are its engine
 * streams: the engine sends straight from the TX ring and receives straight into the RX ring,
 * so no buffer sits between the application's memory and the mbufs. Readiness flows back
 * twice: as bits in the socket's state word (for epoll without a syscall) and as event
 * descriptors on the owning thread's completion ring.
 *
 * A socket the application closed keeps its rings until the engine no longer needs them (its
 * unsent bytes and FIN are acknowledged, or it was reset); only then is the slot reused. When
 * an application goes away, its connections are reset and its region unmapped.
 *
 * @module
 */
import { nicGRings, nicSRings } from "../rings/attach.ts";
import { RING_CONS_OFFSET, RING_FAULT, RING_PROD_OFFSET } from "../rings/byte_ring.ts";
import type { DescRingConsumer, DescRingProducer } from "../rings/desc_ring.ts";
import * as D from "../rings/descriptors.ts";
import {
  DOORBELL_SLEEPING,
  regionDoorbellOffset,
  sPairOffset,
  STATE_ERROR,
  STATE_HUP,
  STATE_READABLE,
  STATE_WRITABLE,
  stateOffset,
  threadDoorbellOffset,
} from "../rings/layout.ts";
import type { Region } from "../rings/region.ts";
import { kickFd } from "../rings/waker.ts";
import { type DmaKnobs, DmaLink } from "./dma.ts";
import { DmaRxStream, DmaTxStream } from "./dma_streams.ts";
import { type TcpEngine, TcpError } from "./tcp/engine.ts";
import {
  CLOSED,
  EV_ACCEPT,
  EV_CLOSED,
  EV_CONNECTED,
  EV_PEER_CLOSED,
  EV_READABLE,
  EV_RESET,
  EV_WRITABLE,
  FIN_WAIT_2,
  LISTEN,
  NO_STREAM,
  OPT_KEEPALIVE,
  OPT_LINGER,
  OPT_NODELAY,
  type SocketOptions,
  type SocketStreams,
  type TcpSocket,
  TIME_WAIT,
} from "./tcp/socket.ts";

const EBADF = 9;
const EAGAIN = 11;
const EINVAL = 22;
const EMFILE = 24;
const EOPNOTSUPP = 95;
const EADDRINUSE = 98;
const EADDRNOTAVAIL = 99;
const EISCONN = 106;
const EINPROGRESS = 115;
const ECONNRESET = 104;

/** What the service needs of a region: its memory and layout (a mapped memfd, in the bridge). */
export interface RegionMemory {
  readonly buffer: ArrayBufferLike;
  readonly layout: Region["layout"];
}

/** Pending ring events of a socket, posted when its thread's completion ring has room. */
const P_READABLE = 1, P_WRITABLE = 2, P_PEER_CLOSED = 4, P_RESET = 8, P_CONNECTED = 16;
const P_EVENTS: ReadonlyArray<readonly [number, number]> = [
  [P_CONNECTED, D.EV_CONNECTED],
  [P_READABLE, D.EV_READABLE],
  [P_WRITABLE, D.EV_WRITABLE],
  [P_PEER_CLOSED, D.EV_PEER_CLOSED],
  [P_RESET, D.EV_RESET],
];

/** `execute` results that are not a CPL_RESULT value: no completion, or one already written. */
const NO_REPLY = 0x7fff0001;
const REPLIED = 0x7fff0002;

/** Commands read from one thread's ring per round: bounds the work one application causes. */
const COMMAND_BATCH = 64;

/** One socket of a region. */
class Slot {
  inUse = false;
  /** The application has not closed it. */
  hostOpen = false;
  tcp: TcpSocket | null = null;
  /** Thread whose completion ring gets its events; -1 until an accepted child is accepted. */
  thread = -1;
  boundPort = 0;
  pending = 0;
  queued = false;
  nodelay = false;
  keepalive = false;
  linger = -1;

  constructor(readonly app: AttachedApp, readonly index: number) {}
}

/** Counters of one attached application. */
export class AppCounters {
  commands = 0;
  completions = 0;
  events = 0;
  /** Commands refused by the checker or naming a socket that is not open. */
  rejected = 0;
  /** Ring indices found inconsistent (a broken or hostile producer). */
  ringFaults = 0;
  socketsOpen = 0;
  /** Eventfd writes that woke a parked application thread. */
  kicks = 0;
}

/** An application's region as the bridge serves it. */
export class AttachedApp {
  readonly counters = new AppCounters();
  readonly threads: Array<{ commands: DescRingConsumer; completions: DescRingProducer }>;
  readonly slots: Slot[];
  readonly checker: D.CommandChecker;
  /** Free slot indices, a stack. */
  private readonly free: Int32Array;
  private freeTop: number;
  /** Slots with events to post, a FIFO over preallocated memory. */
  readonly evQueue: Int32Array;
  evHead = 0;
  evLen = 0;
  /** Slots closed by the application whose connections still use their rings. */
  readonly draining: Set<Slot> = new Set<Slot>();
  private readonly states: Int32Array;
  private readonly indices: Uint32Array;
  /** Each thread's eventfd (from MSG_WAKER), or -1: kicked when it parks with completions. */
  readonly wakeFds: Int32Array;
  /** Word index of the region doorbell's sleeping flag (the bridge's own). */
  private readonly bridgeSleeping: number;

  /** The emulated PCIe link to this application's memory. */
  readonly dma: DmaLink;

  constructor(
    readonly id: number,
    readonly region: RegionMemory,
    readonly pid: number,
    dmaKnobs: Partial<DmaKnobs> = {},
  ) {
    this.dma = new DmaLink(dmaKnobs);
    const p = region.layout.params;
    this.threads = Array.from(
      { length: p.maxThreads },
      (_, t) => nicGRings(region.buffer, region.layout, t),
    );
    this.slots = Array.from({ length: p.maxSockets }, (_, i) => new Slot(this, i));
    this.checker = new D.CommandChecker(p.maxSockets);
    this.free = new Int32Array(p.maxSockets);
    for (let i = 0; i < p.maxSockets; i++) this.free[i] = p.maxSockets - 1 - i;
    this.freeTop = p.maxSockets;
    this.evQueue = new Int32Array(p.maxSockets);
    this.states = new Int32Array(region.buffer);
    this.indices = new Uint32Array(region.buffer);
    this.wakeFds = new Int32Array(p.maxThreads).fill(-1);
    this.bridgeSleeping = (regionDoorbellOffset(region.layout) + DOORBELL_SLEEPING) >> 2;
  }

  /**
   * Wakes every thread that parked (its doorbell's sleeping flag set) while its completion
   * ring holds entries. The flag is the application's to scribble on; at worst a hostile one
   * makes us write its own eventfd once per round.
   */
  kickSleepers(): void {
    for (let t = 0; t < this.wakeFds.length; t++) {
      const fd = this.wakeFds[t];
      if (fd < 0) continue;
      const flag = (threadDoorbellOffset(this.region.layout, t) + DOORBELL_SLEEPING) >> 2;
      if (Atomics.load(this.states, flag) === 0) continue;
      if (this.threads[t].completions.pending() <= 0) continue;
      if (Atomics.exchange(this.states, flag, 0) === 0) continue;
      kickFd(fd);
      this.counters.kicks++;
    }
  }

  /**
   * The bridge is about to park: says so in the region doorbell, then looks at the command
   * rings once more. Returns false (and takes the flag back) if commands are waiting.
   */
  park(): boolean {
    if (this.evLen > 0) return false; // events the engine raised are still to be posted
    Atomics.store(this.states, this.bridgeSleeping, 1);
    for (const { commands } of this.threads) {
      // Only real commands keep the bridge up: a faulted ring index (RING_FAULT) is a broken
      // application's problem, counted when served, and must not keep a core spinning.
      if (commands.peek(1) > 0) {
        this.unpark();
        return false;
      }
    }
    return true;
  }

  /** The bridge is awake again. */
  unpark(): void {
    Atomics.store(this.states, this.bridgeSleeping, 0);
  }

  /** Takes a free slot with empty rings, or null. */
  allocate(thread: number): Slot | null {
    if (this.freeTop === 0) return null;
    const slot = this.slots[this.free[--this.freeTop]];
    const layout = this.region.layout;
    // A reused slot's rings may hold a previous connection's unread bytes: start all four
    // indices at zero. The application has no handle on a free slot, so nobody races this.
    const pair = sPairOffset(layout, slot.index);
    for (const ctrl of [layout.txCtrl, layout.rxCtrl]) {
      Atomics.store(this.indices, (pair + ctrl + RING_PROD_OFFSET) >> 2, 0);
      Atomics.store(this.indices, (pair + ctrl + RING_CONS_OFFSET) >> 2, 0);
    }
    const st = stateOffset(layout, slot.index) >> 2;
    Atomics.store(this.states, st, 0);
    Atomics.store(this.states, st + 1, 0);
    slot.inUse = true;
    slot.hostOpen = true;
    slot.tcp = null;
    slot.thread = thread;
    slot.boundPort = 0;
    slot.pending = 0;
    slot.nodelay = false;
    slot.keepalive = false;
    slot.linger = -1;
    this.counters.socketsOpen++;
    return slot;
  }

  /** Returns a slot to the free stack; its connection no longer touches the rings. */
  release(slot: Slot): void {
    if (!slot.inUse) return;
    if (slot.tcp !== null) {
      slot.tcp.tx = NO_STREAM;
      slot.tcp.rx = NO_STREAM;
      slot.tcp.userData = null;
    }
    slot.inUse = false;
    slot.hostOpen = false;
    slot.tcp = null;
    slot.pending = 0;
    this.draining.delete(slot);
    this.free[this.freeTop++] = slot.index;
    this.counters.socketsOpen--;
  }

  /** The engine streams of a slot: its S-rings in the region. */
  streams(slot: Slot): SocketStreams {
    const s = nicSRings(this.region.buffer, this.region.layout, slot.index);
    if (!this.dma.active) return s;
    return { tx: new DmaTxStream(s.tx, this.dma), rx: new DmaRxStream(s.rx, this.dma) };
  }

  /** Sets readiness bits (and an error) in the socket's state word; bumps its sequence. */
  setState(slot: Slot, set: number, clear: number, err = 0): void {
    const st = stateOffset(this.region.layout, slot.index) >> 2;
    if (clear !== 0) Atomics.and(this.states, st, ~clear);
    if (set !== 0) Atomics.or(this.states, st, set);
    if (err !== 0) Atomics.store(this.states, st + 1, err);
    Atomics.add(this.states, st + 2, 1);
  }

  /** Queues a slot's pending events for posting. */
  queueEvents(slot: Slot, bits: number): void {
    slot.pending |= bits;
    if (slot.queued || slot.thread < 0) return;
    slot.queued = true;
    this.evQueue[(this.evHead + this.evLen++) % this.evQueue.length] = slot.index;
  }
}

/** Global counters of the ring service. */
export class RingServiceCounters {
  attached = 0;
  detached = 0;
}

export class RingService {
  readonly counters = new RingServiceCounters();
  readonly apps: Map<number, AttachedApp> = new Map<number, AttachedApp>();
  private nextAppId = 1;
  private readonly onEvent = (s: TcpSocket, ev: number) => this.handleEvent(s, ev);
  private lastDrainCheck = 0;

  constructor(
    private readonly engine: TcpEngine,
    private readonly localIp: number,
    /** Emulated PCIe link effects for every attached region (none by default). */
    private readonly dmaKnobs: Partial<DmaKnobs> = {},
  ) {}

  /** Starts serving a region; `pid` is the application's, for stats and logs. */
  attach(region: RegionMemory, pid: number): AttachedApp {
    const app = new AttachedApp(this.nextAppId++, region, pid, this.dmaKnobs);
    this.apps.set(app.id, app);
    this.counters.attached++;
    return app;
  }

  /**
   * Stops serving an application that went away: its connections are reset and its
   * listeners closed, and no engine object keeps a view of its memory. The caller unmaps.
   */
  detach(app: AttachedApp): void {
    for (const slot of app.slots) {
      if (!slot.inUse) continue;
      const tcp = slot.tcp;
      if (tcp !== null && tcp.state !== CLOSED) {
        tcp.onEvent = null;
        if (tcp.state === LISTEN) this.engine.close(tcp);
        else this.engine.abort(tcp);
      }
      app.release(slot);
    }
    this.apps.delete(app.id);
    this.counters.detached++;
  }

  /** One round over every region: commands in, events out. Returns the work done. */
  poll(nowMs: number): number {
    let work = 0;
    for (const app of this.apps.values()) {
      for (let t = 0; t < app.threads.length; t++) work += this.serveThread(app, t);
      work += this.postEvents(app);
      app.kickSleepers();
      if (app.draining.size > 0 && nowMs - this.lastDrainCheck >= 10) this.checkDraining(app);
    }
    if (nowMs - this.lastDrainCheck >= 10) this.lastDrainCheck = nowMs;
    return work;
  }

  /** The loop is about to park: true unless some region has commands waiting. */
  park(): boolean {
    for (const app of this.apps.values()) {
      if (!app.park()) {
        for (const a of this.apps.values()) a.unpark();
        return false;
      }
    }
    return true;
  }

  /** The loop woke up. */
  unpark(): void {
    for (const app of this.apps.values()) app.unpark();
  }

  /** Statistics of every attached application. */
  snapshot(): Array<Record<string, number>> {
    return [...this.apps.values()].map((app) => ({
      app: app.id,
      pid: app.pid,
      ...app.counters,
      checkerBadOpcode: app.checker.badOpcode,
      checkerBadSock: app.checker.badSock,
      checkerBadField: app.checker.badField,
      dmaTransfers: app.dma.counters.transfers,
      dmaBytesRead: app.dma.counters.bytesRead,
      dmaBytesWritten: app.dma.counters.bytesWritten,
    }));
  }

  private serveThread(app: AttachedApp, t: number): number {
    const { commands, completions } = app.threads[t];
    const n = commands.peek(COMMAND_BATCH);
    if (n === RING_FAULT) {
      app.counters.ringFaults++;
      return 0;
    }
    if (n === 0) return 0;
    // Every command may need a completion: take no more commands than there is room for.
    const room = completions.reserve(n);
    if (room === RING_FAULT) {
      app.counters.ringFaults++;
      return 0;
    }
    const v = commands.view;
    let done = 0, posted = 0;
    for (; done < n && posted < room; done++) {
      const at = commands.slotOffset(done);
      const reqId = D.readReqId(v, at);
      const result = this.execute(app, t, v, at, completions, posted);
      if (result === REPLIED) posted++;
      if (result === NO_REPLY || result === REPLIED) continue;
      const out = completions.slotOffset(posted++);
      D.writeHeader(completions.view, out, D.CPL_RESULT, D.readSock(v, at), reqId, result);
      completions.view.setUint16(out + D.RESULT_CMD_OPCODE, D.readOpcode(v, at), true);
    }
    commands.release(done);
    if (posted > 0) completions.publish(posted);
    app.counters.commands += done;
    app.counters.completions += posted;
    return done;
  }

  /**
   * Runs one command. Returns the value for its CPL_RESULT; REPLIED when it wrote its own
   * completion into slot `cplIndex` (accept, getsockopt); NO_REPLY for doorbells.
   */
  private execute(
    app: AttachedApp,
    thread: number,
    v: DataView,
    at: number,
    cpl: DescRingProducer,
    cplIndex: number,
  ): number {
    if (app.checker.check(v, at) !== D.DESC_OK) {
      app.counters.rejected++;
      return -EINVAL;
    }
    const op = D.readOpcode(v, at);
    if (op === D.CMD_SOCKET) {
      const type = v.getInt32(at + D.SOCKET_TYPE, true) & 0xf;
      if (v.getInt32(at + D.SOCKET_DOMAIN, true) !== D.AF_INET || type !== 1) return -EOPNOTSUPP;
      const slot = app.allocate(thread);
      return slot === null ? -EMFILE : slot.index;
    }
    const slot = app.slots[D.readSock(v, at)];
    if (!slot.inUse || !slot.hostOpen) {
      app.counters.rejected++;
      return -EBADF;
    }
    const tcp = slot.tcp;
    try {
      switch (op) {
        case D.CMD_BIND: {
          const ip = D.readSockaddrV4(v, at + D.BIND_ADDR);
          const port = D.readSockaddrPort(v, at + D.BIND_ADDR);
          if (ip !== 0 && ip !== this.localIp) return -EADDRNOTAVAIL;
          if (tcp !== null || slot.boundPort !== 0) return -EINVAL;
          if (port !== 0 && this.portTaken(port)) return -EADDRINUSE;
          slot.boundPort = port;
          return 0;
        }
        case D.CMD_LISTEN: {
          if (tcp !== null && tcp.state === LISTEN) return 0;
          if (tcp !== null || slot.boundPort === 0) return -EINVAL;
          const backlog = Math.min(Math.max(v.getInt32(at + D.LISTEN_BACKLOG, true), 1), 4096);
          slot.tcp = this.engine.listen(slot.boundPort, backlog, this.childOptions(app, slot));
          slot.tcp.userData = slot;
          return 0;
        }
        case D.CMD_ACCEPT:
          this.accept(app, thread, slot, cpl, cplIndex, D.readReqId(v, at));
          return REPLIED;
        case D.CMD_CONNECT: {
          if (tcp !== null) return tcp.state === LISTEN ? -EINVAL : -EISCONN;
          const ip = D.readSockaddrV4(v, at + D.CONNECT_ADDR);
          const port = D.readSockaddrPort(v, at + D.CONNECT_ADDR);
          const opts = this.socketOptions(app, slot);
          slot.tcp = this.engine.connect(ip, port, {
            ...opts,
            srcIp: this.localIp,
            srcPort: slot.boundPort || undefined,
          });
          slot.tcp.userData = slot;
          return -EINPROGRESS;
        }
        case D.CMD_CLOSE:
          this.closeSlot(app, slot);
          return 0;
        case D.CMD_SHUTDOWN: {
          const how = v.getInt32(at + D.SHUTDOWN_HOW, true);
          if (tcp === null || tcp.state === LISTEN) return -107; // ENOTCONN
          if (how !== 0) this.engine.shutdown(tcp);
          return 0;
        }
        case D.CMD_SETSOCKOPT:
          return this.setOption(slot, v, at);
        case D.CMD_GETSOCKOPT:
          return this.getOption(slot, v, at, cpl, cplIndex);
        case D.CMD_TX_AVAIL:
          if (tcp !== null) this.engine.notifyTx(tcp);
          return NO_REPLY;
        case D.CMD_RX_FREED:
          if (tcp !== null) {
            this.engine.notifyRx(tcp);
            // The application read: READABLE holds only while bytes remain.
            if (tcp.rx.writable() === tcp.rcvCap) app.setState(slot, 0, STATE_READABLE);
          }
          return NO_REPLY;
      }
    } catch (err) {
      if (err instanceof TcpError) return err.errno < 0 ? err.errno : -err.errno;
      throw err;
    }
    return -EINVAL;
  }

  private accept(
    app: AttachedApp,
    thread: number,
    slot: Slot,
    cpl: DescRingProducer,
    cplIndex: number,
    reqId: number,
  ): void {
    const out = cpl.slotOffset(cplIndex);
    const cv = cpl.view;
    const l = slot.tcp;
    const child = l !== null && l.state === LISTEN ? this.engine.accept(l) : null;
    if (child === null) {
      if (l !== null && l.state === LISTEN) app.setState(slot, 0, STATE_READABLE);
      const err = l === null || l.state !== LISTEN ? -EINVAL : -EAGAIN;
      D.writeHeader(cv, out, D.CPL_ACCEPT, slot.index, reqId, err);
      return;
    }
    const childSlot = child.userData as Slot;
    childSlot.thread = thread;
    D.writeHeader(cv, out, D.CPL_ACCEPT, slot.index, reqId, 0);
    cv.setUint32(out + D.ACCEPT_NEW_SOCK, childSlot.index, true);
    D.writeSockaddrV4(cv, out + D.ACCEPT_PEER, child.remoteIp, child.remotePort);
    D.writeSockaddrV4(cv, out + D.ACCEPT_LOCAL, child.localIp, child.localPort);
    if (child.state === CLOSED) {
      app.setState(childSlot, STATE_HUP | STATE_ERROR, STATE_WRITABLE, ECONNRESET);
      app.queueEvents(childSlot, P_RESET);
    } else if (childSlot.pending !== 0) {
      app.queueEvents(childSlot, 0);
    }
  }

  /** Options for a listener's children: their S-rings come from free slots of the region. */
  private childOptions(app: AttachedApp, listener: Slot): SocketOptions {
    return {
      nodelay: listener.nodelay,
      keepalive: listener.keepalive,
      linger: listener.linger,
      onEvent: this.onEvent,
      streams: (s: TcpSocket) => {
        const slot = app.allocate(-1);
        if (slot === null) return null;
        slot.tcp = s;
        s.userData = slot;
        app.setState(slot, STATE_WRITABLE, 0);
        return app.streams(slot);
      },
    };
  }

  private socketOptions(app: AttachedApp, slot: Slot): SocketOptions {
    return {
      nodelay: slot.nodelay,
      keepalive: slot.keepalive,
      linger: slot.linger,
      onEvent: this.onEvent,
      streams: () => app.streams(slot),
    };
  }

  private closeSlot(app: AttachedApp, slot: Slot): void {
    slot.hostOpen = false;
    slot.pending = 0;
    const tcp = slot.tcp;
    if (tcp === null || tcp.state === CLOSED) {
      app.release(slot);
      return;
    }
    if (tcp.state === LISTEN) {
      this.engine.close(tcp);
      app.release(slot);
      return;
    }
    this.engine.close(tcp);
    if (this.ringsIdle(tcp)) app.release(slot);
    else app.draining.add(slot);
  }

  /** True once a closed connection no longer reads its TX ring nor writes its RX ring. */
  private ringsIdle(tcp: TcpSocket): boolean {
    return tcp.state === CLOSED || tcp.state === TIME_WAIT || tcp.state === FIN_WAIT_2;
  }

  private checkDraining(app: AttachedApp): void {
    for (const slot of app.draining) {
      if (slot.tcp === null || this.ringsIdle(slot.tcp)) app.release(slot);
    }
  }

  private portTaken(port: number): boolean {
    for (const app of this.apps.values()) {
      for (const s of app.slots) {
        if (s.inUse && s.boundPort === port && s.tcp !== null && s.tcp.state === LISTEN) {
          return true;
        }
      }
    }
    return false;
  }

  private setOption(slot: Slot, v: DataView, at: number): number {
    const level = v.getInt32(at + D.SOCKOPT_LEVEL, true);
    const name = v.getInt32(at + D.SOCKOPT_NAME, true);
    const value = v.getInt32(at + D.SOCKOPT_VALUE, true);
    const value2 = v.getInt32(at + D.SOCKOPT_VALUE2, true);
    let opt = 0, arg = value;
    if (level === D.IPPROTO_TCP && name === D.TCP_NODELAY) {
      slot.nodelay = value !== 0;
      opt = OPT_NODELAY;
      arg = value !== 0 ? 1 : 0;
    } else if (level === D.SOL_SOCKET && name === D.SO_KEEPALIVE) {
      slot.keepalive = value !== 0;
      opt = OPT_KEEPALIVE;
      arg = value !== 0 ? 1 : 0;
    } else if (level === D.SOL_SOCKET && name === D.SO_LINGER) {
      slot.linger = value !== 0 ? Math.max(0, value2) : -1;
      opt = OPT_LINGER;
      arg = slot.linger;
    } else {
      // SO_REUSEADDR, SO_SNDBUF, SO_RCVBUF: accepted; ring sizes are fixed per region.
      return 0;
    }
    if (slot.tcp !== null && slot.tcp.state !== LISTEN) {
      const r = this.engine.setOption(slot.tcp, opt, arg);
      return r < 0 ? r : 0;
    }
    return 0;
  }

  private getOption(
    slot: Slot,
    v: DataView,
    at: number,
    cpl: DescRingProducer,
    cplIndex: number,
  ): number {
    const level = v.getInt32(at + D.SOCKOPT_LEVEL, true);
    const name = v.getInt32(at + D.SOCKOPT_NAME, true);
    let value = 0, value2 = 0;
    if (level === D.SOL_SOCKET && name === D.SO_ERROR) {
      const tcp = slot.tcp;
      value = tcp !== null && tcp.error !== 0 ? -tcp.error : 0;
    } else if (level === D.IPPROTO_TCP && name === D.TCP_NODELAY) value = slot.nodelay ? 1 : 0;
    else if (level === D.SOL_SOCKET && name === D.SO_KEEPALIVE) value = slot.keepalive ? 1 : 0;
    else if (level === D.SOL_SOCKET && name === D.SO_LINGER) {
      value = slot.linger >= 0 ? 1 : 0;
      value2 = Math.max(0, slot.linger);
    } else if (level === D.SOL_SOCKET && (name === D.SO_SNDBUF || name === D.SO_RCVBUF)) {
      const layout = slot.app.region.layout.params;
      value = name === D.SO_SNDBUF ? layout.txBytes : layout.rxBytes;
    }
    const out = cpl.slotOffset(cplIndex);
    D.writeHeader(cpl.view, out, D.CPL_RESULT, slot.index, D.readReqId(v, at), 0);
    cpl.view.setUint16(out + D.RESULT_CMD_OPCODE, D.CMD_GETSOCKOPT, true);
    cpl.view.setInt32(out + D.RESULT_VALUE, value, true);
    cpl.view.setInt32(out + D.RESULT_VALUE2, value2, true);
    return REPLIED;
  }

  private handleEvent(s: TcpSocket, ev: number): void {
    const slot = s.userData as Slot | null;
    if (slot === null || !slot.inUse || !slot.hostOpen) return;
    const app = slot.app;
    let set = 0, clear = 0, bits = 0, err = 0;
    if (ev & (EV_READABLE | EV_ACCEPT)) {
      set |= STATE_READABLE;
      bits |= P_READABLE;
    }
    if (ev & EV_WRITABLE) {
      set |= STATE_WRITABLE;
      bits |= P_WRITABLE;
    }
    if (ev & EV_CONNECTED) {
      set |= STATE_WRITABLE;
      bits |= P_CONNECTED;
    }
    if (ev & EV_PEER_CLOSED) {
      set |= STATE_READABLE | STATE_HUP;
      bits |= P_PEER_CLOSED;
    }
    if (ev & (EV_RESET | EV_CLOSED) && s.error !== 0) {
      set |= STATE_ERROR | STATE_HUP | STATE_READABLE;
      clear |= STATE_WRITABLE;
      err = -s.error;
      bits |= P_RESET;
    } else if (ev & EV_CLOSED) {
      set |= STATE_HUP;
    }
    app.setState(slot, set, clear, err);
    if (bits !== 0) app.queueEvents(slot, bits);
  }

  private postEvents(app: AttachedApp): number {
    let posted = 0;
    const q = app.evQueue;
    while (app.evLen > 0) {
      const slot = app.slots[q[app.evHead]];
      if (slot.inUse && slot.hostOpen && slot.thread >= 0 && slot.pending !== 0) {
        const cpl = app.threads[slot.thread].completions;
        let count = 0;
        for (const [bit] of P_EVENTS) if (slot.pending & bit) count++;
        const room = cpl.reserve(count);
        if (room === RING_FAULT) {
          app.counters.ringFaults++;
          break;
        }
        if (room < count) break; // the application is behind: keep the rest for later
        let i = 0;
        for (const [bit, opcode] of P_EVENTS) {
          if ((slot.pending & bit) === 0) continue;
          const out = cpl.slotOffset(i++);
          const result = opcode === D.EV_RESET ? (slot.tcp?.error || -ECONNRESET) : 0;
          D.writeHeader(cpl.view, out, opcode, slot.index, 0, result);
          if (opcode === D.EV_CONNECTED && slot.tcp !== null) {
            D.writeSockaddrV4(
              cpl.view,
              out + D.CONNECTED_LOCAL,
              slot.tcp.localIp,
              slot.tcp.localPort,
            );
            D.writeSockaddrV4(
              cpl.view,
              out + D.CONNECTED_PEER,
              slot.tcp.remoteIp,
              slot.tcp.remotePort,
            );
          }
        }
        cpl.publish(count);
        posted += count;
        app.counters.events += count;
      }
      slot.pending = 0;
      slot.queued = false;
      app.evHead = (app.evHead + 1) % q.length;
      app.evLen--;
    }
    return posted;
  }
}
