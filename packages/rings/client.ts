/**
 * The host side of the rings in TypeScript (protocol v2): a ring client that opens sockets
 * through a region, and PnO sockets shaped like Deno's (`PnoListener` ~ Deno.Listener,
 * `PnoConn` ~ Deno.Conn). It speaks the protocol as the C shim does, for one thread of one
 * process.
 *
 * Attaching: HELLO on the bridge's control socket, which answers with the region (REGION, the
 * memfd attached) and the bridge's eventfd (WAKER). The control connection stays open for the
 * client's lifetime: the region lives while it is open, and when it closes (the process exits
 * or dies) the bridge resets the region's connections. The client then registers itself in the
 * region: its process in the process table (pid, and per socket a count of the handles it
 * holds), a thread entry (command ring and completion ring, claimed by a compare-and-swap of
 * the owner), and a waiter entry (event queue and sleeping flag) whose wake socket, one end of
 * a datagram socket pair, goes to the bridge in a WAIT_FD frame.
 *
 * Sockets: bind, listen and connect are commands with a completion. Everything else reads or
 * writes shared memory: a listener's RX ring is its accept queue (`pno_accept_entry` records
 * the NIC produces, popped here); a connection's TX and RX rings are its send and receive
 * buffers; the NIC line of its socket entry says its TCP state, shutdown bits and pending
 * error. A write copies into the TX ring and, unless a data doorbell the NIC has not served yet
 * is in flight (the host line's `data_req` differs from the NIC line's `data_ack`), posts
 * CMD_DATA: one doorbell per burst, however many writes. A read copies out of the RX ring and
 * posts the same doorbell only when the NIC asked to hear of reads (`rx_want`). Each socket is
 * subscribed to the client's waiter; EV_NOTIFY edges arrive on the waiter's event queue.
 *
 * Sleeping: the poller drains the event queue and the completion ring while there is traffic;
 * when idle it stores its waiter's sleeping flag, re-checks the queue and the readiness of every
 * socket an operation waits on, and only then blocks on its wake socket, which the bridge sends
 * a datagram to when it posts events to a sleeping waiter. Symmetrically, a command posted while
 * the bridge's doorbell says it sleeps kicks the bridge's eventfd. While both sides are busy no
 * syscall is made at all.
 *
 * @example
 * ```ts ignore
 * import { RingClient } from "./client.ts";
 * const client = await RingClient.attach("/run/pno/bridge.sock");
 * const listener = await client.listen({ port: 8007 });
 * for await (const conn of listener) {
 *   const buf = new Uint8Array(4096);
 *   for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
 *   conn.close();
 * }
 * ```
 * @module
 */
import { hostGRings, hostSRings } from "./attach.ts";
import { type HostRxConsumer, type HostTxProducer, RING_FAULT } from "./byte_ring.ts";
import {
  connectControl,
  type ControlConn,
  MSG_ERROR,
  MSG_HELLO,
  MSG_REGION,
  MSG_WAIT_FD,
  MSG_WAKER,
} from "./control.ts";
import { DescRingConsumer, type DescRingProducer } from "./desc_ring.ts";
import {
  BIND_ADDR,
  CLOSE_LINGER,
  CMD_BIND,
  CMD_CLOSE,
  CMD_CONNECT,
  CMD_DATA,
  CMD_LISTEN,
  CMD_SETSOCKOPT,
  CMD_SHUTDOWN,
  CMD_SUBSCRIBE,
  CONNECT_ADDR,
  CPL_RESULT,
  CPL_SOCKET,
  CPL_TCP_INFO,
  DATA_REQ,
  EPOLLERR,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  EV_NOTIFY,
  IPPROTO_TCP,
  LISTEN_BACKLOG,
  NOTIFY_EVENTS,
  readGen,
  readOpcode,
  readReqId,
  readResult,
  readSock,
  readSockaddrPort,
  readSockaddrV4,
  SHUTDOWN_HOW,
  SOCK_NONE,
  SOCKET_LOCAL,
  SOCKOPT_LEVEL,
  SOCKOPT_NAME,
  SOCKOPT_VALUE,
  SOCKOPT_VALUE2,
  SUB_FLAGS,
  SUB_MASK,
  SUB_WAITER,
  SUB_WAITER_GEN,
  TCP_NODELAY,
  writeHeader,
  writeSockaddrV4,
} from "./descriptors.ts";
import * as E from "./errno.ts";
import {
  ACCEPT_ENTRY,
  DOORBELL_SEQ,
  DOORBELL_SLEEPING,
  LAYOUT_VERSION,
  PROC_PID,
  PROC_REFS,
  procOffset,
  SHUT_RCV,
  SHUT_SEND,
  SOCK_DATA_ACK,
  SOCK_DATA_REQ,
  SOCK_ERR,
  SOCK_HOLDERS,
  SOCK_LOCAL_IP,
  SOCK_LOCAL_PORT,
  SOCK_RX_WANT,
  SOCK_SHUTDOWN,
  SOCK_TCP_STATE,
  sockOffset,
  THREAD_OWNER_PID,
  THREAD_OWNER_TID,
  threadOffset,
  WAITER_GEN,
  WAITER_OVERFLOW,
  WAITER_OWNER,
  WAITER_SLEEPING,
  waiterOffset,
} from "./layout.ts";
import { closeRegion, mapRegionFd, type Region } from "./region.ts";
import { offsetOf } from "./_schema.ts";
import {
  AF_UNIX,
  libc,
  libcError,
  POLLIN,
  SOCK_CLOEXEC,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
} from "../../ffi/libc.ts";
import { kickFd, kickSocket } from "./waker.ts";

