/**
 * The TCP engine of the NIC-side bridge (RFC 9293): its options, the in-bridge socket API and
 * the lifecycle of sockets. The protocol lives beside it, split as FreeBSD splits its stack:
 * input.ts (segment arrival), output.ts, timers.ts, recovery.ts (loss detection and recovery),
 * rtt.ts, syncache.ts (SYN cookies), over the data structures conn_table.ts, timer_wheel.ts,
 * sack.ts (the sender's scoreboard) and reass.ts (out-of-order ranges). Those modules are
 * functions of the engine and a socket, as FreeBSD's are of `tp`; the engine's fields without
 * `private` are shared with them and are not part of the API.
 *
 * Data path without allocation: `input` parses into one reused {@linkcode TcpSegment}, looks
 * the 4-tuple up in an open-addressed table of numbers, copies payload straight into the
 * socket's RX stream (the next in-order data summed for its checksum in the same pass); output
 * writes headers with byte stores into memory the {@linkcode IpLink} lends and copies payload
 * straight from the TX stream. Timers live on a timing wheel of
 * intrusive lists; output and readiness events are batched and run by `poll`.
 *
 * The bridge loop is: for each received segment `input(...)`, then `poll(now)` (which delivers
 * readiness events, runs due timers and sends what is pending), then sleep up to
 * `nextDeadline()`.
 *
 * @module
 */

import {
  seqDiff,
  seqLt,
  TCP_ACK,
  TCP_ERR_DATA_OFFSET,
  TCP_OK,
  TCP_PSH,
  TCP_RST,
  tcpChecksumOk,
  TcpSegment,
} from "../wire/tcp.ts";
import { NATIVE_CHECKSUM } from "../wire/checksum.ts";
import type { IpLink } from "./link.ts";
import { CC_CUBIC, ccById } from "./cc.ts";
import { hash4, mulberry32 } from "./isn.ts";
import { MemStream } from "./_mem_stream.ts";
import * as K from "./counters.ts";
import { ConnTable } from "./conn_table.ts";
import { TimerWheel } from "./timer_wheel.ts";
import {
  copyVerified,
  inputClosed,
  inputListen,
  inputSynchronized,
  inputSynSent,
  predicted,
} from "./input.ts";
import { flush, queueOut, sendRst, sendSyn } from "./output.ts";
import { arm, onTimer } from "./timers.ts";
import { MIN_SND_MSS } from "./input.ts";
import { rcvCapLimit, rcvSpaceAdjust, sndBufExpand, wscaleFor } from "./autotune.ts";
import { timeWaitExpire, timeWaitInput, timeWaitSnapshot, TimeWaitTable } from "./timewait.ts";
import {
  canSendData,
  CLOSE_WAIT,
  CLOSED,
  EADDRINUSE,
  EADDRNOTAVAIL,
  EAGAIN,
  ECONNABORTED,
  ECONNREFUSED,
  ECONNRESET,
  EINVAL,
  ENOBUFS,
  ENOTCONN,
  EPIPE,
  ESTABLISHED,
  ETIMEDOUT,
  EV_CLOSED,
  EV_READABLE,
  EV_RESET,
  EV_WRITABLE,
  FIN_WAIT_1,
  FIN_WAIT_2,
  isSynchronized,
  LAST_ACK,
  LISTEN,
  OPT_CONGESTION,
  OPT_KEEPALIVE,
  OPT_KEEPCNT,
  OPT_KEEPIDLE,
  OPT_KEEPINTVL,
  OPT_LINGER,
  OPT_NODELAY,
  RECOVERY_RTO,
  type SocketOptions,
  type SocketStreams,
  SYN_RECEIVED,
  SYN_SENT,
  TcpSocket,
  TIME_WAIT,
} from "./socket.ts";

