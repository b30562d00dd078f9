/**
 * The ring service: serves applications' regions (protocol v2) with the TCP engine.
 *
 * Each attached region brings thread entries (a command ring and a completion ring each),
 * waiters (an event queue each, with a sleeping flag and a wake socket), process entries,
 * socket entries (a line the NIC writes, a line the host writes) and stream pairs. A poll round
 * copies every new command out of the ring once, checks the copy (the region is untrusted:
 * opcode, ids, generation, fields), runs it against the engine and, for the few commands that
 * return something, writes a completion. A socket's stream pair is its engine streams: the
 * engine sends straight from the TX ring and receives straight into the RX ring. A listener's
 * RX ring is its accept queue: established connections wait there as `pno_accept_entry`
 * records, so accept() is a pop in the application.
 *
 * Readiness is the application's to compute (from the socket line and the ring indices, as
 * Linux's tcp_poll does); the service keeps the socket line true and posts edges (an IN per
 * arrival, an OUT when space opens after the ring was short, HUP/RDHUP/ERR on a change) to
 * the waiters subscribed to the socket, then wakes the ones that sleep, through sockets they
 * cannot make us block on.
 *
 * A socket lives until its last holder closes it (CMD_CLOSE) or the last process holding it
 * dies (`reapDeadProcesses`, from the process table). Its slot is reused only once the engine
 * no longer touches its rings; the generation then changes, so stale commands are refused.
 *
 * @module
 */
import { nicGRings } from "../rings/attach.ts";
import {
  NicRxProducer,
  NicTxConsumer,
  RING_CONS_OFFSET,
  RING_FAULT,
  RING_PROD_OFFSET,
} from "../rings/byte_ring.ts";
import { DescRingProducer } from "../rings/desc_ring.ts";
import type { DescRingConsumer } from "../rings/desc_ring.ts";
import * as D from "../rings/descriptors.ts";
import * as E from "../rings/errno.ts";
import {
  ACCEPT_ENTRY,
  DOORBELL_CONTROL,
  DOORBELL_SEQ,
  DOORBELL_SLEEPING,
  KIND_BOUND,
  KIND_CONN,
  KIND_FREE,
  KIND_LISTENER,
  PROC_PID,
  PROC_REFS,
  procOffset,
  SHUT_RCV,
  SHUT_SEND,
  SOCK_DATA_ACK,
  SOCK_ERR,
  SOCK_ERR_SEQ,
  SOCK_GEN,
  SOCK_HOLDERS,
  SOCK_KIND,
  SOCK_LOCAL_IP,
  SOCK_LOCAL_PORT,
  SOCK_LOCK,
  SOCK_PEER_IP,
  SOCK_PLACEHOLDER_INO,
  SOCK_RX_WANT,
  SOCK_SHUTDOWN,
  SOCK_TCP_STATE,
  sockOffset,
  streamOffset,
  WAITER_OVERFLOW,
  WAITER_SLEEPING,
  waiterOffset,
} from "../rings/layout.ts";
import type { Region } from "../rings/region.ts";
import { kickSocket } from "../rings/waker.ts";
import { type DmaKnobs, DmaLink } from "./dma.ts";
import { DmaRxStream, DmaTxStream } from "./dma_streams.ts";
import { type TcpEngine, TcpError } from "./tcp/engine.ts";
import {
  CLOSED,
  ESTABLISHED,
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
  OPT_KEEPCNT,
  OPT_KEEPIDLE,
  OPT_KEEPINTVL,
  OPT_LINGER,
  OPT_NODELAY,
  type SocketOptions,
  type SocketStreams,
  type TcpSocket,
  TIME_WAIT,
} from "./tcp/socket.ts";

/** What the service needs of a region: its memory and layout (a mapped memfd, in the bridge). */
export interface RegionMemory {
  readonly buffer: ArrayBufferLike;
  readonly layout: Region["layout"];
  /** The memfd, to give a drained ring's pages back; -1 when there is none (tests). */
  readonly fd?: number;
}

/** Commands read from one thread's ring per round: bounds the work one application causes. */
const COMMAND_BATCH = 64;
/** Events that always reach a subscriber, whatever its mask (as with Linux's epoll). */
const ALWAYS = D.EPOLLERR | D.EPOLLHUP;
/** Ephemeral ports for bind(port 0), as Linux's ip_local_port_range. */
const EPHEMERAL_LOW = 32768, EPHEMERAL_HIGH = 60999;
/** How long a gone application's connections may keep sending from its region. */
const DETACH_DRAIN_MS = 60_000;
/** Linux's TCP state numbers (include/net/tcp_states.h) by RFC 9293 state, for TCP_INFO. */
const LINUX_STATE = [7, 10, 2, 3, 1, 4, 5, 8, 11, 9, 6];

/** One subscription of a waiter to a socket (an epoll_ctl, or a blocked thread). */
interface Subscription {
  waiter: number;
  waiterGen: number;
  mask: number;
  flags: number;
}

/** One socket of a region. */
class Slot {
  inUse = false;
  gen = 0;
  kind = KIND_FREE;
  tcp: TcpSocket | null = null;
  /** The host still holds it (not closed by its last holder, its processes alive). */
  hostOpen = false;
  boundPort = 0;
  bindOpts = 0;
  nodelay = false;
  keepalive = false;
  keepIdleMs = 0;
  keepIntvlMs = 0;
  keepCnt = 0;
  linger = -1;
  subs: Subscription[] = [];
  /** Edges waiting to be posted, and whether the slot is in the post queue. */
  edges = 0;
  queued = false;
  /** The TX ring was seen short of room: the next release past a third posts OUT. */
  outArmed = false;
  /** Listener: its accept queue (the RX ring as a producer of entries) and what it holds. */
  acceptRing: NicRxProducer | null = null;
  /** Listener: slots pushed into the accept queue, oldest first, for abort on close. */
  pushed: number[] = [];
  /** Round-robin position among EXCLUSIVE subscribers. */
  exclusiveTurn = 0;
  /** Idle reclaim: the ring indices when last looked at, and whether the pages went. */
  reclaimedAt = 0;
  reclaimed = false;

  constructor(readonly app: AttachedApp, readonly index: number) {}
}

/** Counters of one attached application. */
export class AppCounters {
  commands = 0;
  completions = 0;
  events = 0;
  /** Commands refused by the checker or naming a socket that is not open (stale generation). */
  rejected = 0;
  /** Ring indices found inconsistent (a broken or hostile producer). */
  ringFaults = 0;
  socketsOpen = 0;
  /** Wake datagrams sent to sleeping waiters. */
  kicks = 0;
  /** Events dropped because a waiter's queue was full (the waiter is told to rescan). */
  overflows = 0;
  /** Processes of the application seen to die with sockets held. */
  processesReaped = 0;
  /** Ring pages given back after connections closed. */
  pagesReleased = 0;
  /**
   * Payload bytes received in order and acknowledged by connections since released (the stats
   * page adds the open ones').
   */
  closedBytesIn = 0;
  closedBytesOut = 0;
}

/** A waiter as the bridge serves it: its event queue and its wake socket. */
class Waiter {
  wakeFd = -1;
  /** Events posted since the last kick check. */
  dirty = false;
  constructor(readonly events: DescRingProducer) {}
}

