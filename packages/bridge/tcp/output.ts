/**
 * Segment output, as FreeBSD's tcp_output.c: the per-poll output list, what congestion and flow
 * control allow, retransmissions, and the one function that writes a segment into a link buffer.
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import {
  optWriteMss,
  optWriteSack,
  optWriteSackPerm,
  optWriteSackPermTs,
  optWriteTs,
  optWriteWscale,
  seqDiff,
  seqGt,
  seqLe,
  seqLt,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  tcpSetChecksum,
  tcpSetChecksumSummed,
  tcpWriteHeader,
} from "../wire/tcp.ts";
import {
  canSendData,
  CLOSED,
  isSynchronized,
  RECOVERY_FAST,
  RECOVERY_NONE,
  RECOVERY_RTO,
  SYN_SENT,
  type TcpSocket,
} from "./socket.ts";
import { checksumAdd } from "../wire/checksum.ts";
import * as K from "./counters.ts";
import { armPto, pipe } from "./recovery.ts";
import { SM_LOST } from "./sendmap.ts";
import { arm } from "./timers.ts";

export function queueOut(e: TcpEngine, s: TcpSocket): void {
  if (s.outQueued || s.state === CLOSED) return;
  s.outQueued = true;
  s.outNext = null;
  if (e.outTail === null) e.outHead = s;
  else e.outTail.outNext = s;
  e.outTail = s;
}

export function flush(e: TcpEngine): void {
  // Sockets that could not get a buffer go back on the list for the next poll.
  let s = e.outHead;
  const last = e.outTail;
  e.outHead = e.outTail = null;
  while (s !== null) {
    const next = s.outNext;
    s.outQueued = false;
    s.outNext = null;
    if (s.state !== CLOSED) output(e, s);
    if (s === last) break;
    s = next;
  }
}

export function output(e: TcpEngine, s: TcpSocket): void {
  const st = s.state;
  if (st === SYN_SENT) return;
  let sent = false;
  // The states that send data all come after our SYN was acknowledged. (A sequence comparison
  // of SND.UNA with the ISS turns false once 2 GiB went out: a long flow stopped there.)
  if (canSendData(st)) sent = sendData(e, s);
  if (!sent && s.ackNow) emit(e, s, seqDiff(s.sndNxt, s.sndUna), 0, TCP_ACK, false);
}

/** Sends what congestion, flow control and Nagle allow; true if a segment went out. */
export function sendData(e: TcpEngine, s: TcpSocket): boolean {
  if (s.sndUna === s.sndNxt && s.recovery === RECOVERY_NONE && e.now - s.lastDataOutAt > s.rto) {
    cwndRestart(e, s);
  }
  const inPipe = pipe(s);
  e.budget = s.recovery === RECOVERY_FAST ? s.prrBudget : s.cwnd - inPipe;
  const sent = sendDataBudget(e, s);
  if (s.recovery === RECOVERY_FAST) s.prrBudget = e.budget > 0 ? e.budget : 0;
  return sent;
}

