/**
 * TIME-WAIT as a small record, as FreeBSD's tcp_timewait.c keeps a `tcptw` and Linux an
 * `inet_timewait_sock` in place of the socket: when a connection enters TIME-WAIT (RFC 9293
 * §3.6) the engine lets its socket go (its rings, scoreboard, reassembly ranges and timers:
 * about 4 KiB of heap without the rings) and keeps only what the 2*MSL wait needs, about 324
 * bytes measured (timewait_test.ts): the 4-tuple, the sequence numbers, the timestamps state
 * and the expiry, in a table of its own. Records all live for the same 2*MSL, so they expire
 * in order from a FIFO list (a retransmitted FIN that restarts the wait moves its record to
 * the tail), with no timer of their own.
 *
 * A segment for a record is handled as Linux's tcp_timewait_state_process does: a RST at
 * RCV.NXT ends the wait (Linux's default, tcp_rfc1337 = 0), a SYN that RFC 6191 allows starts a
 * new connection on the 4-tuple, anything else gets an ACK (at most one per 500 ms, like
 * tcp_invalid_ratelimit) and restarts the wait if it carried an ACK or failed PAWS.
 *
 * Two caps bound what closing connections cost, as Linux's sysctls do: `maxTimeWait` records
 * (tcp_max_tw_buckets; past it a connection closes without TIME-WAIT, counted in
 * timeWaitOverflow), and `maxOrphans` connections closed by their application and still
 * finishing in the background (tcp_max_orphans; past it close() resets, counted in
 * orphanOverflow).
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import { ConnTable, type TableEntry } from "./conn_table.ts";
import * as K from "./counters.ts";
import {
  optWriteTs,
  seqDiff,
  seqGt,
  seqLt,
  TCP_ACK,
  TCP_RST,
  TCP_SYN,
  type TcpSegment,
  tcpSetChecksum,
  tcpWriteHeader,
} from "../wire/tcp.ts";
import { CLOSED, ipStr, type TcpSocket, TIME_WAIT } from "./socket.ts";

/** ACKs from one record: at most one per this many ms (Linux's tcp_invalid_ratelimit). */
export const TIME_WAIT_ACK_INTERVAL_MS = 500;

/** PAWS does not hold against a TS.Recent older than 24 days (RFC 7323 §5.5). */
const PAWS_IDLE_MS = 24 * 24 * 3600 * 1000;

/** What a connection in TIME-WAIT still needs. */
export class TimeWaitRecord implements TableEntry {
  localIp = 0;
  localPort = 0;
  remoteIp = 0;
  remotePort = 0;
  slot = -1;
  sndNxt = 0;
  rcvNxt = 0;
  /** The window field of our ACKs (as last offered, already scaled). */
  window = 0;
  tsOn = false;
  tsOffset = 0;
  tsRecent = 0;
  tsRecentAt = 0;
  expiresAt = 0;
  lastAckAt = -Infinity;
  prev: TimeWaitRecord | null = null;
  next: TimeWaitRecord | null = null;
  /**
   * The socket the application may still hold: it reads TIME-WAIT until the record expires,
   * then CLOSED, without the record keeping it alive.
   */
  sock: WeakRef<TcpSocket> | null = null;
}

/** Records by 4-tuple, and in order of expiry. */
export class TimeWaitTable {
  readonly table: ConnTable<TimeWaitRecord>;
  private head: TimeWaitRecord | null = null;
  private tail: TimeWaitRecord | null = null;

  /** `k0`, `k1` key the table's hash (a peer chooses its port: conn_table.ts). */
  constructor(k0: number, k1: number) {
    this.table = new ConnTable(1024, k0, k1);
  }

  /** Records held. */
  get count(): number {
    return this.table.count;
  }

  lookup(lip: number, lport: number, rip: number, rport: number): TimeWaitRecord | null {
    return this.table.count === 0 ? null : this.table.lookup(lip, lport, rip, rport);
  }

  /** Adds a record that expires at `at` (no earlier than every record already held). */
  add(r: TimeWaitRecord, at: number): void {
    this.table.insert(r);
    this.append(r, at);
  }

  /** Restarts a record's wait: it expires at `at` and moves to the tail. */
  restart(r: TimeWaitRecord, at: number): void {
    this.unlink(r);
    this.append(r, at);
  }

  remove(r: TimeWaitRecord): void {
    if (r.slot >= 0) this.table.remove(r);
    this.unlink(r);
  }

  /** When the oldest record expires (Infinity if none). */
  nextExpiry(): number {
    return this.head === null ? Infinity : this.head.expiresAt;
  }

  /** Removes and returns the oldest record if it has expired by `now`, else null. */
  takeExpired(now: number): TimeWaitRecord | null {
    const r = this.head;
    if (r === null || r.expiresAt > now) return null;
    this.remove(r);
    return r;
  }

  /** Calls `visit` on every record (the connection rows of the stats). */
  each(visit: (r: TimeWaitRecord) => void): void {
    for (let r = this.head; r !== null; r = r.next) visit(r);
  }

  private append(r: TimeWaitRecord, at: number): void {
    r.expiresAt = at;
    r.prev = this.tail;
    r.next = null;
    if (this.tail === null) this.head = r;
    else this.tail.next = r;
    this.tail = r;
  }

  private unlink(r: TimeWaitRecord): void {
    if (r.prev === null) {
      if (this.head === r) this.head = r.next;
    } else r.prev.next = r.next;
    if (r.next === null) {
      if (this.tail === r) this.tail = r.prev;
    } else r.next.prev = r.prev;
    r.prev = r.next = null;
  }
}