/** Default path of the bridge's control socket. */
export const DEFAULT_CONTROL_PATH = "/run/pno/bridge.sock";

/**
 * Longest sleep on the wake socket. The bridge kicks a sleeping waiter when it posts events;
 * this bounds what a lost kick (the wake socket not registered yet) can cost.
 */
const PARK_MS = 50;
/**
 * Completions wake nobody (the thread that posted a command polls for its answer): while some
 * are awaited the poller spins this long after the last progress, then naps a millisecond at a
 * time. The bridge answers within one of its rounds.
 */
const SPIN_MS = 0.2;
/** How long a post waits for room on a full command ring before giving up. */
const POST_TIMEOUT_MS = 5000;
/** The engine's state numbering (tcp_state in the NIC line): RFC 9293 order, CLOSED = 0. */
const TCP_ESTABLISHED = 4;
/** Every edge a socket is subscribed to. */
const SUB_EVENTS = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
/** What wakes a reader (or an accept), and what wakes a writer (or a connect). */
const IN_EVENTS = EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP;
const OUT_EVENTS = EPOLLOUT | EPOLLERR | EPOLLHUP;
const ACCEPT_SIZE = ACCEPT_ENTRY.size;
const ACCEPT_SOCK = offsetOf(ACCEPT_ENTRY, "sock");
const ACCEPT_GEN = offsetOf(ACCEPT_ENTRY, "gen");
const ACCEPT_PEER_IP = offsetOf(ACCEPT_ENTRY, "peer_ip");
const ACCEPT_PEER_PORT = offsetOf(ACCEPT_ENTRY, "peer_port");

let errnoNames: Map<number, string> | null = null;

/** The Linux name of an errno value (errno.ts is the one table). */
export function errnoName(errno: number): string {
  if (errnoNames === null) {
    errnoNames = new Map(Object.entries(E).map(([name, value]) => [value as number, name]));
  }
  return errnoNames.get(errno) ?? `errno ${errno}`;
}

/** An error carrying the errno the NIC reported. */
export class RingError extends Error {
  constructor(readonly errno: number, what: string) {
    super(`${what}: ${errnoName(errno)}`);
  }
}

/** What a completion carries back to the request that caused it. */
interface Completion {
  op: number;
  result: number;
  sock: number;
  gen: number;
  localIp: number;
  localPort: number;
}

/** A waiter's wake socket: one end of a datagram pair; the other end goes to the bridge. */
class WakeSocket {
  // Buffers of more than 64 bytes live off the V8 heap: their addresses stay valid while the
  // nonblocking poll runs on another thread.
  private readonly pollfd = new Uint8Array(128);
  private readonly drainBuf = new Uint8Array(128);

  private constructor(readonly fd: number, readonly peerFd: number) {
    const v = new DataView(this.pollfd.buffer);
    v.setInt32(0, fd, true);
    v.setInt16(4, POLLIN, true);
  }

  static create(): WakeSocket {
    const sv = new Int32Array(2);
    const flags = SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC;
    if (libc().socketpair(AF_UNIX, flags, 0, new Uint8Array(sv.buffer)) !== 0) {
      throw libcError("socketpair");
    }
    return new WakeSocket(sv[0], sv[1]);
  }

  /** Blocks (off the event loop) until a datagram arrives or `ms` pass; drains the socket. */
  async wait(ms: number): Promise<boolean> {
    const r = await libc().pollAsync(this.pollfd, 1n, Math.max(0, Math.ceil(ms)));
    if (r <= 0) return false;
    for (let i = 0; i < 64 && Number(libc().read(this.fd, this.drainBuf, 128n)) > 0; i++) {
      // one datagram per kick; a full queue is drained in a few reads
    }
    return true;
  }

  /** Wakes a pending or the next `wait` (from this process: through the peer end). */
  kick(): void {
    kickSocket(this.peerFd);
  }

