/**
 * Loss detection and recovery. With SACK: RACK-TLP (RFC 8985): a segment is lost when one sent
 * after it was delivered and a reordering window has passed, the window adapting to the
 * reordering D-SACKs reveal; a tail loss probe when the ACK clock stops; undo of recoveries
 * that D-SACKs prove spurious. Without SACK: NewReno's three duplicate ACKs (RFC 6582). Both
 * recover with PRR (RFC 6937).
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import {
  seqDiff,
  seqGe,
  seqGt,
  seqLe,
  seqLt,
  TCP_ACK,
  TCP_FIN,
  type TcpSegment,
} from "../wire/tcp.ts";
import { SM_LOST, SM_RETRANS, SM_SACKED } from "./sendmap.ts";
import {
  canSendData,
  RECOVERY_FAST,
  RECOVERY_NONE,
  RECOVERY_RTO,
  type TcpSocket,
} from "./socket.ts";
import * as K from "./counters.ts";
import { emit, emitRange, queueOut } from "./output.ts";

/** Duplicate ACKs that mean a loss without SACK (RFC 5681 §3.2, RFC 6582). */
export const DUP_THRESH = 3;

/** Linux's TCP_RACK_RECOVERY_THRESH: recoveries a widened reordering window persists for. */
const REO_WND_PERSIST = 16;

/**
 * A duplicate ACK. Without SACK it counts toward DupThresh (NewReno, RFC 6582); with SACK,
 * RACK decides what is lost (in processAck) and this only paces PRR and limited transmit.
 */
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
  if (!s.sackOn && s.dupAcks >= DUP_THRESH) {
    // RFC 6582 §3.2 step 2: only when the ACK covers more than the last `recover`.
    if (seqLt(s.sndUna, s.recoverMark)) return;
    enterRecovery(e, s);
  } else {
    // Limited transmit (RFC 3042): the pipe estimate has shrunk; try to send new data.
    queueOut(e, s);
  }
}

