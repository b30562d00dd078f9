/**
 * One TCP endpoint (a listener or a connection): its RFC 9293 transmission control block, its
 * streams, options, readiness and counters. Plain number fields, created once per connection;
 * the engine (engine.ts) is the only writer of the protocol fields.
 *
 * @module
 */

import type { RxStream, TxStream } from "../../rings/stream.ts";
import type { CcState, CongestionControl } from "./cc.ts";
import * as E from "../../rings/errno.ts";
import { SendMap } from "./sendmap.ts";
import { ReassemblyRanges } from "./reass.ts";

// ---- states (RFC 9293 §3.3.2) ----
export const CLOSED = 0;
export const LISTEN = 1;
export const SYN_SENT = 2;
export const SYN_RECEIVED = 3;
export const ESTABLISHED = 4;
export const FIN_WAIT_1 = 5;
export const FIN_WAIT_2 = 6;
export const CLOSE_WAIT = 7;
export const CLOSING = 8;
export const LAST_ACK = 9;
export const TIME_WAIT = 10;

export const STATE_NAMES = [
  "CLOSED",
  "LISTEN",
  "SYN-SENT",
  "SYN-RECEIVED",
  "ESTABLISHED",
  "FIN-WAIT-1",
  "FIN-WAIT-2",
  "CLOSE-WAIT",
  "CLOSING",
  "LAST-ACK",
  "TIME-WAIT",
] as const;

/** States in which data may be sent (and retransmitted). */
export function canSendData(st: number): boolean {
  return st === ESTABLISHED || st === CLOSE_WAIT || st === FIN_WAIT_1 || st === CLOSING ||
    st === LAST_ACK;
}

/** SYN-RECEIVED and every later state: both sequence spaces are known. */
export function isSynchronized(st: number): boolean {
  return st >= SYN_RECEIVED;
}

// ---- loss recovery states (Linux's tcp_ca_state, reduced to what the engine distinguishes) ----
/** No loss suspected. */
export const RECOVERY_NONE = 0;
/** Fast recovery: SACK or duplicate ACKs revealed a loss (RFC 6675, RFC 6582), PRR paces it. */
export const RECOVERY_FAST = 1;
/** After a retransmission timeout: everything outstanding is presumed lost (RFC 6298 §5). */
export const RECOVERY_RTO = 2;
export const RECOVERY_NAMES = ["open", "recovery", "loss"] as const;

// ---- readiness events (bit mask, delivered in batches by poll) ----
/** In-order data (or end of stream) can be read. */
export const EV_READABLE = 1;
/** Send buffer space was freed. */
export const EV_WRITABLE = 2;
/** A listener has a connection to accept. */
export const EV_ACCEPT = 4;
/** An active open completed. */
export const EV_CONNECTED = 8;
/** The connection is gone (error, if any, in `error`). */
export const EV_CLOSED = 16;
/** The connection was reset by the peer, refused, or timed out (`error` says which). */
export const EV_RESET = 32;
/** The peer closed its side (FIN received): reads return end of stream once drained. */
export const EV_PEER_CLOSED = 64;

// ---- errno values returned by the socket API: negated, as the kernel returns them ----
export const EAGAIN = -E.EAGAIN;
export const EPIPE = -E.EPIPE;
export const EINVAL = -E.EINVAL;
export const EADDRINUSE = -E.EADDRINUSE;
export const EADDRNOTAVAIL = -E.EADDRNOTAVAIL;
export const ECONNABORTED = -E.ECONNABORTED;
export const ECONNRESET = -E.ECONNRESET;
export const ENOBUFS = -E.ENOBUFS;
export const ENOTCONN = -E.ENOTCONN;
export const ETIMEDOUT = -E.ETIMEDOUT;
export const ECONNREFUSED = -E.ECONNREFUSED;