export function sendDataBudget(e: TcpEngine, s: TcpSocket): boolean {
  const mss = s.sndMss;
  let sent = false;
  let budget = e.budget;
  // NewReno: retransmit the first unacknowledged segment.
  if (s.rxmitHead) {
    s.rxmitHead = false;
    if (seqLt(s.sndUna, s.sndNxt)) {
      const n = emitRange(e, s, 0, mss);
      if (n < 0) return done(e, sent, budget);
      sent = true;
      budget -= n;
      s.prrOut += n;
      if (seqLt(s.highRxt, (s.sndUna + n) >>> 0)) s.highRxt = (s.sndUna + n) >>> 0;
    }
  }
  if (s.sackOn) {
    // RFC 6675 NextSeg rule 1 with RACK's marks: the segments marked lost, lowest first.
    const sm = s.sm;
    for (let i = 0; i < sm.count && sm.lostBytes > 0 && budget > 0; i++) {
      if (!(sm.flags(i) & SM_LOST)) continue;
      const l = sm.left(i);
      const n = emitRange(e, s, seqDiff(l, s.sndUna), Math.min(mss, seqDiff(sm.right(i), l)));
      if (n < 0) return done(e, sent, budget);
      sent = true;
      budget -= n;
      s.prrOut += n;
    }
    if (s.recovery === RECOVERY_RTO && sm.lostBytes > 0) return done(e, sent, budget);
  } else if (s.recovery === RECOVERY_RTO) {
    // Go-back-N after a timeout: everything from HighRxt up to what was out is resent.
    let start = s.highRxt;
    while (seqLt(start, s.recoverySeq) && budget > 0) {
      const n = emitRange(
        e,
        s,
        seqDiff(start, s.sndUna),
        Math.min(mss, seqDiff(s.recoverySeq, start)),
      );
      if (n < 0) return done(e, sent, budget);
      sent = true;
      budget -= n;
      start = (start + n) >>> 0;
      s.highRxt = start;
    }
    if (seqLt(s.highRxt, s.recoverySeq)) return done(e, sent, budget);
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
          maybePersist(e, s);
          break;
        }
        // Sender SWS avoidance (RFC 1122 §4.2.3.4).
        if (room >= (s.maxSndWnd >> 1) || s.sndNxt === s.sndUna) len = room;
        else break;
      }
      if (
        len < mss && len === unsent && !s.nodelay && !s.finQueued &&
        seqGt(s.sndSml, s.sndUna) && !seqGt(s.sndSml, s.sndNxt)
      ) {
        // Nagle as Linux does it (Minshall's variant): a small segment waits only while an
        // earlier small one is unacknowledged, not behind full-sized ones.
        break;
      }
      if (budget < len) break;
      const fin = s.finQueued && len === unsent;
      const unsentAt = seqDiff(s.sndNxt, s.sndUna);
      const n = emit(e, s, unsentAt, len, fin ? TCP_ACK | TCP_FIN : TCP_ACK, false);
      if (n < 0) return done(e, sent, budget);
      sent = true;
      budget -= n;
      s.prrOut += n;
      if (fin && n === len) return done(e, sent, budget);
    }
    if (s.finQueued && !s.finSent && s.sndNxt === end) {
      if (emit(e, s, seqDiff(s.sndNxt, s.sndUna), 0, TCP_ACK | TCP_FIN, false) >= 0) sent = true;
    }
  }
  return done(e, sent, budget);
}

export function done(e: TcpEngine, sent: boolean, budget: number): boolean {
  e.budget = budget;
  return sent;
}

export function maybePersist(e: TcpEngine, s: TcpSocket): void {
  if (s.sndUna === s.sndNxt && !s.persist) {
    s.persist = true;
    s.probes = 0;
    s.rtoAt = e.now + s.rto;
    arm(e, s);
  }
}

/**
 * Retransmits up to `max` bytes of sequence space `from` bytes past SND.UNA (data, and the FIN
 * if it falls in the range). Returns the sequence space sent, or -1 if no buffer.
 */
export function emitRange(e: TcpEngine, s: TcpSocket, from: number, max: number): number {
  const seq = (s.sndUna + from) >>> 0;
  const dataEnd = s.finSent ? s.finSeq : s.sndNxt;
  let len = seqDiff(dataEnd, seq);
  if (len > max) len = max;
  if (len < 0) len = 0;
  const fin = s.finSent && ((seq + len) >>> 0) === s.finSeq && len < max;
  if (len === 0 && !fin) return 0;
  const n = emit(e, s, from, len, fin ? TCP_ACK | TCP_FIN : TCP_ACK, true);
  if (n < 0) return -1;
  return n + (fin && n === len ? 1 : 0);
}