  close(): void {
    libc().close(this.fd);
    libc().close(this.peerFd);
  }
}

/** A socket the client holds: its rings, its entry's words, and who waits on it. */
class SockState {
  readonly tx: HostTxProducer;
  readonly rx: HostRxConsumer;
  /** Set while a connect waits for the handshake. */
  connecting = false;
  /** Set when the client let go of it (closed, or the client closed). */
  closed = false;
  private inWaiters: Array<() => void> = [];
  private outWaiters: Array<() => void> = [];
  private readonly words: Int32Array;
  private readonly base: number;

  constructor(
    client: RingClient,
    readonly sock: number,
    readonly gen: number,
    readonly listener: boolean,
  ) {
    const r = client.region;
    const s = hostSRings(r.buffer, r.layout, sock);
    this.tx = s.tx;
    this.rx = s.rx;
    this.words = client.words;
    this.base = sockOffset(r.layout, sock) / 4;
  }

  /** Word index of field `off` of the socket entry. */
  word(off: number): number {
    return this.base + (off / 4);
  }

  /** A u32 field of the entry (NIC line or host line), read once. */
  load(off: number): number {
    return Atomics.load(this.words, this.base + (off / 4));
  }

  /** The pending error the NIC reported (positive errno), or 0. */
  error(): number {
    return this.load(SOCK_ERR);
  }

  /** The NIC's shutdown bits. */
  shutdown(): number {
    return this.load(SOCK_SHUTDOWN);
  }

  /** The engine's state number. */
  tcpState(): number {
    return this.load(SOCK_TCP_STATE);
  }

  /** Resolves at the next IN edge (readable, a connection to accept, EOF, error). */
  waitIn(): Promise<void> {
    return new Promise((resolve) => this.inWaiters.push(resolve));
  }

  /** Resolves at the next OUT edge (writable, connected, error). */
  waitOut(): Promise<void> {
    return new Promise((resolve) => this.outWaiters.push(resolve));
  }

  /** Whether an operation waits on this socket. */
  waiting(): boolean {
    return this.inWaiters.length > 0 || this.outWaiters.length > 0;
  }

  /** Wakes the operations that `events` (EPOLL* bits) concern. */
  wake(events: number): void {
    if ((events & IN_EVENTS) !== 0 && this.inWaiters.length > 0) {
      const w = this.inWaiters;
      this.inWaiters = [];
      for (const f of w) f();
    }
    if ((events & OUT_EVENTS) !== 0 && this.outWaiters.length > 0) {
      const w = this.outWaiters;
      this.outWaiters = [];
      for (const f of w) f();
    }
  }

  /**
   * Readiness of what is waited for, from shared memory (as Linux's tcp_poll computes it):
   * EPOLL* bits, 0 if nothing waited for is ready.
   */
  readyNow(): number {
    if (!this.waiting()) return 0;
    if (this.closed || this.error() !== 0) return EPOLLERR;
    const shut = this.shutdown();
    let ready = 0;
    if (this.inWaiters.length > 0) {
      const avail = this.rx.readable();
      const need = this.listener ? ACCEPT_SIZE : 1;
      if (avail === RING_FAULT || avail >= need || (shut & SHUT_RCV) !== 0) ready |= EPOLLIN;
    }
    if (this.outWaiters.length > 0) {
      if (this.connecting) {
        if (this.tcpState() >= TCP_ESTABLISHED || shut === (SHUT_RCV | SHUT_SEND)) {
          ready |= EPOLLOUT;
        }
      } else if (this.tx.writable() !== 0 || (shut & SHUT_SEND) !== 0) {
        ready |= EPOLLOUT;
      }
    }
    return ready;
  }
}

/** A connection to the bridge through one region. */
export class RingClient {
  /** Thread entry (command and completion rings), waiter entry and process entry held. */
  readonly thread: number;
  readonly waiter: number;
  readonly proc: number;
  /** The waiter's generation at claim time (subscriptions name it). */
  readonly waiterGen: number;
  /** @internal Word view of the region. */
  readonly words: Int32Array;
  private readonly halves: Uint16Array;
  private readonly commands: DescRingProducer;
  private readonly completions: DescRingConsumer;
  private readonly events: DescRingConsumer;
  private readonly pending = new Map<number, (c: Completion) => void>();
  private readonly sockets = new Map<number, SockState>();
  private nextReqId = 1;
  private closed = false;
  /** Why the client stopped working (a corrupted ring index), or null. */
  private failure: Error | null = null;
  private readonly polling: Promise<void>;
  private readonly channel = new MessageChannel();
  private parked = false;
  /** Word indices of the bridge's doorbell and of this client's waiter line. */
  private readonly doorbellSeq: number;
  private readonly bridgeSleeping: number;
  private readonly sleeping: number;
  private readonly overflow: number;
  /** Completions and events the client refused as malformed. */
  rejected = 0;
  /** Times the poller slept on its wake socket, and eventfd writes that woke the bridge. */
  parks = 0;
  kicks = 0;
  /** Data doorbells (CMD_DATA) posted. */
  doorbells = 0;