/** Engine configuration; every field has a Linux-like default. */
export interface TcpEngineOptions {
  /** Source address for `connect` when none is given. */
  localIp?: number;
  /** Maximum segment lifetime; TIME_WAIT lasts twice this (default 30 s, so 60 s like Linux). */
  mslMs?: number;
  /** Seeds the secret keys (ISN, cookies, hashing) for reproducible runs; random otherwise. */
  seed?: number;
  /**
   * Initial send / receive buffer (in-memory ring) capacities in bytes, like the middle value
   * of Linux's tcp_wmem / tcp_rmem (default 32 KiB: twice the initial congestion window of ten
   * segments, and 64 KiB: the window a Linux SYN offers). Memory behind them is taken only as
   * bytes arrive (_mem_stream.ts).
   */
  sndBuf?: number;
  rcvBuf?: number;
  /** Largest capacities autotuning may raise them to (tcp_wmem[2] / tcp_rmem[2]; 4 MiB). */
  sndBufMax?: number;
  rcvBufMax?: number;
  /**
   * Buffers that grow with the flow (autotune.ts; default true, Linux's tcp_moderate_rcvbuf).
   * false: fixed rings of `sndBuf` / `rcvBuf` bytes, allocated when the socket opens (the
   * engine before autotuning; `pno bench --memory` compares the two).
   */
  autotune?: boolean;
  /** Initial connection table size (power of two, grows). */
  tableSize?: number;
  /** SYN and SYN-ACK retransmissions before giving up (Linux: 6 and 5). */
  synRetries?: number;
  synAckRetries?: number;
  /** Data retransmission timeouts before the connection is dropped (Linux tcp_retries2: 15). */
  maxRetries?: number;
  /**
   * Retransmission timeouts and zero-window probes an orphan (a connection the application
   * closed) gets before it is dropped (Linux tcp_orphan_retries, whose 0 means 8).
   */
  orphanRetries?: number;
  /**
   * TIME-WAIT records held at most (Linux's tcp_max_tw_buckets; default 65,536, about 16 MiB
   * of records); past it a connection closes without TIME-WAIT (timewait.ts).
   */
  maxTimeWait?: number;
  /**
   * Connections closed by their application and finishing in the background, at most (Linux's
   * tcp_max_orphans; default 16,384); past it close() resets (timewait.ts).
   */
  maxOrphans?: number;
  /**
   * The secret keys (ISN, SYN cookies, table hash, timestamp offsets, port offsets, reuseport;
   * 12 words).
   * The engines of one port's queues share them: a SYN cookie made by one queue's engine is
   * honoured by the queue the flow's ACK lands on, and its timestamps continue the clock the
   * SYN-ACK started. Default: random per engine (or from `seed`).
   */
  keys?: Uint32Array;
  /** Orphaned FIN-WAIT-2 lifetime (Linux tcp_fin_timeout: 60 s). */
  finTimeoutMs?: number;
  /** Delayed ACK timeout (40 ms like Linux; RFC 1122 allows up to 500 ms). */
  delayedAckMs?: number;
  minRtoMs?: number;
  maxRtoMs?: number;
  initialRtoMs?: number;
  /** Challenge ACKs per second (RFC 5961 §7). */
  challengeAckLimit?: number;
  /** Default congestion control (CC_CUBIC like Linux, or CC_NEWRENO). */
  congestion?: number;
  timestamps?: boolean;
  sack?: boolean;
  windowScaling?: boolean;
  /** Answer with SYN cookies when a listener's SYN queue is full (default true). */
  synCookies?: boolean;
  /**
   * Other engines serve other queues of the same port (`pno bridge --workers N`). A segment
   * of a connection this engine does not know may belong to another queue's engine (af_packet
   * rolls flows over to another queue when one is under pressure, and a NIC's RSS may move
   * them too), so it is dropped and counted instead of answered with a RST that would kill
   * the connection; TCP's retransmission delivers it again. SYNs are still answered.
   */
  multiQueue?: boolean;
  /**
   * The clock (ms) that socket calls made between polls (connect, close, abort) read, so that
   * a SYN's timestamp, its RTT sample and the ISN clock are those of the call, not of the last
   * poll (default: performance.now, the bridge's clock; the in-memory wire gives its own).
   */
  clock?: () => number;
  /** Ephemeral port range (Linux: 32768-60999). */
  ephemeralLow?: number;
  ephemeralHigh?: number;
}

/** A failed socket call: `errno` is one of the negative E* constants of socket.ts. */
export class TcpError extends Error {
  constructor(readonly errno: number, msg: string) {
    super(msg);
  }
}

/** Options for `listen`. */
export interface ListenOptions extends SocketOptions {
  /** Accept only segments to this address (default: any). */
  localIp?: number;
  /**
   * SO_REUSEPORT: the port may be shared with other listeners that ask for it too; each new
   * connection goes to one of them by a keyed hash of the peer's address and port, as Linux's
   * reuseport groups spread them (nginx's `listen ... reuseport`, one listener per worker).
   */
  reusePort?: boolean;
}

/** Options for `connect`. */
export interface ConnectOptions extends SocketOptions {
  srcIp?: number;
  /** Fixed source port; default: an ephemeral port (RFC 6056). */
  srcPort?: number;
}

/** The smallest path MTU believed from ICMP (Linux's net.ipv4.route.min_pmtu). */
const MIN_PMTU = 552;

/** The TCP engine: one per queue of a port. */
export class TcpEngine {
  readonly link: IpLink;
  /** Global counters, indexed by the C_* constants of counters.ts. */
  readonly counters: Float64Array = K.newCounters();
  localIp: number;

  readonly msl: number;
  readonly sndBuf: number;
  readonly rcvBuf: number;
  readonly sndBufMax: number;
  readonly rcvBufMax: number;
  readonly autotune: boolean;
  /** When trimQuietBuffers (autotune.ts) last walked the table. */
  trimAt = -Infinity;
  /**
   * Set by the loop before `poll`: the port returned a full burst, so more frames wait unread.
   * A tail loss probe waits for them (recovery.ts onPto): the ACKs it would ask for may be
   * among them.
   */
  inputPending = false;
  readonly synRetries: number;
  readonly synAckRetries: number;
  readonly maxRetries: number;
  readonly orphanRetries: number;
  readonly maxTimeWait: number;
  readonly maxOrphans: number;
  /** Orphaned connections finishing in the background. */
  orphans = 0;
  /** Unpredictable 32-bit numbers (a seeded sequence when `seed` is given). */
  readonly random: () => number;
  readonly finTimeout: number;
  readonly dackMs: number;
  readonly minRto: number;
  readonly maxRto: number;
  readonly initRto: number;
  readonly challengeLimit: number;
  readonly defaultCc: number;
  readonly tsEnabled: boolean;
  readonly sackEnabled: boolean;
  readonly wsEnabled: boolean;
  readonly cookiesEnabled: boolean;
  readonly multiQueue: boolean;
  clock: () => number;
  readonly ephLow: number;
  readonly ephHigh: number;