// ---- socket options (setOption) ----
/** 1 disables Nagle (TCP_NODELAY). */
export const OPT_NODELAY = 1;
/** 1 enables keepalive (SO_KEEPALIVE). */
export const OPT_KEEPALIVE = 2;
/** Idle time before the first keepalive probe, ms (TCP_KEEPIDLE). */
export const OPT_KEEPIDLE = 3;
/** Time between probes, ms (TCP_KEEPINTVL). */
export const OPT_KEEPINTVL = 4;
/** Unanswered probes before the connection is dropped (TCP_KEEPCNT). */
export const OPT_KEEPCNT = 5;
/** SO_LINGER: -1 off, 0 abort with RST on close, > 0 seconds (close still runs in background). */
export const OPT_LINGER = 6;
/** Congestion control: CC_NEWRENO (0) or CC_CUBIC (1) (TCP_CONGESTION). */
export const OPT_CONGESTION = 7;

/** Readiness callback: `events` is a mask of EV_* bits accumulated since the last call. */
export type TcpEventHandler = (sock: TcpSocket, events: number) => void;

/** The two S-rings of a socket, NIC side. */
export interface SocketStreams {
  tx: TxStream;
  rx: RxStream;
}

/** Inherited by accepted connections from their listener, or given to connect. */
export interface SocketOptions {
  nodelay?: boolean;
  keepalive?: boolean;
  keepIdleMs?: number;
  keepIntvlMs?: number;
  keepCnt?: number;
  linger?: number;
  /** CC_NEWRENO or CC_CUBIC. */
  congestion?: number;
  /** Readiness callback (accepted sockets inherit the listener's unless set later). */
  onEvent?: TcpEventHandler;
  /** Makes the socket's streams; default: in-memory rings of the engine's buffer sizes. */
  streams?: (sock: TcpSocket) => SocketStreams | null;
}

/** Placeholder stream for listeners and sockets without buffers. */
export const NO_STREAM: TxStream & RxStream = {
  readable: () => 0,
  copyOut: () => {},
  release: () => {},
  writable: () => 0,
  copyIn: () => {},
  publish: () => {},
};

/** A TCP socket (listener or connection). Read-only for users except `onEvent` and `userData`. */
export class TcpSocket implements CcState {
  readonly id: number;
  state = CLOSED;
  localIp = 0;
  localPort = 0;
  remoteIp = 0;
  remotePort = 0;

  // ---- streams and application side ----
  tx: TxStream = NO_STREAM;
  rx: RxStream = NO_STREAM;
  /** Receive ring capacity (free space when empty), for window scaling and unread checks. */
  rcvCap = 0;
  onEvent: TcpEventHandler | null = null;
  userData: unknown = null;
  /** Negative errno of the last fatal error, 0 if none. */
  error = 0;
  /** EV_* bits waiting for delivery, and the level-triggered readiness word. */
  evPending = 0;
  evNext: TcpSocket | null = null;
  evQueued = false;
  /** The application closed the socket (orphan: the engine finishes the close alone). */
  orphan = false;
  /** Counted among the engine's orphans finishing in the background (timewait.ts caps them). */
  orphanCounted = false;
  /** The application shut down writing; FIN goes after the queued data. */
  finQueued = false;
  finSent = false;
  /** Sequence number of our FIN once sent. */
  finSeq = 0;
  /** A FIN was received and consumed (in order). */
  rcvFin = false;
  /** A FIN was seen at `rcvFinSeq` ahead of missing data. */
  rcvFinPending = false;
  rcvFinSeq = 0;

  // ---- listener ----
  backlog = 0;
  acceptQueue: (TcpSocket | null)[] = [];
  /** Listener opened with SO_REUSEPORT: others with it may share the port (a group). */
  reusePort = false;
  /** The next listener of the port's SO_REUSEPORT group (the engine holds the head). */
  reuseNext: TcpSocket | null = null;
  acceptHead = 0;
  acceptLen = 0;
  synQueueLen = 0;
  parent: TcpSocket | null = null;
  /** Template for accepted connections. */
  childOpts: SocketOptions | null = null;