/** An application's region as the bridge serves it. */
export class AttachedApp {
  readonly counters = new AppCounters();
  /**
   * The user the application runs as (its first process's real uid; -1 unknown): as on
   * Linux, only listeners of one user share a port through SO_REUSEPORT.
   */
  uid = -1;
  readonly threads: Array<{ commands: DescRingConsumer; completions: DescRingProducer }>;
  readonly waiters: Waiter[];
  readonly slots: Slot[];
  readonly checker: D.CommandChecker;
  /**
   * One past the highest slot ever allocated: the free stack hands out low indices first, so
   * scans of the stats page stop here instead of at maxSockets.
   */
  private slotsUsed = 0;
  /** Free slot indices, a stack. */
  private readonly free: Int32Array;
  private freeTop: number;
  /** Bound and listening slots by port (see holdPort). */
  readonly ports: Map<number, Set<Slot>> = new Map<number, Set<Slot>>();
  /** Slots with edges to post, a FIFO over preallocated memory. */
  readonly evQueue: Int32Array;
  evHead = 0;
  evLen = 0;
  /** Slots closed by the application whose connections still use their rings. */
  readonly draining: Set<Slot> = new Set<Slot>();
  /** Word view of the region (socket lines, waiter lines, ring indices). */
  readonly words: Int32Array;
  /** Halfword view of the region (process entries' per-socket fd counts). */
  private readonly halves: Uint16Array;
  private readonly bridgeSleeping: number;
  /** Private copy of the command being served: the slot may be rewritten while we read. */
  readonly scratch: DataView = new DataView(new ArrayBuffer(64));
  private readonly scratchWords = new Int32Array(this.scratch.buffer);
  /** Waiters with events posted since the last kick check, and how many. */
  private readonly dirtyWaiters: Int32Array;
  private dirtyCount = 0;
  /** The doorbell sequence last seen: command rings are scanned only when it moves. */
  lastDoorbell = -1;
  /** A scan stopped early (batch limit, completion ring full): scan again next round. */
  backlog = true;
  /** Word index of the doorbell sequence. */
  readonly doorbellSeq: number;
  /** Word index of the doorbell's control word, and the value last seen. */
  readonly controlWord: number;
  lastControl = 0;
  /** Every process is gone: connections drain, then the region is let go (`onGone`). */
  detaching = false;
  /** Detached for good: nothing of the engine refers to its memory any more. */
  finished = false;
  detachDeadline = 0;
  onGone: (() => void) | null = null;
  /** Pids of the application's processes as last seen in the process table. */
  readonly knownPids: Int32Array;

  /** The emulated PCIe link to this application's memory. */
  readonly dma: DmaLink;

  constructor(
    readonly id: number,
    readonly region: RegionMemory,
    readonly pid: number,
    dmaKnobs: Partial<DmaKnobs> = {},
  ) {
    this.dma = new DmaLink(dmaKnobs);
    const layout = region.layout;
    const p = layout.params;
    this.threads = Array.from(
      { length: p.maxThreads },
      (_, t) => nicGRings(region.buffer, layout, t),
    );
    this.waiters = Array.from({ length: p.maxWaiters }, (_, w) => {
      const at = waiterOffset(layout, w);
      return new Waiter(
        new DescRingProducer(
          region.buffer,
          at + layout.evCtrl,
          at + layout.evSlotsOffset,
          p.evSlots,
        ),
      );
    });
    this.slots = Array.from({ length: p.maxSockets }, (_, i) => new Slot(this, i));
    this.checker = new D.CommandChecker(p.maxSockets, p.maxWaiters);
    this.free = new Int32Array(p.maxSockets);
    for (let i = 0; i < p.maxSockets; i++) this.free[i] = p.maxSockets - 1 - i;
    this.freeTop = p.maxSockets;
    this.evQueue = new Int32Array(p.maxSockets);
    this.words = new Int32Array(region.buffer);
    this.halves = new Uint16Array(region.buffer);
    this.knownPids = new Int32Array(p.maxProcs);
    this.bridgeSleeping = (layout.doorbellOffset + DOORBELL_SLEEPING) / 4;
    this.doorbellSeq = (layout.doorbellOffset + DOORBELL_SEQ) / 4;
    this.controlWord = (layout.doorbellOffset + DOORBELL_CONTROL) / 4;
    this.dirtyWaiters = new Int32Array(p.maxWaiters);
  }

  /** Copies the descriptor at `at` of `view` into `scratch` (one read of shared memory). */
  copyCommand(bytes: Uint8Array, at: number): DataView {
    // Sixteen word loads, no view made: this runs once per command.
    const base = (bytes.byteOffset + at) / 4;
    const words = this.words, scratch = this.scratchWords;
    for (let i = 0; i < 16; i++) scratch[i] = words[base + i];
    return this.scratch;
  }

  /** Marks a waiter as having new events, for `kickSleepers`. */
  markDirty(w: number): void {
    const waiter = this.waiters[w];
    if (waiter.dirty) return;
    waiter.dirty = true;
    this.dirtyWaiters[this.dirtyCount++] = w;
  }

  /** Word index of field `off` of socket `s`'s entry. */
  sockWord(s: number, off: number): number {
    return (sockOffset(this.region.layout, s) + off) / 4;
  }

  /** Writes a u32 of the NIC line. */
  setSock(s: number, off: number, value: number): void {
    Atomics.store(this.words, this.sockWord(s, off), value | 0);
  }

  /** Writes the two u16 ports of the NIC line. */
  setPorts(s: number, local: number, peer: number): void {
    Atomics.store(this.words, this.sockWord(s, SOCK_LOCAL_PORT), (local | (peer << 16)) | 0);
  }

  /** Records a pending error (SO_ERROR) for the host. */
  setError(s: number, errno: number): void {
    this.setSock(s, SOCK_ERR, errno);
    Atomics.add(this.words, this.sockWord(s, SOCK_ERR_SEQ), 1);
  }

  /**
   * Wakes every waiter that received events this round and sleeps. The flag is the
   * application's to scribble on; at worst a hostile one makes us send to its own socket.
   */
  kickSleepers(): void {
    const layout = this.region.layout;
    const n = this.dirtyCount;
    this.dirtyCount = 0;
    for (let i = 0; i < n; i++) {
      const w = this.dirtyWaiters[i];
      const waiter = this.waiters[w];
      if (waiter.wakeFd < 0) {
        // A wake socket still on its way over the control socket: try again next round.
        this.dirtyWaiters[this.dirtyCount++] = w;
        continue;
      }
      waiter.dirty = false;
      const flag = (waiterOffset(layout, w) + WAITER_SLEEPING) / 4;
      if (Atomics.exchange(this.words, flag, 0) === 0) continue;
      kickSocket(waiter.wakeFd);
      this.counters.kicks++;
    }
  }

  /**
   * The bridge is about to park: says so in the doorbell, then looks at the command rings
   * once more. Returns false (and takes the flag back) if commands are waiting.
   */
  park(): boolean {
    if (this.evLen > 0) return false;
    Atomics.store(this.words, this.bridgeSleeping, 1);
    for (const { commands } of this.threads) {
      // A faulted ring index (RING_FAULT) is a broken application's problem, counted when
      // served, and must not keep a core spinning.
      if (commands.peek(1) > 0) {
        this.unpark();
        return false;
      }
    }
    return true;
  }

  /** The bridge is awake again. */
  unpark(): void {
    Atomics.store(this.words, this.bridgeSleeping, 0);
  }

  /** Takes a free slot with empty rings and a new generation, or null. */
  allocate(kind: number): Slot | null {
    if (this.freeTop === 0) return null;
    const slot = this.slots[this.free[--this.freeTop]];
    if (slot.index >= this.slotsUsed) this.slotsUsed = slot.index + 1;
    const layout = this.region.layout;
    // A reused slot's rings may hold a previous connection's bytes: start all four indices
    // at zero. The application has no valid handle on a free slot, so nobody races this.
    const pair = streamOffset(layout, slot.index);
    for (const ctrl of [layout.txCtrl, layout.rxCtrl]) {
      Atomics.store(this.words, (pair + ctrl + RING_PROD_OFFSET) / 4, 0);
      Atomics.store(this.words, (pair + ctrl + RING_CONS_OFFSET) / 4, 0);
    }
    const s = slot.index;
    slot.gen = (slot.gen + 1) >>> 0 || 1;
    // The whole entry but the generation starts over: the NIC line, and the host line (lock,
    // holders, acknowledgements), which no holder of the new socket can have written yet.
    const entry = sockOffset(layout, s) / 4;
    for (let w = 0; w < 32; w++) {
      if (w !== SOCK_GEN >> 2) Atomics.store(this.words, entry + w, 0);
    }
    this.setPorts(s, 0, 0);
    this.setSock(s, SOCK_LOCAL_IP, 0);
    this.setSock(s, SOCK_PEER_IP, 0);
    this.setSock(s, SOCK_KIND, kind);
    this.setSock(s, SOCK_GEN, slot.gen);
    slot.inUse = true;
    slot.hostOpen = true;
    slot.kind = kind;
    slot.tcp = null;
    slot.boundPort = 0;
    slot.bindOpts = 0;
    slot.nodelay = false;
    slot.keepalive = false;
    slot.keepIdleMs = slot.keepIntvlMs = slot.keepCnt = 0;
    slot.linger = -1;
    slot.subs = [];
    slot.edges = 0;
    slot.outArmed = false;
    slot.acceptRing = null;
    slot.pushed = [];
    this.counters.socketsOpen++;
    return slot;
  }