  /** Secret keys: ISN, cookies, table hash, timestamp offsets, port offsets. */
  readonly k: Uint32Array = new Uint32Array(12);
  ephCounter = 0;

  /** The clock of the call in progress (ms). */
  now = 0;
  readonly seg: TcpSegment = new TcpSegment();
  inBuf: Uint8Array = new Uint8Array(0);
  inSrc = 0;
  inDst = 0;
  /**
   * The socket whose receive ring holds this segment's payload already, `placedLen` bytes at
   * the producer index, copied and verified at input (input.ts `copyVerified`); null when the
   * payload is still only in `inBuf`. Cleared at every `input`.
   */
  placed: TcpSocket | null = null;
  placedLen = 0;
  readonly sackScratch: Uint32Array = new Uint32Array(8);

  readonly table: ConnTable<TcpSocket>;
  /** Connections in TIME-WAIT, as small records (timewait.ts). */
  readonly tw: TimeWaitTable;
  readonly listeners: (TcpSocket | null)[] = new Array(65536).fill(null);
  nextId = 1;
  liveCount = 0;

  readonly wheel: TimerWheel<TcpSocket> = new TimerWheel();
  /** The wheel's callback, made once. */
  private readonly fire = (s: TcpSocket): void => onTimer(this, s);

  // Pending output and pending events.
  outHead: TcpSocket | null = null;
  outTail: TcpSocket | null = null;
  evHead: TcpSocket | null = null;
  evTail: TcpSocket | null = null;

  chSecond = -1;
  chCount = 0;

  constructor(link: IpLink, opts: TcpEngineOptions = {}) {
    this.link = link;
    this.localIp = opts.localIp ?? 0;
    this.msl = opts.mslMs ?? 30000;
    this.autotune = opts.autotune ?? true;
    this.sndBuf = opts.sndBuf ?? (this.autotune ? 32 * 1024 : 256 * 1024);
    this.rcvBuf = opts.rcvBuf ?? (this.autotune ? 64 * 1024 : 256 * 1024);
    this.sndBufMax = this.autotune ? Math.max(this.sndBuf, opts.sndBufMax ?? 4 << 20) : this.sndBuf;
    this.rcvBufMax = this.autotune ? Math.max(this.rcvBuf, opts.rcvBufMax ?? 4 << 20) : this.rcvBuf;
    this.synRetries = opts.synRetries ?? 6;
    this.synAckRetries = opts.synAckRetries ?? 5;
    this.maxRetries = opts.maxRetries ?? 15;
    this.finTimeout = opts.finTimeoutMs ?? 60000;
    this.dackMs = opts.delayedAckMs ?? 40;
    this.minRto = opts.minRtoMs ?? 200;
    this.maxRto = opts.maxRtoMs ?? 120000;
    this.initRto = opts.initialRtoMs ?? 1000;
    this.challengeLimit = opts.challengeAckLimit ?? 1000;
    this.defaultCc = opts.congestion ?? CC_CUBIC;
    this.tsEnabled = opts.timestamps ?? true;
    this.sackEnabled = opts.sack ?? true;
    this.wsEnabled = opts.windowScaling ?? true;
    this.cookiesEnabled = opts.synCookies ?? true;
    this.multiQueue = opts.multiQueue ?? false;
    this.clock = opts.clock ?? (() => performance.now());
    this.ephLow = opts.ephemeralLow ?? 32768;
    this.ephHigh = opts.ephemeralHigh ?? 60999;
    if (opts.seed !== undefined) {
      const r = mulberry32(opts.seed);
      for (let i = 0; i < this.k.length; i++) this.k[i] = r();
      const rr = mulberry32(opts.seed ^ 0x5bd1e995);
      this.random = rr;
    } else {
      crypto.getRandomValues(this.k);
      const one = new Uint32Array(1);
      this.random = () => crypto.getRandomValues(one)[0];
    }
    if (opts.keys !== undefined) this.k.set(opts.keys.subarray(0, this.k.length));
    this.orphanRetries = opts.orphanRetries ?? 8;
    this.maxTimeWait = opts.maxTimeWait ?? 65536;
    this.maxOrphans = opts.maxOrphans ?? 16384;
    let size = 1024;
    while (size < (opts.tableSize ?? 4096)) size *= 2;
    this.table = new ConnTable(size, this.k[4], this.k[5]);
    this.tw = new TimeWaitTable(this.k[4], this.k[5] ^ 0x5457);
  }

  // =====================================================================================
  // Public: data path
  // =====================================================================================

