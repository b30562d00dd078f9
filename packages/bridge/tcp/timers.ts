/**
 * Per-connection timers, as FreeBSD's tcp_timer.c: one wheel entry per socket at its earliest
 * deadline; retransmission, persist, delayed ACK, keepalive, FIN-WAIT-2 and TIME-WAIT.
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import { seqDiff, TCP_ACK } from "../wire/tcp.ts";
import {
  canSendData,
  CLOSED,
  ESTABLISHED,
  ETIMEDOUT,
  FIN_WAIT_2,
  RECOVERY_RTO,
  SYN_RECEIVED,
  SYN_SENT,
  type TcpSocket,
  TIME_WAIT,
} from "./socket.ts";
import * as K from "./counters.ts";
import { emit, queueOut, sendSyn } from "./output.ts";
import { ackLater } from "./input.ts";
import { onPto, onReoTimer } from "./recovery.ts";

export function arm(e: TcpEngine, s: TcpSocket): void {
  let at = Infinity;
  if (s.rtoAt !== 0) at = s.rtoAt;
  if (s.dackAt !== 0 && s.dackAt < at) at = s.dackAt;
  if (s.ptoAt !== 0 && s.ptoAt < at) at = s.ptoAt;
  if (s.kaAt !== 0 && s.kaAt < at) at = s.kaAt;
  if (s.closeAt !== 0 && s.closeAt < at) at = s.closeAt;
  if (s.reoAt !== 0 && s.reoAt < at) at = s.reoAt;
  if (at === Infinity || s.state === CLOSED) return;
  e.wheel.arm(s, at);
}

export function onTimer(e: TcpEngine, s: TcpSocket): void {
  const now = e.now;
  if (s.closeAt !== 0 && now >= s.closeAt) {
    s.closeAt = 0;
    if (s.state === TIME_WAIT || s.state === FIN_WAIT_2) {
      e.destroy(s);
      return;
    }
  }
  if (s.rtoAt !== 0 && now >= s.rtoAt) {
    s.rtoAt = 0;
    s.ptoAt = 0;
    onRto(e, s);
    if (s.state === CLOSED) return;
  }
  if (s.reoAt !== 0 && now >= s.reoAt) {
    s.reoAt = 0;
    onReoTimer(e, s);
  }
  if (s.ptoAt !== 0 && now >= s.ptoAt) {
    s.ptoAt = 0;
    onPto(e, s);
  }
  if (s.dackAt !== 0 && now >= s.dackAt) {
    s.dackAt = 0;
    if (s.lastAckSent !== s.rcvNxt) ackLater(e, s);
  }
  if (s.kaAt !== 0 && now >= s.kaAt) {
    s.kaAt = 0;
    onKeepalive(e, s);
    if (s.state === CLOSED) return;
  }
  arm(e, s);
}

export function onRto(e: TcpEngine, s: TcpSocket): void {
  const now = e.now;
  const c = e.counters;
  if (s.state === SYN_SENT || s.state === SYN_RECEIVED) {
    const max = s.state === SYN_SENT ? e.synRetries : e.synAckRetries;
    if (s.retries >= max) {
      if (s.state === SYN_RECEIVED && s.parent !== null) e.destroy(s);
      else e.fail(s, ETIMEDOUT);
      return;
    }
    s.retries++;
    s.rttStart = -1;
    s.rto = Math.min(s.rto * 2, e.maxRto);
    c[K.C_RTO_EVENTS]++;
    s.rtoEvents++;
    sendSyn(e, s);
    s.rtoAt = now + s.rto;
    return;
  }
  if (s.persist) {
    // As Linux's tcp_probe_timer: a peer that answers the probes of its shut window is probed
    // on (RFC 9293 §3.8.6.1, RFC 1122 4.2.2.17) while the application holds the socket; a
    // peer that stops answering is given up after tcp_retries2 probes (tcp_orphan_retries for
    // an orphan). An orphan is also given up, answered or not, once the probes' backoff has
    // reached the largest RTO and tcp_orphan_retries probes went out: nobody waits for its
    // data any more.
    const maxProbes = s.orphan ? e.orphanRetries : e.maxRetries;
    const backedOff = s.rto * (1 << Math.min(s.probes, 16)) >= e.maxRto;
    if (s.probesOut >= maxProbes || (s.orphan && backedOff && s.probes >= e.orphanRetries)) {
      e.fail(s, ETIMEDOUT);
      return;
    }
    // Zero-window probe (Linux style: an old sequence number that forces an ACK).
    c[K.C_WINDOW_PROBES]++;
    s.probes++;
    s.probesOut++;
    emit(e, s, -1, 0, TCP_ACK, false);
    s.persist = true;
    s.rtoAt = now + Math.min(s.rto * (1 << Math.min(s.probes, 10)), e.maxRto);
    return;
  }
  if (s.sndUna === s.sndNxt || !canSendData(s.state)) return;
  if (s.retries >= (s.orphan ? e.orphanRetries : e.maxRetries)) {
    e.fail(s, ETIMEDOUT);
    return;
  }
  s.retries++;
  c[K.C_RTO_EVENTS]++;
  s.rtoEvents++;
  const flight = seqDiff(s.sndNxt, s.sndUna);
  const first = s.retries === 1 && s.recovery !== RECOVERY_RTO;
  if (first) {
    // A D-SACK for every retransmission undoes the reduction (a spurious timeout).
    s.undoActive = true;
    s.undoMarker = s.sndUna;
    s.undoRetrans = 0;
    s.retransTsSet = false;
    s.priorCwnd = s.cwnd;
    s.priorSsthresh = s.ssthresh;
  }
  s.cc.onRto(s, flight, first);
  s.recovery = RECOVERY_RTO;
  // RFC 2018 §8: after a timeout the SACK information is not trusted (the peer may have
  // reneged); everything from SND.UNA is lost and resent (RFC 8985 §6.3).
  if (s.sackOn) s.sm.markAllLost();
  s.tlpActive = false;
  s.reoAt = 0;
  s.recoverySeq = s.sndNxt;
  s.recoverMark = s.sndNxt;
  s.highRxt = s.sndUna;
  s.dupAcks = 0;
  s.dupBytes = 0;
  s.rxmitHead = false;
  s.rttStart = -1;
  s.rto = Math.min(s.rto * 2, e.maxRto);
  s.rtoAt = now + s.rto;
  queueOut(e, s);
}

export function onKeepalive(e: TcpEngine, s: TcpSocket): void {
  if (!s.keepalive || s.state < ESTABLISHED || s.state === TIME_WAIT) return;
  const now = e.now;
  if (s.sndUna !== s.sndNxt || s.tx.readable() > 0) {
    s.kaAt = now + s.keepIdle; // data in flight: the retransmission timer watches
    return;
  }
  if (s.kaProbes === 0 && now - s.lastRecvAt < s.keepIdle) {
    s.kaAt = s.lastRecvAt + s.keepIdle;
    return;
  }
  if (s.kaProbes >= s.keepCnt) {
    e.fail(s, ETIMEDOUT);
    return;
  }
  e.counters[K.C_KEEPALIVE_PROBES]++;
  s.kaProbes++;
  emit(e, s, -1, 0, TCP_ACK, false);
  s.kaAt = now + s.keepIntvl;
}