  /** Returns a slot to the free stack; its connection no longer touches the rings. */
  release(slot: Slot): void {
    if (!slot.inUse) return;
    this.dropPort(slot);
    if (slot.tcp !== null) {
      this.counters.closedBytesIn += slot.tcp.bytesReceived();
      this.counters.closedBytesOut += slot.tcp.bytesAcked();
      slot.tcp.tx = NO_STREAM;
      slot.tcp.rx = NO_STREAM;
      slot.tcp.userData = null;
    }
    slot.inUse = false;
    slot.hostOpen = false;
    slot.tcp = null;
    slot.edges = 0;
    slot.subs = [];
    slot.kind = KIND_FREE;
    slot.acceptRing = null;
    slot.pushed = [];
    this.setSock(slot.index, SOCK_KIND, KIND_FREE);
    this.draining.delete(slot);
    this.releasePages(slot.index);
    this.free[this.freeTop++] = slot.index;
    this.counters.socketsOpen--;
  }

  /** Records a bound (or listening) slot's port: a bind looks ports up, walking no sockets. */
  holdPort(slot: Slot, port: number): void {
    slot.boundPort = port;
    let held = this.ports.get(port);
    if (held === undefined) this.ports.set(port, held = new Set<Slot>());
    held.add(slot);
  }

  /** The slot no longer holds its port (released, or connected from its bound port). */
  dropPort(slot: Slot): void {
    const held = this.ports.get(slot.boundPort);
    if (held === undefined || !held.delete(slot)) return;
    if (held.size === 0) this.ports.delete(slot.boundPort);
  }

  /**
   * Stats page, at `out[at..at+5)`: bytes waiting in this application's rings (TX written by the
   * host and not yet acknowledged, RX received and not yet read), its open connections and
   * listeners, and the payload bytes its connections received and sent. Reads only indices;
   * a hostile producer's can make the figure wrong, nothing else.
   */
  ringUse(out: Float64Array, at: number): void {
    const layout = this.region.layout;
    const words = this.words;
    let bytes = 0, conns = 0, listeners = 0;
    let bytesIn = this.counters.closedBytesIn, bytesOut = this.counters.closedBytesOut;
    for (let i = 0; i < this.slotsUsed; i++) {
      const slot = this.slots[i];
      if (!slot.inUse) continue;
      if (slot.kind === KIND_LISTENER) listeners++;
      if (slot.kind !== KIND_CONN || slot.tcp === null) continue;
      conns++;
      bytesIn += slot.tcp.bytesReceived();
      bytesOut += slot.tcp.bytesAcked();
      const pair = streamOffset(layout, slot.index);
      const tx = Atomics.load(words, (pair + layout.txCtrl + RING_PROD_OFFSET) / 4) -
        Atomics.load(words, (pair + layout.txCtrl + RING_CONS_OFFSET) / 4);
      const rx = Atomics.load(words, (pair + layout.rxCtrl + RING_PROD_OFFSET) / 4) -
        Atomics.load(words, (pair + layout.rxCtrl + RING_CONS_OFFSET) / 4);
      bytes += (tx >>> 0) + (rx >>> 0);
    }
    out[at] = bytes;
    out[at + 1] = conns;
    out[at + 2] = listeners;
    out[at + 3] = bytesIn;
    out[at + 4] = bytesOut;
  }

  /**
   * Calls `visit` with each bound socket that neither listens nor connects (it has no engine
   * socket, so only the region knows it): slot, placeholder inode, port.
   */
  eachBound(visit: (slot: number, ino: number, port: number) => void): void {
    for (let i = 0; i < this.slotsUsed; i++) {
      const slot = this.slots[i];
      if (slot.inUse && slot.kind === KIND_BOUND && slot.tcp === null) {
        visit(slot.index, this.placeholderIno(slot.index), slot.boundPort);
      }
    }
  }

  /** The placeholder inode the shim recorded for socket `s` (0: none, e.g. a Deno client). */
  placeholderIno(s: number): number {
    const w = this.sockWord(s, SOCK_PLACEHOLDER_INO);
    return (Atomics.load(this.words, w) >>> 0) + (Atomics.load(this.words, w + 1) >>> 0) * 2 ** 32;
  }

  /**
   * Gives back the ring pages of connections that went quiet with both rings empty, so that
   * an idle connection costs its state lines, not the pages its last burst touched. The RX
   * ring is ours to produce; the TX ring is the host's, so its pages go only while we hold
   * the socket's lock word (a writer holds it while it copies) and find the ring empty. A
   * connection is looked at again only after its indices moved. Control path: once a second.
   */
  reclaimIdle(): number {
    const fd = this.region.fd ?? -1;
    if (fd < 0) return 0;
    const layout = this.region.layout;
    const words = this.words;
    let released = 0;
    for (const slot of this.slots) {
      if (!slot.inUse || slot.kind !== KIND_CONN || slot.tcp === null) continue;
      const pair = streamOffset(layout, slot.index);
      const txProd = Atomics.load(words, (pair + layout.txCtrl + RING_PROD_OFFSET) / 4);
      const txCons = Atomics.load(words, (pair + layout.txCtrl + RING_CONS_OFFSET) / 4);
      const rxProd = Atomics.load(words, (pair + layout.rxCtrl + RING_PROD_OFFSET) / 4);
      const rxCons = Atomics.load(words, (pair + layout.rxCtrl + RING_CONS_OFFSET) / 4);
      const mark = (txProd ^ Math.imul(rxProd, 0x9e3779b1)) | 0;
      if (slot.reclaimed && slot.reclaimedAt === mark) continue;
      slot.reclaimedAt = mark;
      slot.reclaimed = false;
      // Out-of-order payload waits in the RX ring past its producer index: keep those pages.
      if (txProd !== txCons || rxProd !== rxCons || slot.tcp.ofo.count > 0) continue;
      const lock = this.sockWord(slot.index, SOCK_LOCK);
      if (Atomics.compareExchange(words, lock, 0, 1) !== 0) continue;
      if (Atomics.load(words, (pair + layout.txCtrl + RING_PROD_OFFSET) / 4) === txProd) {
        released += this.punchRings(fd, pair);
        slot.reclaimed = true;
      }
      Atomics.store(words, lock, 0);
    }
    this.counters.pagesReleased += released;
    return released;
  }

  private releasePages(s: number): void {
    const fd = this.region.fd ?? -1;
    if (fd < 0) return;
    this.counters.pagesReleased += this.punchRings(fd, streamOffset(this.region.layout, s));
  }

  /** Punches out the data pages of the stream pair at `pair`; how many ranges went. */
  private punchRings(fd: number, pair: number): number {
    const layout = this.region.layout;
    return (punchHole(fd, pair + layout.txData, layout.params.txBytes) ? 1 : 0) +
      (punchHole(fd, pair + layout.rxData, layout.params.rxBytes) ? 1 : 0);
  }