  // ---- send sequence space ----
  iss = 0;
  sndUna = 0;
  sndNxt = 0;
  sndWnd = 0;
  sndWl1 = 0;
  sndWl2 = 0;
  maxSndWnd = 0;
  sndWscale = 0;
  /** Payload bytes per segment (options excluded). */
  sndMss = 536;
  peerMss = 536;
  /** Path MTU learnt from ICMP "fragmentation needed" (RFC 1191); 0: the link's MTU. */
  pmtu = 0;

  // ---- receive sequence space ----
  irs = 0;
  rcvNxt = 0;
  /** Right edge of the window we last advertised. */
  rcvAdvEdge = 0;
  rcvWscale = 0;
  lastAckSent = 0;
  /** Largest payload seen from the peer, our estimate of its MSS (delayed ACK rule). */
  rcvMss = 536;

  // ---- options negotiated ----
  tsOn = false;
  sackOn = false;
  wsOn = false;
  tsOffset = 0;
  tsRecent = 0;
  tsRecentAt = 0;

  // ---- RTT and retransmission (RFC 6298) ----
  srtt = 0;
  rttvar = 0;
  rto = 1000;
  /** Consecutive timeouts (backoff count). */
  retries = 0;
  rttSeq = 0;
  rttStart = -1;
  persist = false;
  /** Zero-window probes sent since the window closed (the probe timer's backoff). */
  probes = 0;
  /** Probes sent since the peer last acknowledged anything (Linux's icsk_probes_out). */
  probesOut = 0;

  // ---- congestion control ----
  cc: CongestionControl;
  cwnd = 0;
  ssthresh = 0;
  ccWmax = 0;
  ccK = 0;
  ccOrigin = 0;
  ccEpoch = -1;
  ccWest = 0;
  ccAcc = 0;
  lastRtt = 0;
  hsRoundEnd = 0;
  hsRoundStarted = false;
  hsLastRoundMinRtt = Infinity;
  hsRoundMinRtt = Infinity;
  hsSamples = 0;
  hsCssBaseline = Infinity;
  hsCssRounds = 0;

  // ---- loss recovery ----
  dupAcks = 0;
  /** Bytes the duplicate ACKs say have left the network (no SACK). */
  dupBytes = 0;
  /** RECOVERY_NONE, RECOVERY_FAST or RECOVERY_RTO. */
  recovery = RECOVERY_NONE;
  recoverySeq = 0;
  /** RFC 6582 `recover`: highest sequence sent when the last recovery started. */
  recoverMark = 0;
  highRxt = 0;
  /** NewReno: retransmit the head on the next output. */
  rxmitHead = false;
  prrDelivered = 0;
  prrOut = 0;
  recoverFs = 0;
  prrBudget = 0;
  /** The flight, segment by segment: send times and SACK marks (RACK's input). */
  readonly sm: SendMap = new SendMap();
  /** RACK (RFC 8985 §6): the most recently sent delivered segment, its end and its RTT. */
  rackXmitAt = -1;
  rackEnd = 0;
  rackRtt = 0;
  /** Highest end of a delivered, never-retransmitted segment (RACK.fack). */
  rackFack = 0;
  /** RACK.fack before the ACK being processed; whether RACK.fack has its first value. */
  rackFackPrior = 0;
  rackFackSet = false;
  /** The last ACK delivered a segment sent later than any before: run loss detection. */
  rackAdvanced = false;
  /** Reordering was seen on this connection (RACK.reordering_seen). */
  reordSeen = false;
  /** Reordering window in quarters of the minimum RTT, and recoveries it persists for. */
  reoWndMult = 1;
  reoWndPersist = 0;
  /** SND.NXT when the window last widened (once per round trip), if it ever did. */
  dsackRoundEnd = 0;
  dsackRound = false;
  /** Smallest RTT sample seen (ms), and the smallest per-segment one RACK measured. */
  minRtt = Infinity;
  rackMinRtt = Infinity;
  /** Undo (RFC 2883 §5): a recovery may be undone; retransmissions in it not yet D-SACKed. */
  undoActive = false;
  undoMarker = 0;
  undoRetrans = 0;
  priorCwnd = 0;
  priorSsthresh = 0;
  /** Our TSval of the recovery's first retransmission (Eifel detection, RFC 3522). */
  retransTs = 0;
  retransTsSet = false;