  /**
   * One received TCP segment (header + payload, `len` bytes at `off` of `buf`), addressed from
   * `srcIp` to `dstIp` (host-order numbers). Validates, counts and drops bad segments; never
   * throws on hostile input. Replies are queued; `poll` sends them.
   */
  input(
    buf: Uint8Array,
    off: number,
    len: number,
    srcIp: number,
    dstIp: number,
    nowMs: number,
  ): void {
    if (nowMs > this.now) this.now = nowMs;
    const c = this.counters;
    c[K.C_SEGS_IN]++;
    if (len < 20 || off < 0 || off + len > buf.length) {
      c[K.C_DROP_SHORT]++;
      return;
    }
    const seg = this.seg;
    const rc = seg.parse(buf, off, len);
    srcIp >>>= 0;
    dstIp >>>= 0;
    this.placed = null;
    // Header prediction: with the native checksum, the next in-order data of an established
    // connection is summed as it is copied into the receive ring (input.ts `predicted`,
    // `copyVerified`); every other segment is verified before anything reads it, and is looked
    // up below.
    let s: TcpSocket | null = null;
    let looked = false;
    if (
      NATIVE_CHECKSUM && rc === TCP_OK && seg.payloadLen > 0 && (seg.flags & ~TCP_PSH) === TCP_ACK
    ) {
      s = this.table.lookup(dstIp, seg.dstPort, srcIp, seg.srcPort);
      looked = true;
    }
    if (s !== null && predicted(s, seg)) {
      if (!copyVerified(this, s, seg, buf, off, srcIp, dstIp)) {
        c[K.C_DROP_CHECKSUM]++;
        return;
      }
    } else {
      if (!tcpChecksumOk(buf, off, len, srcIp, dstIp)) {
        c[K.C_DROP_CHECKSUM]++;
        return;
      }
      if (rc !== TCP_OK) {
        c[
          rc === TCP_ERR_DATA_OFFSET ? K.C_DROP_DATA_OFFSET : K.C_DROP_SHORT
        ]++;
        return;
      }
    }
    // No replies to broadcast, multicast or unspecified addresses (RFC 1122 §4.2.3.10).
    if (
      srcIp === 0 || dstIp === 0 || (dstIp >>> 28) === 14 || (srcIp >>> 28) === 14 ||
      dstIp === 0xffffffff || srcIp === 0xffffffff || seg.srcPort === 0 || seg.dstPort === 0
    ) {
      c[K.C_DROP_ADDRESS]++;
      return;
    }
    c[K.C_BYTES_IN] += seg.payloadLen;
    if (seg.badOptions) c[K.C_BAD_OPTIONS]++;
    if (seg.flags & TCP_RST) c[K.C_RST_IN]++;
    this.inBuf = buf;
    this.inSrc = srcIp;
    this.inDst = dstIp;
    if (!looked) s = this.table.lookup(dstIp, seg.dstPort, srcIp, seg.srcPort);
    // TIME-WAIT lives in records of its own (a SYN that may reuse the 4-tuple goes on).
    if (s === null && this.tw.count > 0) {
      const r = this.tw.lookup(dstIp, seg.dstPort, srcIp, seg.srcPort);
      if (r !== null && timeWaitInput(this, r, seg)) return;
    }
    if (s !== null) {
      s.segsIn++;
      s.bytesIn += seg.payloadLen;
      if (seg.flags & TCP_RST) s.rstIn++;
      if (s.state === SYN_SENT) inputSynSent(this, s, seg);
      else inputSynchronized(this, s, seg);
    } else {
      let l = this.listeners[seg.dstPort];
      if (l !== null && l.reuseNext !== null) l = this.reuseportPick(l, srcIp, seg.srcPort);
      if (l !== null && (l.localIp === 0 || l.localIp === dstIp)) inputListen(this, l, seg);
      else inputClosed(this, seg);
    }
  }

  /** Brings `now` up to the clock for a socket call made between polls. */
  private readClock(): void {
    const t = this.clock();
    if (t > this.now) this.now = t;
  }

  /** Delivers pending readiness events, runs due timers and sends pending output. */
  poll(nowMs: number): void {
    if (nowMs > this.now) this.now = nowMs;
    timeWaitExpire(this, nowMs);
    this.wheel.run(nowMs, this.fire);
    this.dispatchEvents();
    flush(this);
  }

  /** When `poll` next has work: `now` if output or events are pending, Infinity if nothing. */
  nextDeadline(): number {
    if (this.outHead !== null || this.evHead !== null) return this.now;
    return Math.min(this.wheel.nextDeadline(), this.tw.nextExpiry());
  }

  // =====================================================================================
  // Public: socket API
  // =====================================================================================

  /** Opens a listener on `port` with an accept queue (and SYN queue) bounded by `backlog`. */
  listen(port: number, backlog: number, opts: ListenOptions = {}): TcpSocket {
    if (!(port > 0 && port < 65536)) throw new TcpError(EINVAL, `bad port ${port}`);
    const head = this.listeners[port];
    if (head !== null && !(head.reusePort && opts.reusePort === true)) {
      throw new TcpError(EADDRINUSE, `port ${port} in use`);
    }
    const l = this.newSocket(opts);
    l.reusePort = opts.reusePort === true;
    l.state = LISTEN;
    l.localIp = (opts.localIp ?? 0) >>> 0;
    l.localPort = port;
    l.backlog = Math.max(1, backlog | 0);
    l.acceptQueue = new Array(l.backlog).fill(null);
    l.childOpts = opts;
    l.rcvCap = this.rcvBuf;
    // The scale is fixed at the SYN (RFC 7323 §2.2): chosen for the largest a child's receive
    // ring may grow to (a region's rings are no larger than that).
    l.rcvWscale = this.wsEnabled ? wscaleFor(this.rcvBufMax) : 0;
    if (head === null) {
      this.listeners[port] = l;
    } else {
      // Joins the end of the group: earlier members keep their share of the hash space's order.
      let last = head;
      while (last.reuseNext !== null) last = last.reuseNext;
      last.reuseNext = l;
    }
    return l;
  }