  /** The engine streams of a slot: its stream pair in the region. */
  streams(slot: Slot): SocketStreams {
    const layout = this.region.layout;
    const o = streamOffset(layout, slot.index);
    const p = layout.params;
    const tx = new NicTxConsumer(
      this.region.buffer,
      o + layout.txCtrl,
      o + layout.txData,
      p.txBytes,
    );
    const rx = new NicRxProducer(
      this.region.buffer,
      o + layout.rxCtrl,
      o + layout.rxData,
      p.rxBytes,
    );
    if (!this.dma.active) return { tx, rx };
    return { tx: new DmaTxStream(tx, this.dma), rx: new DmaRxStream(rx, this.dma) };
  }

  /** A listener's accept queue: its RX ring, produced by the NIC in whole entries. */
  acceptQueue(slot: Slot): NicRxProducer {
    const layout = this.region.layout;
    const o = streamOffset(layout, slot.index);
    return new NicRxProducer(
      this.region.buffer,
      o + layout.rxCtrl,
      o + layout.rxData,
      layout.params.rxBytes,
    );
  }

  /** Queues edges of a slot for posting to its subscribers. */
  queueEdges(slot: Slot, edges: number): void {
    slot.edges |= edges;
    if (slot.queued) return;
    slot.queued = true;
    this.evQueue[(this.evHead + this.evLen++) % this.evQueue.length] = slot.index;
  }

  /** Reads the process table; returns the pids that were there last time and are now dead. */
  processTable(): { entry: number; pid: number }[] {
    const layout = this.region.layout;
    const gone: { entry: number; pid: number }[] = [];
    for (let p = 0; p < this.knownPids.length; p++) {
      const pid = Atomics.load(this.words, (procOffset(layout, p) + PROC_PID) / 4);
      if (pid > 0 && !processAlive(pid)) gone.push({ entry: p, pid });
      this.knownPids[p] = pid;
    }
    return gone;
  }

  /** The fd count process entry `p` holds for socket `s` (read once, bounded). */
  procRefs(p: number, s: number): number {
    const at = procOffset(this.region.layout, p) + PROC_REFS + 2 * s;
    return Atomics.load(this.halves, at / 2);
  }

  /** Clears process entry `p` (its process is gone). */
  clearProc(p: number): void {
    const layout = this.region.layout;
    const at = procOffset(layout, p);
    new Uint8Array(this.region.buffer, at + PROC_REFS, 2 * layout.params.maxSockets).fill(0);
    Atomics.store(this.words, (at + PROC_PID) / 4, 0);
  }
}

function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

let fallocateFn: ((fd: number, mode: number, off: bigint, len: bigint) => number) | null = null;

function punchHole(fd: number, offset: number, length: number): boolean {
  if (fallocateFn === null) {
    // Loaded lazily: unit tests run without native libraries.
    const lib = Deno.dlopen("libc.so.6", {
      fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
    });
    fallocateFn = lib.symbols.fallocate;
  }
  // FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
  return fallocateFn(fd, 3, BigInt(offset), BigInt(length)) === 0;
}

/** Global counters of the ring service. */
export class RingServiceCounters {
  attached = 0;
  detached = 0;
  /** Applications cut off because serving them threw (a bug on our side, never expected). */
  isolated = 0;
  lastIsolation = "";
}

/** Serves every attached region with one engine. */
export class RingService {
  readonly counters = new RingServiceCounters();
  readonly apps: Map<number, AttachedApp> = new Map<number, AttachedApp>();
  /** The same applications as an array: the hot loops walk it without an iterator object. */
  private readonly appList: AttachedApp[] = [];
  private nextAppId = 1;
  private readonly onEvent = (s: TcpSocket, ev: number) => this.handleEvent(s, ev);
  private lastDrainCheck = 0;
  private nextEphemeral = EPHEMERAL_LOW;

  constructor(
    private readonly engine: TcpEngine,
    private readonly localIp: number,
    /** Emulated PCIe link effects for every attached region (none by default). */
    private readonly dmaKnobs: Partial<DmaKnobs> = {},
  ) {}

  /**
   * An application wrote to its control socket since the last look (its doorbell's control
   * word moved): the loop should let the runtime serve that socket now.
   */
  controlPending = false;

  /** Whether control I/O is waiting, and forgets it. */
  takeControlPending(): boolean {
    const pending = this.controlPending;
    this.controlPending = false;
    return pending;
  }

  /** A fresh id for a region about to be attached (written into its header). */
  reserveId(): number {
    return this.nextAppId++;
  }

  /** Starts serving a region; `pid` is the application's, for stats and logs. */
  attach(region: RegionMemory, pid: number, id: number = this.reserveId()): AttachedApp {
    const app = new AttachedApp(id, region, pid, this.dmaKnobs);
    app.uid = uidOf(pid);
    this.apps.set(app.id, app);
    this.appList.push(app);
    this.counters.attached++;
    return app;
  }

  /**
   * Stops serving an application whose every process is gone: its connections finish as
   * Linux's do at exit (queued data then FIN; RST where unread data remains) and its listeners
   * close. The region stays mapped while connections still send from its rings (at most
   * DETACH_DRAIN_MS, then they are reset); `gone` runs once no engine object keeps a view of
   * its memory, and the caller unmaps there.
   */
  detach(app: AttachedApp, gone: () => void = () => {}): void {
    if (app.detaching) {
      // Already on its way out (cut off after an error): the caller's clean-up still runs.
      if (app.finished) gone();
      else app.onGone = gone;
      return;
    }
    // What the application posted before it went (a close with SO_LINGER {1, 0}: a reset,
    // not a FIN) is served first, as the kernel had done it before the exit.
    this.serveLeftCommands(app);
    app.detaching = true;
    app.onGone = gone;
    app.detachDeadline = performance.now() + DETACH_DRAIN_MS;
    for (const slot of app.slots) {
      if (!slot.inUse || app.draining.has(slot)) continue;
      this.closeSlot(app, slot, slot.linger);
    }
    this.finishDetach(app, false);
  }

  /** Completes a detach once nothing drains (or, with `force`, resets what still does). */
  private finishDetach(app: AttachedApp, force: boolean): void {
    if (!app.detaching) return;
    if (app.draining.size > 0 && !force) return;
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
    this.appList.splice(this.appList.indexOf(app), 1);
    this.counters.detached++;
    app.finished = true;
    const gone = app.onGone;
    app.onGone = null;
    gone?.();
  }

  /**
   * Drops the references of processes that died: a socket whose last holder died is closed as
   * Linux closes it at exit. Called on the control path, a few times a second.
   */
  reapDeadProcesses(app: AttachedApp): number {
    const gone = app.processTable();
    if (gone.length > 0) this.serveLeftCommands(app);
    for (const { entry } of gone) {
      app.counters.processesReaped++;
      for (const slot of app.slots) {
        if (!slot.inUse || !slot.hostOpen) continue;
        if (app.procRefs(entry, slot.index) === 0) continue;
        const w = app.sockWord(slot.index, SOCK_HOLDERS);
        const left = Atomics.sub(app.words, w, 1) - 1;
        if (left <= 0) {
          Atomics.store(app.words, w, 0);
          this.closeSlot(app, slot, slot.linger);
        }
      }
      app.clearProc(entry);
    }
    return gone.length;
  }

  /**
   * Serves the commands still in an application's rings (bounded: a hostile ring cannot keep
   * this going). A fault is counted as a round's would be; the caller goes on with the
   * detach or the reaping (a round later cuts the application off if it is still there).
   */
  private serveLeftCommands(app: AttachedApp): void {
    if (app.detaching) return;
    try {
      for (let round = 0; round < 16; round++) {
        let done = 0;
        for (let t = 0; t < app.threads.length; t++) done += this.serveThread(app, t);
        if (done === 0) break;
      }
    } catch (err) {
      this.countFault(app, err, " while leaving");
    }
  }

