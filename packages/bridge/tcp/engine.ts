/**
 * The TCP engine of the NIC-side bridge (RFC 9293): connection table, state machine, options,
 * reliability, congestion control, timers and the in-bridge socket API.
 *
 * Data path without allocation: `input` parses into one reused {@linkcode TcpSegment}, looks
 * the 4-tuple up in an open-addressed table of numbers, copies payload straight into the
 * socket's RX stream; output writes headers with byte stores into memory the {@linkcode IpLink}
 * lends and copies payload straight from the TX stream. Timers live on a timing wheel of
 * intrusive lists; output and readiness events are batched and run by `poll`.
 *
 * The bridge loop is: for each received segment `input(...)`, then `poll(now)` (which delivers
 * readiness events, runs due timers and sends what is pending), then sleep up to
 * `nextDeadline()`.
 *
 * @module
 */

import {
  optWriteMss,
  optWriteSack,
  optWriteSackPerm,
  optWriteSackPermTs,
  optWriteTs,
  optWriteWscale,
  seqDiff,
  seqGe,
  seqGt,
  seqLe,
  seqLt,
  TCP_ACK,
  TCP_ERR_DATA_OFFSET,
  TCP_ERR_OPTIONS,
  TCP_FIN,
  TCP_OK,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  tcpChecksumOk,
  TcpSegment,
  tcpWriteHeader,
} from "../wire/tcp.ts";
import { checksumAdd, checksumAddPseudoV4, checksumFinish } from "../wire/checksum.ts";
import type { IpLink } from "./link.ts";
import { CC_CUBIC, ccById } from "./cc.ts";
import { hash4, mulberry32 } from "./isn.ts";
import { MemStream } from "./_mem_stream.ts";
import * as K from "./counters.ts";
import {
  CLOSE_WAIT,
  CLOSED,
  CLOSING,
  EAGAIN,
  ECONNABORTED,
  ECONNREFUSED,
  ECONNRESET,
  EINVAL,
  ENOTCONN,
  EPIPE,
  ESTABLISHED,
  ETIMEDOUT,
  EV_ACCEPT,
  EV_CLOSED,
  EV_CONNECTED,
  EV_PEER_CLOSED,
  EV_READABLE,
  EV_RESET,
  EV_WRITABLE,
  FIN_WAIT_1,
  FIN_WAIT_2,
  LAST_ACK,
  LISTEN,
  OPT_CONGESTION,
  OPT_KEEPALIVE,
  OPT_KEEPCNT,
  OPT_KEEPIDLE,
  OPT_KEEPINTVL,
  OPT_LINGER,
  OPT_NODELAY,
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
  /** Default send / receive buffer (in-memory ring) sizes in bytes (default 256 KiB each). */
  sndBuf?: number;
  rcvBuf?: number;
  /** Initial connection table size (power of two, grows). */
  tableSize?: number;
  /** SYN and SYN-ACK retransmissions before giving up (Linux: 6 and 5). */
  synRetries?: number;
  synAckRetries?: number;
  /** Data retransmission timeouts before the connection is dropped (Linux tcp_retries2: 15). */
  maxRetries?: number;
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
}

/** Options for `connect`. */
export interface ConnectOptions extends SocketOptions {
  srcIp?: number;
  /** Fixed source port; default: an ephemeral port (RFC 6056). */
  srcPort?: number;
}

const TICK_MS = 1;
const WHEEL_SLOTS = 4096;
const WHEEL_MASK = WHEEL_SLOTS - 1;
const SB_MAX = 16;
const OFO_MAX = 8;
const DUP_THRESH = 3;
const MIN_SND_MSS = 48;
const PAWS_IDLE_MS = 24 * 24 * 3600 * 1000;
const COOKIE_PERIOD_MS = 64000;
const COOKIE_MSS = [536, 1220, 1440, 1460, 4312, 8960];
const TS_OPT_NO_WS = 0xf;

function canSendData(st: number): boolean {
  return st === ESTABLISHED || st === CLOSE_WAIT || st === FIN_WAIT_1 || st === CLOSING ||
    st === LAST_ACK;
}

function isSynchronized(st: number): boolean {
  return st >= SYN_RECEIVED;
}

function wscaleFor(cap: number): number {
  let ws = 0;
  while (ws < 14 && (cap >>> ws) > 65535) ws++;
  return ws;
}

/** The TCP engine. */
export class TcpEngine {
  readonly link: IpLink;
  /** Global counters, indexed by the C_* constants of counters.ts. */
  readonly counters: Float64Array = K.newCounters();
  localIp: number;

  private readonly msl: number;
  private readonly sndBuf: number;
  private readonly rcvBuf: number;
  private readonly synRetries: number;
  private readonly synAckRetries: number;
  private readonly maxRetries: number;
  private readonly finTimeout: number;
  private readonly dackMs: number;
  private readonly minRto: number;
  private readonly maxRto: number;
  private readonly initRto: number;
  private readonly challengeLimit: number;
  private readonly defaultCc: number;
  private readonly tsEnabled: boolean;
  private readonly sackEnabled: boolean;
  private readonly wsEnabled: boolean;
  private readonly cookiesEnabled: boolean;
  private readonly multiQueue: boolean;
  private readonly ephLow: number;
  private readonly ephHigh: number;

  /** Secret keys: ISN, cookies, table hash, timestamp offsets, port offsets. */
  private readonly k = new Uint32Array(10);
  private ephCounter = 0;

  /** The clock of the call in progress (ms). */
  private now = 0;
  private readonly seg = new TcpSegment();
  private inBuf: Uint8Array = new Uint8Array(0);
  private inSrc = 0;
  private inDst = 0;
  private readonly sackScratch = new Uint32Array(8);

  // Connection table: open addressing, linear probing, backward-shift deletion.
  private tMask = 0;
  private tLocal = new Int32Array(0);
  private tRemote = new Int32Array(0);
  private tPorts = new Int32Array(0);
  private tHome = new Int32Array(0);
  private tSock: (TcpSocket | null)[] = [];
  private tCount = 0;
  private readonly listeners: (TcpSocket | null)[] = new Array(65536).fill(null);
  private nextId = 1;
  private liveCount = 0;

  // Timing wheel.
  private readonly wheel: (TcpSocket | null)[] = new Array(WHEEL_SLOTS).fill(null);
  private curTick = -1;
  private timerCount = 0;

  // Pending output and pending events.
  private outHead: TcpSocket | null = null;
  private outTail: TcpSocket | null = null;
  private evHead: TcpSocket | null = null;
  private evTail: TcpSocket | null = null;

  private chSecond = -1;
  private chCount = 0;

  constructor(link: IpLink, opts: TcpEngineOptions = {}) {
    this.link = link;
    this.localIp = opts.localIp ?? 0;
    this.msl = opts.mslMs ?? 30000;
    this.sndBuf = opts.sndBuf ?? 256 * 1024;
    this.rcvBuf = opts.rcvBuf ?? 256 * 1024;
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
    this.ephLow = opts.ephemeralLow ?? 32768;
    this.ephHigh = opts.ephemeralHigh ?? 60999;
    if (opts.seed !== undefined) {
      const r = mulberry32(opts.seed);
      for (let i = 0; i < this.k.length; i++) this.k[i] = r();
    } else crypto.getRandomValues(this.k);
    let size = 1024;
    while (size < (opts.tableSize ?? 4096)) size *= 2;
    this.tableInit(size);
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
    this.now = nowMs;
    const c = this.counters;
    c[K.C_SEGS_IN]++;
    if (len < 20 || off < 0 || off + len > buf.length) {
      c[K.C_DROP_SHORT]++;
      return;
    }
    if (!tcpChecksumOk(buf, off, len, srcIp, dstIp)) {
      c[K.C_DROP_CHECKSUM]++;
      return;
    }
    const seg = this.seg;
    const rc = seg.parse(buf, off, len);
    if (rc !== TCP_OK) {
      c[
        rc === TCP_ERR_DATA_OFFSET
          ? K.C_DROP_DATA_OFFSET
          : rc === TCP_ERR_OPTIONS
          ? K.C_DROP_OPTIONS
          : K.C_DROP_SHORT
      ]++;
      return;
    }
    srcIp >>>= 0;
    dstIp >>>= 0;
    // No replies to broadcast, multicast or unspecified addresses (RFC 1122 §4.2.3.10).
    if (
      srcIp === 0 || dstIp === 0 || (dstIp >>> 28) === 14 || (srcIp >>> 28) === 14 ||
      dstIp === 0xffffffff || srcIp === 0xffffffff || seg.srcPort === 0 || seg.dstPort === 0
    ) {
      c[K.C_DROP_ADDRESS]++;
      return;
    }
    c[K.C_BYTES_IN] += seg.payloadLen;
    if (seg.flags & TCP_RST) c[K.C_RST_IN]++;
    this.inBuf = buf;
    this.inSrc = srcIp;
    this.inDst = dstIp;
    let s = this.lookup(dstIp, seg.dstPort, srcIp, seg.srcPort);
    if (s !== null && s.state === TIME_WAIT && this.timeWaitReuse(s, seg)) {
      c[K.C_TIME_WAIT_REUSE]++;
      this.destroy(s);
      s = null;
    }
    if (s !== null) {
      s.segsIn++;
      s.bytesIn += seg.payloadLen;
      if (seg.flags & TCP_RST) s.rstIn++;
      if (s.state === SYN_SENT) this.inputSynSent(s, seg);
      else this.inputSynchronized(s, seg);
    } else {
      const l = this.listeners[seg.dstPort];
      if (l !== null && (l.localIp === 0 || l.localIp === dstIp)) this.inputListen(l, seg);
      else this.inputClosed(seg);
    }
  }

  /** Delivers pending readiness events, runs due timers and sends pending output. */
  poll(nowMs: number): void {
    this.now = nowMs;
    this.runTimers(nowMs);
    this.dispatchEvents();
    this.flush();
  }

  /** When `poll` next has work: `now` if output or events are pending, Infinity if nothing. */
  nextDeadline(): number {
    if (this.outHead !== null || this.evHead !== null) return this.now;
    if (this.timerCount === 0) return Infinity;
    let best = Infinity;
    for (let i = 1; i <= WHEEL_SLOTS; i++) {
      const t = this.curTick + i;
      for (let s = this.wheel[t & WHEEL_MASK]; s !== null; s = s.tNext) {
        if (s.tAt < best) best = s.tAt;
      }
      if (best <= (t + 1) * TICK_MS) break;
    }
    return best;
  }

  // =====================================================================================
  // Public: socket API
  // =====================================================================================