  /**
   * The member of a SO_REUSEPORT group that takes a connection from `srcIp:srcPort`: a keyed
   * hash, so a SYN and the ACK that completes it reach the same member and a peer cannot aim
   * at one (Linux's reuseport_select_sock hashes the 4-tuple the same way).
   */
  private reuseportPick(head: TcpSocket, srcIp: number, srcPort: number): TcpSocket {
    let n = 0;
    for (let m: TcpSocket | null = head; m !== null; m = m.reuseNext) n++;
    let i = (hash4(this.k[10], this.k[11], srcIp, srcPort, head.localPort, 3) >>> 0) % n;
    let m = head;
    while (i-- > 0) m = m.reuseNext!;
    return m;
  }

  /** Takes the next established connection from a listener's queue, or null. */
  accept(l: TcpSocket): TcpSocket | null {
    if (l.state !== LISTEN || l.acceptLen === 0) return null;
    const s = l.acceptQueue[l.acceptHead]!;
    l.acceptQueue[l.acceptHead] = null;
    l.acceptHead = (l.acceptHead + 1) % l.backlog;
    l.acceptLen--;
    s.parent = null;
    return s;
  }

  /** Active open toward `dstIp:dstPort`; completion is signalled by EV_CONNECTED. */
  connect(dstIp: number, dstPort: number, opts: ConnectOptions = {}): TcpSocket {
    this.readClock();
    dstIp >>>= 0;
    const srcIp = (opts.srcIp ?? this.localIp) >>> 0;
    if (!(dstPort > 0 && dstPort < 65536) || dstIp === 0 || srcIp === 0) {
      throw new TcpError(EINVAL, "bad address");
    }
    let port = opts.srcPort ?? 0;
    if (port !== 0) {
      if (
        this.table.lookup(srcIp, port, dstIp, dstPort) !== null ||
        this.tw.lookup(srcIp, port, dstIp, dstPort) !== null
      ) {
        throw new TcpError(EADDRINUSE, "address in use");
      }
    } else {
      port = this.ephemeralPort(srcIp, dstIp, dstPort);
      if (port < 0) throw new TcpError(EADDRNOTAVAIL, "no ephemeral port");
    }
    const s = this.newSocket(opts);
    s.localIp = srcIp;
    s.localPort = port;
    s.remoteIp = dstIp;
    s.remotePort = dstPort;
    if (!this.attachStreams(s, opts)) throw new TcpError(ENOBUFS, "no buffers");
    s.iss = this.isn(s);
    s.sndUna = s.iss;
    s.sndNxt = (s.iss + 1) >>> 0;
    s.tsOffset = this.tsOffsetFor(s);
    s.tsOn = this.tsEnabled;
    s.sackOn = this.sackEnabled;
    s.wsOn = this.wsEnabled;
    s.rcvWscale = s.wsOn ? wscaleFor(rcvCapLimit(s)) : 0;
    s.state = SYN_SENT;
    this.table.insert(s);
    this.counters[K.C_ACTIVE_OPENS]++;
    sendSyn(this, s);
    s.rtoAt = this.now + s.rto;
    arm(this, s);
    return s;
  }

  /**
   * Application write into the socket's in-memory send ring. Returns bytes taken (possibly 0
   * is never returned: EAGAIN when full), or a negative errno.
   */
  send(s: TcpSocket, src: Uint8Array, off: number, len: number): number {
    if (s.error !== 0) return s.error === ETIMEDOUT ? ETIMEDOUT : EPIPE;
    if (s.finQueued || s.state === CLOSED || s.state === LISTEN) return EPIPE;
    if (!(s.tx instanceof MemStream)) return EINVAL;
    if (len === 0) return 0;
    let n = s.tx.write(src, off, len);
    // The ring filled up (Linux's SOCK_NOSPACE): let it follow the congestion window.
    if (n < len && sndBufExpand(this, s)) n += s.tx.write(src, off + n, len - n);
    if (n === 0) return EAGAIN;
    if (s.state !== SYN_SENT && s.state !== SYN_RECEIVED) queueOut(this, s);
    return n;
  }

  /**
   * Application read from the socket's in-memory receive ring: bytes read, 0 at end of stream,
   * or a negative errno (EAGAIN when nothing is there yet).
   */
  recv(s: TcpSocket, dst: Uint8Array, off: number, len: number): number {
    if (!(s.rx instanceof MemStream)) return EINVAL;
    const n = s.rx.read(dst, off, len);
    if (n > 0) {
      rcvSpaceAdjust(this, s);
      this.notifyRx(s);
      return n;
    }
    if (s.error !== 0) return s.error;
    if (s.rcvFin) return 0;
    if (s.state === CLOSED || s.state === LISTEN) return ENOTCONN;
    return EAGAIN;
  }

  /**
   * Free space in the socket's in-memory send ring (0 for other streams). Asking when it is
   * full is what poll() finding no room is for Linux (SOCK_NOSPACE): the ring may grow.
   */
  sendSpace(s: TcpSocket): number {
    if (!(s.tx instanceof MemStream)) return 0;
    const room = s.tx.writable();
    if (room > 0 || !canSendData(s.state) || !sndBufExpand(this, s)) return room;
    return s.tx.writable();
  }