/** Fast recovery begins: one congestion response for the episode, PRR from here. */
export function enterRecovery(e: TcpEngine, s: TcpSocket): void {
  const flight = seqDiff(s.sndNxt, s.sndUna);
  // What an undo restores if every retransmission proves spurious (RFC 2883 §5, Linux's
  // prior_cwnd / prior_ssthresh).
  s.undoActive = true;
  s.undoMarker = s.sndUna;
  s.undoRetrans = 0;
  s.retransTsSet = false;
  s.priorCwnd = s.cwnd;
  s.priorSsthresh = s.ssthresh;
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

/**
 * Bytes in the network. With SACK (RFC 6675 SetPipe as RACK keeps it): the flight less what
 * the peer SACKed and what is marked lost and not yet resent. Without SACK: the flight less
 * what duplicate ACKs say has left, and after a timeout, only what was resent of the lost.
 */
export function pipe(s: TcpSocket): number {
  const flight = seqDiff(s.sndNxt, s.sndUna);
  let p: number;
  if (s.sackOn) p = flight - s.sm.sackedBytes - s.sm.lostBytes;
  else if (s.recovery === RECOVERY_RTO) {
    const lost = seqLt(s.sndUna, s.recoverySeq) ? seqDiff(s.recoverySeq, s.sndUna) : 0;
    const resent = seqGt(s.highRxt, s.sndUna) ? seqDiff(s.highRxt, s.sndUna) : 0;
    p = flight - lost + resent;
  } else p = flight - s.dupBytes;
  return p > 0 ? p : 0;
}

// ---- RACK (RFC 8985 §6) ----
// The callbacks of the send map run with these set: no closure per ACK. The clock is kept in
// a typed array: a module `let` is a context slot, which holds a double as a heap number, so
// storing a fractional `now` there allocated one per ACK (bench/tcp_engine.ts, bulk receive:
// 24 -> 8 heap bytes per segment).
let rackSock: TcpSocket | null = null;
const rackClock = new Float64Array(1);

/** RFC 8985 §6.2 steps 2-3 for a segment just delivered (cumulatively ACKed or SACKed). */
function rackDelivered(i: number): void {
  const s = rackSock!;
  const sm = s.sm;
  const sent = sm.time(i), end = sm.right(i), retrans = (sm.flags(i) & SM_RETRANS) !== 0;
  const rtt = rackClock[0] - sent;
  // A retransmitted segment's ACK may be for the original: an RTT shorter than the path's
  // minimum cannot be the retransmission's (RFC 8985 §6.2 step 2).
  if (retrans && rtt < s.minRtt) return;
  // The minimum RTT at the send clock's resolution (a timestamp sample has 1 ms steps, and a
  // path whose fastest packets take under 1 ms would give 0, and no reordering window).
  if (!retrans && rtt > 0 && rtt < s.rackMinRtt) s.rackMinRtt = rtt;
  if (sent > s.rackXmitAt || (sent === s.rackXmitAt && seqGt(end, s.rackEnd))) {
    s.rackXmitAt = sent;
    s.rackEnd = end;
    s.rackRtt = rtt;
    s.rackAdvanced = true;
  }
  // Step 3: a never-retransmitted segment delivered below the highest one delivered before
  // this ACK arrived out of order. (Compared with the ACK's prior value, as Linux compares
  // with prior_fack: one ACK that moves SND.UNA and SACKs above a hole delivers its SACKed
  // segments first, and the segments it acknowledges cumulatively are not reordered.)
  if (!retrans) {
    if (seqLt(end, s.rackFackPrior)) s.reordSeen = true;
    if (seqGt(end, s.rackFack)) s.rackFack = end;
  }
}

/**
 * Sets up the send map callbacks for socket `s` at the engine's time. `newAck`: the first call
 * for an arriving ACK, which fixes the RACK.fack its deliveries are compared with. (The time is
 * read here, not passed: a fractional `now` passed to a call V8 does not inline is boxed, 16
 * bytes per ACK.)
 */
export function rackBegin(e: TcpEngine, s: TcpSocket, newAck = false): (i: number) => void {
  rackSock = s;
  rackClock[0] = e.now;
  if (newAck) {
    // Everything below SND.UNA was delivered: RACK.fack starts there and is never behind it.
    if (!s.rackFackSet || seqLt(s.rackFack, s.sndUna)) {
      s.rackFack = s.sndUna;
      s.rackFackSet = true;
    }
    s.rackFackPrior = s.rackFack;
  }
  return rackDelivered;
}

/**
 * The reordering window (RFC 8985 §6.2 step 4): none before any reordering was seen once
 * recovery or DupThresh SACKed segments say loss is likely; before that a quarter of the
 * minimum RTT. Once the path has shown reordering, a quarter of SRTT, as FreeBSD's RACK
 * (rack_calc_thresh_rack) takes it: a path that reorders by holding some packets back while
 * others pass has a minimum RTT far below the delay the held ones see (measured through the
 * bench's forwarder: min RTT under 1 ms, SRTT 15 ms), and a window from the minimum marked
 * nearly every held packet lost. Each D-SACK round (a retransmission proved spurious) widens
 * it by one step, as Linux's reo_wnd_steps; never above SRTT.
 */
function reoWnd(s: TcpSocket): number {
  if (!s.reordSeen) {
    if (s.recovery !== RECOVERY_NONE) return 0;
    if (s.sm.sackedBytes >= DUP_THRESH * s.sndMss) return 0;
    const min = s.rackMinRtt !== Infinity
      ? s.rackMinRtt
      : s.minRtt === Infinity
      ? s.srtt
      : s.minRtt;
    return Math.min(min / 4, s.srtt);
  }
  const w = (s.srtt / 4) * s.reoWndMult;
  return w < s.srtt ? w : s.srtt;
}

/**
 * RFC 8985 §6.2 step 5: every segment sent before the most recently delivered one, and more
 * than RTT + reordering window ago, is lost. Marks them; arms the reordering timer for the
 * earliest that may still turn out lost. Returns true if any segment was marked.
 */
export function rackDetectLoss(e: TcpEngine, s: TcpSocket): boolean {
  s.rackAdvanced = false;
  if (s.rackXmitAt < 0) return false;
  const sm = s.sm;
  // Every outstanding segment was sent after everything delivered unless something above a
  // hole was SACKed or a segment was resent: no evidence of loss yet.
  if (sm.sackedBytes === 0 && sm.retransOut === 0) {
    s.reoAt = 0;
    return false;
  }
  const wnd = reoWnd(s);
  const now = e.now;
  let marked = false;
  let wait = 0;
  for (let i = 0; i < sm.count; i++) {
    const f = sm.flags(i);
    if (f & (SM_SACKED | SM_LOST)) continue;
    const sent = sm.time(i);
    if (sent > s.rackXmitAt || (sent === s.rackXmitAt && seqGe(sm.right(i), s.rackEnd))) {
      continue; // sent after the delivered segment: no evidence yet
    }
    const remaining = sent + s.rackRtt + wnd - now;
    if (remaining <= 0) {
      sm.markLost(i);
      e.counters[K.C_RACK_LOSSES]++;
      marked = true;
    } else if (remaining > wait) wait = remaining;
  }
  s.reoAt = wait > 0 ? now + wait : 0;
  return marked;
}

/** The reordering timer fired: segments may have waited out their window. */
export function onReoTimer(e: TcpEngine, s: TcpSocket): void {
  if (!s.sackOn || s.sndUna === s.sndNxt || !canSendData(s.state)) return;
  if (rackDetectLoss(e, s)) {
    if (s.recovery === RECOVERY_NONE && !seqLt(s.sndUna, s.recoverMark)) enterRecovery(e, s);
    queueOut(e, s);
  }
}

/**
 * A D-SACK arrived (RFC 2883): a segment reached the peer twice. If it was one we
 * retransmitted, one retransmission less stands unproven; when none is left, the recovery
 * was spurious and its window reduction is undone (RFC 2883 §5, Linux's tcp_try_undo_dsack).
 * Either way the network reorders: the reordering window widens for a while (RFC 8985 §6.2
 * step 4, once per round trip).
 */
export function onDsack(e: TcpEngine, s: TcpSocket, retransmitted: boolean): void {
  s.reordSeen = true;
  if (!s.dsackRound || !seqLt(s.sndUna, s.dsackRoundEnd)) {
    s.dsackRound = true;
    if (s.reoWndMult < 255) s.reoWndMult++; // Linux caps reo_wnd_steps at 0xFF
    s.reoWndPersist = REO_WND_PERSIST;
    s.dsackRoundEnd = s.sndNxt;
  }
  if (!retransmitted || !s.undoActive || s.undoRetrans <= 0) return;
  if (--s.undoRetrans > 0) return;
  undoRecovery(e, s);
}

/**
 * The recovery (or timeout) was spurious: the window it cut is given back, what it marked
 * lost is in flight after all (Linux's tcp_undo_cwnd_reduction), and the reordering window
 * keeps its width a while longer.
 */
export function undoRecovery(e: TcpEngine, s: TcpSocket): void {
  s.undoActive = false;
  s.reordSeen = true;
  if (s.reoWndPersist < REO_WND_PERSIST) s.reoWndPersist++;
  if (s.priorCwnd > s.cwnd) s.cwnd = s.priorCwnd;
  if (s.priorSsthresh > s.ssthresh) s.ssthresh = s.priorSsthresh;
  s.ccEpoch = -1;
  if (s.sackOn) s.sm.clearLost();
  if (s.recovery !== RECOVERY_NONE) {
    s.recovery = RECOVERY_NONE;
    s.recoverMark = s.sndUna;
  }
  e.counters[K.C_UNDO_RECOVERIES]++;
  queueOut(e, s);
}

/**
 * A recovery ended without being undone: its losses were real. The widened reordering window
 * lasts REO_WND_PERSIST such recoveries (Linux's tcp_try_undo_recovery).
 */
export function recoveryEnded(s: TcpSocket): void {
  if (s.undoActive && s.undoRetrans === 0) return;
  if (s.reoWndPersist > 0 && --s.reoWndPersist === 0) s.reoWndMult = 1;
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
  if (e.inputPending) {
    // The port holds frames the loop has not read: the ACK clock has not stopped, the loop is
    // behind it. Measured (the 8 MiB echo of tests/tcp_transfer_test.ts beside three CPU
    // hogs, captures at both ends): each spurious probe followed a full burst; the Linux peer
    // had ACKed the probed segment 1-9 ms before the probe went out, and that ACK waited
    // behind 100-221 frames of its data, read 9-22 ms later (the bridge descheduled between
    // rounds). Look again next round; the RTO is not deferred, so a flood of input cannot hold
    // a connection forever.
    s.ptoAt = e.now + 1;
    return;
  }
  const flight = seqDiff(s.sndNxt, s.sndUna);
  let sent = false;
  if (!s.finSent) {
    const unsent = s.tx.readable() - flight;
    const room = s.sndWnd - flight;
    if (unsent > 0 && room > 0) {
      const len = Math.min(unsent, s.sndMss, room);
      const fin = s.finQueued && len === unsent;
      if (emit(e, s, flight, len, fin ? TCP_ACK | TCP_FIN : TCP_ACK, false) >= 0) {
        sent = true;
        s.tlpRetrans = false;
      }
    }
  }
  if (!sent) {
    const len = Math.min(flight, s.sndMss);
    if (emitRange(e, s, flight - len, len) <= 0) return;
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