  /** Opens a listener on `port` with an accept queue (and SYN queue) bounded by `backlog`. */
  listen(port: number, backlog: number, opts: ListenOptions = {}): TcpSocket {
    if (!(port > 0 && port < 65536)) throw new TcpError(EINVAL, `bad port ${port}`);
    if (this.listeners[port] !== null) throw new TcpError(-98, `port ${port} in use`);
    const l = this.newSocket(opts);
    l.state = LISTEN;
    l.localIp = (opts.localIp ?? 0) >>> 0;
    l.localPort = port;
    l.backlog = Math.max(1, backlog | 0);
    l.acceptQueue = new Array(l.backlog).fill(null);
    l.childOpts = opts;
    l.rcvCap = this.rcvBuf;
    l.rcvWscale = this.wsEnabled ? wscaleFor(this.rcvBuf) : 0;
    this.listeners[port] = l;
    return l;
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
    dstIp >>>= 0;
    const srcIp = (opts.srcIp ?? this.localIp) >>> 0;
    if (!(dstPort > 0 && dstPort < 65536) || dstIp === 0 || srcIp === 0) {
      throw new TcpError(EINVAL, "bad address");
    }
    let port = opts.srcPort ?? 0;
    if (port !== 0) {
      if (this.lookup(srcIp, port, dstIp, dstPort) !== null) {
        throw new TcpError(-98, "address in use");
      }
    } else {
      port = this.ephemeralPort(srcIp, dstIp, dstPort);
      if (port < 0) throw new TcpError(-99, "no ephemeral port");
    }
    const s = this.newSocket(opts);
    s.localIp = srcIp;
    s.localPort = port;
    s.remoteIp = dstIp;
    s.remotePort = dstPort;
    if (!this.attachStreams(s, opts)) throw new TcpError(-105, "no buffers");
    s.iss = this.isn(s);
    s.sndUna = s.iss;
    s.sndNxt = (s.iss + 1) >>> 0;
    s.tsOffset = this.tsOffsetFor(s);
    s.tsOn = this.tsEnabled;
    s.sackOn = this.sackEnabled;
    s.wsOn = this.wsEnabled;
    s.rcvWscale = s.wsOn ? wscaleFor(s.rcvCap) : 0;
    s.state = SYN_SENT;
    this.tableInsert(s);
    this.counters[K.C_ACTIVE_OPENS]++;
    this.sendSyn(s);
    s.rtoAt = this.now + s.rto;
    this.arm(s);
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
    const n = s.tx.write(src, off, len);
    if (n === 0) return EAGAIN;
    if (s.state !== SYN_SENT && s.state !== SYN_RECEIVED) this.queueOut(s);
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
      this.notifyRx(s);
      return n;
    }
    if (s.error !== 0) return s.error;
    if (s.rcvFin) return 0;
    if (s.state === CLOSED || s.state === LISTEN) return ENOTCONN;
    return EAGAIN;
  }

  /** Free space in the socket's in-memory send ring (0 for other streams). */
  sendSpace(s: TcpSocket): number {
    return s.tx instanceof MemStream ? s.tx.writable() : 0;
  }

  /** Bytes waiting to be read in the socket's in-memory receive ring. */
  recvAvailable(s: TcpSocket): number {
    return s.rx instanceof MemStream ? s.rx.readable() : 0;
  }

  /** The application put new bytes into the TX stream (the shared-memory path's doorbell). */
  notifyTx(s: TcpSocket): void {
    if (canSendData(s.state)) this.queueOut(s);
  }

  /** The application consumed bytes from the RX stream: send a window update if it matters. */
  notifyRx(s: TcpSocket): void {
    if (!isSynchronized(s.state) || s.state === TIME_WAIT || s.rcvFin) return;
    const free = s.rx.writable();
    const cur = Math.max(0, seqDiff(s.rcvAdvEdge, s.rcvNxt));
    const grow = free - cur;
    if (grow >= Math.min(s.rcvCap >> 1, s.rcvMss) && cur <= (s.rcvCap >> 1)) {
      s.ackNow = true;
      this.queueOut(s);
    }
  }

  /** SHUT_WR: FIN after the queued data. */
  shutdown(s: TcpSocket): number {
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
    this.queueOut(s);
    return 0;
  }

  /**
   * close(): like Linux. Unread received data or SO_LINGER 0 reset the connection; otherwise
   * the queued data is delivered, then FIN, and the engine finishes the close in background.
   */
  close(s: TcpSocket): void {
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
    if (unread > 0 || s.linger === 0) {
      this.sendRst(s);
      this.destroy(s);
      return;
    }
    if (s.state === FIN_WAIT_2) {
      s.closeAt = this.now + this.finTimeout;
      this.arm(s);
      return;
    }
    this.shutdown(s);
  }

  /** Resets the connection at once (RST if synchronized) and frees it. */
  abort(s: TcpSocket): void {
    if (s.state === LISTEN) {
      this.closeListener(s);
      return;
    }
    if (s.state === CLOSED) return;
    if (isSynchronized(s.state) && s.state !== TIME_WAIT) this.sendRst(s);
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
          this.arm(s);
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

  /** Live connections (table entries, TIME_WAIT included). */
  connectionCount(): number {
    return this.tCount;
  }

  /** The connection for a 4-tuple, or null. */
  find(localIp: number, localPort: number, remoteIp: number, remotePort: number): TcpSocket | null {
    return this.lookup(localIp >>> 0, localPort, remoteIp >>> 0, remotePort);
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
    } = { counters: K.snapshotCounters(this.counters), connections: this.tCount };
    if (withConnections) {
      const list: Record<string, number | string>[] = [];
      for (const s of this.tSock) if (s !== null) list.push(s.snapshot());
      out.perConnection = list;
    }
    return out;
  }

  // =====================================================================================
  // Socket lifecycle
  // =====================================================================================

  private newSocket(opts: SocketOptions): TcpSocket {
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

  private attachStreams(s: TcpSocket, opts: SocketOptions | null): boolean {
    let st: SocketStreams | null;
    if (opts?.streams) st = opts.streams(s);
    else st = { tx: new MemStream(this.sndBuf), rx: new MemStream(this.rcvBuf) };
    if (st === null) return false;
    s.tx = st.tx;
    s.rx = st.rx;
    s.rcvCap = st.rx.writable();
    return true;
  }

  /** Frees a connection: out of the table, the timer wheel and its listener's queues. */
  private destroy(s: TcpSocket): void {
    if (s.state === CLOSED && s.slot < 0) return;
    // A child still in its listener's accept queue stays there: accept() hands it out closed.
    if (s.parent !== null && s.state === SYN_RECEIVED) s.parent.synQueueLen--;
    const wasTimeWait = s.state === TIME_WAIT;
    s.state = CLOSED;
    if (s.slot >= 0) this.tableRemove(s);
    if (s.tLinked) this.unlink(s);
    s.rtoAt =
      s.dackAt =
      s.kaAt =
      s.closeAt =
        0;
    s.ackNow = false;
    this.liveCount--;
    if (!wasTimeWait) this.event(s, EV_CLOSED);
  }

  private fail(s: TcpSocket, err: number): void {
    s.error = err;
    if (err === ECONNRESET || err === ECONNREFUSED) this.counters[K.C_CONN_RESETS]++;
    if (err === ETIMEDOUT) this.counters[K.C_TIMEOUTS]++;
    this.event(s, EV_RESET | EV_READABLE | EV_WRITABLE);
    this.destroy(s);
  }

  private closeListener(l: TcpSocket): void {
    this.listeners[l.localPort] = null;
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
    for (let i = 0; i < this.tSock.length && l.synQueueLen > 0; i++) {
      const c = this.tSock[i];
      if (c !== null && c.parent === l && c.state === SYN_RECEIVED) {
        this.sendRst(c);
        this.destroy(c);
        i--;
      }
    }
    this.liveCount--;
  }

  private timeWaitReuse(s: TcpSocket, seg: TcpSegment): boolean {
    if ((seg.flags & (TCP_SYN | TCP_ACK | TCP_RST)) !== TCP_SYN) return false;
    // RFC 6191 with timestamps, RFC 9293 §3.6.1 (sequence number) without.
    if (s.tsOn && seg.hasTimestamp) return seqGt(seg.tsVal, s.tsRecent);
    return seqGt(seg.seq, s.rcvNxt);
  }

  // =====================================================================================
  // Input: closed port, listener, SYN-SENT
  // =====================================================================================

  private inputClosed(seg: TcpSegment): void {
    this.counters[K.C_DROP_NO_SOCKET]++;
    if (seg.flags & TCP_RST) return;
    if (this.multiQueue && (seg.flags & TCP_ACK)) return;
    this.rstReply(seg);
  }

  /** RST in reply to a segment that has no connection (RFC 9293 §3.10.7.1). */
  private rstReply(seg: TcpSegment): void {
    if (seg.flags & TCP_ACK) {
      this.sendRaw(this.inDst, seg.dstPort, this.inSrc, seg.srcPort, seg.ack, 0, TCP_RST);
    } else {
      this.sendRaw(
        this.inDst,
        seg.dstPort,
        this.inSrc,
        seg.srcPort,
        0,
        (seg.seq + seg.seqLen()) >>> 0,
        TCP_RST | TCP_ACK,
      );
    }
  }

  private inputListen(l: TcpSocket, seg: TcpSegment): void {
    const f = seg.flags;
    if (f & TCP_RST) return;
    if (f & TCP_ACK) {
      if ((f & (TCP_SYN | TCP_FIN)) === 0 && this.cookiesEnabled && this.cookieAck(l, seg)) return;
      this.counters[K.C_DROP_NO_SOCKET]++;
      if (!this.multiQueue) this.rstReply(seg);
      return;
    }
    if (!(f & TCP_SYN)) {
      this.counters[K.C_DROP_FLAGS]++;
      return;
    }
    if (f & TCP_FIN) {
      this.counters[K.C_DROP_FLAGS]++;
      return;
    }
    // Backlog: a full accept queue drops the SYN (like Linux); a full SYN queue answers with
    // a cookie.
    if (l.acceptLen >= l.backlog) {
      this.counters[K.C_DROP_BACKLOG]++;
      return;
    }
    if (l.synQueueLen >= l.backlog) {
      if (this.cookiesEnabled) this.sendCookieSynAck(l, seg);
      else this.counters[K.C_DROP_BACKLOG]++;
      return;
    }
    const s = this.newSocket(l.childOpts ?? {});
    s.localIp = this.inDst;
    s.localPort = seg.dstPort;
    s.remoteIp = this.inSrc;
    s.remotePort = seg.srcPort;
    if (!this.attachStreams(s, l.childOpts)) {
      this.liveCount--;
      this.counters[K.C_DROP_BACKLOG]++;
      return;
    }
    s.parent = l;
    s.childOpts = l.childOpts;
    s.onEvent = l.childOpts?.onEvent ?? l.onEvent;
    s.iss = this.isn(s);
    s.tsOffset = this.tsOffsetFor(s);
    this.synOptions(s, seg, l.rcvWscale);
    s.irs = seg.seq;
    s.rcvNxt = (seg.seq + 1) >>> 0;
    s.sndUna = s.iss;
    s.sndNxt = (s.iss + 1) >>> 0;
    s.sndWnd = seg.window; // unscaled in a SYN
    s.sndWl1 = seg.seq;
    s.sndWl2 = s.iss;
    s.maxSndWnd = s.sndWnd;
    s.state = SYN_RECEIVED;
    l.synQueueLen++;
    this.tableInsert(s);
    this.counters[K.C_PASSIVE_OPENS]++;
    this.sendSyn(s);
    s.rtoAt = this.now + s.rto;
    this.arm(s);
  }

  /** Applies the options of a received SYN (or SYN-ACK) to `s`. */
  private synOptions(s: TcpSocket, seg: TcpSegment, ourWscale: number): void {
    s.tsOn = this.tsEnabled && seg.hasTimestamp;
    if (s.tsOn) {
      s.tsRecent = seg.tsVal;
      s.tsRecentAt = this.now;
    }
    s.sackOn = this.sackEnabled && seg.sackPermitted;
    s.wsOn = this.wsEnabled && seg.wscale >= 0;
    s.sndWscale = s.wsOn ? seg.wscale : 0;
    s.rcvWscale = s.wsOn ? ourWscale : 0;
    s.peerMss = seg.mss > 0 ? seg.mss : 536;
    this.setMss(s);
  }

  private setMss(s: TcpSocket): void {
    let mss = Math.min(s.peerMss, this.link.mtu - 40);
    if (s.tsOn) mss -= 12;
    if (mss < MIN_SND_MSS) mss = MIN_SND_MSS;
    s.sndMss = mss;
    s.rcvMss = Math.min(this.link.mtu - 40 - (s.tsOn ? 12 : 0), 1460);
    s.cc.init(s);
  }

  private inputSynSent(s: TcpSocket, seg: TcpSegment): void {
    const f = seg.flags;
    const c = this.counters;
    if (f & TCP_ACK) {
      if (seqLe(seg.ack, s.iss) || seqGt(seg.ack, s.sndNxt)) {
        c[K.C_DROP_BAD_ACK]++;
        if (!(f & TCP_RST)) this.rstReply(seg);
        return;
      }
    }
    if (f & TCP_RST) {
      if (f & TCP_ACK) this.fail(s, ECONNREFUSED);
      else c[K.C_DROP_RST_OUT_OF_WINDOW]++;
      return;
    }
    if (!(f & TCP_SYN)) {
      c[K.C_DROP_FLAGS]++;
      return;
    }
    this.synOptions(s, seg, s.rcvWscale);
    s.irs = seg.seq;
    s.rcvNxt = (seg.seq + 1) >>> 0;
    s.rcvAdvEdge = (s.rcvNxt + Math.min(s.rx.writable(), 65535)) >>> 0;
    s.lastRecvAt = this.now;
    if (f & TCP_ACK) {
      this.ackSyn(s, seg);
      s.sndWnd = seg.window << s.sndWscale;
      s.sndWl1 = seg.seq;
      s.sndWl2 = seg.ack;
      s.maxSndWnd = s.sndWnd;
      s.state = ESTABLISHED;
      this.established(s);
      this.event(s, EV_CONNECTED | EV_WRITABLE);
      s.ackNow = true;
      this.queueOut(s);
      // Data or FIN on a SYN-ACK is rare; handle it like any other segment.
      if (seg.payloadLen > 0 || (f & TCP_FIN)) this.processText(s, seg, 1);
      return;
    }
    // Simultaneous open (RFC 9293 §3.5, figure 8).
    s.sndWnd = seg.window;
    s.sndWl1 = seg.seq;
    s.maxSndWnd = s.sndWnd;
    s.state = SYN_RECEIVED;
    s.retries = 0;
    this.sendSyn(s);
    s.rtoAt = this.now + s.rto;
    this.arm(s);
  }

  /** The ACK of our SYN: RTT sample and the end of the handshake's timer. */
  private ackSyn(s: TcpSocket, seg: TcpSegment): void {
    if (s.retries === 0) {
      if (s.tsOn && seg.hasTimestamp && seg.tsEcr !== 0) {
        this.rttSample(s, seqDiff((this.now + s.tsOffset) >>> 0, seg.tsEcr));
      } else if (s.rttStart >= 0) this.rttSample(s, this.now - s.rttStart);
    }
    s.rttStart = -1;
    s.retries = 0;
    if (s.srtt === 0) s.rto = this.initRto;
    s.sndUna = seg.ack;
    s.rtoAt = 0;
  }

  /** Entered ESTABLISHED: keepalive timer. */
  private established(s: TcpSocket): void {
    s.recoverMark = s.sndUna;
    if (s.keepalive) s.kaAt = this.now + s.keepIdle;
    this.arm(s);
  }

  // =====================================================================================
  // Input: synchronized states (RFC 9293 §3.10.7.4)
  // =====================================================================================

  private inputSynchronized(s: TcpSocket, seg: TcpSegment): void {
    const c = this.counters;
    const f = seg.flags;
    const now = this.now;
    // PAWS (RFC 7323 §5).
    if (
      s.tsOn && seg.hasTimestamp && !(f & TCP_RST) && s.tsRecent !== 0 &&
      seqLt(seg.tsVal, s.tsRecent) && now - s.tsRecentAt < PAWS_IDLE_MS
    ) {
      c[K.C_DROP_PAWS]++;
      this.ackLater(s);
      return;
    }
    // Simultaneous open: the peer's SYN-ACK in SYN-RECEIVED acknowledges our SYN.
    if (
      s.state === SYN_RECEIVED && (f & (TCP_SYN | TCP_ACK | TCP_RST)) === (TCP_SYN | TCP_ACK) &&
      s.parent === null && ((seg.seq + 1) >>> 0) === s.rcvNxt && seg.ack === s.sndNxt
    ) {
      this.ackSyn(s, seg);
      s.sndWnd = seg.window << s.sndWscale;
      s.sndWl1 = seg.seq;
      s.sndWl2 = seg.ack;
      s.state = ESTABLISHED;
      this.established(s);
      this.event(s, EV_CONNECTED | EV_WRITABLE);
      s.ackNow = true;
      this.queueOut(s);
      return;
    }
    // A retransmitted SYN on a half-open passive connection: repeat the SYN-ACK.
    if (
      s.state === SYN_RECEIVED && (f & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN &&
      seg.seq === s.irs
    ) {
      this.sendSyn(s);
      return;
    }
    // 1. Sequence number acceptability.
    const segLen = seg.seqLen();
    const wnd = this.rcvWnd(s);
    if (!this.acceptable(s, seg.seq, segLen, wnd)) {
      if (f & TCP_RST) {
        c[K.C_DROP_RST_OUT_OF_WINDOW]++;
        return;
      }
      c[K.C_DROP_OUT_OF_WINDOW]++;
      if (segLen > 0 && seqLt(seg.seq, s.rcvNxt)) c[K.C_SPURIOUS_DATA]++;
      if (s.state === TIME_WAIT && (f & TCP_FIN)) {
        s.closeAt = now + 2 * this.msl;
        this.arm(s);
      }
      this.ackLater(s);
      return;
    }
    s.lastRecvAt = now;
    s.kaProbes = 0;
    // 2. RST (RFC 5961 §3).
    if (f & TCP_RST) {
      if (seg.seq === s.rcvNxt) {
        if (s.state === SYN_RECEIVED && s.parent !== null) {
          this.destroy(s); // back to LISTEN: the listener stays
        } else if (s.state === CLOSING || s.state === LAST_ACK || s.state === TIME_WAIT) {
          this.destroy(s);
        } else {
          this.fail(s, s.state === SYN_RECEIVED ? ECONNREFUSED : ECONNRESET);
        }
      } else this.challengeAck(s);
      return;
    }
    // Timestamp bookkeeping (RFC 7323 §4.3).
    if (
      s.tsOn && seg.hasTimestamp && seqLe(seg.seq, s.lastAckSent) && seqGe(seg.tsVal, s.tsRecent)
    ) {
      s.tsRecent = seg.tsVal;
      s.tsRecentAt = now;
    }
    // 4. SYN in a synchronized state (RFC 5961 §4).
    if (f & TCP_SYN) {
      c[K.C_DROP_SYN_IN_WINDOW]++;
      this.challengeAck(s);
      return;
    }
    // 5. ACK.
    if (!(f & TCP_ACK)) {
      c[K.C_DROP_FLAGS]++;
      return;
    }
    if (s.state === SYN_RECEIVED) {
      if (seqLt(s.sndUna, seg.ack) && seqLe(seg.ack, s.sndNxt)) {
        this.ackSyn(s, seg);
        s.sndWnd = seg.window << s.sndWscale;
        s.sndWl1 = seg.seq;
        s.sndWl2 = seg.ack;
        s.maxSndWnd = s.sndWnd;
        s.state = s.finQueued ? FIN_WAIT_1 : ESTABLISHED;
        this.established(s);
        this.toAcceptQueue(s);
      } else {
        c[K.C_DROP_BAD_ACK]++;
        this.rstReply(seg);
        return;
      }
    } else if (!this.processAck(s, seg)) return;
    if (s.state === CLOSED) return;
    // 7. Text and 8. FIN.
    this.processText(s, seg, 0);
  }

  /** RFC 9293 §3.10.7.4 first check, against the window we advertised. */
  private acceptable(s: TcpSocket, seq: number, len: number, wnd: number): boolean {
    const d = seqDiff(seq, s.rcvNxt);
    if (len === 0) {
      // A peer that filled the window sends its ACKs at exactly the right edge: accept them
      // (RFC 9293 §3.10.7.4's allowance for valid ACKs; Linux's tcp_sequence() does the same).
      return d >= 0 && d <= wnd;
    }
    // Zero window: a segment at RCV.NXT (a window probe, or data with a piggybacked ACK) is
    // taken for its ACK; its data is trimmed to the room there is (none). Dropping it whole
    // would discard the only ACKs a peer with queued data sends, and deadlock both sides
    // (RFC 9293 §3.10.7.4: "special allowance should be made to accept valid ACKs"; Linux's
    // tcp_sequence() accepts SEG.SEQ = RCV.NXT with a zero window too).
    if (wnd === 0) return d === 0;
    const e = seqDiff((seq + len - 1) >>> 0, s.rcvNxt);
    return (d >= 0 && d < wnd) || (e >= 0 && e < wnd);
  }

  /** Our current receive window (what we last advertised, never shrunk). */
  private rcvWnd(s: TcpSocket): number {
    const w = seqDiff(s.rcvAdvEdge, s.rcvNxt);
    return w > 0 ? w : 0;
  }

  private toAcceptQueue(s: TcpSocket): void {
    const l = s.parent;
    if (l === null) {
      this.event(s, EV_CONNECTED | EV_WRITABLE);
      return;
    }
    l.synQueueLen--;
    if (l.state !== LISTEN || l.acceptLen >= l.backlog) {
      // The listener is gone or its queue is full: reset, like Linux with tcp_abort_on_overflow.
      this.counters[K.C_DROP_BACKLOG]++;
      s.parent = null;
      this.sendRst(s);
      this.destroy(s);
      return;
    }
    l.acceptQueue[(l.acceptHead + l.acceptLen) % l.backlog] = s;
    l.acceptLen++;
    this.event(l, EV_ACCEPT);
  }

  private challengeAck(s: TcpSocket): void {
    const sec = Math.floor(this.now / 1000);
    if (sec !== this.chSecond) {
      this.chSecond = sec;
      this.chCount = 0;
    }
    if (++this.chCount > this.challengeLimit) return;
    this.counters[K.C_CHALLENGE_ACKS]++;
    this.ackLater(s);
  }

  private ackLater(s: TcpSocket): void {
    s.ackNow = true;
    this.queueOut(s);
  }

  /** ACK processing in synchronized states. False: the segment is finished with. */
  private processAck(s: TcpSocket, seg: TcpSegment): boolean {
    const c = this.counters;
    const ack = seg.ack;
    // RFC 5961 §5.2: acceptable ACK range.
    if (seqGt(ack, s.sndNxt)) {
      c[K.C_DROP_BAD_ACK]++;
      this.challengeAck(s);
      return false;
    }
    if (seqLt(ack, (s.sndUna - s.maxSndWnd) >>> 0)) {
      c[K.C_DROP_BAD_ACK]++;
      this.challengeAck(s);
      return false;
    }
    const wnd = seg.window << s.sndWscale;
    const oldSacked = s.sackedBytes;
    if (s.sackOn && seg.sackCount > 0) this.sackUpdate(s, seg);
    const sackGrew = s.sackedBytes > oldSacked;
    const acked = seqDiff(ack, s.sndUna);
    const flightBefore = seqDiff(s.sndNxt, s.sndUna);
    if (acked > 0) {
      this.ackAdvance(s, seg, acked, flightBefore, s.sackedBytes - oldSacked);
      if (s.state === CLOSED) return false;
    } else if (
      acked === 0 && !(seg.flags & (TCP_SYN | TCP_FIN)) && flightBefore > 0 &&
      // RFC 5681's duplicate ACK carries no data and the same window; with SACK, any segment
      // that SACKs new bytes counts, data or not (RFC 6675 §2): in a two-way transfer every
      // segment of the peer carries data, and only its SACK blocks reveal our losses.
      ((seg.payloadLen === 0 && wnd === s.sndWnd) || sackGrew)
    ) {
      this.dupAck(s, s.sackedBytes - oldSacked);
    }
    // Window update (RFC 9293 §3.10.7.4, SND.WL1/WL2 rule).
    if (seqLt(s.sndWl1, seg.seq) || (s.sndWl1 === seg.seq && seqLe(s.sndWl2, ack))) {
      const opened = wnd > s.sndWnd;
      s.sndWnd = wnd;
      s.sndWl1 = seg.seq;
      s.sndWl2 = ack;
      if (wnd > s.maxSndWnd) s.maxSndWnd = wnd;
      if (wnd > 0 && s.persist) {
        s.persist = false;
        s.probes = 0;
        if (s.sndUna === s.sndNxt) s.rtoAt = 0;
      }
      if (opened) this.queueOut(s);
    }
    // State transitions on the ACK of our FIN.
    if (s.finSent && seqGt(s.sndUna, s.finSeq)) {
      switch (s.state) {
        case FIN_WAIT_1:
          s.state = FIN_WAIT_2;
          if (s.orphan) {
            s.closeAt = this.now + this.finTimeout;
            this.arm(s);
          }
          break;
        case CLOSING:
          this.enterTimeWait(s);
          break;
        case LAST_ACK:
          this.destroy(s);
          return false;
      }
    }
    return true;
  }

  /** Cumulative ACK of new data. */
  private ackAdvance(
    s: TcpSocket,
    seg: TcpSegment,
    acked: number,
    flightBefore: number,
    newlySacked: number,
  ): void {
    const now = this.now;
    let dataAcked = acked;
    if (s.sndUna === s.iss) dataAcked--; // our SYN
    if (s.finSent && seqGt(seg.ack, s.finSeq)) dataAcked--;
    // RTT (RFC 7323 §4 with timestamps, Karn's rule without).
    if (s.tsOn && seg.hasTimestamp && seg.tsEcr !== 0) {
      this.rttSample(s, seqDiff((now + s.tsOffset) >>> 0, seg.tsEcr));
    } else if (s.rttStart >= 0 && seqGt(seg.ack, s.rttSeq)) {
      this.rttSample(s, now - s.rttStart);
      s.rttStart = -1;
    }
    if (s.rttStart >= 0 && seqGt(seg.ack, s.rttSeq)) s.rttStart = -1;
    s.retries = 0;
    s.sndUna = seg.ack;
    if (dataAcked > 0) s.tx.release(dataAcked);
    this.sbTrim(s);
    if (s.dupBytes > 0) {
      s.dupBytes = Math.max(0, s.dupBytes - Math.max(0, acked - s.sndMss));
    }
    // Loss recovery progress.
    if (s.recovery === 1) {
      if (seqGe(seg.ack, s.recoverySeq)) {
        s.recovery = 0;
        s.dupAcks = 0;
        s.dupBytes = 0;
        s.cwnd = Math.max(Math.min(s.cwnd, s.ssthresh), s.sndMss);
        s.ccEpoch = -1;
      } else {
        this.prrUpdate(s, acked + newlySacked);
        if (!s.sackOn) s.rxmitHead = true; // NewReno partial ACK (RFC 6582 §3.2 step 5)
        if (seqLt(s.highRxt, s.sndUna)) s.highRxt = s.sndUna;
      }
    } else {
      s.dupAcks = 0;
      if (s.recovery === 2) {
        if (seqGe(seg.ack, s.recoverySeq)) s.recovery = 0;
        else if (seqLt(s.highRxt, s.sndUna)) s.highRxt = s.sndUna;
      }
      const limited = flightBefore + 3 * s.sndMss >= s.cwnd;
      s.cc.onAck(s, acked, now, limited);
      // SACK may reveal loss without three duplicates (RFC 6675 §5 IsLost(HighACK+1)).
      if (s.recovery === 0 && s.sackOn && s.sbCount > 0 && this.holeLost(s, 0)) {
        this.enterRecovery(s);
      }
    }
    // Retransmission timer (RFC 6298 §5.2, 5.3), and the tail loss probe before it.
    s.rtoAt = s.sndUna === s.sndNxt ? 0 : now + s.rto;
    this.armPto(s);
    this.arm(s);
    if (dataAcked > 0) this.event(s, EV_WRITABLE);
    this.queueOut(s);
  }

  private dupAck(s: TcpSocket, newlySacked: number): void {
    this.counters[K.C_DUP_ACKS]++;
    s.dupAcksIn++;
    s.dupAcks++;
    if (!s.sackOn) {
      const flight = seqDiff(s.sndNxt, s.sndUna);
      s.dupBytes = Math.min(s.dupBytes + s.sndMss, flight);
    }
    if (s.recovery === 1) {
      this.prrUpdate(s, s.sackOn ? newlySacked : s.sndMss);
      this.queueOut(s);
      return;
    }
    if (s.recovery === 2) return;
    if (
      s.dupAcks >= DUP_THRESH || (s.sackOn && s.sbCount > 0 && this.holeLost(s, 0))
    ) {
      // RFC 6582 §3.2 step 2: only when the ACK covers more than the last `recover`.
      if (seqLt(s.sndUna, s.recoverMark)) return;
      this.enterRecovery(s);
    } else {
      // Limited transmit (RFC 3042): the pipe estimate has shrunk; try to send new data.
      this.queueOut(s);
    }
  }

  private enterRecovery(s: TcpSocket): void {
    const flight = seqDiff(s.sndNxt, s.sndUna);
    s.cc.onLoss(s, flight, this.now);
    s.recovery = 1;
    s.recoverySeq = s.sndNxt;
    s.recoverMark = s.sndNxt;
    s.highRxt = s.sndUna;
    s.prrDelivered = 0;
    s.prrOut = 0;
    s.recoverFs = flight;
    s.prrBudget = 0;
    s.rxmitHead = !s.sackOn;
    s.cwnd = s.ssthresh;
    s.rttStart = -1;
    if (s.sackOn) {
      s.sackRecoveries++;
      this.counters[K.C_SACK_RECOVERIES]++;
    } else {
      s.renoRecoveries++;
      this.counters[K.C_RENO_RECOVERIES]++;
    }
    this.prrUpdate(s, s.sackOn ? 0 : s.sndMss);
    if (s.prrBudget < s.sndMss) s.prrBudget = s.sndMss; // the fast retransmit itself
    this.queueOut(s);
  }

  /** Proportional Rate Reduction (RFC 6937) with SSRB: how much may be sent now. */
  private prrUpdate(s: TcpSocket, delivered: number): void {
    if (delivered < 0) delivered = 0;
    s.prrDelivered += delivered;
    const pipe = this.pipe(s);
    let sndcnt: number;
    if (pipe > s.ssthresh) {
      sndcnt = Math.ceil((s.prrDelivered * s.ssthresh) / Math.max(1, s.recoverFs)) - s.prrOut;
    } else {
      const lim = Math.max(s.prrDelivered - s.prrOut, delivered) + s.sndMss;
      sndcnt = Math.min(s.ssthresh - pipe, lim);
    }
    s.prrBudget = sndcnt > 0 ? sndcnt : 0;
  }

  private rttSample(s: TcpSocket, r: number): void {
    if (!(r >= 0) || r > 3600000) return;
    if (s.srtt === 0) {
      s.srtt = r > 0 ? r : 0.5;
      s.rttvar = r / 2;
    } else {
      s.rttvar = 0.75 * s.rttvar + 0.25 * Math.abs(s.srtt - r);
      s.srtt = 0.875 * s.srtt + 0.125 * r;
    }
    let rto = s.srtt + Math.max(TICK_MS, 4 * s.rttvar);
    if (rto < this.minRto) rto = this.minRto;
    if (rto > this.maxRto) rto = this.maxRto;
    s.rto = rto;
  }

  // ---- SACK scoreboard (sender side) ----

  private sackUpdate(s: TcpSocket, seg: TcpSegment): void {
    for (let i = 0; i < seg.sackCount; i++) {
      let l = seg.sack[2 * i];
      const r = seg.sack[2 * i + 1];
      if (!seqLt(l, r) || seqGt(r, s.sndNxt) || seqLe(r, s.sndUna)) continue; // D-SACK, bogus
      if (seqLt(l, s.sndUna)) l = s.sndUna;
      this.sbAdd(s, l, r);
    }
    this.sbSum(s);
  }

  private sbAdd(s: TcpSocket, l: number, r: number): void {
    const sb = s.sb;
    let n = s.sbCount;
    // Merge with every overlapping or adjacent block.
    let i = 0;
    while (i < n) {
      const bl = sb[2 * i];
      const br = sb[2 * i + 1];
      if (seqLe(bl, r) && seqGe(br, l)) {
        if (seqLt(bl, l)) l = bl;
        if (seqGt(br, r)) r = br;
        sb.copyWithin(2 * i, 2 * i + 2, 2 * n);
        n--;
      } else i++;
    }
    let pos = 0;
    while (pos < n && seqLt(sb[2 * pos], l)) pos++;
    if (n === SB_MAX) {
      if (pos === n) {
        s.sbCount = n;
        return; // above everything we track: forget it
      }
      n--; // drop the highest block
    }
    sb.copyWithin(2 * pos + 2, 2 * pos, 2 * n);
    sb[2 * pos] = l;
    sb[2 * pos + 1] = r;
    s.sbCount = n + 1;
  }

  private sbTrim(s: TcpSocket): void {
    const sb = s.sb;
    let n = s.sbCount;
    while (n > 0 && seqLe(sb[1], s.sndUna)) {
      sb.copyWithin(0, 2, 2 * n);
      n--;
    }
    if (n > 0 && seqLt(sb[0], s.sndUna)) sb[0] = s.sndUna;
    s.sbCount = n;
    this.sbSum(s);
  }

  private sbSum(s: TcpSocket): void {
    let t = 0;
    for (let i = 0; i < s.sbCount; i++) t += seqDiff(s.sb[2 * i + 1], s.sb[2 * i]);
    s.sackedBytes = t;
  }

  /** RFC 6675 IsLost for the hole just below block `i` (constant across the hole). */
  private holeLost(s: TcpSocket, i: number): boolean {
    const thresh = this.dupThresh(s);
    if (s.sbCount - i >= thresh) return true;
    let bytes = 0;
    for (let j = i; j < s.sbCount; j++) bytes += seqDiff(s.sb[2 * j + 1], s.sb[2 * j]);
    return bytes > (thresh - 1) * s.sndMss - (thresh < DUP_THRESH ? 1 : 0);
  }

  /**
   * DupThresh, lowered for small flights with nothing new to send (Early Retransmit, RFC 5827):
   * with fewer than four segments out, three SACKed segments can never arrive above a loss.
   */
  private dupThresh(s: TcpSocket): number {
    const flight = seqDiff(s.sndNxt, s.sndUna);
    const segs = Math.ceil(flight / s.sndMss);
    if (segs >= DUP_THRESH + 1) return DUP_THRESH;
    const unsent = s.tx.readable() - flight;
    const room = s.sndWnd - flight;
    if (unsent > 0 && room >= s.sndMss) return DUP_THRESH; // new data can still clock ACKs
    return Math.max(1, segs - 1);
  }

  /** Bytes in the network (RFC 6675 SetPipe, per hole). */
  private pipe(s: TcpSocket): number {
    const flight = seqDiff(s.sndNxt, s.sndUna);
    if (s.recovery === 0 || (s.recovery === 1 && !s.sackOn)) {
      const p = flight - s.sackedBytes - s.dupBytes;
      return p > 0 ? p : 0;
    }
    let pipe = 0;
    let prev = s.sndUna;
    for (let i = 0; i <= s.sbCount; i++) {
      const b = i < s.sbCount ? s.sb[2 * i] : s.sndNxt;
      if (seqLt(prev, b)) {
        const lost = s.recovery === 2
          ? seqLt(prev, s.recoverySeq)
          : (i < s.sbCount && this.holeLost(s, i));
        let rx = 0;
        if (seqGt(s.highRxt, prev)) {
          rx = seqLt(s.highRxt, b) ? seqDiff(s.highRxt, prev) : seqDiff(b, prev);
        }
        pipe += lost ? rx : seqDiff(b, prev) + rx;
      }
      if (i < s.sbCount) prev = s.sb[2 * i + 1];
    }
    return pipe;
  }

  // ---- receive side: text, reassembly, FIN ----

  /** Steps 7 and 8: payload and FIN. `synSkip` is 1 when the segment also carried our SYN. */
  private processText(s: TcpSocket, seg: TcpSegment, synSkip: number): void {
    const st = s.state;
    let seq = (seg.seq + synSkip) >>> 0;
    let dOff = seg.payloadOff;
    let dLen = seg.payloadLen;
    const hasFin = (seg.flags & TCP_FIN) !== 0;
    const finSeq = (seq + dLen) >>> 0;
    if (dLen > 0) {
      if (st !== ESTABLISHED && st !== FIN_WAIT_1 && st !== FIN_WAIT_2) {
        // After a FIN, data is ignored (RFC 9293 step 7).
        dLen = 0;
      }
    }
    if (dLen > 0) {
      const d = seqDiff(s.rcvNxt, seq);
      if (d > 0) {
        if (d >= dLen) {
          dLen = 0;
          this.counters[K.C_SPURIOUS_DATA]++;
          s.ackNow = true;
        } else {
          seq = s.rcvNxt;
          dOff += d;
          dLen -= d;
        }
      }
    }
    let ackNow = false;
    if (dLen > 0 && s.orphan) {
      // New data after close(): reset, like Linux.
      this.sendRst(s);
      this.destroy(s);
      return;
    }
    if (dLen > 0) {
      if (dLen > s.rcvMss && dLen <= 65535) s.rcvMss = dLen;
      const off = seqDiff(seq, s.rcvNxt);
      const room = s.rx.writable() - off;
      if (room < dLen) {
        dLen = room > 0 ? room : 0;
        ackNow = true;
      }
      if (dLen > 0) {
        if (off === 0) {
          s.rx.copyIn(0, this.inBuf, dOff, dLen);
          let adv = dLen;
          const had = s.ofoCount;
          while (s.ofoCount > 0 && seqLe(s.ofo[0], (s.rcvNxt + adv) >>> 0)) {
            const e = seqDiff(s.ofo[1], s.rcvNxt);
            if (e > adv) adv = e;
            this.ofoRemoveFirst(s);
          }
          if (had > 0) ackNow = true; // filled a hole: ACK at once (RFC 5681 §4.2)
          s.rx.publish(adv);
          s.rcvNxt = (s.rcvNxt + adv) >>> 0;
          this.event(s, EV_READABLE);
          if (!ackNow) {
            if (seqDiff(s.rcvNxt, s.lastAckSent) >= 2 * s.rcvMss) ackNow = true;
            else if (s.dackAt === 0) {
              s.dackAt = this.now + this.dackMs;
              this.arm(s);
            }
          }
        } else {
          if (this.ofoAdd(s, seq, (seq + dLen) >>> 0)) {
            s.rx.copyIn(off, this.inBuf, dOff, dLen);
            s.ofoBytes += dLen;
            this.counters[K.C_OFO_BYTES] += dLen;
          } else this.counters[K.C_DROP_OFO_FULL]++;
          ackNow = true; // out of order: duplicate ACK with SACK at once
        }
      }
    }
    if (
      hasFin &&
      (st === ESTABLISHED || st === FIN_WAIT_1 || st === FIN_WAIT_2 || st === SYN_RECEIVED)
    ) {
      if (seqGe(finSeq, s.rcvNxt) && seqDiff(finSeq, s.rcvNxt) <= this.rcvWnd(s) + 1) {
        s.rcvFinPending = true;
        s.rcvFinSeq = finSeq;
      }
      ackNow = true;
    }
    if (s.rcvFinPending && !s.rcvFin && s.rcvFinSeq === s.rcvNxt) this.consumeFin(s);
    else if (hasFin && s.state === TIME_WAIT) {
      s.closeAt = this.now + 2 * this.msl;
      this.arm(s);
      ackNow = true;
    }
    if (ackNow) this.ackLater(s);
  }

  private consumeFin(s: TcpSocket): void {
    s.rcvFin = true;
    s.rcvFinPending = false;
    s.rcvNxt = (s.rcvNxt + 1) >>> 0;
    s.ofoCount = 0;
    this.event(s, EV_READABLE | EV_PEER_CLOSED);
    switch (s.state) {
      case SYN_RECEIVED:
      case ESTABLISHED:
        s.state = CLOSE_WAIT;
        break;
      case FIN_WAIT_1:
        // Our FIN not yet acknowledged (else we would be in FIN-WAIT-2): simultaneous close.
        s.state = CLOSING;
        break;
      case FIN_WAIT_2:
        this.enterTimeWait(s);
        break;
    }
    this.ackLater(s);
  }

  private enterTimeWait(s: TcpSocket): void {
    s.state = TIME_WAIT;
    s.rtoAt = 0;
    s.kaAt = 0;
    s.dackAt = 0;
    s.closeAt = this.now + 2 * this.msl;
    this.arm(s);
    this.event(s, EV_CLOSED);
  }

  private ofoAdd(s: TcpSocket, l: number, r: number): boolean {
    const o = s.ofo;
    let n = s.ofoCount;
    let touches = false;
    for (let i = 0; i < n; i++) {
      if (seqLe(o[2 * i], r) && seqGe(o[2 * i + 1], l)) {
        touches = true;
        break;
      }
    }
    if (!touches && n === OFO_MAX) return false;
    let i = 0;
    while (i < n) {
      const bl = o[2 * i];
      const br = o[2 * i + 1];
      if (seqLe(bl, r) && seqGe(br, l)) {
        if (seqLt(bl, l)) l = bl;
        if (seqGt(br, r)) r = br;
        o.copyWithin(2 * i, 2 * i + 2, 2 * n);
        s.ofoAge.copyWithin(i, i + 1, n);
        n--;
      } else i++;
    }
    let pos = 0;
    while (pos < n && seqLt(o[2 * pos], l)) pos++;
    o.copyWithin(2 * pos + 2, 2 * pos, 2 * n);
    s.ofoAge.copyWithin(pos + 1, pos, n);
    o[2 * pos] = l;
    o[2 * pos + 1] = r;
    s.ofoAge[pos] = ++s.ofoClock;
    s.ofoCount = n + 1;
    return true;
  }

  private ofoRemoveFirst(s: TcpSocket): void {
    const n = s.ofoCount;
    s.ofo.copyWithin(0, 2, 2 * n);
    s.ofoAge.copyWithin(0, 1, n);
    s.ofoCount = n - 1;
  }

  // =====================================================================================
  // Output
  // =====================================================================================

  private queueOut(s: TcpSocket): void {
    if (s.outQueued || s.state === CLOSED) return;
    s.outQueued = true;
    s.outNext = null;
    if (this.outTail === null) this.outHead = s;
    else this.outTail.outNext = s;
    this.outTail = s;
  }

  private flush(): void {
    // Sockets that could not get a buffer go back on the list for the next poll.
    let s = this.outHead;
    const last = this.outTail;
    this.outHead = this.outTail = null;
    while (s !== null) {
      const next = s.outNext;
      s.outQueued = false;
      s.outNext = null;
      if (s.state !== CLOSED) this.output(s);
      if (s === last) break;
      s = next;
    }
  }

  private output(s: TcpSocket): void {
    const st = s.state;
    if (st === SYN_SENT) return;
    let sent = false;
    if (canSendData(st) && seqGt(s.sndUna, s.iss)) sent = this.sendData(s);
    if (!sent && s.ackNow) this.emit(s, s.sndNxt, 0, TCP_ACK, false);
  }

  /** Sends what congestion, flow control and Nagle allow; true if a segment went out. */
  private sendData(s: TcpSocket): boolean {
    const pipe = this.pipe(s);
    this.budget = s.recovery === 1 ? s.prrBudget : s.cwnd - pipe;
    const sent = this.sendDataBudget(s);
    if (s.recovery === 1) s.prrBudget = this.budget > 0 ? this.budget : 0;
    return sent;
  }

  private budget = 0;

  private sendDataBudget(s: TcpSocket): boolean {
    const mss = s.sndMss;
    let sent = false;
    let budget = this.budget;
    // NewReno: retransmit the first unacknowledged segment.
    if (s.rxmitHead) {
      s.rxmitHead = false;
      if (seqLt(s.sndUna, s.sndNxt)) {
        const n = this.emitRange(s, s.sndUna, mss);
        if (n < 0) return this.done(sent, budget);
        sent = true;
        budget -= n;
        s.prrOut += n;
        if (seqLt(s.highRxt, (s.sndUna + n) >>> 0)) s.highRxt = (s.sndUna + n) >>> 0;
      }
    }
    // RFC 6675 NextSeg rule 1 (and everything after a timeout): lost holes above HighRxt.
    if (s.recovery === 2 || (s.recovery === 1 && s.sackOn)) {
      let prev = s.sndUna;
      for (let i = 0; i <= s.sbCount && budget > 0; i++) {
        let b = i < s.sbCount ? s.sb[2 * i] : s.sndNxt;
        const lost = s.recovery === 2
          ? seqLt(prev, s.recoverySeq)
          : (i < s.sbCount && this.holeLost(s, i));
        if (lost) {
          if (s.recovery === 2 && seqGt(b, s.recoverySeq)) b = s.recoverySeq;
          let start = seqLt(prev, s.highRxt) ? s.highRxt : prev;
          while (seqLt(start, b) && budget > 0) {
            const n = this.emitRange(s, start, Math.min(mss, seqDiff(b, start)));
            if (n < 0) return this.done(sent, budget);
            sent = true;
            budget -= n;
            s.prrOut += n;
            start = (start + n) >>> 0;
            s.highRxt = start;
          }
        }
        if (i < s.sbCount) prev = s.sb[2 * i + 1];
      }
      if (s.recovery === 2 && seqLt(s.highRxt, s.recoverySeq)) return this.done(sent, budget);
    }
    // New data (NextSeg rule 2).
    if (!s.finSent) {
      const end = (s.sndUna + s.tx.readable()) >>> 0;
      for (;;) {
        const unsent = seqDiff(end, s.sndNxt);
        if (unsent <= 0) break;
        const room = seqDiff((s.sndUna + s.sndWnd) >>> 0, s.sndNxt);
        let len = unsent < mss ? unsent : mss;
        if (room < len) {
          if (room <= 0) {
            this.maybePersist(s);
            break;
          }
          // Sender SWS avoidance (RFC 1122 §4.2.3.4).
          if (room >= (s.maxSndWnd >> 1) || s.sndNxt === s.sndUna) len = room;
          else break;
        }
        if (len < mss && len === unsent && !s.nodelay && !s.finQueued && s.sndNxt !== s.sndUna) {
          break; // Nagle
        }
        if (budget < len) break;
        const fin = s.finQueued && len === unsent;
        if (!this.emit(s, s.sndNxt, len, fin ? TCP_ACK | TCP_FIN : TCP_ACK, false)) {
          return this.done(sent, budget);
        }
        sent = true;
        budget -= len;
        s.prrOut += len;
        if (fin) return this.done(sent, budget);
      }
      if (s.finQueued && !s.finSent && s.sndNxt === end) {
        if (this.emit(s, s.sndNxt, 0, TCP_ACK | TCP_FIN, false)) sent = true;
      }
    }
    return this.done(sent, budget);
  }

  private done(sent: boolean, budget: number): boolean {
    this.budget = budget;
    return sent;
  }

  private maybePersist(s: TcpSocket): void {
    if (s.sndUna === s.sndNxt && !s.persist) {
      s.persist = true;
      s.probes = 0;
      s.rtoAt = this.now + s.rto;
      this.arm(s);
    }
  }

  /**
   * Retransmits up to `max` bytes of sequence space at `seq` (data, and the FIN if it falls in
   * the range). Returns the sequence space sent, or -1 if no buffer.
   */
  private emitRange(s: TcpSocket, seq: number, max: number): number {
    const dataEnd = s.finSent ? s.finSeq : s.sndNxt;
    let len = seqDiff(dataEnd, seq);
    if (len > max) len = max;
    if (len < 0) len = 0;
    const fin = s.finSent && ((seq + len) >>> 0) === s.finSeq && len < max;
    if (len === 0 && !fin) return 0;
    if (!this.emit(s, seq, len, fin ? TCP_ACK | TCP_FIN : TCP_ACK, true)) return -1;
    return len + (fin ? 1 : 0);
  }

  /**
   * Writes one segment of `s` into a buffer lent by the link and sends it. `flags` carries ACK
   * for every synchronized segment. Returns false when the link has no buffer.
   */
  private emit(s: TcpSocket, seq: number, dataLen: number, flags: number, rexmit: boolean) {
    const link = this.link;
    const off = link.reserve();
    if (off < 0) {
      this.counters[K.C_NO_BUFFER]++;
      this.queueOutRetry(s);
      return false;
    }
    const b = link.buf;
    const now = this.now;
    let p = off + 20;
    const syn = (flags & TCP_SYN) !== 0;
    const tsVal = (now + s.tsOffset) >>> 0;
    if (syn) {
      p = optWriteMss(b, p, Math.min(this.link.mtu - 40, 65535));
      if (s.tsOn) {
        p = s.sackOn
          ? optWriteSackPermTs(b, p, tsVal, s.tsRecent)
          : optWriteTs(b, p, tsVal, s.tsRecent);
      } else if (s.sackOn) p = optWriteSackPerm(b, p);
      if (s.wsOn) p = optWriteWscale(b, p, s.rcvWscale);
    } else {
      if (s.tsOn) p = optWriteTs(b, p, tsVal, s.tsRecent);
      if (s.sackOn && s.ofoCount > 0 && (flags & TCP_ACK)) {
        p = optWriteSack(b, p, this.sackScratch, this.sackBlocks(s, s.tsOn ? 3 : 4));
      }
    }
    const hl = p - off;
    let wnd: number;
    if (syn) {
      wnd = s.rx.writable();
      if (wnd > 65535) wnd = 65535;
      s.rcvAdvEdge = (s.rcvNxt + wnd) >>> 0;
    } else wnd = this.windowField(s);
    if (dataLen > 0) {
      s.tx.copyOut(seqDiff(seq, s.sndUna), b, off + hl, dataLen);
      if (((seq + dataLen) >>> 0) === ((s.sndUna + s.tx.readable()) >>> 0)) flags |= TCP_PSH;
    }
    const ackNum = flags & TCP_ACK ? s.rcvNxt : 0;
    tcpWriteHeader(b, off, s.localPort, s.remotePort, seq, ackNum, hl, flags, wnd);
    const tcpLen = hl + dataLen;
    const sum = checksumFinish(
      checksumAdd(checksumAddPseudoV4(0, s.localIp, s.remoteIp, 6, tcpLen), b, off, tcpLen),
    );
    b[off + 16] = sum >>> 8;
    b[off + 17] = sum;
    link.send(s.localIp, s.remoteIp, tcpLen);
    const c = this.counters;
    c[K.C_SEGS_OUT]++;
    c[K.C_BYTES_OUT] += dataLen;
    s.segsOut++;
    s.bytesOut += dataLen;
    if (flags & TCP_ACK) {
      s.lastAckSent = s.rcvNxt;
      s.ackNow = false;
      s.dackAt = 0;
    }
    if (flags & TCP_RST) {
      c[K.C_RST_OUT]++;
      s.rstOut++;
      return true;
    }
    const space = dataLen + (syn ? 1 : 0) + (flags & TCP_FIN ? 1 : 0);
    if (space === 0) return true;
    if (rexmit) {
      c[K.C_RETRANS_SEGS]++;
      s.retransSegs++;
      if (s.rttStart >= 0 && seqLe(seq, s.rttSeq)) s.rttStart = -1; // Karn
    } else {
      const end = (seq + space) >>> 0;
      if (seqGt(end, s.sndNxt)) s.sndNxt = end;
      if (flags & TCP_FIN) {
        s.finSent = true;
        s.finSeq = (seq + dataLen) >>> 0;
      }
      if (s.rttStart < 0 && !s.tsOn) {
        s.rttStart = now;
        s.rttSeq = seq;
      }
    }
    if (s.rtoAt === 0 || s.persist) {
      s.persist = false;
      s.rtoAt = now + s.rto;
      this.arm(s);
    }
    return true;
  }

  /** Link out of buffers: try again at the next poll. */
  private queueOutRetry(s: TcpSocket): void {
    if (s.outQueued) return;
    s.outQueued = true;
    s.outNext = null;
    if (this.outTail === null) this.outHead = s;
    else this.outTail.outNext = s;
    this.outTail = s;
  }

  /** SACK blocks for an outgoing ACK: the most recently changed range first (RFC 2018 §4). */
  private sackBlocks(s: TcpSocket, max: number): number {
    const n = Math.min(max, s.ofoCount);
    let lastAge = 0x7fffffff;
    for (let k = 0; k < n; k++) {
      let best = -1;
      let bestAge = -1;
      for (let i = 0; i < s.ofoCount; i++) {
        const a = s.ofoAge[i];
        if (a < lastAge && a > bestAge) {
          bestAge = a;
          best = i;
        }
      }
      if (best < 0) return k;
      this.sackScratch[2 * k] = s.ofo[2 * best];
      this.sackScratch[2 * k + 1] = s.ofo[2 * best + 1];
      lastAge = bestAge;
    }
    return n;
  }

  /** The window field of an outgoing segment, with receiver SWS avoidance (RFC 1122). */
  private windowField(s: TcpSocket): number {
    const free = s.rx.writable();
    let cur = seqDiff(s.rcvAdvEdge, s.rcvNxt);
    if (cur < 0) cur = 0;
    if (free > cur && free - cur >= Math.min(s.rcvCap >> 1, s.rcvMss)) cur = free;
    // Never offer more than the receive ring can hold: the scaled field is rounded down (the
    // peer may fill every byte offered; RFC 7323 §2.4). The right edge we accept up to stays
    // where earlier segments put it (never shrunk, RFC 9293 §3.8.6): rcvNxt + free only grows,
    // so everything up to an edge once offered still fits.
    if (cur > free) cur = free;
    const ws = s.rcvWscale;
    let field = cur >>> ws;
    if (field > 65535) field = 65535;
    const edge = (s.rcvNxt + field * (1 << ws)) >>> 0;
    if (seqGt(edge, s.rcvAdvEdge)) s.rcvAdvEdge = edge;
    return field;
  }

  private sendSyn(s: TcpSocket): void {
    const flags = s.state === SYN_SENT ? TCP_SYN : TCP_SYN | TCP_ACK;
    const c = this.counters;
    const before = c[K.C_RETRANS_SEGS];
    this.emit(s, s.iss, 0, flags, s.retries > 0);
    if (s.retries === 0 && c[K.C_RETRANS_SEGS] === before && s.rttStart < 0) {
      s.rttStart = this.now;
      s.rttSeq = s.iss;
    }
  }

  /** RST for a connection being aborted: seq = SND.NXT, with ACK. */
  private sendRst(s: TcpSocket): void {
    if (!isSynchronized(s.state) && s.state !== SYN_SENT) return;
    if (s.state === SYN_SENT) return;
    this.emit(s, s.sndNxt, 0, TCP_RST | TCP_ACK, false);
  }

  /** A segment outside any connection (RST replies, cookie SYN-ACKs are built elsewhere). */
  private sendRaw(
    srcIp: number,
    srcPort: number,
    dstIp: number,
    dstPort: number,
    seq: number,
    ack: number,
    flags: number,
  ): void {
    const link = this.link;
    const off = link.reserve();
    if (off < 0) {
      this.counters[K.C_NO_BUFFER]++;
      return;
    }
    const b = link.buf;
    tcpWriteHeader(b, off, srcPort, dstPort, seq, ack, 20, flags, 0);
    const sum = checksumFinish(
      checksumAdd(checksumAddPseudoV4(0, srcIp, dstIp, 6, 20), b, off, 20),
    );
    b[off + 16] = sum >>> 8;
    b[off + 17] = sum;
    link.send(srcIp, dstIp, 20);
    this.counters[K.C_SEGS_OUT]++;
    if (flags & TCP_RST) this.counters[K.C_RST_OUT]++;
  }

  // =====================================================================================
  // SYN cookies
  // =====================================================================================

  private cookieHash(lip: number, lport: number, rip: number, rport: number, x: number) {
    return hash4(this.k[2], this.k[3], lip, rip, (lport << 16) | rport, x);
  }

  private sendCookieSynAck(l: TcpSocket, seg: TcpSegment): void {
    const c = this.counters;
    const lip = this.inDst;
    const rip = this.inSrc;
    const lport = seg.dstPort;
    const rport = seg.srcPort;
    const peerMss = seg.mss > 0 ? seg.mss : 536;
    let mi = 0;
    while (mi + 1 < COOKIE_MSS.length && COOKIE_MSS[mi + 1] <= peerMss) mi++;
    const t = Math.floor(this.now / COOKIE_PERIOD_MS) & 31;
    const h = this.cookieHash(lip, lport, rip, rport, (seg.seq ^ (t | (mi << 5))) | 0);
    const iss = ((t << 27) | (mi << 24) | (h & 0xffffff)) >>> 0;
    const link = this.link;
    const off = link.reserve();
    if (off < 0) {
      c[K.C_NO_BUFFER]++;
      return;
    }
    const b = link.buf;
    let p = optWriteMss(b, off + 20, Math.min(this.link.mtu - 40, 65535));
    const ts = this.tsEnabled && seg.hasTimestamp;
    const sack = this.sackEnabled && seg.sackPermitted;
    const ws = this.wsEnabled && seg.wscale >= 0;
    if (ts) {
      // The peer's options ride in the low bits of our timestamp (as Linux does).
      const opts = (ws ? seg.wscale : TS_OPT_NO_WS) | (sack ? 0x10 : 0) | 0x20;
      const nowTs = (this.now + this.tsOffsetTuple(lip, lport, rip, rport)) >>> 0;
      let v = ((nowTs & ~63) | opts) >>> 0;
      if (seqGt(v, nowTs)) v = (v - 64) >>> 0;
      p = sack ? optWriteSackPermTs(b, p, v, seg.tsVal) : optWriteTs(b, p, v, seg.tsVal);
      if (ws) p = optWriteWscale(b, p, l.rcvWscale);
    }
    const hl = p - off;
    const wnd = Math.min(l.rcvCap, 65535);
    tcpWriteHeader(b, off, lport, rport, iss, (seg.seq + 1) >>> 0, hl, TCP_SYN | TCP_ACK, wnd);
    const sum = checksumFinish(checksumAdd(checksumAddPseudoV4(0, lip, rip, 6, hl), b, off, hl));
    b[off + 16] = sum >>> 8;
    b[off + 17] = sum;
    link.send(lip, rip, hl);
    c[K.C_SEGS_OUT]++;
    c[K.C_SYN_COOKIES_SENT]++;
  }

  /** An ACK to a listener: a valid cookie creates the connection. */
  private cookieAck(l: TcpSocket, seg: TcpSegment): boolean {
    const c = this.counters;
    const lip = this.inDst;
    const rip = this.inSrc;
    const lport = seg.dstPort;
    const rport = seg.srcPort;
    const cookie = (seg.ack - 1) >>> 0;
    const peerIsn = (seg.seq - 1) >>> 0;
    const t = cookie >>> 27;
    const mi = (cookie >>> 24) & 7;
    const cur = Math.floor(this.now / COOKIE_PERIOD_MS) & 31;
    if (((cur - t) & 31) > 1 || mi >= COOKIE_MSS.length) return false;
    const h = this.cookieHash(lip, lport, rip, rport, (peerIsn ^ (t | (mi << 5))) | 0);
    if (((h ^ cookie) & 0xffffff) !== 0) {
      c[K.C_SYN_COOKIES_BAD]++;
      return false;
    }
    if (l.acceptLen >= l.backlog) {
      c[K.C_DROP_BACKLOG]++;
      return true;
    }
    const s = this.newSocket(l.childOpts ?? {});
    s.localIp = lip;
    s.localPort = lport;
    s.remoteIp = rip;
    s.remotePort = rport;
    if (!this.attachStreams(s, l.childOpts)) {
      this.liveCount--;
      return true;
    }
    s.onEvent = l.childOpts?.onEvent ?? l.onEvent;
    s.childOpts = l.childOpts;
    s.iss = cookie;
    s.tsOffset = this.tsOffsetFor(s);
    const ecr = seg.tsEcr;
    s.tsOn = this.tsEnabled && seg.hasTimestamp && (ecr & 0x20) !== 0;
    if (s.tsOn) {
      s.tsRecent = seg.tsVal;
      s.tsRecentAt = this.now;
      s.sackOn = this.sackEnabled && (ecr & 0x10) !== 0;
      s.wsOn = this.wsEnabled && (ecr & 0xf) !== TS_OPT_NO_WS;
      s.sndWscale = s.wsOn ? Math.min(ecr & 0xf, 14) : 0;
      s.rcvWscale = s.wsOn ? l.rcvWscale : 0;
    }
    s.peerMss = COOKIE_MSS[mi];
    this.setMss(s);
    s.irs = peerIsn;
    s.rcvNxt = seg.seq;
    s.rcvAdvEdge = (s.rcvNxt + Math.min(l.rcvCap, 65535)) >>> 0;
    s.lastAckSent = s.rcvNxt;
    s.sndUna = seg.ack;
    s.sndNxt = seg.ack;
    s.sndWnd = seg.window << s.sndWscale;
    s.sndWl1 = seg.seq;
    s.sndWl2 = seg.ack;
    s.maxSndWnd = s.sndWnd;
    s.state = ESTABLISHED;
    this.tableInsert(s);
    c[K.C_SYN_COOKIES_OK]++;
    c[K.C_PASSIVE_OPENS]++;
    s.parent = l;
    l.synQueueLen++; // balanced by toAcceptQueue
    this.established(s);
    this.toAcceptQueue(s);
    if (s.state !== CLOSED && (seg.payloadLen > 0 || (seg.flags & TCP_FIN))) {
      this.processText(s, seg, 0);
    }
    return true;
  }

  // =====================================================================================
  // Timers
  // =====================================================================================

  private arm(s: TcpSocket): void {
    let at = Infinity;
    if (s.rtoAt !== 0) at = s.rtoAt;
    if (s.dackAt !== 0 && s.dackAt < at) at = s.dackAt;
    if (s.ptoAt !== 0 && s.ptoAt < at) at = s.ptoAt;
    if (s.kaAt !== 0 && s.kaAt < at) at = s.kaAt;
    if (s.closeAt !== 0 && s.closeAt < at) at = s.closeAt;
    if (at === Infinity || s.state === CLOSED) return;
    if (s.tLinked) {
      if (s.tAt <= at) return; // fires early and re-arms: cheaper than moving it
      this.unlink(s);
    }
    // The slot of the first tick that starts at or after `at`: when runTimers reaches it,
    // `now` has passed `at`. (With floor, a fractional deadline like 3174.1 ms sat in slot 3174,
    // was visited at now = 3174.05, not yet due, and then waited a whole wheel turn: 4 s late.)
    let tick = Math.ceil(at / TICK_MS);
    if (tick <= this.curTick) tick = this.curTick + 1;
    const slot = tick & WHEEL_MASK;
    s.tAt = at;
    s.tSlot = slot;
    s.tLinked = true;
    s.tPrev = null;
    const head = this.wheel[slot];
    s.tNext = head;
    if (head !== null) head.tPrev = s;
    this.wheel[slot] = s;
    this.timerCount++;
  }

  private unlink(s: TcpSocket): void {
    if (s.tPrev !== null) s.tPrev.tNext = s.tNext;
    else this.wheel[s.tSlot] = s.tNext;
    if (s.tNext !== null) s.tNext.tPrev = s.tPrev;
    s.tPrev = s.tNext = null;
    s.tLinked = false;
    this.timerCount--;
  }

  private runTimers(now: number): void {
    const target = Math.floor(now / TICK_MS);
    if (this.curTick < 0) this.curTick = target - 1;
    if (target <= this.curTick) return;
    let from = this.curTick + 1;
    if (target - this.curTick > WHEEL_SLOTS) from = target - WHEEL_SLOTS + 1;
    for (let t = from; t <= target; t++) {
      this.curTick = t;
      const slot = t & WHEEL_MASK;
      let s = this.wheel[slot];
      while (s !== null) {
        const next = s.tNext;
        if (s.tAt <= now) {
          this.unlinkAt(s, slot);
          this.onTimer(s);
        }
        s = next;
      }
    }
    this.curTick = target;
  }

  private unlinkAt(s: TcpSocket, slot: number): void {
    if (s.tPrev !== null) s.tPrev.tNext = s.tNext;
    else this.wheel[slot] = s.tNext;
    if (s.tNext !== null) s.tNext.tPrev = s.tPrev;
    s.tPrev = s.tNext = null;
    s.tLinked = false;
    this.timerCount--;
  }

  private onTimer(s: TcpSocket): void {
    const now = this.now;
    if (s.closeAt !== 0 && now >= s.closeAt) {
      s.closeAt = 0;
      if (s.state === TIME_WAIT || s.state === FIN_WAIT_2) {
        this.destroy(s);
        return;
      }
    }
    if (s.rtoAt !== 0 && now >= s.rtoAt) {
      s.rtoAt = 0;
      s.ptoAt = 0;
      this.onRto(s);
      if (s.state === CLOSED) return;
    }
    if (s.ptoAt !== 0 && now >= s.ptoAt) {
      s.ptoAt = 0;
      this.onPto(s);
    }
    if (s.dackAt !== 0 && now >= s.dackAt) {
      s.dackAt = 0;
      if (s.lastAckSent !== s.rcvNxt) this.ackLater(s);
    }
    if (s.kaAt !== 0 && now >= s.kaAt) {
      s.kaAt = 0;
      this.onKeepalive(s);
      if (s.state === CLOSED) return;
    }
    this.arm(s);
  }

  /**
   * Arms the tail loss probe (RFC 8985 §7.2): 2 SRTT after the last ACK, plus the peer's
   * delayed-ACK allowance when a single segment is out. Only with SACK, outside recovery,
   * and only if it would fire before the RTO.
   */
  private armPto(s: TcpSocket): void {
    s.ptoAt = 0;
    if (!s.sackOn || s.recovery !== 0 || s.sndUna === s.sndNxt || s.srtt === 0) return;
    if (!canSendData(s.state)) return;
    let pto = 2 * s.srtt;
    if (seqDiff(s.sndNxt, s.sndUna) <= s.sndMss) pto += 200;
    if (pto < 10) pto = 10;
    const at = this.now + pto;
    if (s.rtoAt !== 0 && at >= s.rtoAt) return;
    s.ptoAt = at;
  }

  /**
   * The ACK clock stopped with data out: retransmit the last segment (RFC 8985 §7.3), so the
   * peer's ACK carries SACK blocks that reveal what was lost, and recovery starts without
   * waiting for the RTO. One probe per flight: the next comes only after an ACK advances.
   */
  private onPto(s: TcpSocket): void {
    if (s.recovery !== 0 || s.sndUna === s.sndNxt || !canSendData(s.state)) return;
    const flight = seqDiff(s.sndNxt, s.sndUna);
    const len = Math.min(flight, s.sndMss);
    const seq = (s.sndNxt - len) >>> 0;
    if (this.emitRange(s, seq, len) > 0) this.counters[K.C_TLP_PROBES]++;
    if (s.rtoAt === 0) s.rtoAt = this.now + s.rto;
  }

  private onRto(s: TcpSocket): void {
    const now = this.now;
    const c = this.counters;
    if (s.state === SYN_SENT || s.state === SYN_RECEIVED) {
      const max = s.state === SYN_SENT ? this.synRetries : this.synAckRetries;
      if (s.retries >= max) {
        if (s.state === SYN_RECEIVED && s.parent !== null) this.destroy(s);
        else this.fail(s, ETIMEDOUT);
        return;
      }
      s.retries++;
      s.rttStart = -1;
      s.rto = Math.min(s.rto * 2, this.maxRto);
      c[K.C_RTO_EVENTS]++;
      s.rtoEvents++;
      this.sendSyn(s);
      s.rtoAt = now + s.rto;
      return;
    }
    if (s.persist) {
      // Zero-window probe (Linux style: an old sequence number that forces an ACK).
      c[K.C_WINDOW_PROBES]++;
      s.probes++;
      this.emit(s, (s.sndUna - 1) >>> 0, 0, TCP_ACK, false);
      s.persist = true;
      s.rtoAt = now + Math.min(s.rto * (1 << Math.min(s.probes, 10)), this.maxRto);
      return;
    }
    if (s.sndUna === s.sndNxt || !canSendData(s.state)) return;
    if (s.retries >= this.maxRetries) {
      this.fail(s, ETIMEDOUT);
      return;
    }
    s.retries++;
    c[K.C_RTO_EVENTS]++;
    s.rtoEvents++;
    const flight = seqDiff(s.sndNxt, s.sndUna);
    s.cc.onRto(s, flight, s.retries === 1 && s.recovery !== 2);
    s.recovery = 2;
    s.recoverySeq = s.sndNxt;
    s.recoverMark = s.sndNxt;
    s.highRxt = s.sndUna;
    s.dupAcks = 0;
    s.dupBytes = 0;
    s.rxmitHead = false;
    s.rttStart = -1;
    s.rto = Math.min(s.rto * 2, this.maxRto);
    s.rtoAt = now + s.rto;
    this.queueOut(s);
  }

  private onKeepalive(s: TcpSocket): void {
    if (!s.keepalive || s.state < ESTABLISHED || s.state === TIME_WAIT) return;
    const now = this.now;
    if (s.sndUna !== s.sndNxt || s.tx.readable() > 0) {
      s.kaAt = now + s.keepIdle; // data in flight: the retransmission timer watches
      return;
    }
    if (s.kaProbes === 0 && now - s.lastRecvAt < s.keepIdle) {
      s.kaAt = s.lastRecvAt + s.keepIdle;
      return;
    }
    if (s.kaProbes >= s.keepCnt) {
      this.fail(s, ETIMEDOUT);
      return;
    }
    this.counters[K.C_KEEPALIVE_PROBES]++;
    s.kaProbes++;
    this.emit(s, (s.sndUna - 1) >>> 0, 0, TCP_ACK, false);
    s.kaAt = now + s.keepIntvl;
  }

  // =====================================================================================
  // Events
  // =====================================================================================

  private event(s: TcpSocket, ev: number): void {
    s.evPending |= ev;
    if (s.evQueued) return;
    s.evQueued = true;
    s.evNext = null;
    if (this.evTail === null) this.evHead = s;
    else this.evTail.evNext = s;
    this.evTail = s;
  }

  private dispatchEvents(): void {
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
  private isn(s: TcpSocket): number {
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

  private tsOffsetTuple(lip: number, lport: number, rip: number, rport: number): number {
    return hash4(this.k[6], this.k[7], lip, rip, (lport << 16) | rport, 1);
  }

  private tsOffsetFor(s: TcpSocket): number {
    return this.tsOffsetTuple(s.localIp, s.localPort, s.remoteIp, s.remotePort);
  }

  /** RFC 6056 algorithm 3: a keyed offset per destination plus a global counter. */
  private ephemeralPort(srcIp: number, dstIp: number, dstPort: number): number {
    const n = this.ephHigh - this.ephLow + 1;
    const off = hash4(this.k[8], this.k[9], srcIp, dstIp, dstPort, 2);
    for (let i = 0; i < n; i++) {
      const port = this.ephLow + ((off + this.ephCounter + i) % n);
      if (this.listeners[port] !== null) continue;
      if (this.lookup(srcIp, port, dstIp, dstPort) === null) {
        this.ephCounter += i + 1;
        return port;
      }
    }
    return -1;
  }

  // =====================================================================================
  // Connection table
  // =====================================================================================

  private tableInit(size: number): void {
    this.tMask = size - 1;
    this.tLocal = new Int32Array(size);
    this.tRemote = new Int32Array(size);
    this.tPorts = new Int32Array(size);
    this.tHome = new Int32Array(size);
    this.tSock = new Array(size).fill(null);
  }

  private hashTuple(lip: number, lport: number, rip: number, rport: number): number {
    let h = Math.imul(lip ^ this.k[4], 0x9e3779b1);
    h = Math.imul(h ^ (h >>> 15) ^ rip, 0x85ebca77);
    h = Math.imul(h ^ (h >>> 13) ^ ((lport << 16) | rport) ^ this.k[5], 0xc2b2ae3d);
    return (h ^ (h >>> 16)) & this.tMask;
  }

  private lookup(lip: number, lport: number, rip: number, rport: number): TcpSocket | null {
    const ports = (lport << 16) | rport;
    const mask = this.tMask;
    let i = this.hashTuple(lip, lport, rip, rport);
    for (;;) {
      const s = this.tSock[i];
      if (s === null) return null;
      if (
        this.tPorts[i] === ports && this.tRemote[i] === (rip | 0) && this.tLocal[i] === (lip | 0)
      ) {
        return s;
      }
      i = (i + 1) & mask;
    }
  }

  private tableInsert(s: TcpSocket): void {
    if ((this.tCount + 1) * 2 > this.tMask + 1) this.tableGrow();
    const h = this.hashTuple(s.localIp, s.localPort, s.remoteIp, s.remotePort);
    let i = h;
    while (this.tSock[i] !== null) i = (i + 1) & this.tMask;
    this.tSock[i] = s;
    this.tLocal[i] = s.localIp | 0;
    this.tRemote[i] = s.remoteIp | 0;
    this.tPorts[i] = (s.localPort << 16) | s.remotePort;
    this.tHome[i] = h;
    s.slot = i;
    this.tCount++;
  }

  private tableRemove(s: TcpSocket): void {
    const mask = this.tMask;
    let i = s.slot;
    s.slot = -1;
    this.tSock[i] = null;
    this.tCount--;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const m = this.tSock[j];
      if (m === null) return;
      const k = this.tHome[j];
      // Move m back to i if its home is not cyclically within (i, j].
      const inRange = i <= j ? k > i && k <= j : k > i || k <= j;
      if (!inRange) {
        this.tSock[i] = m;
        this.tLocal[i] = this.tLocal[j];
        this.tRemote[i] = this.tRemote[j];
        this.tPorts[i] = this.tPorts[j];
        this.tHome[i] = k;
        m.slot = i;
        this.tSock[j] = null;
        i = j;
      }
    }
  }

  private tableGrow(): void {
    const old = this.tSock;
    this.tableInit((this.tMask + 1) * 2);
    this.tCount = 0;
    for (const s of old) if (s !== null) this.tableInsert(s);
  }
}