  // ---- out-of-order receive ranges (bounded reassembly) and SACK generation ----
  readonly ofo: ReassemblyRanges = new ReassemblyRanges();

  // ---- timers ----
  rtoAt = 0;
  /** Tail loss probe (RFC 8985 §7): fires before the RTO when the ACK clock stops. */
  ptoAt = 0;
  /** RACK's reordering timer: a segment's window runs out (RFC 8985 §6.3). */
  reoAt = 0;
  /** A probe is out (RFC 8985 TLP.end_seq is not None): SND.NXT when it was sent. */
  tlpActive = false;
  tlpEndSeq = 0;
  /** The probe was a retransmission (TLP.is_retrans). */
  tlpRetrans = false;
  /** The D-SACK block of the last ACK (RFC 2883), valid when `dsackLeft !== dsackRight`. */
  dsackLeft = 0;
  dsackRight = 0;
  /** A duplicate received, to report in the next ACK's first SACK block (RFC 2883 §4). */
  dsackOutLeft = 0;
  dsackOutRight = 0;
  dackAt = 0;
  kaAt = 0;
  /** TIME_WAIT expiry, FIN_WAIT_2 orphan timeout. */
  closeAt = 0;
  lastRecvAt = 0;
  /** When new data last went out (-1: never), for restart after idle. */
  lastDataOutAt = -1;
  /** Largest flight of this round trip and the last (cwnd-limited?), and the round's end. */
  maxFlight = 0;
  maxFlightPrev = 0;
  maxFlightEnd = 0;
  /** End of the last small segment sent (Minshall's Nagle, Linux's snd_sml). */
  sndSml = 0;
  /** When data last arrived (-Infinity: never; quick ACK mode starts with the first). */
  lastDataInAt = -Infinity;
  /** ACKs still to send at once for each data segment (Linux's quickack mode). */
  quickAcks = 0;
  /** When this socket last answered an invalid segment (rate limit), -1 never. */
  lastInvalidAckAt = -1;
  kaProbes = 0;
  tAt = 0;
  tSlot = 0;
  tLinked = false;
  tPrev: TcpSocket | null = null;
  tNext: TcpSocket | null = null;

  // ---- output scheduling ----
  ackNow = false;
  outQueued = false;
  outNext: TcpSocket | null = null;

  // ---- options ----
  nodelay = false;
  keepalive = false;
  keepIdle = 7200000;
  keepIntvl = 75000;
  keepCnt = 9;
  linger = -1;

  // ---- buffer autotuning (autotune.ts) ----
  /** Receiver's RTT estimate (ms), and the window edge and time of a measurement without TS. */
  rcvRtt = 0;
  rcvRttSeq = 0;
  rcvRttAt = 0;
  /** Bytes the application read in the last measured receiver RTT (Linux rcvq_space.space). */
  rcvSpace = 0;
  /** The application's read total and the time when the current measurement began. */
  rcvSpaceCopied = 0;
  rcvSpaceAt = 0;
  /** How often the receive and send rings' capacity was raised. */
  rcvBufGrows = 0;
  sndBufGrows = 0;

  // ---- connection table slot ----
  slot = -1;

  // ---- per-connection counters ----
  segsIn = 0;
  segsOut = 0;
  bytesIn = 0;
  bytesOut = 0;
  retransSegs = 0;
  rtoEvents = 0;
  dupAcksIn = 0;
  sackRecoveries = 0;
  renoRecoveries = 0;
  ofoBytes = 0;
  rstIn = 0;
  rstOut = 0;