  /** Bytes waiting to be read in the socket's in-memory receive ring. */
  recvAvailable(s: TcpSocket): number {
    return s.rx instanceof MemStream ? s.rx.readable() : 0;
  }

  /** The application put new bytes into the TX stream (the shared-memory path's doorbell). */
  notifyTx(s: TcpSocket): void {
    if (canSendData(s.state)) queueOut(this, s);
  }

  /** The application consumed bytes from the RX stream: send a window update if it matters. */
  notifyRx(s: TcpSocket): void {
    if (!isSynchronized(s.state) || s.state === TIME_WAIT || s.rcvFin) return;
    const free = s.rx.writable();
    const cur = Math.max(0, seqDiff(s.rcvAdvEdge, s.rcvNxt));
    const grow = free - cur;
    if (grow >= Math.min(s.rcvCap >> 1, s.rcvMss) && cur <= (s.rcvCap >> 1)) {
      s.ackNow = true;
      queueOut(this, s);
    }
  }

  /** SHUT_WR: FIN after the queued data. */
  shutdown(s: TcpSocket): number {
    this.readClock();
    switch (s.state) {
      case SYN_SENT:
        this.destroy(s);
        return 0;
      case SYN_RECEIVED:
        break; // FIN-WAIT-1 once the handshake completes
      case ESTABLISHED:
        s.state = FIN_WAIT_1;
        break;
      case CLOSE_WAIT:
        s.state = LAST_ACK;
        break;
      case LISTEN:
      case CLOSED:
        return ENOTCONN;
      default:
        return 0;
    }
    s.finQueued = true;
    queueOut(this, s);
    return 0;
  }

  /**
   * close(): like Linux. Unread received data or SO_LINGER 0 reset the connection; otherwise
   * the queued data is delivered, then FIN, and the engine finishes the close in background.
   */
  close(s: TcpSocket): void {
    this.readClock();
    if (s.state === LISTEN) {
      this.closeListener(s);
      return;
    }
    if (s.state === CLOSED) return;
    s.onEvent = null;
    s.orphan = true;
    if (s.state === SYN_SENT) {
      this.destroy(s);
      return;
    }
    if (s.state === TIME_WAIT) return;
    const unread = s.rcvCap - s.rx.writable();
    const tooMany = this.orphans >= this.maxOrphans;
    if (unread > 0 || s.linger === 0 || tooMany) {
      if (tooMany) this.counters[K.C_ORPHAN_OVERFLOW]++;
      sendRst(this, s);
      this.destroy(s);
      return;
    }
    s.orphanCounted = true;
    this.orphans++;
    if (s.state === FIN_WAIT_2) {
      s.closeAt = this.now + this.finTimeout;
      arm(this, s);
      return;
    }
    this.shutdown(s);
  }

  /** Resets the connection at once (RST if synchronized) and frees it. */
  abort(s: TcpSocket): void {
    this.readClock();
    if (s.state === LISTEN) {
      this.closeListener(s);
      return;
    }
    if (s.state === CLOSED) return;
    if (isSynchronized(s.state) && s.state !== TIME_WAIT) sendRst(this, s);
    s.error = ECONNABORTED;
    this.destroy(s);
  }

  /** setsockopt: one of the OPT_* constants. Returns 0 or a negative errno. */
  setOption(s: TcpSocket, opt: number, value: number): number {
    switch (opt) {
      case OPT_NODELAY:
        s.nodelay = value !== 0;
        if (s.nodelay) this.notifyTx(s);
        return 0;
      case OPT_KEEPALIVE:
        s.keepalive = value !== 0;
        if (s.keepalive && s.state >= ESTABLISHED) {
          s.kaAt = this.now + s.keepIdle;
          arm(this, s);
        }
        return 0;
      case OPT_KEEPIDLE:
        if (!(value > 0)) return EINVAL;
        s.keepIdle = value;
        return 0;
      case OPT_KEEPINTVL:
        if (!(value > 0)) return EINVAL;
        s.keepIntvl = value;
        return 0;
      case OPT_KEEPCNT:
        if (!(value > 0)) return EINVAL;
        s.keepCnt = value;
        return 0;
      case OPT_LINGER:
        s.linger = value < 0 ? -1 : value;
        return 0;
      case OPT_CONGESTION:
        if (value !== 0 && value !== 1) return EINVAL;
        if (s.cc.id !== value) {
          s.cc = ccById(value);
          if (s.state >= ESTABLISHED) {
            s.ccEpoch = -1;
            s.ccAcc = 0;
            s.ccWmax = s.cwnd / s.sndMss;
          }
        }
        return 0;
    }
    return EINVAL;
  }

  /** getsockopt counterpart of setOption. */
  getOption(s: TcpSocket, opt: number): number {
    switch (opt) {
      case OPT_NODELAY:
        return s.nodelay ? 1 : 0;
      case OPT_KEEPALIVE:
        return s.keepalive ? 1 : 0;
      case OPT_KEEPIDLE:
        return s.keepIdle;
      case OPT_KEEPINTVL:
        return s.keepIntvl;
      case OPT_KEEPCNT:
        return s.keepCnt;
      case OPT_LINGER:
        return s.linger;
      case OPT_CONGESTION:
        return s.cc.id;
    }
    return EINVAL;
  }