/**
 * Writes one segment of `s` into a buffer lent by the link and sends it. `flags` carries ACK
 * for every synchronized segment. The payload is at most `dataLen`: less when the segment
 * carries SACK blocks, which take room the MSS leaves to data (RFC 6691; Linux's
 * tcp_current_mss), so the frame still fits the path MTU; a FIN goes only with the last byte.
 * Returns the payload bytes sent, or -1 when the link has no buffer.
 *
 * The segment's sequence number is given as `from`, its offset from SND.UNA (negative for a
 * probe below it), a small integer: a sequence number of 2^30 or more passed to a call is
 * boxed as a heap number (16 bytes per segment).
 */
export function emit(
  e: TcpEngine,
  s: TcpSocket,
  from: number,
  dataLen: number,
  flags: number,
  rexmit: boolean,
): number {
  const seq = (s.sndUna + from) >>> 0;
  const link = e.link;
  const off = link.reserve();
  if (off < 0) {
    e.counters[K.C_NO_BUFFER]++;
    queueOutRetry(e, s);
    return -1;
  }
  const b = link.buf;
  const now = e.now;
  let p = off + 20;
  const syn = (flags & TCP_SYN) !== 0;
  const tsVal = (now + s.tsOffset) >>> 0;
  let tsAt = -1;
  if (syn) {
    p = optWriteMss(b, p, Math.min(e.link.mtu - 40, 65535));
    if (s.tsOn) {
      p = s.sackOn
        ? optWriteSackPermTs(b, p, tsVal, s.tsRecent)
        : optWriteTs(b, p, tsVal, s.tsRecent);
    } else if (s.sackOn) p = optWriteSackPerm(b, p);
    if (s.wsOn) p = optWriteWscale(b, p, s.rcvWscale);
  } else {
    if (s.tsOn) {
      tsAt = p + 4;
      p = optWriteTs(b, p, 0, 0);
    }
    if (s.sackOn && (flags & TCP_ACK) && (s.ofo.count > 0 || s.dsackOutLeft !== s.dsackOutRight)) {
      const max = s.tsOn ? 3 : 4;
      const scratch = e.sackScratch;
      let n = 0;
      if (s.dsackOutLeft !== s.dsackOutRight) {
        scratch[0] = s.dsackOutLeft;
        scratch[1] = s.dsackOutRight;
        s.dsackOutLeft = s.dsackOutRight = 0;
        e.counters[K.C_DSACKS_OUT]++;
        n = 1;
      }
      n += s.ofo.sackBlocks(scratch, max - n, n);
      p = optWriteSack(b, p, scratch, n);
    }
  }
  const hl = p - off;
  // sndMss is the payload beside the timestamp option; other options come out of it.
  const room = s.sndMss - (hl - 20 - (s.tsOn ? 12 : 0));
  if (dataLen > room) {
    dataLen = room;
    flags &= ~TCP_FIN;
  }
  let wnd: number;
  if (syn) {
    wnd = s.rx.writable();
    if (wnd > 65535) wnd = 65535;
    s.rcvAdvEdge = (s.rcvNxt + wnd) >>> 0;
  } else wnd = windowField(s);
  // The payload is summed for the checksum as it is copied out of the send ring, when it can be.
  let dataSum = -1;
  if (dataLen > 0) {
    if (s.tx.copyOutSum !== undefined) dataSum = s.tx.copyOutSum(from, b, off + hl, dataLen);
    else s.tx.copyOut(from, b, off + hl, dataLen);
    if (((seq + dataLen) >>> 0) === ((s.sndUna + s.tx.readable()) >>> 0)) flags |= TCP_PSH;
  }
  const ackNum = flags & TCP_ACK ? s.rcvNxt : 0;
  // The 32-bit fields (sequence and acknowledgment numbers, timestamps) are stored here, not
  // passed to tcpWriteHeader and optWriteTs: V8 inlines only some of emit's callees (its
  // inlining budget runs out), and a number of 2^30 or more passed to a call it did not
  // inline is boxed as a heap number, 16 bytes each (48 bytes per ACK before; output_test.ts).
  tcpWriteHeader(b, off, s.localPort, s.remotePort, 0, 0, hl, flags, wnd);
  b[off + 4] = seq >>> 24;
  b[off + 5] = seq >>> 16;
  b[off + 6] = seq >>> 8;
  b[off + 7] = seq;
  b[off + 8] = ackNum >>> 24;
  b[off + 9] = ackNum >>> 16;
  b[off + 10] = ackNum >>> 8;
  b[off + 11] = ackNum;
  if (tsAt >= 0) {
    const ecr = s.tsRecent;
    b[tsAt] = tsVal >>> 24;
    b[tsAt + 1] = tsVal >>> 16;
    b[tsAt + 2] = tsVal >>> 8;
    b[tsAt + 3] = tsVal;
    b[tsAt + 4] = ecr >>> 24;
    b[tsAt + 5] = ecr >>> 16;
    b[tsAt + 6] = ecr >>> 8;
    b[tsAt + 7] = ecr;
  }
  const tcpLen = hl + dataLen;
  // For the same reason the pseudo-header's addresses (192.168/16 and 172.16/12 are above
  // 2^31) go into the checksum summed here, with the payload's sum.
  const src = s.localIp, dst = s.remoteIp;
  const addrSum = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff);
  if (dataSum < 0) dataSum = dataLen > 0 ? checksumAdd(0, b, off + hl, dataLen) : 0;
  tcpSetChecksumSummed(b, off, hl, dataLen, dataSum + addrSum, 0, 0);
  link.send(src, dst, tcpLen);
  const c = e.counters;
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
    return 0;
  }
  const space = dataLen + (syn ? 1 : 0) + (flags & TCP_FIN ? 1 : 0);
  if (space === 0) return 0;
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
    arm(e, s);
  }
  if (s.sackOn) {
    // The send map: a new segment's record, or a retransmission's new send time.
    const end = (seq + space) >>> 0;
    if (!rexmit) {
      if (!syn) {
        const sm = s.sm;
        sm.nextLeft = seq;
        sm.nextRight = end;
        sm.nextSentAt = now;
        sm.pushNext();
      }
    } else smRetransmitted(s, seq, end, now);
  }
  if (!rexmit && dataLen > 0) {
    s.lastDataOutAt = now;
    const flight = seqDiff(s.sndNxt, s.sndUna);
    if (flight > s.maxFlight) s.maxFlight = flight;
    if (dataLen < room) s.sndSml = (seq + dataLen) >>> 0;
  }
  // RFC 8985 §7.2: the probe timer restarts when new data goes out, not only on an ACK (a
  // response sent after idle, then lost, would otherwise wait for the RTO).
  if (!rexmit && !s.tlpActive && s.recovery === RECOVERY_NONE) {
    armPto(e, s);
    if (s.ptoAt !== 0) arm(e, s);
  }
  return dataLen;
}