  /** One round over every region: commands in, events out. Returns the work done. */
  poll(nowMs: number): number {
    let work = 0;
    const checkDrain = nowMs - this.lastDrainCheck >= 10;
    const list = this.appList;
    for (let a = list.length - 1; a >= 0; a--) {
      // Backwards: finishing a detach takes the application out of the list.
      const app = list[a];
      // The command rings are read only when the doorbell moved (or a scan was cut short, or
      // as a slow sweep every 10 ms, for producers that forget the doorbell): the cost of a
      // round does not grow with idle threads.
      try {
        const ctl = Atomics.load(app.words, app.controlWord);
        if (ctl !== app.lastControl) {
          app.lastControl = ctl;
          this.controlPending = true;
        }
        const seq = Atomics.load(app.words, app.doorbellSeq);
        if (seq !== app.lastDoorbell || app.backlog || checkDrain) {
          app.lastDoorbell = seq;
          app.backlog = false;
          for (let t = 0; t < app.threads.length; t++) work += this.serveThread(app, t);
        }
        work += this.postEdges(app);
        app.kickSleepers();
        if (app.draining.size > 0 && checkDrain) this.checkDraining(app);
      } catch (err) {
        // Nothing an application writes should get here (every field is checked); if it
        // does, that application is cut off and the others go on being served.
        this.isolate(app, err);
      }
    }
    if (checkDrain) this.lastDrainCheck = nowMs;
    return work;
  }

  /** Detaches an application whose service threw; counted, and the reason kept. */
  private isolate(app: AttachedApp, err: unknown): void {
    this.countFault(app, err, "");
    if (!app.detaching) this.detach(app, app.onGone ?? (() => {}));
    else this.finishDetach(app, true);
  }

  /** Counts a fault an application's rings caused, and keeps and logs why. */
  private countFault(app: AttachedApp, err: unknown, when: string): void {
    this.counters.isolated++;
    this.counters.lastIsolation = `app ${app.id} (pid ${app.pid})${when}: ${
      (err as Error)?.message
    }`;
    console.error(`pno bridge: ${this.counters.lastIsolation}`);
  }

  /** Posts edges the engine raised (call after the engine's poll) and wakes sleepers. */
  flushEvents(): number {
    let work = 0;
    const list = this.appList;
    for (let a = 0; a < list.length; a++) {
      const app = list[a];
      if (app.evLen === 0) continue;
      try {
        work += this.postEdges(app);
        app.kickSleepers();
      } catch (err) {
        this.isolate(app, err);
      }
    }
    return work;
  }

  /** The loop is about to park: true unless some region has commands waiting. */
  park(): boolean {
    const list = this.appList;
    for (let a = 0; a < list.length; a++) {
      if (!list[a].park()) {
        for (let b = 0; b < list.length; b++) list[b].unpark();
        return false;
      }
    }
    return true;
  }

  /** The loop woke up. */
  unpark(): void {
    for (let a = 0; a < this.appList.length; a++) this.appList[a].unpark();
  }