  private constructor(
    readonly region: Region,
    private readonly control: ControlConn,
    private readonly wake: WakeSocket,
    private readonly bridgeFd: number,
  ) {
    const layout = region.layout;
    const p = layout.params;
    this.words = new Int32Array(region.buffer);
    this.halves = new Uint16Array(region.buffer);
    const pid = Deno.pid;
    this.proc = this.claim(p.maxProcs, (i) => procOffset(layout, i) + PROC_PID, pid, "process");
    // A thread entry is claimed by a thread id; this client is the process's main thread.
    this.thread = this.claim(
      p.maxThreads,
      (i) => threadOffset(layout, i) + THREAD_OWNER_TID,
      pid,
      "thread",
    );
    Atomics.store(this.words, (threadOffset(layout, this.thread) + THREAD_OWNER_PID) / 4, pid);
    this.waiter = this.claim(
      p.maxWaiters,
      (i) => waiterOffset(layout, i) + WAITER_OWNER,
      pid,
      "waiter",
    );
    const w = waiterOffset(layout, this.waiter);
    this.waiterGen = (Atomics.add(this.words, (w + WAITER_GEN) >> 2, 1) + 1) >>> 0;
    this.sleeping = (w + WAITER_SLEEPING) >> 2;
    this.overflow = (w + WAITER_OVERFLOW) >> 2;
    this.events = new DescRingConsumer(
      region.buffer,
      w + layout.evCtrl,
      w + layout.evSlotsOffset,
      p.evSlots,
    );
    const g = hostGRings(region.buffer, layout, this.thread);
    this.commands = g.commands;
    this.completions = g.completions;
    this.doorbellSeq = (layout.doorbellOffset + DOORBELL_SEQ) / 4;
    this.bridgeSleeping = (layout.doorbellOffset + DOORBELL_SLEEPING) / 4;
    this.channel.port1.onmessage = () => {};
    this.polling = this.poll();
  }

  /** Claims the first free entry of a table by a compare-and-swap of its owner word. */
  private claim(n: number, at: (i: number) => number, id: number, what: string): number {
    for (let i = 0; i < n; i++) {
      if (Atomics.compareExchange(this.words, at(i) / 4, 0, id) === 0) return i;
    }
    throw new Error(`no free ${what} entry in the region (${n} in use)`);
  }

  /** Asks the bridge at `controlPath` for a region, maps it and registers in it. */
  static async attach(controlPath = DEFAULT_CONTROL_PATH): Promise<RingClient> {
    const conn = connectControl(controlPath);
    let region: Region | null = null;
    let bridgeFd = -1;
    let wake: WakeSocket | null = null;
    try {
      const hello = new Uint8Array(12); // version, flags (no HELLO_JOIN), region id
      new DataView(hello.buffer).setUint32(0, LAYOUT_VERSION, true);
      conn.send(MSG_HELLO, hello);
      const reply = await conn.recv();
      if (reply.type === MSG_ERROR) {
        if (reply.fd >= 0) libc().close(reply.fd);
        throw new Error(`bridge refused the region: ${new TextDecoder().decode(reply.payload)}`);
      }
      if (reply.type !== MSG_REGION || reply.fd < 0) {
        if (reply.fd >= 0) libc().close(reply.fd);
        throw new Error(`unexpected reply ${reply.type} from ${controlPath}`);
      }
      region = mapRegionFd(reply.fd);
      // The bridge's eventfd follows (a WAKER frame without one: it cannot be kicked).
      const w = await conn.recv();
      if (w.type !== MSG_WAKER) {
        if (w.fd >= 0) libc().close(w.fd);
        throw new Error(`expected WAKER, got frame type ${w.type}`);
      }
      bridgeFd = w.fd;
      wake = WakeSocket.create();
      const client = new RingClient(region, conn, wake, bridgeFd);
      const payload = new Uint8Array(4);
      new DataView(payload.buffer).setUint32(0, client.waiter, true);
      conn.send(MSG_WAIT_FD, payload, wake.peerFd);
      return client;
    } catch (err) {
      wake?.close();
      if (bridgeFd >= 0) libc().close(bridgeFd);
      if (region !== null) closeRegion(region);
      conn.close();
      throw err;
    }
  }