  /**
   * ICMP "fragmentation needed" (type 3 code 4) about a segment this engine sent from
   * `localIp:localPort` to `remoteIp:remotePort`, quoting sequence number `seq`, with the
   * next hop's `mtu`. Path MTU discovery (RFC 1191): our segments carry DF, so a router that
   * cannot forward them drops them and says so; ignoring it is a black hole. The message is
   * believed only if `seq` lies in the flight (RFC 5927 §5.1), and the MTU is never taken
   * below 552 (Linux's min_pmtu), so a forged message cannot shrink segments to nothing.
   */
  icmpFragNeeded(
    localIp: number,
    localPort: number,
    remoteIp: number,
    remotePort: number,
    seq: number,
    mtu: number,
  ): void {
    const s = this.table.lookup(localIp >>> 0, localPort, remoteIp >>> 0, remotePort);
    if (s === null || !isSynchronized(s.state) || s.state === TIME_WAIT) return;
    if (seqLt(seq, s.sndUna) || !seqLt(seq, s.sndNxt)) return;
    const cur = s.pmtu > 0 ? s.pmtu : this.link.mtu;
    if (mtu < MIN_PMTU) mtu = MIN_PMTU;
    if (mtu >= cur) return;
    s.pmtu = mtu;
    let mss = Math.min(s.peerMss, mtu - 40) - (s.tsOn ? 12 : 0);
    if (mss < MIN_SND_MSS) mss = MIN_SND_MSS;
    if (mss >= s.sndMss) return;
    s.sndMss = mss;
    this.counters[K.C_PMTU_UPDATES]++;
    // Everything in flight was too big and is gone: resend it at the new size, without a
    // congestion response (Linux's tcp_simple_retransmit; the path did not congest).
    if (s.sndUna !== s.sndNxt && canSendData(s.state)) {
      if (s.sackOn) s.sm.markAllLost();
      s.recovery = RECOVERY_RTO;
      s.recoverySeq = s.sndNxt;
      s.highRxt = s.sndUna;
      s.rttStart = -1;
      queueOut(this, s);
    }
  }

  /** Live connections (table entries, TIME-WAIT records included). */
  connectionCount(): number {
    return this.table.count + this.tw.count;
  }

  /** An orphan finished (closed, or on to TIME-WAIT): it no longer counts against the cap. */
  orphanDone(s: TcpSocket): void {
    if (!s.orphanCounted) return;
    s.orphanCounted = false;
    this.orphans--;
  }

  /** The connection for a 4-tuple, or null. */
  find(localIp: number, localPort: number, remoteIp: number, remotePort: number): TcpSocket | null {
    return this.table.lookup(localIp >>> 0, localPort, remoteIp >>> 0, remotePort);
  }

  /** Calls `visit` on every listener (the stats page's rows; a scan of the port table). */
  eachListener(visit: (s: TcpSocket) => void): void {
    const ports = this.listeners;
    for (let p = 0; p < ports.length; p++) {
      const l = ports[p];
      if (l !== null) visit(l);
    }
  }

  /** Calls `visit` on every socket of the table (the stats page's connection rows). */
  eachSocket(visit: (s: TcpSocket) => void): void {
    const table = this.table;
    for (let i = 0; i < table.capacity; i++) {
      const s = table.at(i);
      if (s !== null) visit(s);
    }
  }

  /** Global counters and, if asked, every connection's snapshot, as plain objects. */
  snapshot(withConnections = false): {
    counters: Record<K.CounterName, number>;
    connections: number;
    perConnection?: Record<string, number | string>[];
  } {
    const out: {
      counters: Record<K.CounterName, number>;
      connections: number;
      perConnection?: Record<string, number | string>[];
    } = { counters: K.snapshotCounters(this.counters), connections: this.connectionCount() };
    if (withConnections) {
      const list: Record<string, number | string>[] = [];
      for (let i = 0; i < this.table.capacity; i++) {
        const s = this.table.at(i);
        if (s !== null) list.push(s.snapshot());
      }
      this.tw.each((r) => list.push(timeWaitSnapshot(r)));
      out.perConnection = list;
    }
    return out;
  }

  // =====================================================================================
  // Socket lifecycle
  // =====================================================================================

  newSocket(opts: SocketOptions): TcpSocket {
    const s = new TcpSocket(this.nextId++, ccById(opts.congestion ?? this.defaultCc));
    s.nodelay = opts.nodelay ?? false;
    s.keepalive = opts.keepalive ?? false;
    if (opts.keepIdleMs) s.keepIdle = opts.keepIdleMs;
    if (opts.keepIntvlMs) s.keepIntvl = opts.keepIntvlMs;
    if (opts.keepCnt) s.keepCnt = opts.keepCnt;
    s.linger = opts.linger ?? -1;
    s.onEvent = opts.onEvent ?? null;
    s.rto = this.initRto;
    s.lastRecvAt = this.now;
    this.liveCount++;
    return s;
  }

