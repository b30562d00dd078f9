/**
 * Loss recovery: duplicate ACKs, fast recovery with PRR (RFC 6937), the pipe estimate and IsLost
 * of RFC 6675, and the tail loss probe (RFC 8985 §7).
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import { seqDiff, seqGt, seqLe, seqLt, TCP_ACK, TCP_FIN, type TcpSegment } from "../wire/tcp.ts";
import {
  canSendData,
  RECOVERY_FAST,
  RECOVERY_NONE,
  RECOVERY_RTO,
  type TcpSocket,
} from "./socket.ts";
import * as K from "./counters.ts";
import { emit, emitRange, queueOut } from "./output.ts";

/** Duplicate ACKs (or SACKed segments) that mean a loss (RFC 5681 §3.2, RFC 6675). */
export const DUP_THRESH = 3;

export function dupAck(e: TcpEngine, s: TcpSocket, newlySacked: number): void {
  e.counters[K.C_DUP_ACKS]++;
  s.dupAcksIn++;
  s.dupAcks++;
  if (!s.sackOn) {
    const flight = seqDiff(s.sndNxt, s.sndUna);
    s.dupBytes = Math.min(s.dupBytes + s.sndMss, flight);
  }
  if (s.recovery === RECOVERY_FAST) {
    prrUpdate(s, s.sackOn ? newlySacked : s.sndMss);
    queueOut(e, s);
    return;
  }
  if (s.recovery === RECOVERY_RTO) return;
  if (
    s.dupAcks >= DUP_THRESH || (s.sackOn && s.sb.count > 0 && holeLost(s, 0))
  ) {
    // RFC 6582 §3.2 step 2: only when the ACK covers more than the last `recover`.
    if (seqLt(s.sndUna, s.recoverMark)) return;
    enterRecovery(e, s);
  } else {
    // Limited transmit (RFC 3042): the pipe estimate has shrunk; try to send new data.
    queueOut(e, s);
  }
}

export function enterRecovery(e: TcpEngine, s: TcpSocket): void {
  const flight = seqDiff(s.sndNxt, s.sndUna);
  s.cc.onLoss(s, flight, e.now);
  s.recovery = RECOVERY_FAST;
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
    e.counters[K.C_SACK_RECOVERIES]++;
  } else {
    s.renoRecoveries++;
    e.counters[K.C_RENO_RECOVERIES]++;
  }
  prrUpdate(s, s.sackOn ? 0 : s.sndMss);
  if (s.prrBudget < s.sndMss) s.prrBudget = s.sndMss; // the fast retransmit itself
  queueOut(e, s);
}

/** Proportional Rate Reduction (RFC 6937) with SSRB: how much may be sent now. */
export function prrUpdate(s: TcpSocket, delivered: number): void {
  if (delivered < 0) delivered = 0;
  s.prrDelivered += delivered;
  const inPipe = pipe(s);
  let sndcnt: number;
  if (inPipe > s.ssthresh) {
    sndcnt = Math.ceil((s.prrDelivered * s.ssthresh) / Math.max(1, s.recoverFs)) - s.prrOut;
  } else {
    const lim = Math.max(s.prrDelivered - s.prrOut, delivered) + s.sndMss;
    sndcnt = Math.min(s.ssthresh - inPipe, lim);
  }
  s.prrBudget = sndcnt > 0 ? sndcnt : 0;
}

/** RFC 6675 IsLost for the hole just below block `i` (constant across the hole). */
export function holeLost(s: TcpSocket, i: number): boolean {
  const thresh = dupThresh(s);
  if (s.sb.count - i >= thresh) return true;
  let bytes = 0;
  bytes += s.sb.bytesFrom(i);
  return bytes > (thresh - 1) * s.sndMss - (thresh < DUP_THRESH ? 1 : 0);
}

/**
 * DupThresh, lowered for small flights with nothing new to send (Early Retransmit, RFC 5827):
 * with fewer than four segments out, three SACKed segments can never arrive above a loss.
 */
export function dupThresh(s: TcpSocket): number {
  const flight = seqDiff(s.sndNxt, s.sndUna);
  const segs = Math.ceil(flight / s.sndMss);
  if (segs >= DUP_THRESH + 1) return DUP_THRESH;
  const unsent = s.tx.readable() - flight;
  const room = s.sndWnd - flight;
  if (unsent > 0 && room >= s.sndMss) return DUP_THRESH; // new data can still clock ACKs
  return Math.max(1, segs - 1);
}