  /** Opens a listening socket on the bridge's address (port 0: an ephemeral port). */
  async listen(opts: { port: number; backlog?: number }): Promise<PnoListener> {
    const c = await this.call(
      CMD_BIND,
      SOCK_NONE,
      0,
      (v, at) => writeSockaddrV4(v, at + BIND_ADDR, 0, opts.port),
    );
    if (c.result < 0 || c.op !== CPL_SOCKET) throw new RingError(-c.result || E.EINVAL, "bind");
    const st = this.adopt(c.sock, c.gen, true);
    if (st === null) throw new RingError(E.EBADF, "bind");
    const l = await this.call(
      CMD_LISTEN,
      st.sock,
      st.gen,
      (v, at) => v.setInt32(at + LISTEN_BACKLOG, opts.backlog ?? 128, true),
    );
    if (l.result < 0) {
      this.release(st, -1);
      throw new RingError(-l.result, "listen");
    }
    return new PnoListener(this, st, c.localPort);
  }

  /** Connects out through the bridge to `hostname:port` (dotted-quad IPv4). */
  async connect(opts: { hostname: string; port: number }): Promise<PnoConn> {
    const ip = parseIp(opts.hostname);
    const what = `connect to ${opts.hostname}:${opts.port}`;
    const c = await this.call(
      CMD_CONNECT,
      SOCK_NONE,
      0,
      (v, at) => writeSockaddrV4(v, at + CONNECT_ADDR, ip, opts.port),
    );
    if (c.result < 0 || c.op !== CPL_SOCKET) throw new RingError(-c.result || E.EINVAL, what);
    const st = this.adopt(c.sock, c.gen, false);
    if (st === null) throw new RingError(E.EBADF, what);
    st.connecting = true;
    for (;;) {
      this.check();
      const err = st.error();
      const shut = st.shutdown();
      if (err === 0 && st.tcpState() >= TCP_ESTABLISHED) break;
      if (err !== 0 || shut === (SHUT_RCV | SHUT_SEND)) {
        this.release(st, -1);
        throw new RingError(err || E.ECONNREFUSED, what);
      }
      await st.waitOut();
    }
    st.connecting = false;
    return new PnoConn(this, st, { hostname: opts.hostname, port: opts.port });
  }

  /** Stops the poller, unmaps the region and hangs up the control connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake.kick();
    await this.polling;
    for (const st of this.sockets.values()) {
      st.closed = true;
      st.wake(IN_EVENTS | OUT_EVENTS);
    }
    this.sockets.clear();
    this.abandonPending();
    this.channel.port1.close();
    this.wake.close();
    if (this.bridgeFd >= 0) libc().close(this.bridgeFd);
    // The region goes away with the control connection: the bridge resets what is still open.
    closeRegion(this.region);
    this.control.close();
  }

  /** Whether `close` was called. */
  get isClosed(): boolean {
    return this.closed;
  }

  // ---- internals used by PnoListener and PnoConn ----

  /** @internal Throws if the client is closed or broken. */
  check(): void {
    if (this.failure !== null) throw this.failure;
    if (this.closed) throw new Error("ring client is closed");
  }

  /**
   * @internal Takes a socket the NIC handed over (CPL_SOCKET or an accept entry): holder count
   * 1, one reference from this process, and a subscription of the client's waiter. Returns null
   * for a socket id out of range.
   */
  adopt(sock: number, gen: number, listener: boolean): SockState | null {
    if (!(sock < this.region.layout.params.maxSockets)) {
      this.rejected++;
      return null;
    }
    const old = this.sockets.get(sock);
    if (old !== undefined) {
      // The NIC reused a slot this client still thought open: the old one is gone.
      old.closed = true;
      old.wake(IN_EVENTS | OUT_EVENTS);
    }
    const st = new SockState(this, sock, gen, listener);
    this.sockets.set(sock, st);
    Atomics.store(this.words, st.word(SOCK_HOLDERS), 1);
    Atomics.add(this.halves, this.refIndex(sock), 1);
    this.post(CMD_SUBSCRIBE, sock, gen, 0, (v, at) => {
      v.setUint32(at + SUB_WAITER, this.waiter, true);
      v.setUint32(at + SUB_WAITER_GEN, this.waiterGen, true);
      v.setUint32(at + SUB_MASK, SUB_EVENTS, true);
      v.setUint32(at + SUB_FLAGS, 0, true);
    });
    // Edges raised before the NIC reads the subscription reach nobody; it answers the
    // subscription itself with one notification, after which waiting operations look at
    // shared memory again and anything later comes as an edge.
    return st;
  }

  /** @internal The last handle here is closed: drop the hold, and close it on the NIC if last. */
  release(st: SockState, linger: number): void {
    if (st.closed) return;
    st.closed = true;
    st.wake(IN_EVENTS | OUT_EVENTS);
    if (this.sockets.get(st.sock) === st) this.sockets.delete(st.sock);
    if (this.closed || this.failure !== null) return; // the region is gone or untrustworthy
    const ref = this.refIndex(st.sock);
    if (Atomics.load(this.halves, ref) > 0) Atomics.sub(this.halves, ref, 1);
    const left = Atomics.sub(this.words, st.word(SOCK_HOLDERS), 1) - 1;
    if (left <= 0) {
      this.post(
        CMD_CLOSE,
        st.sock,
        st.gen,
        0,
        (v, at) => v.setInt32(at + CLOSE_LINGER, linger, true),
      );
    }
  }