  attachStreams(s: TcpSocket, opts: SocketOptions | null): boolean {
    let st: SocketStreams | null;
    if (opts?.streams) st = opts.streams(s);
    else {
      const tx = new MemStream(this.sndBuf, false, this.sndBufMax);
      const rx = new MemStream(this.rcvBuf, false, this.rcvBufMax);
      if (!this.autotune) {
        tx.preallocate();
        rx.preallocate();
      }
      st = { tx, rx };
    }
    if (st === null) return false;
    s.tx = st.tx;
    s.rx = st.rx;
    s.rcvCap = st.rx.writable();
    return true;
  }

  /** Frees a connection: out of the table, the timer wheel and its listener's queues. */
  destroy(s: TcpSocket): void {
    if (s.state === CLOSED && s.slot < 0) return;
    // Its TIME-WAIT lives on as a record (timewait.ts): the socket only reads CLOSED now.
    if (s.state === TIME_WAIT && s.slot < 0) {
      s.state = CLOSED;
      return;
    }
    this.orphanDone(s);
    // A child still in its listener's accept queue stays there: accept() hands it out closed.
    if (s.parent !== null && s.state === SYN_RECEIVED) s.parent.synQueueLen--;
    const wasTimeWait = s.state === TIME_WAIT;
    s.state = CLOSED;
    if (s.slot >= 0) this.table.remove(s);
    if (s.tLinked) this.wheel.unlink(s);
    s.rtoAt =
      s.dackAt =
      s.kaAt =
      s.closeAt =
        0;
    s.ackNow = false;
    this.liveCount--;
    if (!wasTimeWait) this.event(s, EV_CLOSED);
  }

  fail(s: TcpSocket, err: number): void {
    s.error = err;
    if (err === ECONNRESET || err === ECONNREFUSED) this.counters[K.C_CONN_RESETS]++;
    if (err === ETIMEDOUT) this.counters[K.C_TIMEOUTS]++;
    this.event(s, EV_RESET | EV_READABLE | EV_WRITABLE);
    this.destroy(s);
  }

  closeListener(l: TcpSocket): void {
    const head = this.listeners[l.localPort];
    if (head === l) {
      this.listeners[l.localPort] = l.reuseNext;
    } else {
      for (let m = head; m !== null; m = m.reuseNext) {
        if (m.reuseNext === l) {
          m.reuseNext = l.reuseNext;
          break;
        }
      }
    }
    l.reuseNext = null;
    l.state = CLOSED;
    for (let i = 0; i < l.acceptLen; i++) {
      const c = l.acceptQueue[(l.acceptHead + i) % l.backlog];
      if (c !== null && c.state !== CLOSED) {
        c.parent = null;
        this.abort(c);
      }
    }
    l.acceptLen = 0;
    // Children still in SYN-RECEIVED die with their listener.
    for (let i = 0; i < this.table.capacity && l.synQueueLen > 0; i++) {
      const c = this.table.at(i);
      if (c !== null && c.parent === l && c.state === SYN_RECEIVED) {
        sendRst(this, c);
        this.destroy(c);
        i--;
      }
    }
    this.liveCount--;
  }

  budget = 0;

  // =====================================================================================
  // Events
  // =====================================================================================

  event(s: TcpSocket, ev: number): void {
    s.evPending |= ev;
    if (s.evQueued) return;
    s.evQueued = true;
    s.evNext = null;
    if (this.evTail === null) this.evHead = s;
    else this.evTail.evNext = s;
    this.evTail = s;
  }

  dispatchEvents(): void {
    // Handlers may queue new events; those run in the same pass (bounded by the list).
    let guard = 0;
    while (this.evHead !== null && guard++ < 1 << 20) {
      const s = this.evHead;
      this.evHead = s.evNext;
      if (this.evHead === null) this.evTail = null;
      s.evQueued = false;
      s.evNext = null;
      const ev = s.evPending;
      s.evPending = 0;
      const h = s.onEvent;
      if (h !== null && ev !== 0) h(s, ev);
    }
  }

  // =====================================================================================
  // Keys, ISN, ports
  // =====================================================================================

  /** RFC 6528: ISN = M + F(4-tuple, secret), M a 4 µs clock. */
  isn(s: TcpSocket): number {
    const f = hash4(
      this.k[0],
      this.k[1],
      s.localIp,
      s.remoteIp,
      (s.localPort << 16) | s.remotePort,
      0,
    );
    return (f + Math.floor(this.now * 250)) >>> 0;
  }

  tsOffsetTuple(lip: number, lport: number, rip: number, rport: number): number {
    return hash4(this.k[6], this.k[7], lip, rip, (lport << 16) | rport, 1);
  }

  tsOffsetFor(s: TcpSocket): number {
    return this.tsOffsetTuple(s.localIp, s.localPort, s.remoteIp, s.remotePort);
  }

  /** RFC 6056 algorithm 3: a keyed offset per destination plus a global counter. */
  ephemeralPort(srcIp: number, dstIp: number, dstPort: number): number {
    const n = this.ephHigh - this.ephLow + 1;
    const off = hash4(this.k[8], this.k[9], srcIp, dstIp, dstPort, 2);
    for (let i = 0; i < n; i++) {
      const port = this.ephLow + ((off + this.ephCounter + i) % n);
      if (this.listeners[port] !== null) continue;
      if (
        this.table.lookup(srcIp, port, dstIp, dstPort) === null &&
        this.tw.lookup(srcIp, port, dstIp, dstPort) === null
      ) {
        this.ephCounter += i + 1;
        return port;
      }
    }
    return -1;
  }
}