  /** Statistics of every attached application. */
  /**
   * Stats page: the application and socket of an engine socket, written at `out[at..at+3)` as
   * region id, slot and placeholder inode; false for sockets of no application (services).
   */
  owner(s: TcpSocket, out: Float64Array, at: number): boolean {
    const slot = s.userData;
    if (!(slot instanceof Slot)) return false;
    out[at] = slot.app.id;
    out[at + 1] = slot.index;
    out[at + 2] = slot.app.placeholderIno(slot.index);
    return true;
  }

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
    let done = 0, posted = 0;
    for (; done < n; done++) {
      const v = app.copyCommand(commands.bytes, commands.slotOffset(done));
      if (needsCompletion(D.readOpcode(v, 0))) {
        // Completions need room; what does not fit waits for the next round.
        const room = completions.reserve(posted + 1);
        if (room === RING_FAULT) {
          app.counters.ringFaults++;
          break;
        }
        if (room <= posted) break;
      }
      if (this.execute(app, v, completions, posted)) posted++;
    }
    commands.release(done);
    if (done < n || n === COMMAND_BATCH) app.backlog = true;
    if (posted > 0) completions.publish(posted);
    app.counters.commands += done;
    app.counters.completions += posted;
    return done;
  }

  /**
   * Runs one command (a private, checked copy). Returns true when it wrote a completion into
   * slot `cplIndex` of `cpl`.
   */
  private execute(app: AttachedApp, v: DataView, cpl: DescRingProducer, cplIndex: number): boolean {
    const op = D.readOpcode(v, 0);
    if (app.checker.check(v, 0) !== D.DESC_OK) {
      app.counters.rejected++;
      return this.fail(app, v, cpl, cplIndex, E.EINVAL);
    }
    const sock = D.readSock(v, 0);
    if (op === D.CMD_WAITER_RELEASE) {
      this.releaseWaiter(app, v.getUint32(D.RELEASE_WAITER, true));
      return false;
    }
    let slot: Slot | null = null;
    if (sock !== D.SOCK_NONE) {
      const s = app.slots[sock];
      if (!s.inUse || !s.hostOpen || s.gen !== D.readGen(v, 0)) {
        app.counters.rejected++;
        return this.fail(app, v, cpl, cplIndex, E.EBADF);
      }
      slot = s;
    }
    try {
      switch (op) {
        case D.CMD_BIND:
          return this.bind(app, v, cpl, cplIndex);
        case D.CMD_CONNECT:
          return this.connect(app, slot, v, cpl, cplIndex);
        case D.CMD_LISTEN: {
          const r = this.listen(app, slot!, v.getInt32(D.LISTEN_BACKLOG, true));
          return this.complete(app, v, cpl, cplIndex, D.CPL_RESULT, r);
        }
        case D.CMD_TCP_INFO:
          return this.tcpInfo(slot!, v, cpl, cplIndex);
        case D.CMD_CLOSE:
          this.closeSlot(app, slot!, v.getInt32(D.CLOSE_LINGER, true));
          return false;
        case D.CMD_SHUTDOWN:
          this.shutdown(app, slot!, v.getInt32(D.SHUTDOWN_HOW, true));
          return false;
        case D.CMD_SETSOCKOPT:
          this.setOption(slot!, v);
          return false;
        case D.CMD_DATA:
          this.data(app, slot!, v.getUint32(D.DATA_REQ, true));
          return false;
        case D.CMD_SUBSCRIBE:
          this.subscribe(slot!, v);
          return false;
      }
    } catch (err) {
      if (err instanceof TcpError) return this.fail(app, v, cpl, cplIndex, Math.abs(err.errno));
      throw err;
    }
    return this.fail(app, v, cpl, cplIndex, E.EINVAL);
  }

  /**
   * A command failed with `errno`: a command that completes gets it in its completion (true:
   * a completion was written); the others have nobody to tell. A method, not a closure made
   * for every command: this runs on the data path.
   */
  private fail(
    app: AttachedApp,
    v: DataView,
    cpl: DescRingProducer,
    cplIndex: number,
    errno: number,
  ): boolean {
    if (!needsCompletion(D.readOpcode(v, 0))) return false;
    return this.complete(app, v, cpl, cplIndex, D.CPL_RESULT, -errno);
  }

  /** Writes a completion for command `v` (its socket, generation and request id echoed). */
  private complete(
    app: AttachedApp,
    v: DataView,
    cpl: DescRingProducer,
    cplIndex: number,
    opcode: number,
    result: number,
    slot: Slot | null = null,
  ): boolean {
    const out = cpl.slotOffset(cplIndex);
    const sock = slot !== null ? slot.index : D.readSock(v, 0);
    const gen = slot !== null ? slot.gen : D.readGen(v, 0);
    D.writeHeader(cpl.view, out, opcode, sock, gen, D.readReqId(v, 0), result);
    if (opcode === D.CPL_RESULT) {
      cpl.view.setUint16(out + D.RESULT_CMD_OPCODE, D.readOpcode(v, 0), true);
    }
    if (opcode === D.CPL_SOCKET && slot !== null) {
      const tcp = slot.tcp;
      const ip = tcp !== null ? tcp.localIp : 0;
      const port = tcp !== null ? tcp.localPort : slot.boundPort;
      D.writeSockaddrV4(cpl.view, out + D.SOCKET_LOCAL, ip, port);
    }
    void app;
    return true;
  }

  private bind(app: AttachedApp, v: DataView, cpl: DescRingProducer, i: number): boolean {
    const ip = D.readSockaddrV4(v, D.BIND_ADDR);
    let port = D.readSockaddrPort(v, D.BIND_ADDR);
    const opts = v.getUint32(D.BIND_OPTS, true);
    if (ip !== 0 && ip !== this.localIp) {
      return this.complete(app, v, cpl, i, D.CPL_RESULT, -E.EADDRNOTAVAIL);
    }
    if (port === 0) port = this.ephemeralPort();
    else if (this.portTaken(port, opts, app.uid)) {
      return this.complete(app, v, cpl, i, D.CPL_RESULT, -E.EADDRINUSE);
    }
    if (port < 0) return this.complete(app, v, cpl, i, D.CPL_RESULT, -E.EADDRINUSE);
    const slot = app.allocate(KIND_BOUND);
    if (slot === null) return this.complete(app, v, cpl, i, D.CPL_RESULT, -E.EMFILE);
    app.holdPort(slot, port);
    slot.bindOpts = opts;
    app.setSock(slot.index, SOCK_LOCAL_IP, ip);
    app.setPorts(slot.index, port, 0);
    return this.complete(app, v, cpl, i, D.CPL_SOCKET, 0, slot);
  }

  private listen(app: AttachedApp, slot: Slot, backlogArg: number): number {
    const tcp = slot.tcp;
    if (tcp !== null && tcp.state === LISTEN) return 0;
    if (tcp !== null || slot.kind !== KIND_BOUND) return -E.EINVAL;
    // Linux clamps the backlog to somaxconn (4096) and takes <= 0 as 0 (then one connection).
    const backlog = Math.min(Math.max(backlogArg, 1), 4096);
    const l = this.engine.listen(slot.boundPort, backlog, {
      ...this.childOptions(app, slot),
      reusePort: (slot.bindOpts & D.BIND_REUSEPORT) !== 0,
    });
    l.userData = slot;
    slot.tcp = l;
    slot.kind = KIND_LISTENER;
    slot.acceptRing = app.acceptQueue(slot);
    app.setSock(slot.index, SOCK_TCP_STATE, LISTEN);
    app.setSock(slot.index, SOCK_KIND, KIND_LISTENER);
    return 0;
  }

  private connect(
    app: AttachedApp,
    bound: Slot | null,
    v: DataView,
    cpl: DescRingProducer,
    i: number,
  ): boolean {
    if (bound !== null && bound.kind !== KIND_BOUND) {
      const errno = bound.kind === KIND_LISTENER ? E.EISCONN : E.EALREADY;
      return this.complete(app, v, cpl, i, D.CPL_RESULT, -errno);
    }
    const ip = D.readSockaddrV4(v, D.CONNECT_ADDR);
    const port = D.readSockaddrPort(v, D.CONNECT_ADDR);
    const slot = bound ?? app.allocate(KIND_CONN);
    if (slot === null) return this.complete(app, v, cpl, i, D.CPL_RESULT, -E.EMFILE);
    let tcp: TcpSocket;
    try {
      tcp = this.engine.connect(ip, port, {
        ...this.socketOptions(app, slot),
        srcIp: this.localIp,
        srcPort: slot.boundPort || undefined,
      });
    } catch (err) {
      if (bound === null) app.release(slot);
      throw err;
    }
    tcp.userData = slot;
    slot.tcp = tcp;
    slot.kind = KIND_CONN;
    app.dropPort(slot);
    const s = slot.index;
    app.setSock(s, SOCK_LOCAL_IP, tcp.localIp);
    app.setSock(s, SOCK_PEER_IP, tcp.remoteIp);
    app.setPorts(s, tcp.localPort, tcp.remotePort);
    app.setSock(s, SOCK_TCP_STATE, tcp.state);
    app.setSock(s, SOCK_KIND, KIND_CONN);
    return this.complete(app, v, cpl, i, D.CPL_SOCKET, 0, slot);
  }

  private tcpInfo(slot: Slot, v: DataView, cpl: DescRingProducer, i: number): boolean {
    const out = cpl.slotOffset(i);
    D.writeHeader(cpl.view, out, D.CPL_TCP_INFO, slot.index, slot.gen, D.readReqId(v, 0), 0);
    const tcp = slot.tcp;
    if (tcp === null) return true;
    const mss = Math.max(1, tcp.sndMss);
    const fields = [
      LINUX_STATE[tcp.state] ?? 7,
      Math.round(tcp.rto * 1000),
      Math.round(tcp.srtt * 1000),
      Math.round(tcp.rttvar * 1000),
      tcp.sndMss,
      tcp.rcvMss,
      Math.ceil(tcp.cwnd / mss),
      Math.min(0xffffffff, Math.ceil(tcp.ssthresh / mss)),
      tcp.retransSegs,
      Math.ceil(((tcp.sndNxt - tcp.sndUna) >>> 0) / mss),
    ];
    for (let f = 0; f < fields.length; f++) {
      cpl.view.setUint32(out + D.INFO_STATE + 4 * f, fields[f] >>> 0, true);
    }
    return true;
  }

  private shutdown(app: AttachedApp, slot: Slot, how: number): void {
    const tcp = slot.tcp;
    if (tcp === null || tcp.state === LISTEN) return;
    // SHUT_RD is the host's (reads return 0); the NIC keeps acknowledging as Linux does.
    if (how === 0) return;
    this.engine.shutdown(tcp);
    const shut = Atomics.load(app.words, app.sockWord(slot.index, SOCK_SHUTDOWN));
    app.setSock(slot.index, SOCK_SHUTDOWN, shut | SHUT_SEND);
    app.setSock(slot.index, SOCK_TCP_STATE, tcp.state);
  }

  /** The host wrote TX bytes, read RX bytes, or popped accept entries. */
  private data(app: AttachedApp, slot: Slot, req: number): void {
    app.setSock(slot.index, SOCK_DATA_ACK, req);
    app.setSock(slot.index, SOCK_RX_WANT, 0);
    const tcp = slot.tcp;
    if (tcp === null) return;
    if (tcp.state === LISTEN) {
      this.fillAcceptQueue(app, slot);
      return;
    }
    this.engine.notifyTx(tcp);
    this.engine.notifyRx(tcp);
    // A read too small to reopen the window: keep asking, or the next reads go unheard.
    this.wantReads(app, slot, tcp);
    const cap = app.region.layout.params.txBytes;
    if ((cap - tcp.tx.readable()) * 3 < cap) slot.outArmed = true;
    // Writable again already: ACKs processed before this doorbell in the same round may have
    // freed the room the host found missing when it wrote, and their EV_WRITABLE came while
    // nothing was armed. The host may sleep waiting for OUT: tell it (a needless edge is only
    // a re-check of readiness on its side; subscribers without OUT in their mask get none).
    else app.queueEdges(slot, D.EPOLLOUT);
  }

  private subscribe(slot: Slot, v: DataView): void {
    const waiter = v.getUint32(D.SUB_WAITER, true);
    const waiterGen = v.getUint32(D.SUB_WAITER_GEN, true);
    const mask = v.getUint32(D.SUB_MASK, true);
    const flags = v.getUint32(D.SUB_FLAGS, true);
    const subs = slot.subs;
    let found = false;
    for (let i = 0; i < subs.length && !found; i++) {
      if (subs[i].waiter !== waiter) continue;
      found = true;
      if (mask === 0) subs.splice(i, 1);
      else subs[i] = { waiter, waiterGen, mask, flags };
    }
    // One socket in at most 64 sets: bounds what one application makes us walk per event.
    if (!found && mask !== 0 && subs.length < 64) subs.push({ waiter, waiterGen, mask, flags });
    // An edge may have gone by before the subscription existed (the host checked readiness
    // when it subscribed, then the data came): one notification now closes that gap. The
    // host re-checks readiness, and de-duplicates edge-triggered reports, so it costs nothing.
    if (mask === 0) return;
    const ready = this.readiness(slot) & (mask | ALWAYS);
    if (ready !== 0) slot.app.queueEdges(slot, ready);
  }

  /** The socket's readiness as the host computes it (Linux's tcp_poll), from the NIC side. */
  private readiness(slot: Slot): number {
    const tcp = slot.tcp;
    if (slot.kind === KIND_LISTENER) {
      const ring = slot.acceptRing;
      return ring !== null && ring.capacity - ring.writable() >= ACCEPT_ENTRY.size ? D.EPOLLIN : 0;
    }
    if (tcp === null) return D.EPOLLOUT | D.EPOLLHUP;
    const app = slot.app;
    const shut = Atomics.load(app.words, app.sockWord(slot.index, SOCK_SHUTDOWN));
    let m = 0;
    if (shut === (SHUT_RCV | SHUT_SEND) || tcp.state === CLOSED) m |= D.EPOLLHUP;
    if (shut & SHUT_RCV) m |= D.EPOLLIN | D.EPOLLRDHUP;
    if (tcp.state >= ESTABLISHED) {
      if (tcp.rx.writable() < tcp.rcvCap) m |= D.EPOLLIN;
      const cap = app.region.layout.params.txBytes;
      if ((shut & SHUT_SEND) || (cap - tcp.tx.readable()) * 3 >= cap) m |= D.EPOLLOUT;
    }
    if (tcp.error !== 0) m |= D.EPOLLERR;
    return m;
  }

  private releaseWaiter(app: AttachedApp, waiter: number): void {
    for (const slot of app.slots) {
      if (!slot.inUse || slot.subs.length === 0) continue;
      slot.subs = slot.subs.filter((s) => s.waiter !== waiter);
    }
  }

  /** Options for a listener's children: their rings are free slots of the region. */
  private childOptions(app: AttachedApp, listener: Slot): SocketOptions {
    return {
      ...this.socketOptions(app, listener),
      streams: (s: TcpSocket) => {
        const slot = app.allocate(KIND_CONN);
        if (slot === null) return null;
        slot.tcp = s;
        slot.nodelay = listener.nodelay;
        slot.keepalive = listener.keepalive;
        slot.linger = listener.linger;
        s.userData = slot;
        return app.streams(slot);
      },
    };
  }

  private socketOptions(app: AttachedApp, slot: Slot): SocketOptions {
    return {
      nodelay: slot.nodelay,
      keepalive: slot.keepalive,
      keepIdleMs: slot.keepIdleMs || undefined,
      keepIntvlMs: slot.keepIntvlMs || undefined,
      keepCnt: slot.keepCnt || undefined,
      linger: slot.linger,
      onEvent: this.onEvent,
      streams: () => app.streams(slot),
    };
  }

  /** The last holder closed the socket (or died): finish it as Linux's close does. */
  private closeSlot(app: AttachedApp, slot: Slot, linger: number): void {
    slot.hostOpen = false;
    slot.edges = 0;
    slot.subs = [];
    const tcp = slot.tcp;
    if (tcp === null || tcp.state === CLOSED) {
      app.release(slot);
      return;
    }
    if (tcp.state === LISTEN) {
      this.abortUnaccepted(app, slot);
      this.engine.close(tcp);
      app.release(slot);
      return;
    }
    if (linger >= 0) this.engine.setOption(tcp, OPT_LINGER, linger);
    this.engine.close(tcp);
    if (this.ringsIdle(tcp)) app.release(slot);
    else app.draining.add(slot);
  }

  /** Connections in a closing listener's accept queue that nobody popped are reset. */
  private abortUnaccepted(app: AttachedApp, listener: Slot): void {
    const ring = listener.acceptRing;
    if (ring === null) return;
    const unpopped = Math.min(
      listener.pushed.length,
      Math.floor((ring.capacity - Math.max(0, ring.writable())) / ACCEPT_ENTRY.size),
    );
    for (const s of listener.pushed.slice(listener.pushed.length - unpopped)) {
      const child = app.slots[s];
      if (!child.inUse || child.tcp === null) continue;
      child.tcp.onEvent = null;
      this.engine.abort(child.tcp);
      app.release(child);
    }
    listener.pushed = [];
  }

  /** Moves established connections from the engine's queue into the region's accept queue. */
  private fillAcceptQueue(app: AttachedApp, listener: Slot): number {
    const ring = listener.acceptRing;
    const l = listener.tcp;
    if (ring === null || l === null) return 0;
    let moved = 0;
    const entry = ACCEPT_ENTRY.size;
    for (;;) {
      const room = ring.writable();
      if (room < entry) {
        // The application is behind: it posts CMD_DATA when it pops and sees this flag.
        if (l.acceptLen > 0) app.setSock(listener.index, SOCK_RX_WANT, 1);
        break;
      }
      const child = this.engine.accept(l);
      if (child === null) break;
      const slot = child.userData as Slot | null;
      if (slot === null) {
        this.engine.abort(child);
        continue;
      }
      const s = slot.index;
      app.setSock(s, SOCK_LOCAL_IP, child.localIp);
      app.setSock(s, SOCK_PEER_IP, child.remoteIp);
      app.setPorts(s, child.localPort, child.remotePort);
      app.setSock(s, SOCK_TCP_STATE, child.state);
      Atomics.store(app.words, app.sockWord(s, SOCK_HOLDERS), 0);
      if (child.state === CLOSED) {
        app.setSock(s, SOCK_SHUTDOWN, SHUT_RCV | SHUT_SEND);
        if (child.error !== 0) app.setError(s, Math.abs(child.error));
      }
      const rec = ACCEPT_RECORD;
      rec.setUint32(0, s, true);
      rec.setUint32(4, slot.gen, true);
      rec.setUint32(8, child.remoteIp, true);
      rec.setUint32(12, child.localIp, true);
      rec.setUint16(16, child.remotePort, true);
      rec.setUint16(18, child.localPort, true);
      ring.copyIn(0, ACCEPT_BYTES, 0, entry);
      ring.publish(entry);
      listener.pushed.push(s);
      if (listener.pushed.length > 2 * (ring.capacity / entry)) {
        listener.pushed.splice(0, listener.pushed.length - ring.capacity / entry);
      }
      moved++;
    }
    if (moved > 0) app.queueEdges(listener, D.EPOLLIN);
    return moved;
  }

  /** True once a closed connection no longer reads its TX ring nor writes its RX ring. */
  private ringsIdle(tcp: TcpSocket): boolean {
    return tcp.state === CLOSED || tcp.state === TIME_WAIT || tcp.state === FIN_WAIT_2;
  }

  private checkDraining(app: AttachedApp): void {
    for (const slot of app.draining) {
      if (slot.tcp === null || this.ringsIdle(slot.tcp)) app.release(slot);
    }
    if (app.detaching) this.finishDetach(app, performance.now() > app.detachDeadline);
  }

  private ephemeralPort(): number {
    for (let tries = 0; tries <= EPHEMERAL_HIGH - EPHEMERAL_LOW; tries++) {
      const port = this.nextEphemeral;
      this.nextEphemeral = port >= EPHEMERAL_HIGH ? EPHEMERAL_LOW : port + 1;
      if (!this.portTaken(port, 0)) return port;
    }
    return -1;
  }

  /**
   * A port is taken by a bound socket or listener unless both ask to share it: SO_REUSEADDR
   * between sockets not listening yet, SO_REUSEPORT between sockets of one user (Linux's
   * inet_csk_bind_conflict), listening or not. `uid` -1 asks for no SO_REUSEPORT sharing.
   */
  private portTaken(port: number, opts: number, uid = -1): boolean {
    for (const app of this.apps.values()) {
      const held = app.ports.get(port);
      if (held === undefined) continue;
      for (const s of held) {
        if (s.kind === KIND_BOUND && (opts & s.bindOpts & D.BIND_REUSEADDR) !== 0) continue;
        if ((opts & s.bindOpts & D.BIND_REUSEPORT) !== 0 && uid >= 0 && app.uid === uid) continue;
        if (s.kind === KIND_BOUND || s.kind === KIND_LISTENER) return true;
      }
    }
    return false;
  }

  private setOption(slot: Slot, v: DataView): void {
    const level = v.getInt32(D.SOCKOPT_LEVEL, true);
    const name = v.getInt32(D.SOCKOPT_NAME, true);
    const value = v.getInt32(D.SOCKOPT_VALUE, true);
    const value2 = v.getInt32(D.SOCKOPT_VALUE2, true);
    let opt = 0, arg = value;
    if (level === D.IPPROTO_TCP) {
      switch (name) {
        case D.TCP_NODELAY:
          slot.nodelay = value !== 0;
          opt = OPT_NODELAY;
          arg = slot.nodelay ? 1 : 0;
          break;
        case D.TCP_CORK:
          // Corked: hold small segments as Nagle would; uncorking pushes what is queued.
          opt = OPT_NODELAY;
          arg = value !== 0 ? 0 : (slot.nodelay ? 1 : 0);
          if (value === 0 && slot.tcp !== null) this.engine.notifyTx(slot.tcp);
          break;
        case D.TCP_KEEPIDLE:
          slot.keepIdleMs = value * 1000;
          opt = OPT_KEEPIDLE;
          arg = slot.keepIdleMs;
          break;
        case D.TCP_KEEPINTVL:
          slot.keepIntvlMs = value * 1000;
          opt = OPT_KEEPINTVL;
          arg = slot.keepIntvlMs;
          break;
        case D.TCP_KEEPCNT:
          slot.keepCnt = value;
          opt = OPT_KEEPCNT;
          break;
      }
    } else if (name === D.SO_KEEPALIVE) {
      slot.keepalive = value !== 0;
      opt = OPT_KEEPALIVE;
      arg = slot.keepalive ? 1 : 0;
    } else if (name === D.SO_LINGER) {
      slot.linger = value !== 0 ? Math.max(0, value2) : -1;
      opt = OPT_LINGER;
      arg = slot.linger;
    }
    if (opt === 0 || !(arg >= 0) && opt !== OPT_LINGER) return;
    const tcp = slot.tcp;
    if (tcp !== null && tcp.state !== LISTEN && tcp.state !== CLOSED) {
      this.engine.setOption(tcp, opt, arg);
    }
  }

  private handleEvent(s: TcpSocket, ev: number): void {
    const slot = s.userData as Slot | null;
    if (slot === null || !slot.inUse || !slot.hostOpen) return;
    const app = slot.app;
    const i = slot.index;
    if (ev & EV_ACCEPT) {
      this.fillAcceptQueue(app, slot);
      return;
    }
    let edges = 0;
    if (ev & EV_READABLE) {
      edges |= D.EPOLLIN;
      this.wantReads(app, slot, s);
    }
    if (ev & EV_CONNECTED) {
      app.setSock(i, SOCK_TCP_STATE, s.state);
      edges |= D.EPOLLOUT;
    }
    if (ev & EV_WRITABLE) {
      const cap = app.region.layout.params.txBytes;
      if (slot.outArmed && (cap - s.tx.readable()) * 3 >= cap) {
        slot.outArmed = false;
        edges |= D.EPOLLOUT;
      }
    }
    const shutWord = app.sockWord(i, SOCK_SHUTDOWN);
    if (ev & EV_PEER_CLOSED) {
      Atomics.or(app.words, shutWord, SHUT_RCV);
      edges |= D.EPOLLIN | D.EPOLLRDHUP;
    }
    const ended = (ev & (EV_RESET | EV_CLOSED)) !== 0;
    if (ended && s.error !== 0) {
      app.setError(i, Math.abs(s.error));
      edges |= D.EPOLLERR;
    }
    // At an end, Linux's order (tcp_reset, then tcp_done): the error, the state, the shutdown.
    // The host's poll() reads the three words without a lock: with the state stored last, one
    // between the stores saw a refused connect shut both ways yet still SYN-SENT, so POLLERR|
    // POLLHUP without POLLOUT (the shim oracle's connect-refused, once in a CI run).
    app.setSock(i, SOCK_TCP_STATE, s.state);
    if (ended) {
      Atomics.store(app.words, shutWord, SHUT_RCV | SHUT_SEND);
      edges |= D.EPOLLIN | D.EPOLLOUT | D.EPOLLHUP | D.EPOLLRDHUP;
    }
    if (edges !== 0) app.queueEdges(slot, edges);
  }

  /**
   * When the receive ring runs short, asks the host to say when it reads (CMD_DATA), so the
   * window reopens at once. Flag first, then look again: a read between the two is not lost.
   */
  private wantReads(app: AttachedApp, slot: Slot, s: TcpSocket): void {
    const cap = s.rcvCap;
    if (s.rx.writable() * 4 >= cap) return;
    app.setSock(slot.index, SOCK_RX_WANT, 1);
    if (s.rx.writable() * 4 >= cap) {
      app.setSock(slot.index, SOCK_RX_WANT, 0);
      this.engine.notifyRx(s);
    }
  }

  private postEdges(app: AttachedApp): number {
    let posted = 0;
    const q = app.evQueue;
    const layout = app.region.layout;
    while (app.evLen > 0) {
      const slot = app.slots[q[app.evHead]];
      app.evHead = (app.evHead + 1) % q.length;
      app.evLen--;
      slot.queued = false;
      const edges = slot.edges;
      slot.edges = 0;
      if (!slot.inUse || !slot.hostOpen || edges === 0) continue;
      let exclusiveDone = false;
      const subs = slot.subs;
      const n = subs.length;
      // The walk starts at the turn as it was: moving it mid-walk skipped subscribers (a
      // poll() on a listener two EXCLUSIVE epoll sets also watched was never woken).
      const turn = slot.exclusiveTurn;
      for (let k = 0; k < n; k++) {
        // EXCLUSIVE subscribers take turns: one of them gets each edge, as one epoll_wait of
        // the processes sharing a listener wakes; every other subscriber gets it too.
        const sub = subs[(k + turn) % n];
        const hit = edges & (sub.mask | ALWAYS);
        if (hit === 0) continue;
        if (sub.flags & D.SUB_EXCLUSIVE) {
          if (exclusiveDone) continue;
          exclusiveDone = true;
          slot.exclusiveTurn = (k + turn + 1) % n; // the next edge starts past this one
        }
        const waiter = app.waiters[sub.waiter];
        const ring = waiter.events;
        const room = ring.reserve(1);
        if (room === RING_FAULT) {
          app.counters.ringFaults++;
          continue;
        }
        app.markDirty(sub.waiter);
        if (room < 1) {
          // Full: tell the waiter it lost events, so it re-checks every socket it watches.
          Atomics.store(app.words, (waiterOffset(layout, sub.waiter) + WAITER_OVERFLOW) / 4, 1);
          app.counters.overflows++;
          continue;
        }
        const out = ring.slotOffset(0);
        D.writeHeader(ring.view, out, D.EV_NOTIFY, slot.index, slot.gen, 0, 0);
        ring.view.setUint32(out + D.NOTIFY_EVENTS, hit, true);
        ring.publish(1);
        posted++;
      }
    }
    app.counters.events += posted;
    return posted;
  }
}

const ACCEPT_BYTES = new Uint8Array(ACCEPT_ENTRY.size);
const ACCEPT_RECORD = new DataView(ACCEPT_BYTES.buffer);

function needsCompletion(op: number): boolean {
  return op === D.CMD_BIND || op === D.CMD_CONNECT || op === D.CMD_LISTEN ||
    op === D.CMD_TCP_INFO;
}

/** The real uid of a process (from /proc), or -1 when it cannot be read. */
function uidOf(pid: number): number {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const m = /^Uid:\s+(\d+)/m.exec(status);
    return m ? Number(m[1]) : -1;
  } catch {
    return -1;
  }
}