  /**
   * @internal After a write: tells the NIC with CMD_DATA unless a doorbell it has not served
   * yet is in flight (that one will see these bytes too: the NIC stores `data_ack` before it
   * looks at the ring). No allocation.
   */
  txDoorbell(st: SockState): void {
    const reqWord = st.word(SOCK_DATA_REQ);
    const req = Atomics.load(this.words, reqWord);
    if (Atomics.load(this.words, st.word(SOCK_DATA_ACK)) !== req) return;
    const next = (req + 1) | 0;
    Atomics.store(this.words, reqWord, next);
    const at = this.reserveSlot();
    writeHeader(this.commands.view, at, CMD_DATA, st.sock, st.gen, 0);
    this.commands.view.setUint32(at + DATA_REQ, next >>> 0, true);
    this.publish();
    this.doorbells++;
  }

  /** @internal After a read or an accept: the same doorbell, if the NIC asked to hear of it. */
  rxDoorbell(st: SockState): void {
    if (Atomics.load(this.words, st.word(SOCK_RX_WANT)) !== 0) this.txDoorbell(st);
  }

  /** @internal Posts a command that has no completion. */
  post(
    opcode: number,
    sock: number,
    gen: number,
    reqId: number,
    fill?: (v: DataView, at: number) => void,
  ): void {
    const at = this.reserveSlot();
    writeHeader(this.commands.view, at, opcode, sock, gen, reqId);
    fill?.(this.commands.view, at);
    this.publish();
  }

  /** @internal Posts a command and waits for its completion. */
  call(
    opcode: number,
    sock: number,
    gen: number,
    fill?: (v: DataView, at: number) => void,
  ): Promise<Completion> {
    try {
      this.check();
    } catch (err) {
      return Promise.reject(err);
    }
    const reqId = this.nextReqId;
    this.nextReqId = (this.nextReqId % 0x7fffffff) + 1;
    const done = new Promise<Completion>((resolve) => this.pending.set(reqId, resolve));
    this.post(opcode, sock, gen, reqId, fill);
    // Completions do not wake a sleeping waiter: a parked poller must look for this one.
    if (this.parked) this.wake.kick();
    return done.then((c) => {
      if (this.failure !== null) throw this.failure;
      return c;
    });
  }

  /** @internal Sets an option the NIC acts on (no completion). */
  setOption(st: SockState, level: number, name: number, value: number, value2 = 0): void {
    this.check();
    this.post(CMD_SETSOCKOPT, st.sock, st.gen, 0, (v, at) => {
      v.setInt32(at + SOCKOPT_LEVEL, level, true);
      v.setInt32(at + SOCKOPT_NAME, name, true);
      v.setInt32(at + SOCKOPT_VALUE, value, true);
      v.setInt32(at + SOCKOPT_VALUE2, value2, true);
    });
  }

  private refIndex(sock: number): number {
    return (procOffset(this.region.layout, this.proc) + PROC_REFS + 2 * sock) / 2;
  }

  /** A free command slot's offset; waits (bounded) while the NIC is behind. */
  private reserveSlot(): number {
    let deadline = 0;
    for (;;) {
      const room = this.commands.reserve(1);
      if (room === RING_FAULT) throw this.fail(new Error("command ring index corrupted"));
      if (room > 0) return this.commands.slotOffset(0);
      const now = performance.now();
      if (deadline === 0) deadline = now + POST_TIMEOUT_MS;
      else if (now > deadline) throw new Error("command ring full: the bridge does not serve it");
      this.kickBridge();
      const spinUntil = now + 0.05;
      while (performance.now() < spinUntil) { /* the NIC consumes within microseconds */ }
    }
  }

  /** Publishes the reserved slot, rings the doorbell, and wakes the bridge if it sleeps. */
  private publish(): void {
    this.commands.publish(1);
    Atomics.add(this.words, this.doorbellSeq, 1);
    this.kickBridge();
  }

  /** Published, then look at the flag (the bridge sets it, then looks at the rings). */
  private kickBridge(): void {
    if (
      this.bridgeFd >= 0 && Atomics.load(this.words, this.bridgeSleeping) !== 0 &&
      Atomics.exchange(this.words, this.bridgeSleeping, 0) !== 0
    ) {
      kickFd(this.bridgeFd);
      this.kicks++;
    }
  }