/** Bytes in the network (RFC 6675 SetPipe, per hole). */
export function pipe(s: TcpSocket): number {
  const flight = seqDiff(s.sndNxt, s.sndUna);
  if (s.recovery === RECOVERY_NONE || (s.recovery === RECOVERY_FAST && !s.sackOn)) {
    const p = flight - s.sb.bytes - s.dupBytes;
    return p > 0 ? p : 0;
  }
  let pipe = 0;
  let prev = s.sndUna;
  for (let i = 0; i <= s.sb.count; i++) {
    const b = i < s.sb.count ? s.sb.left(i) : s.sndNxt;
    if (seqLt(prev, b)) {
      const lost = s.recovery === RECOVERY_RTO
        ? seqLt(prev, s.recoverySeq)
        : (i < s.sb.count && holeLost(s, i));
      let rx = 0;
      if (seqGt(s.highRxt, prev)) {
        rx = seqLt(s.highRxt, b) ? seqDiff(s.highRxt, prev) : seqDiff(b, prev);
      }
      pipe += lost ? rx : seqDiff(b, prev) + rx;
    }
    if (i < s.sb.count) prev = s.sb.right(i);
  }
  return pipe;
}

/**
 * Arms the tail loss probe (RFC 8985 §7.2): 2 SRTT after the last ACK, plus the peer's
 * delayed-ACK allowance when a single segment is out. Only with SACK, outside recovery,
 * and only if it would fire before the RTO.
 */
export function armPto(e: TcpEngine, s: TcpSocket): void {
  s.ptoAt = 0;
  if (!s.sackOn || s.recovery !== RECOVERY_NONE || s.sndUna === s.sndNxt || s.srtt === 0) return;
  if (!canSendData(s.state)) return;
  let pto = 2 * s.srtt;
  if (seqDiff(s.sndNxt, s.sndUna) <= s.sndMss) pto += 200;
  if (pto < 10) pto = 10;
  const at = e.now + pto;
  if (s.rtoAt !== 0 && at >= s.rtoAt) return;
  s.ptoAt = at;
}

/**
 * The ACK clock stopped with data out (RFC 8985 §7.3): send one probe so that the peer's ACK,
 * with its SACK blocks, reveals a tail loss without waiting for the RTO. New data when there
 * is some and the peer's window allows it (it probes and makes progress at once), else the
 * last segment again. One probe per episode; the RTO is armed behind it.
 */
export function onPto(e: TcpEngine, s: TcpSocket): void {
  if (s.recovery !== RECOVERY_NONE || s.sndUna === s.sndNxt || !canSendData(s.state)) return;
  if (s.tlpActive) return;
  const flight = seqDiff(s.sndNxt, s.sndUna);
  let sent = false;
  if (!s.finSent) {
    const unsent = s.tx.readable() - flight;
    const room = s.sndWnd - flight;
    if (unsent > 0 && room > 0) {
      const len = Math.min(unsent, s.sndMss, room);
      const fin = s.finQueued && len === unsent;
      if (emit(e, s, s.sndNxt, len, fin ? TCP_ACK | TCP_FIN : TCP_ACK, false)) {
        sent = true;
        s.tlpRetrans = false;
      }
    }
  }
  if (!sent) {
    const len = Math.min(flight, s.sndMss);
    const seq = (s.sndNxt - len) >>> 0;
    if (emitRange(e, s, seq, len) <= 0) return;
    s.tlpRetrans = true;
  }
  e.counters[K.C_TLP_PROBES]++;
  s.tlpActive = true;
  s.tlpEndSeq = s.sndNxt;
  s.ptoAt = 0;
  s.rtoAt = e.now + s.rto;
}

/**
 * An ACK while a probe is out (RFC 8985 §7.4.2): decides whether the probe repaired a loss,
 * and if so responds as to any loss (here, as Linux does, by a one-off reduction to ssthresh).
 */
export function tlpAck(
  e: TcpEngine,
  s: TcpSocket,
  seg: TcpSegment,
  acked: number,
  sacked: boolean,
) {
  if (seqLt(seg.ack, s.tlpEndSeq)) return;
  if (!s.tlpRetrans) {
    s.tlpActive = false; // a probe of new data: it says nothing about loss
  } else if (s.dsackLeft !== s.dsackRight && seqLe(s.dsackRight, s.tlpEndSeq)) {
    s.tlpActive = false; // the original and the probe both arrived: nothing was lost
  } else if (seqGt(seg.ack, s.tlpEndSeq)) {
    s.tlpActive = false;
    e.counters[K.C_TLP_RECOVERIES]++;
    if (s.recovery === RECOVERY_NONE) {
      s.cc.onLoss(s, seqDiff(s.sndNxt, s.sndUna), e.now);
      s.cwnd = Math.max(s.ssthresh, 2 * s.sndMss);
      s.recoverMark = s.sndNxt;
    }
  } else if (acked === 0 && !sacked && seg.payloadLen === 0) {
    s.tlpActive = false; // a pure duplicate ACK: both arrived
  }
}