/**
 * The connection `s` entered TIME-WAIT: it continues as a record, and the socket leaves the
 * connection table and the timer wheel (its last ACK, if queued, still goes out). Past the cap
 * the connection simply ends.
 */
export function timeWaitEnter(e: TcpEngine, s: TcpSocket): void {
  const now = e.now;
  if (s.slot >= 0) e.table.remove(s);
  if (s.tLinked) e.wheel.unlink(s);
  s.rtoAt =
    s.ptoAt =
    s.dackAt =
    s.kaAt =
    s.closeAt =
      0;
  e.liveCount--;
  e.orphanDone(s);
  if (e.tw.count >= e.maxTimeWait) {
    e.counters[K.C_TIME_WAIT_OVERFLOW]++;
    return;
  }
  const r = new TimeWaitRecord();
  r.localIp = s.localIp;
  r.localPort = s.localPort;
  r.remoteIp = s.remoteIp;
  r.remotePort = s.remotePort;
  r.sndNxt = s.sndNxt;
  r.rcvNxt = s.rcvNxt;
  const offered = Math.max(0, seqDiff(s.rcvAdvEdge, s.rcvNxt));
  r.window = Math.min(65535, Math.floor(offered / 2 ** s.rcvWscale));
  r.tsOn = s.tsOn;
  r.tsOffset = s.tsOffset;
  r.tsRecent = s.tsRecent;
  r.tsRecentAt = s.tsRecentAt;
  r.sock = new WeakRef(s);
  e.tw.add(r, now + 2 * e.msl);
}

/**
 * A segment for a record's 4-tuple. Returns true when it was handled here, false when it is a
 * SYN that may open a new connection (the record is gone; the caller hands it to the listener).
 */
export function timeWaitInput(e: TcpEngine, r: TimeWaitRecord, seg: TcpSegment): boolean {
  const now = e.now;
  const f = seg.flags;
  const pawsReject = r.tsOn && seg.hasTimestamp && !(f & TCP_RST) &&
    seqLt(seg.tsVal, r.tsRecent) && now - r.tsRecentAt < PAWS_IDLE_MS;
  if (pawsReject) e.counters[K.C_DROP_PAWS]++;
  // A RST or a bare ACK exactly at RCV.NXT: the RST ends the wait, the ACK restarts it and
  // needs no answer.
  if (!pawsReject && seg.seq === r.rcvNxt && (seg.seqLen() === 0 || (f & TCP_RST))) {
    if (f & TCP_RST) {
      timeWaitEnd(e, r);
      return true;
    }
    e.tw.restart(r, now + 2 * e.msl);
    if (r.tsOn && seg.hasTimestamp) {
      r.tsRecent = seg.tsVal;
      r.tsRecentAt = now;
    }
    return true;
  }
  // A new SYN may reuse the 4-tuple (RFC 6191 with timestamps, RFC 9293 §3.6.1 without).
  if ((f & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN && !pawsReject) {
    const newer = r.tsOn && seg.hasTimestamp
      ? seqGt(seg.tsVal, r.tsRecent)
      : seqGt(seg.seq, r.rcvNxt);
    if (newer) {
      e.counters[K.C_TIME_WAIT_REUSE]++;
      timeWaitEnd(e, r);
      return false;
    }
  }
  if (f & TCP_RST) return true; // out of step: ignored
  // Anything else: the peer missed our last ACK (a retransmitted FIN) or is out of step.
  if (pawsReject || (f & TCP_ACK)) e.tw.restart(r, now + 2 * e.msl);
  if (now - r.lastAckAt < TIME_WAIT_ACK_INTERVAL_MS) {
    e.counters[K.C_ACKS_RATE_LIMITED]++;
    return true;
  }
  r.lastAckAt = now;
  timeWaitAck(e, r);
  return true;
}

/** Ends the records whose 2*MSL have passed. */
export function timeWaitExpire(e: TcpEngine, now: number): void {
  for (let r = e.tw.takeExpired(now); r !== null; r = e.tw.takeExpired(now)) closeSocketOf(r);
}

/** Ends a record before its time (RST, reuse). */
function timeWaitEnd(e: TcpEngine, r: TimeWaitRecord): void {
  e.tw.remove(r);
  closeSocketOf(r);
}

function closeSocketOf(r: TimeWaitRecord): void {
  const s = r.sock?.deref();
  if (s !== undefined && s.state === TIME_WAIT && s.slot < 0) s.state = CLOSED;
  r.sock = null;
}

/** An ACK from a record: SND.NXT, RCV.NXT, the last window, timestamps if in use. */
function timeWaitAck(e: TcpEngine, r: TimeWaitRecord): void {
  const link = e.link;
  const off = link.reserve();
  if (off < 0) {
    e.counters[K.C_NO_BUFFER]++;
    return;
  }
  const b = link.buf;
  let p = off + 20;
  if (r.tsOn) p = optWriteTs(b, p, (e.now + r.tsOffset) >>> 0, r.tsRecent);
  const hl = p - off;
  tcpWriteHeader(b, off, r.localPort, r.remotePort, r.sndNxt, r.rcvNxt, hl, TCP_ACK, r.window);
  tcpSetChecksum(b, off, hl, r.localIp, r.remoteIp);
  link.send(r.localIp, r.remoteIp, hl);
  e.counters[K.C_SEGS_OUT]++;
}

/** A record as a connection row of the stats. */
export function timeWaitSnapshot(r: TimeWaitRecord): Record<string, number | string> {
  return {
    state: "TIME-WAIT",
    local: `${ipStr(r.localIp)}:${r.localPort}`,
    remote: `${ipStr(r.remoteIp)}:${r.remotePort}`,
    sndNxt: r.sndNxt,
    rcvNxt: r.rcvNxt,
    expiresAt: r.expiresAt,
  };
}