  constructor(id: number, cc: CongestionControl) {
    this.id = id;
    this.cc = cc;
  }

  /** A plain-object snapshot of the connection's state and counters. */
  /**
   * Payload bytes received in order, each once (Linux's tcpi_bytes_received: not the
   * duplicates `bytesIn` also counts, not the FIN). 0 for a socket that never synchronized.
   */
  bytesReceived(): number {
    if (this.state === LISTEN || this.state === SYN_SENT) return 0;
    if (this.rcvNxt === 0 && this.irs === 0) return 0;
    return (this.rcvNxt - this.irs - 1 - (this.rcvFin ? 1 : 0)) >>> 0;
  }

  /** Payload bytes the peer acknowledged (Linux's tcpi_bytes_acked, without SYN and FIN). */
  bytesAcked(): number {
    if (this.state === LISTEN || this.state === SYN_SENT || this.state === SYN_RECEIVED) return 0;
    if (this.sndUna === 0 && this.iss === 0) return 0;
    const finAcked = this.finSent && ((this.sndUna - this.finSeq) | 0) > 0 ? 1 : 0;
    return (this.sndUna - this.iss - 1 - finAcked) >>> 0;
  }

  snapshot(): Record<string, number | string> {
    return {
      id: this.id,
      state: STATE_NAMES[this.state],
      local: `${ipStr(this.localIp)}:${this.localPort}`,
      remote: `${ipStr(this.remoteIp)}:${this.remotePort}`,
      cc: this.cc.name,
      cwnd: this.cwnd,
      ssthresh: this.ssthresh,
      srtt: this.srtt,
      rto: this.rto,
      sndMss: this.sndMss,
      sndWnd: this.sndWnd,
      inFlight: (this.sndNxt - this.sndUna) >>> 0,
      sndUna: this.sndUna,
      sndNxt: this.sndNxt,
      rcvNxt: this.rcvNxt,
      rcvWnd: (this.rcvAdvEdge - this.rcvNxt) | 0,
      recovery: RECOVERY_NAMES[this.recovery],
      persist: this.persist ? 1 : 0,
      retries: this.retries,
      rtoAt: this.rtoAt,
      sacked: this.sm.sackedBytes,
      segsIn: this.segsIn,
      segsOut: this.segsOut,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      retransSegs: this.retransSegs,
      rtoEvents: this.rtoEvents,
      dupAcks: this.dupAcksIn,
      sackRecoveries: this.sackRecoveries,
      renoRecoveries: this.renoRecoveries,
      ofoBytes: this.ofoBytes,
      ...bufferSnapshot(this),
      rstIn: this.rstIn,
      rstOut: this.rstOut,
      error: this.error,
    };
  }
}

/** A stream that reports its size (the engine's in-memory rings do). */
interface SizedStream {
  capacity?: number;
  backingBytes?: () => number;
}

/**
 * Buffer sizes of a socket: capacity (what the window and the application see) and the bytes
 * of memory behind it, per direction; rings in a region (the shim's) report capacity only.
 */
function bufferSnapshot(s: TcpSocket): Record<string, number> {
  const tx = s.tx as SizedStream, rx = s.rx as SizedStream;
  return {
    sndBuf: tx.capacity ?? 0,
    rcvBuf: rx.capacity ?? s.rcvCap,
    sndBufBytes: tx.backingBytes?.() ?? 0,
    rcvBufBytes: rx.backingBytes?.() ?? 0,
    sndBufGrows: s.sndBufGrows,
    rcvBufGrows: s.rcvBufGrows,
    rcvRtt: s.rcvRtt,
  };
}

/** Dotted-quad form of a host-order IPv4 address. */
export function ipStr(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

/** Host-order number of a dotted-quad IPv4 address. */
export function ipNum(s: string): number {
  const p = s.split(".");
  return ((+p[0] << 24) | (+p[1] << 16) | (+p[2] << 8) | +p[3]) >>> 0;
}