/**
 * Restart after idle (RFC 5681 §4.1, Linux's tcp_cwnd_restart): a window that has not been
 * used for an RTO no longer reflects the path; it is halved for every RTO of idleness, down
 * to the initial window, and ssthresh remembers three quarters of it.
 */
function cwndRestart(e: TcpEngine, s: TcpSocket): void {
  if (s.lastDataOutAt < 0) return;
  const initial = Math.min(10 * s.sndMss, s.cwnd);
  const keep = s.cwnd - (s.cwnd >> 2);
  if (s.ssthresh < keep) s.ssthresh = keep;
  let cwnd = s.cwnd;
  for (let idle = e.now - s.lastDataOutAt - s.rto; idle > 0 && cwnd > initial; idle -= s.rto) {
    cwnd >>= 1;
  }
  s.cwnd = cwnd > initial ? cwnd : initial;
  s.ccEpoch = -1;
  s.lastDataOutAt = e.now;
}

/** Marks the send map's records in [l, r) retransmitted at `now`, splitting at the edges. */
function smRetransmitted(s: TcpSocket, l: number, r: number, now: number): void {
  const sm = s.sm;
  let i = sm.find(l);
  if (i >= sm.count) return;
  if (seqLt(sm.left(i), l)) {
    sm.split(i, l);
    i++;
  }
  for (; i < sm.count && seqLt(sm.left(i), r); i++) {
    if (seqGt(sm.right(i), r)) sm.split(i, r);
    sm.retransmitted(i, now);
    if (s.undoActive && s.recovery !== RECOVERY_NONE) {
      s.undoRetrans++;
      if (!s.retransTsSet) {
        s.retransTsSet = true;
        s.retransTs = (now + s.tsOffset) >>> 0;
      }
    }
  }
}