  /** Records a fatal fault: every waiting operation wakes and throws it. */
  private fail(err: Error): Error {
    if (this.failure === null) {
      this.failure = err;
      for (const st of this.sockets.values()) st.wake(IN_EVENTS | OUT_EVENTS);
      this.abandonPending();
    }
    return this.failure;
  }

  /** Answers every command still waiting for its completion with EBADF. */
  private abandonPending(): void {
    for (const resolve of this.pending.values()) {
      resolve({
        op: CPL_RESULT,
        result: -E.EBADF,
        sock: SOCK_NONE,
        gen: 0,
        localIp: 0,
        localPort: 0,
      });
    }
    this.pending.clear();
  }

  private async poll(): Promise<void> {
    let lastWork = performance.now();
    while (!this.closed && this.failure === null) {
      const work = this.drain();
      if (work < 0) return;
      const now = performance.now();
      if (work > 0) {
        lastWork = now;
        await this.yieldNow();
        continue;
      }
      if (this.pending.size > 0) {
        if (now - lastWork < SPIN_MS) await this.yieldNow();
        else await this.wake.wait(1);
        continue;
      }
      // Sleep: say so, look once more (the bridge posts, then looks at the flag), block.
      Atomics.store(this.words, this.sleeping, 1);
      if (this.events.peek(1) === 0 && !this.wakeReady() && !this.closed) {
        this.parks++;
        this.parked = true;
        await this.wake.wait(PARK_MS);
        this.parked = false;
      }
      Atomics.store(this.words, this.sleeping, 0);
      lastWork = performance.now();
    }
  }

  /** Dispatches what the event queue and the completion ring hold; -1 on a corrupted ring. */
  private drain(): number {
    let work = 0;
    const ev = this.events;
    const n = ev.peek(64);
    if (n === RING_FAULT) {
      this.fail(new Error("event queue index corrupted"));
      return -1;
    }
    for (let i = 0; i < n; i++) this.dispatchEvent(ev.view, ev.slotOffset(i));
    if (n > 0) ev.release(n);
    work += n;
    const cpl = this.completions;
    const m = cpl.peek(64);
    if (m === RING_FAULT) {
      this.fail(new Error("completion ring index corrupted"));
      return -1;
    }
    for (let i = 0; i < m; i++) this.dispatchCompletion(cpl.view, cpl.slotOffset(i));
    if (m > 0) cpl.release(m);
    work += m;
    // The queue was full and events were lost: every waiting operation looks again.
    if (Atomics.load(this.words, this.overflow) !== 0) {
      Atomics.store(this.words, this.overflow, 0);
      for (const st of this.sockets.values()) st.wake(IN_EVENTS | OUT_EVENTS);
      work++;
    }
    return work;
  }

  /** Before sleeping: wakes operations whose socket is ready now; true if there was one. */
  private wakeReady(): boolean {
    let any = false;
    for (const st of this.sockets.values()) {
      const ready = st.readyNow();
      if (ready !== 0) {
        st.wake(ready);
        any = true;
      }
    }
    return any;
  }

  private yieldNow(): Promise<void> {
    return new Promise((resolve) => {
      this.channel.port1.onmessage = () => resolve();
      this.channel.port2.postMessage(0);
    });
  }

  private dispatchEvent(v: DataView, at: number): void {
    if (readOpcode(v, at) !== EV_NOTIFY) {
      this.rejected++;
      return;
    }
    const st = this.sockets.get(readSock(v, at));
    // An event of a socket closed here since, or of a previous socket in the slot.
    if (st === undefined || st.gen !== readGen(v, at)) return;
    st.wake(v.getUint32(at + NOTIFY_EVENTS, true));
  }

  private dispatchCompletion(v: DataView, at: number): void {
    const op = readOpcode(v, at);
    const reqId = readReqId(v, at);
    const resolve = this.pending.get(reqId);
    if (resolve === undefined || (op !== CPL_RESULT && op !== CPL_SOCKET && op !== CPL_TCP_INFO)) {
      this.rejected++;
      return;
    }
    this.pending.delete(reqId);
    const socket = op === CPL_SOCKET;
    resolve({
      op,
      result: readResult(v, at),
      sock: readSock(v, at),
      gen: readGen(v, at),
      localIp: socket ? readSockaddrV4(v, at + SOCKET_LOCAL) : 0,
      localPort: socket ? readSockaddrPort(v, at + SOCKET_LOCAL) : 0,
    });
  }
}

/** A listening PnO socket; `accept` pops each new connection from its accept queue. */
export class PnoListener implements AsyncIterable<PnoConn> {
  private closed = false;
  private readonly entry = new Uint8Array(ACCEPT_SIZE);
  private readonly entryView = new DataView(this.entry.buffer);

  /** @internal */
  constructor(
    private readonly client: RingClient,
    private readonly st: SockState,
    readonly port: number,
  ) {}