/** Link out of buffers: try again at the next poll. */
export function queueOutRetry(e: TcpEngine, s: TcpSocket): void {
  if (s.outQueued) return;
  s.outQueued = true;
  s.outNext = null;
  if (e.outTail === null) e.outHead = s;
  else e.outTail.outNext = s;
  e.outTail = s;
}

/** The window field of an outgoing segment, with receiver SWS avoidance (RFC 1122). */
export function windowField(s: TcpSocket): number {
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
  // Rounding down to the scale's unit offers an edge left of the last one whenever RCV.NXT
  // moved by other than a multiple of it (RFC 7323 §2.4): round up instead, as Linux's
  // tcp_select_window does, when the ring has room for it. When it has not (the edge is at
  // the end of the ring), the offer falls short by less than a unit, which RFC 7323 §2.4
  // allows; segments up to the old edge are still accepted (rcvAdvEdge never moves left).
  if (field < 65535 && (field << ws) < cur && ((field + 1) << ws) <= free) field++;
  if (field > 65535) field = 65535;
  const edge = (s.rcvNxt + field * (1 << ws)) >>> 0;
  if (seqGt(edge, s.rcvAdvEdge)) s.rcvAdvEdge = edge;
  return field;
}

export function sendSyn(e: TcpEngine, s: TcpSocket): void {
  const flags = s.state === SYN_SENT ? TCP_SYN : TCP_SYN | TCP_ACK;
  const c = e.counters;
  const before = c[K.C_RETRANS_SEGS];
  emit(e, s, seqDiff(s.iss, s.sndUna), 0, flags, s.retries > 0);
  if (s.retries === 0 && c[K.C_RETRANS_SEGS] === before && s.rttStart < 0) {
    s.rttStart = e.now;
    s.rttSeq = s.iss;
  }
}

/** RST for a connection being aborted: seq = SND.NXT, with ACK. */
export function sendRst(e: TcpEngine, s: TcpSocket): void {
  if (!isSynchronized(s.state) && s.state !== SYN_SENT) return;
  if (s.state === SYN_SENT) return;
  emit(e, s, seqDiff(s.sndNxt, s.sndUna), 0, TCP_RST | TCP_ACK, false);
}

/** A segment outside any connection (RST replies, cookie SYN-ACKs are built elsewhere). */
export function sendRaw(
  e: TcpEngine,
  srcIp: number,
  srcPort: number,
  dstIp: number,
  dstPort: number,
  seq: number,
  ack: number,
  flags: number,
): void {
  const link = e.link;
  const off = link.reserve();
  if (off < 0) {
    e.counters[K.C_NO_BUFFER]++;
    return;
  }
  const b = link.buf;
  tcpWriteHeader(b, off, srcPort, dstPort, seq, ack, 20, flags, 0);
  tcpSetChecksum(b, off, 20, srcIp, dstIp);
  link.send(srcIp, dstIp, 20);
  e.counters[K.C_SEGS_OUT]++;
  if (flags & TCP_RST) e.counters[K.C_RST_OUT]++;
}