  /** The socket's slot in the region. */
  get sock(): number {
    return this.st.sock;
  }

  get addr(): { transport: "tcp"; hostname: string; port: number } {
    return { transport: "tcp", hostname: "0.0.0.0", port: this.port };
  }

  /** Waits for the next connection: a pop from the accept queue in the region. */
  async accept(): Promise<PnoConn> {
    const st = this.st;
    for (;;) {
      if (this.closed || st.closed) throw new Error("listener closed");
      this.client.check();
      const avail = st.rx.readable();
      if (avail === RING_FAULT) throw new Error("accept queue index corrupted");
      if (avail >= ACCEPT_SIZE) {
        st.rx.read(this.entry, 0, ACCEPT_SIZE);
        // The NIC holds connections back while the queue is full; it wants to hear of room.
        this.client.rxDoorbell(st);
        const v = this.entryView;
        const conn = this.client.adopt(
          v.getUint32(ACCEPT_SOCK, true),
          v.getUint32(ACCEPT_GEN, true),
          false,
        );
        if (conn === null) continue;
        return new PnoConn(this.client, conn, {
          hostname: formatIp(v.getUint32(ACCEPT_PEER_IP, true)),
          port: v.getUint16(ACCEPT_PEER_PORT, true),
        });
      }
      await st.waitIn();
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<PnoConn> {
    while (!this.closed) {
      try {
        yield await this.accept();
      } catch (err) {
        if (this.closed) return;
        throw err;
      }
    }
  }

  /** Stops listening; connections not accepted yet are reset by the NIC. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.release(this.st, -1);
  }
}

/** A PnO connection: `read` and `write` copy straight out of and into its S-rings. */
export class PnoConn {
  private closed = false;

  /** @internal */
  constructor(
    private readonly client: RingClient,
    private readonly st: SockState,
    readonly remoteAddr: { hostname: string; port: number },
  ) {}

  /** The socket's slot in the region. */
  get sock(): number {
    return this.st.sock;
  }

  /** The local address the NIC chose (its address, the port). */
  get localAddr(): { hostname: string; port: number } {
    return {
      hostname: formatIp(this.st.load(SOCK_LOCAL_IP) >>> 0),
      port: this.st.load(SOCK_LOCAL_PORT) & 0xffff,
    };
  }

  /** Reads into `p`; resolves with the byte count, or null at end of stream. */
  async read(p: Uint8Array): Promise<number | null> {
    const st = this.st;
    for (;;) {
      if (this.closed || st.closed) return null;
      this.client.check();
      // The NIC publishes bytes before it sets SHUT_RCV or an error: with the flags read
      // first, an empty ring afterwards really is the end.
      const err = st.error();
      const shut = st.shutdown();
      const avail = st.rx.readable();
      if (avail === RING_FAULT) throw new Error("RX ring index corrupted");
      if (avail > 0) {
        const n = st.rx.read(p, 0, Math.min(p.length, avail));
        this.client.rxDoorbell(st);
        return n;
      }
      if (err !== 0) throw new RingError(err, "read");
      if ((shut & SHUT_RCV) !== 0) return null;
      await st.waitIn();
    }
  }

  /** Writes all of `p`, waiting for ring space as needed; resolves with `p.length`. */
  async write(p: Uint8Array): Promise<number> {
    const st = this.st;
    let done = 0;
    while (done < p.length) {
      if (this.closed || st.closed) throw new Error("connection closed");
      this.client.check();
      const err = st.error();
      if (err !== 0) throw new RingError(err, "write");
      if ((st.shutdown() & SHUT_SEND) !== 0) throw new RingError(E.EPIPE, "write");
      const n = st.tx.write(p, done, p.length - done);
      if (n === RING_FAULT) throw new Error("TX ring index corrupted");
      if (n > 0) {
        done += n;
        this.client.txDoorbell(st);
      } else {
        await st.waitOut();
      }
    }
    return done;
  }

  /** Half-closes: the peer reads end of stream after the bytes already written. */
  closeWrite(): Promise<void> {
    try {
      if (this.closed || this.st.closed) throw new Error("connection closed");
      this.client.check();
      this.client.post(
        CMD_SHUTDOWN,
        this.st.sock,
        this.st.gen,
        0,
        (v, at) => v.setInt32(at + SHUTDOWN_HOW, 1, true),
      );
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Sets TCP_NODELAY. */
  setNoDelay(on = true): Promise<void> {
    try {
      this.client.setOption(this.st, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0);
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Closes the connection: unsent bytes are delivered, then FIN (as Linux's close). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.release(this.st, -1);
  }
}

function parseIp(text: string): number {
  const p = text.split(".").map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new Error(`not an IPv4 address: ${text}`);
  }
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

function formatIp(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}
