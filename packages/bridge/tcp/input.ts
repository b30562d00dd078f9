/**
 * Segment arrival (RFC 9293 §3.10.7), as FreeBSD's tcp_input.c: closed ports, listeners, SYN-SENT,
 * the synchronized states, ACK processing, and the text and FIN of a segment.
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
  TCP_RST,
  TCP_SYN,
  tcpChecksumOk,
  type TcpSegment,
  tcpSumOk,
} from "../wire/tcp.ts";
import {
  CLOSE_WAIT,
  CLOSED,
  CLOSING,
  ECONNREFUSED,
  ECONNRESET,
  ESTABLISHED,
  EV_ACCEPT,
  EV_CLOSED,
  EV_CONNECTED,
  EV_PEER_CLOSED,
  EV_READABLE,
  EV_WRITABLE,
  FIN_WAIT_1,
  FIN_WAIT_2,
  LAST_ACK,
  LISTEN,
  RECOVERY_FAST,
  RECOVERY_NONE,
  RECOVERY_RTO,
  SYN_RECEIVED,
  type TcpSocket,
  TIME_WAIT,
} from "./socket.ts";
import * as K from "./counters.ts";
import { emit, queueOut, sendRaw, sendRst, sendSyn } from "./output.ts";
import { sackUpdate } from "./sack.ts";
import {
  armPto,
  dupAck,
  enterRecovery,
  onDsack,
  prrUpdate,
  rackBegin,
  rackDetectLoss,
  recoveryEnded,
  tlpAck,
  undoRecovery,
} from "./recovery.ts";
import { SM_SACKED } from "./sendmap.ts";
import { cookieAck, sendCookieSynAck } from "./syncache.ts";
import { arm } from "./timers.ts";
import { rttSample } from "./rtt.ts";
import { rcvRttMeasure } from "./autotune.ts";
import { timeWaitEnter } from "./timewait.ts";

/** The smallest send MSS we accept from a peer's option (Linux's TCP_MIN_SND_MSS). */
export const MIN_SND_MSS = 48;
/**
 * How many ticks older than TS.Recent a timestamp may be and still pass PAWS: Linux's
 * TCP_PAWS_WINDOW. A peer's segments sent within one tick of each other and reordered on the
 * way (a retransmission and the segment after it) carry that much disorder legitimately.
 */
export const PAWS_WINDOW = 1;

/** PAWS gives up on TS.Recent after 24 days idle (RFC 7323 §5.5). */
export const PAWS_IDLE_MS = 24 * 24 * 3600 * 1000;

export function inputClosed(e: TcpEngine, seg: TcpSegment): void {
  e.counters[K.C_DROP_NO_SOCKET]++;
  if (seg.flags & TCP_RST) return;
  if (e.multiQueue && (seg.flags & TCP_ACK)) return;
  rstReply(e, seg);
}

/** RST in reply to a segment that has no connection (RFC 9293 §3.10.7.1). */
export function rstReply(e: TcpEngine, seg: TcpSegment): void {
  if (seg.flags & TCP_ACK) {
    sendRaw(e, e.inDst, seg.dstPort, e.inSrc, seg.srcPort, seg.ack, 0, TCP_RST);
  } else {
    sendRaw(
      e,
      e.inDst,
      seg.dstPort,
      e.inSrc,
      seg.srcPort,
      0,
      (seg.seq + seg.seqLen()) >>> 0,
      TCP_RST | TCP_ACK,
    );
  }
}

export function inputListen(e: TcpEngine, l: TcpSocket, seg: TcpSegment): void {
  const f = seg.flags;
  if (f & TCP_RST) return;
  if (f & TCP_ACK) {
    if ((f & (TCP_SYN | TCP_FIN)) === 0 && e.cookiesEnabled && cookieAck(e, l, seg)) return;
    e.counters[K.C_DROP_NO_SOCKET]++;
    if (!e.multiQueue) rstReply(e, seg);
    return;
  }
  if (!(f & TCP_SYN)) {
    e.counters[K.C_DROP_FLAGS]++;
    return;
  }
  if (f & TCP_FIN) {
    e.counters[K.C_DROP_FLAGS]++;
    return;
  }
  // Backlog: a full accept queue drops the SYN (like Linux); a full SYN queue answers with
  // a cookie.
  if (l.acceptLen >= l.backlog) {
    e.counters[K.C_DROP_BACKLOG]++;
    return;
  }
  if (l.synQueueLen >= l.backlog) {
    if (e.cookiesEnabled) sendCookieSynAck(e, l, seg);
    else e.counters[K.C_DROP_BACKLOG]++;
    return;
  }
  const s = e.newSocket(l.childOpts ?? {});
  s.localIp = e.inDst;
  s.localPort = seg.dstPort;
  s.remoteIp = e.inSrc;
  s.remotePort = seg.srcPort;
  if (!e.attachStreams(s, l.childOpts)) {
    e.liveCount--;
    e.counters[K.C_DROP_BACKLOG]++;
    return;
  }
  s.parent = l;
  s.childOpts = l.childOpts;
  s.onEvent = l.childOpts?.onEvent ?? l.onEvent;
  s.iss = e.isn(s);
  s.tsOffset = e.tsOffsetFor(s);
  synOptions(e, s, seg, l.rcvWscale);
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
  e.table.insert(s);
  e.counters[K.C_PASSIVE_OPENS]++;
  sendSyn(e, s);
  s.rtoAt = e.now + s.rto;
  arm(e, s);
}

/** Applies the options of a received SYN (or SYN-ACK) to `s`. */
export function synOptions(e: TcpEngine, s: TcpSocket, seg: TcpSegment, ourWscale: number): void {
  s.tsOn = e.tsEnabled && seg.hasTimestamp;
  if (s.tsOn) {
    s.tsRecent = seg.tsVal;
    s.tsRecentAt = e.now;
  }
  s.sackOn = e.sackEnabled && seg.sackPermitted;
  s.wsOn = e.wsEnabled && seg.wscale >= 0;
  s.sndWscale = s.wsOn ? seg.wscale : 0;
  s.rcvWscale = s.wsOn ? ourWscale : 0;
  s.peerMss = seg.mss > 0 ? seg.mss : 536;
  setMss(e, s);
}

export function setMss(e: TcpEngine, s: TcpSocket): void {
  let mss = Math.min(s.peerMss, (s.pmtu > 0 ? s.pmtu : e.link.mtu) - 40);
  if (s.tsOn) mss -= 12;
  if (mss < MIN_SND_MSS) mss = MIN_SND_MSS;
  s.sndMss = mss;
  s.rcvMss = Math.min(e.link.mtu - 40 - (s.tsOn ? 12 : 0), 1460);
  s.cc.init(s);
}

export function inputSynSent(e: TcpEngine, s: TcpSocket, seg: TcpSegment): void {
  const f = seg.flags;
  const c = e.counters;
  if (f & TCP_ACK) {
    if (seqLe(seg.ack, s.iss) || seqGt(seg.ack, s.sndNxt)) {
      c[K.C_DROP_BAD_ACK]++;
      if (!(f & TCP_RST)) rstReply(e, seg);
      return;
    }
  }
  if (f & TCP_RST) {
    if (f & TCP_ACK) e.fail(s, ECONNREFUSED);
    else c[K.C_DROP_RST_OUT_OF_WINDOW]++;
    return;
  }
  if (!(f & TCP_SYN)) {
    c[K.C_DROP_FLAGS]++;
    return;
  }
  synOptions(e, s, seg, s.rcvWscale);
  s.irs = seg.seq;
  s.rcvNxt = (seg.seq + 1) >>> 0;
  s.rcvAdvEdge = (s.rcvNxt + Math.min(s.rx.writable(), 65535)) >>> 0;
  s.lastRecvAt = e.now;
  if (f & TCP_ACK) {
    ackSyn(e, s, seg);
    s.sndWnd = seg.window; // a SYN's window is never scaled (RFC 7323 §2.2)
    s.sndWl1 = seg.seq;
    s.sndWl2 = seg.ack;
    s.maxSndWnd = s.sndWnd;
    s.state = ESTABLISHED;
    established(e, s);
    e.event(s, EV_CONNECTED | EV_WRITABLE);
    s.ackNow = true;
    queueOut(e, s);
    // Data or FIN on a SYN-ACK is rare; handle it like any other segment.
    if (seg.payloadLen > 0 || (f & TCP_FIN)) processText(e, s, seg, 1);
    return;
  }
  // Simultaneous open (RFC 9293 §3.5, figure 8).
  s.sndWnd = seg.window;
  s.sndWl1 = seg.seq;
  s.maxSndWnd = s.sndWnd;
  s.state = SYN_RECEIVED;
  s.retries = 0;
  sendSyn(e, s);
  s.rtoAt = e.now + s.rto;
  arm(e, s);
}

/** The ACK of our SYN: RTT sample and the end of the handshake's timer. */
export function ackSyn(e: TcpEngine, s: TcpSocket, seg: TcpSegment): void {
  if (s.retries === 0) {
    if (s.tsOn && seg.hasTimestamp && seg.tsEcr !== 0) {
      rttSample(e, s, seqDiff((e.now + s.tsOffset) >>> 0, seg.tsEcr));
    } else if (s.rttStart >= 0) rttSample(e, s, e.now - s.rttStart);
  }
  s.rttStart = -1;
  s.retries = 0;
  if (s.srtt === 0) s.rto = e.initRto;
  s.sndUna = seg.ack;
  s.rtoAt = 0;
}

/** Entered ESTABLISHED: keepalive timer. */
export function established(e: TcpEngine, s: TcpSocket): void {
  s.sndSml = s.sndUna;
  s.maxFlightEnd = s.sndNxt;
  s.lastDataOutAt = e.now; // idle counts from here (Linux's tcp_init_transfer sets lsndtime)
  s.recoverMark = s.sndUna;
  if (s.keepalive) s.kaAt = e.now + s.keepIdle;
  arm(e, s);
}

export function inputSynchronized(e: TcpEngine, s: TcpSocket, seg: TcpSegment): void {
  const c = e.counters;
  const f = seg.flags;
  const now = e.now;
  // PAWS (RFC 7323 §5). TS.Recent 0 is a value like any other (the peer's clock wraps).
  if (
    s.tsOn && seg.hasTimestamp && !(f & TCP_RST) && seqDiff(s.tsRecent, seg.tsVal) > PAWS_WINDOW &&
    now - s.tsRecentAt < PAWS_IDLE_MS && !disorderedAck(s, seg)
  ) {
    c[K.C_DROP_PAWS]++;
    outOfWindowAck(e, s, seg);
    return;
  }
  // Simultaneous open: the peer's SYN-ACK in SYN-RECEIVED acknowledges our SYN.
  if (
    s.state === SYN_RECEIVED && (f & (TCP_SYN | TCP_ACK | TCP_RST)) === (TCP_SYN | TCP_ACK) &&
    s.parent === null && ((seg.seq + 1) >>> 0) === s.rcvNxt && seg.ack === s.sndNxt
  ) {
    ackSyn(e, s, seg);
    s.sndWnd = seg.window; // a SYN's window is never scaled (RFC 7323 §2.2)
    s.sndWl1 = seg.seq;
    s.sndWl2 = seg.ack;
    s.state = ESTABLISHED;
    established(e, s);
    e.event(s, EV_CONNECTED | EV_WRITABLE);
    s.ackNow = true;
    queueOut(e, s);
    return;
  }
  // A retransmitted SYN on a half-open passive connection: repeat the SYN-ACK.
  if (
    s.state === SYN_RECEIVED && (f & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN &&
    seg.seq === s.irs
  ) {
    sendSyn(e, s);
    return;
  }
  // 1. Sequence number acceptability.
  const segLen = seg.seqLen();
  const wnd = rcvWnd(s);
  if (!acceptable(seqDiff(seg.seq, s.rcvNxt), segLen, wnd)) {
    if (f & TCP_RST) {
      c[K.C_DROP_RST_OUT_OF_WINDOW]++;
      return;
    }
    c[K.C_DROP_OUT_OF_WINDOW]++;
    if (segLen > 0 && seqLt(seg.seq, s.rcvNxt)) {
      c[K.C_SPURIOUS_DATA]++;
      if (seg.payloadLen > 0) {
        const end = (seg.seq + seg.payloadLen) >>> 0;
        duplicate(s, seg.seq, seqLt(end, s.rcvNxt) ? end : s.rcvNxt);
      }
    }
    outOfWindowAck(e, s, seg);
    return;
  }
  s.lastRecvAt = now;
  s.kaProbes = 0;
  // 2. RST (RFC 5961 §3).
  if (f & TCP_RST) {
    if (seg.seq === s.rcvNxt) {
      if (s.state === SYN_RECEIVED && s.parent !== null) {
        e.destroy(s); // back to LISTEN: the listener stays
      } else if (s.state === CLOSING || s.state === LAST_ACK || s.state === TIME_WAIT) {
        e.destroy(s);
      } else {
        e.fail(s, s.state === SYN_RECEIVED ? ECONNREFUSED : ECONNRESET);
      }
    } else challengeAck(e, s);
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
    challengeAck(e, s);
    return;
  }
  // 5. ACK.
  if (!(f & TCP_ACK)) {
    c[K.C_DROP_FLAGS]++;
    return;
  }
  if (s.state === SYN_RECEIVED) {
    const l = s.parent;
    if (l !== null && l.state === LISTEN && l.acceptLen >= l.backlog) {
      // The accept queue is full: drop the ACK and stay in SYN-RECEIVED; the SYN-ACK timer
      // draws the ACK again once the application accepted (Linux, tcp_abort_on_overflow=0).
      c[K.C_DROP_BACKLOG]++;
      return;
    }
    if (seqLt(s.sndUna, seg.ack) && seqLe(seg.ack, s.sndNxt)) {
      ackSyn(e, s, seg);
      s.sndWnd = seg.window << s.sndWscale;
      s.sndWl1 = seg.seq;
      s.sndWl2 = seg.ack;
      s.maxSndWnd = s.sndWnd;
      s.state = s.finQueued ? FIN_WAIT_1 : ESTABLISHED;
      established(e, s);
      toAcceptQueue(e, s);
    } else {
      c[K.C_DROP_BAD_ACK]++;
      rstReply(e, seg);
      return;
    }
  } else if (!processAck(e, s, seg)) return;
  if (s.state === CLOSED) return;
  // 7. Text and 8. FIN.
  processText(e, s, seg, 0);
}

/**
 * Header prediction for the receive fast path, after Van Jacobson's and Linux's
 * (tcp_rcv_established): an established connection's next in-order data, all of it inside the
 * window we advertised and the ring's free space, and nothing held out of order. The engine has
 * already checked that the segment carries ACK (and maybe PSH) and nothing else. Such a segment
 * is summed as it is copied into the receive ring (`copyVerified`), before its checksum is
 * known. Out-of-order bytes wait past the producer index, where a copy that then fails its
 * checksum would have overwritten them: with any held, and for every other segment (FIN, a
 * window edge, not in order), the segment is verified first and copied later by processText.
 */
export function predicted(s: TcpSocket, seg: TcpSegment): boolean {
  return s.state === ESTABLISHED && seg.seq === s.rcvNxt && s.ofo.count === 0 && !s.orphan &&
    seg.payloadLen <= rcvWnd(s) && seg.payloadLen <= s.rx.writable();
}

/**
 * The fast path's checksum of a `predicted` segment (at `off` of `buf`): its payload goes into
 * the receive ring's free space, unpublished, and the whole segment is summed in the same pass
 * (one native call, where verify-then-copy read the payload twice). False when it does not
 * verify: nothing has changed then, the bytes past the producer index not being the
 * application's until published (and nothing waits there: `predicted`). True: processText
 * publishes them without copying again (`e.placed`).
 */
export function copyVerified(
  e: TcpEngine,
  s: TcpSocket,
  seg: TcpSegment,
  buf: Uint8Array,
  off: number,
  srcIp: number,
  dstIp: number,
): boolean {
  const rx = s.rx;
  const hdrLen = seg.payloadOff - off;
  const len = hdrLen + seg.payloadLen;
  const sum = rx.copyInSum === undefined
    ? -1
    : rx.copyInSum(0, buf, seg.payloadOff, seg.payloadLen, hdrLen);
  // A stream that cannot sum as it copies copied nothing: verify, processText copies later.
  if (sum < 0) return tcpChecksumOk(buf, off, len, srcIp, dstIp);
  if (!tcpSumOk(sum, len, srcIp, dstIp)) return false;
  e.placed = s;
  e.placedLen = seg.payloadLen;
  e.counters[K.C_RCV_FAST_PATH]++;
  return true;
}

/**
 * RFC 9293 §3.10.7.4 first check, against the window we advertised, for a segment of `len`
 * starting `d` bytes past RCV.NXT (an offset, not SEG.SEQ: a sequence number of 2^30 or more
 * passed to a call V8 did not inline is boxed as a heap number, 16 bytes per segment).
 */
export function acceptable(d: number, len: number, wnd: number): boolean {
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
  const last = (d + len - 1) | 0;
  return (d >= 0 && d < wnd) || (last >= 0 && last < wnd);
}

/** Our current receive window (what we last advertised, never shrunk). */
export function rcvWnd(s: TcpSocket): number {
  const w = seqDiff(s.rcvAdvEdge, s.rcvNxt);
  return w > 0 ? w : 0;
}

export function toAcceptQueue(e: TcpEngine, s: TcpSocket): void {
  const l = s.parent;
  if (l === null) {
    e.event(s, EV_CONNECTED | EV_WRITABLE);
    return;
  }
  l.synQueueLen--;
  if (l.state !== LISTEN || l.acceptLen >= l.backlog) {
    // The listener is gone (a full queue was checked before the handshake completed).
    e.counters[K.C_DROP_BACKLOG]++;
    s.parent = null;
    sendRst(e, s);
    e.destroy(s);
    return;
  }
  l.acceptQueue[(l.acceptHead + l.acceptLen) % l.backlog] = s;
  l.acceptLen++;
  e.event(l, EV_ACCEPT);
}

/**
 * Linux's tcp_disordered_ack: a duplicate ACK that only arrived late (reordered) fails PAWS by
 * a little but is harmless, and its SACK blocks are news: a pure ACK at RCV.NXT, acknowledging
 * SND.UNA, not updating the window, with a TSval within one RTO of TS.Recent.
 */
function disorderedAck(s: TcpSocket, seg: TcpSegment): boolean {
  if (seg.seqLen() !== 0 || seg.seq !== s.rcvNxt || seg.ack !== s.sndUna) return false;
  if (!(seg.flags & TCP_ACK)) return false;
  const wnd = seg.window << s.sndWscale;
  if (seqGt(seg.seq, s.sndWl1) || (seg.seq === s.sndWl1 && (wnd > s.sndWnd || wnd === 0))) {
    return false;
  }
  // The peer's timestamp clock runs at 1 ms or coarser (Linux: 1 ms): an RTO in its units.
  return seqDiff(s.tsRecent, seg.tsVal) <= Math.max(s.rto, 1);
}

/** Linux's sysctl_tcp_invalid_ratelimit: one out-of-window or challenge ACK per 500 ms. */
export const INVALID_RATELIMIT_MS = 500;

/** True (and counted) when this socket answered an invalid segment less than 500 ms ago. */
function rateLimited(e: TcpEngine, s: TcpSocket): boolean {
  const since = e.now - s.lastInvalidAckAt;
  if (s.lastInvalidAckAt >= 0 && since >= 0 && since < INVALID_RATELIMIT_MS) {
    e.counters[K.C_ACKS_RATE_LIMITED]++;
    return true;
  }
  s.lastInvalidAckAt = e.now;
  return false;
}

/**
 * The duplicate ACK for an unacceptable (or PAWS-failed) segment (RFC 9293 §3.10.7.4). Data
 * is always answered, a peer's loss recovery needs those ACKs; a segment without data (or a
 * SYN) at most once per 500 ms per socket, which stops ACK storms between two confused ends
 * (Linux's tcp_oow_rate_limited).
 */
function outOfWindowAck(e: TcpEngine, s: TcpSocket, seg: TcpSegment): void {
  if ((seg.seqLen() === 0 || (seg.flags & TCP_SYN)) && rateLimited(e, s)) return;
  ackLater(e, s);
}

/**
 * RFC 5961 challenge ACK, limited as Linux limits it since CVE-2016-5696: per socket first
 * (one per 500 ms), then host-wide by a budget drawn at random each second between half and
 * one and a half times the limit, so that an off-path attacker cannot count the ACKs a
 * connection sent by exhausting a fixed global budget.
 */
export function challengeAck(e: TcpEngine, s: TcpSocket): void {
  if (rateLimited(e, s)) return;
  const sec = Math.floor(e.now / 1000);
  if (sec !== e.chSecond) {
    e.chSecond = sec;
    const half = (e.challengeLimit + 1) >>> 1;
    e.chCount = half + (e.random() % (e.challengeLimit + 1));
  }
  if (e.chCount <= 0) {
    e.counters[K.C_ACKS_RATE_LIMITED]++;
    return;
  }
  e.chCount--;
  e.counters[K.C_CHALLENGE_ACKS]++;
  ackLater(e, s);
}

export function ackLater(e: TcpEngine, s: TcpSocket): void {
  s.ackNow = true;
  queueOut(e, s);
}

/** ACK processing in synchronized states. False: the segment is finished with. */
export function processAck(e: TcpEngine, s: TcpSocket, seg: TcpSegment): boolean {
  const c = e.counters;
  const ack = seg.ack;
  // RFC 5961 §5.2: acceptable ACK range.
  if (seqGt(ack, s.sndNxt)) {
    c[K.C_DROP_BAD_ACK]++;
    challengeAck(e, s);
    return false;
  }
  if (seqLt(ack, (s.sndUna - s.maxSndWnd) >>> 0)) {
    c[K.C_DROP_BAD_ACK]++;
    challengeAck(e, s);
    return false;
  }
  const wnd = seg.window << s.sndWscale;
  const oldSacked = s.sm.sackedBytes;
  const priorUna = s.sndUna;
  const delivered = rackBegin(e, s, true);
  let dsack = false;
  if (s.sackOn && seg.sackCount > 0 && sackUpdate(s, seg, delivered)) {
    e.counters[K.C_DSACKS_IN]++;
    dsack = true;
  }
  const sackGrew = s.sm.sackedBytes > oldSacked;
  // The peer answers: probes of a shut window are no longer unanswered (Linux's tcp_ack
  // clears icsk_probes_out on every acceptable ACK).
  s.probesOut = 0;
  const acked = seqDiff(ack, s.sndUna);
  const flightBefore = seqDiff(s.sndNxt, s.sndUna);
  if (acked > 0) {
    ackAdvance(e, s, seg, acked, flightBefore, oldSacked);
    if (s.state === CLOSED) return false;
  } else if (
    acked === 0 && !(seg.flags & (TCP_SYN | TCP_FIN)) && flightBefore > 0 &&
    // RFC 5681's duplicate ACK carries no data and the same window; with SACK, any segment
    // that SACKs new bytes counts, data or not (RFC 6675 §2): in a two-way transfer every
    // segment of the peer carries data, and only its SACK blocks reveal our losses.
    ((seg.payloadLen === 0 && wnd === s.sndWnd) || sackGrew)
  ) {
    rackCheck(e, s);
    dupAck(e, s, s.sm.sackedBytes - oldSacked);
  } else if (acked <= 0) rackCheck(e, s);
  if (dsack) {
    // A D-SACK for data we retransmitted in the recovery being judged (Linux's
    // tcp_check_dsack: above the undo marker, below the prior SND.UNA).
    onDsack(
      e,
      s,
      s.undoActive && seqGt(s.dsackRight, s.undoMarker) && seqLe(s.dsackRight, priorUna),
    );
  }
  if (s.tlpActive) tlpAck(e, s, seg, acked, sackGrew);
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
    if (opened) queueOut(e, s);
  }
  // State transitions on the ACK of our FIN.
  if (s.finSent && seqGt(s.sndUna, s.finSeq)) {
    switch (s.state) {
      case FIN_WAIT_1:
        s.state = FIN_WAIT_2;
        if (s.orphan) {
          s.closeAt = e.now + e.finTimeout;
          arm(e, s);
        }
        break;
      case CLOSING:
        enterTimeWait(e, s);
        break;
      case LAST_ACK:
        e.destroy(s);
        return false;
    }
  }
  return true;
}

/**
 * RACK's loss detection after an ACK delivered something sent later than anything before
 * (RFC 8985 §6.2): newly lost segments start fast recovery (once per window, RFC 6582's
 * `recover`), and are resent in any case.
 */
function rackCheck(e: TcpEngine, s: TcpSocket): void {
  if (!s.sackOn || !s.rackAdvanced) return;
  if (rackDetectLoss(e, s)) {
    if (s.recovery === RECOVERY_NONE && !seqLt(s.sndUna, s.recoverMark)) enterRecovery(e, s);
    else queueOut(e, s);
  }
  arm(e, s);
}

/** Cumulative ACK of new data. */
export function ackAdvance(
  e: TcpEngine,
  s: TcpSocket,
  seg: TcpSegment,
  acked: number,
  flightBefore: number,
  oldSacked: number,
): void {
  const now = e.now;
  let dataAcked = acked;
  if (s.sndUna === s.iss) dataAcked--; // our SYN
  if (s.finSent && seqGt(seg.ack, s.finSeq)) dataAcked--;
  // RTT (RFC 7323 §4 with timestamps, Karn's rule without).
  if (s.tsOn && seg.hasTimestamp && seg.tsEcr !== 0) {
    rttSample(e, s, seqDiff((now + s.tsOffset) >>> 0, seg.tsEcr));
  } else if (s.rttStart >= 0 && seqGt(seg.ack, s.rttSeq)) {
    rttSample(e, s, now - s.rttStart);
    s.rttStart = -1;
  }
  if (s.rttStart >= 0 && seqGt(seg.ack, s.rttSeq)) s.rttStart = -1;
  s.retries = 0;
  s.sndUna = seg.ack;
  if (dataAcked > 0) s.tx.release(dataAcked);
  if (s.sackOn) {
    s.sm.nextUna = s.sndUna;
    s.sm.ackNext(rackBegin(e, s));
    rackCheck(e, s);
  }
  if (s.dupBytes > 0) {
    s.dupBytes = Math.max(0, s.dupBytes - Math.max(0, acked - s.sndMss));
  }
  // Eifel (RFC 3522, Linux's tcp_packet_delayed): an ACK for new data echoing a timestamp
  // older than the first retransmission was sent for an original: the recovery was spurious.
  if (
    s.undoActive && s.retransTsSet && s.recovery !== RECOVERY_NONE && s.tsOn &&
    seg.hasTimestamp && seg.tsEcr !== 0 && seqLt(seg.tsEcr, s.retransTs)
  ) undoRecovery(e, s);
  // Loss recovery progress.
  if (s.recovery === RECOVERY_FAST) {
    if (seqGe(seg.ack, s.recoverySeq)) {
      recoveryEnded(s);
      s.recovery = RECOVERY_NONE;
      s.dupAcks = 0;
      s.dupBytes = 0;
      s.cwnd = Math.max(Math.min(s.cwnd, s.ssthresh), s.sndMss);
      s.ccEpoch = -1;
    } else {
      // RFC 6937 DeliveredData: the change in SND.UNA plus the change in SACKed bytes, counted
      // after the cumulative ACK absorbed what it covers (else those bytes count twice).
      prrUpdate(s, acked + s.sm.sackedBytes - oldSacked);
      if (!s.sackOn) s.rxmitHead = true; // NewReno partial ACK (RFC 6582 §3.2 step 5)
      if (seqLt(s.highRxt, s.sndUna)) s.highRxt = s.sndUna;
    }
  } else {
    s.dupAcks = 0;
    if (s.recovery === RECOVERY_RTO) {
      if (seqGe(seg.ack, s.recoverySeq)) s.recovery = RECOVERY_NONE;
      else if (seqLt(s.highRxt, s.sndUna)) s.highRxt = s.sndUna;
    }
    // Was cwnd the limit? Judged on the largest flight of the last round trip, not on this
    // ACK's: a burst of ACKs handled before any output shrinks the flight ACK by ACK, and
    // would stop the window's growth after the first two (Linux's tcp_is_cwnd_limited: in
    // slow start, half the window used is enough).
    const used = Math.max(flightBefore, s.maxFlight, s.maxFlightPrev);
    const limited = s.cwnd < s.ssthresh ? s.cwnd < 2 * used : used + 3 * s.sndMss >= s.cwnd;
    s.cc.onAck(s, acked, now, limited);
    if (seqGe(s.sndUna, s.maxFlightEnd)) {
      s.maxFlightEnd = s.sndNxt;
      s.maxFlightPrev = s.maxFlight;
      s.maxFlight = seqDiff(s.sndNxt, s.sndUna);
    }
  }
  // Retransmission timer (RFC 6298 §5.2, 5.3), and the tail loss probe before it.
  s.rtoAt = s.sndUna === s.sndNxt ? 0 : now + s.rto;
  if (s.sackOn && s.sm.count > 0 && (s.sm.flags(0) & SM_SACKED) !== 0) {
    // The ACK stops at data the peer SACKed: it has dropped what it held out of order
    // (reneging, RFC 2018 §8). Give it a moment (a late ACK may follow), then time out, which
    // forgets the scoreboard and resends from SND.UNA (Linux's tcp_check_sack_reneging).
    e.counters[K.C_SACK_RENEGING]++;
    s.rtoAt = now + Math.max(s.srtt / 2, 10);
  }
  armPto(e, s);
  arm(e, s);
  if (dataAcked > 0) e.event(s, EV_WRITABLE);
  queueOut(e, s);
}

/**
 * Data that arrived twice: the next ACK reports it in a D-SACK block (RFC 2883), which tells
 * the sender a retransmission was spurious (it undoes its window reduction) and that the
 * network reorders (it widens its reordering window).
 */
function duplicate(s: TcpSocket, l: number, r: number): void {
  if (!s.sackOn || !seqLt(l, r)) return;
  s.dsackOutLeft = l;
  s.dsackOutRight = r;
}

/** Steps 7 and 8: payload and FIN. `synSkip` is 1 when the segment also carried our SYN. */
export function processText(e: TcpEngine, s: TcpSocket, seg: TcpSegment, synSkip: number): void {
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
        duplicate(s, seq, (seq + dLen) >>> 0);
        dLen = 0;
        e.counters[K.C_SPURIOUS_DATA]++;
        s.ackNow = true;
      } else {
        duplicate(s, seq, s.rcvNxt);
        seq = s.rcvNxt;
        dOff += d;
        dLen -= d;
      }
    }
  }
  let ackNow = false;
  if (dLen > 0 && s.orphan) {
    // New data after close(): reset, like Linux.
    sendRst(e, s);
    e.destroy(s);
    return;
  }
  if (dLen > 0) {
    if (dLen > s.rcvMss && dLen <= 65535) s.rcvMss = dLen;
    // Quick ACKs for the first data of a connection, and for data after an idle spell
    // longer than the RTO: the peer is in slow start and waits on every ACK (Linux's
    // tcp_event_data_recv / tcp_incr_quickack: up to 16, half the window's segments).
    if (e.now - s.lastDataInAt > s.rto) {
      const n = Math.floor(s.rcvCap / (2 * s.rcvMss));
      s.quickAcks = Math.max(s.quickAcks, Math.min(MAX_QUICKACKS, n < 2 ? 2 : n));
    }
    s.lastDataInAt = e.now;
    const off = seqDiff(seq, s.rcvNxt);
    const room = s.rx.writable() - off;
    if (room < dLen) {
      dLen = room > 0 ? room : 0;
      ackNow = true;
    }
    if (dLen > 0) {
      if (off === 0) {
        // The fast path copied (and verified) the payload at input: publish it as it is.
        if (e.placed === s && e.placedLen === dLen) e.placed = null;
        else s.rx.copyIn(0, e.inBuf, dOff, dLen);
        let adv = dLen;
        const had = s.ofo.count;
        while (s.ofo.count > 0 && seqLe(s.ofo.left(0), (s.rcvNxt + adv) >>> 0)) {
          const edge = seqDiff(s.ofo.right(0), s.rcvNxt);
          if (edge > adv) adv = edge;
          s.ofo.removeFirst();
        }
        if (had > 0) ackNow = true; // filled a hole: ACK at once (RFC 5681 §4.2)
        s.rx.publish(adv);
        s.rcvNxt = (s.rcvNxt + adv) >>> 0;
        rcvRttMeasure(e, s, seg);
        e.event(s, EV_READABLE);
        if (!ackNow) {
          // Quick ACKs while the peer is in slow start; then an ACK at the end of the round
          // for two full segments or more, and within the round every STRETCH_ACK_SEGS; a
          // lone small segment waits for the delayed-ACK timer (RFC 1122 4.2.3.2).
          const unacked = seqDiff(s.rcvNxt, s.lastAckSent);
          if (s.quickAcks > 0) {
            s.quickAcks--;
            ackNow = true;
          } else if (unacked >= STRETCH_ACK_SEGS * s.rcvMss) ackNow = true;
          else if (unacked >= 2 * s.rcvMss) ackLater(e, s);
          else if (s.dackAt === 0) {
            s.dackAt = e.now + e.dackMs;
            arm(e, s);
          }
        }
      } else {
        const end = (seq + dLen) >>> 0;
        // A duplicate of what is held out of order: D-SACK it; adding the range again makes
        // the one that holds it the most recent, so it follows as the second block (§4).
        if (s.ofo.covers(seq, end)) duplicate(s, seq, end);
        if (s.ofo.add(seq, end)) {
          s.rx.copyIn(off, e.inBuf, dOff, dLen);
          s.ofoBytes += dLen;
          e.counters[K.C_OFO_BYTES] += dLen;
        } else e.counters[K.C_DROP_OFO_FULL]++;
        ackNow = true; // out of order: duplicate ACK with SACK at once
      }
    }
  }
  if (
    hasFin &&
    (st === ESTABLISHED || st === FIN_WAIT_1 || st === FIN_WAIT_2 || st === SYN_RECEIVED)
  ) {
    if (seqGe(finSeq, s.rcvNxt) && seqDiff(finSeq, s.rcvNxt) <= rcvWnd(s) + 1) {
      s.rcvFinPending = true;
      s.rcvFinSeq = finSeq;
    }
    ackNow = true;
  }
  if (s.rcvFinPending && !s.rcvFin && s.rcvFinSeq === s.rcvNxt) consumeFin(e, s);
  else if (hasFin && s.state === TIME_WAIT) ackNow = true; // the wait is the record's (timewait.ts)
  if (s.rcvFin || hasFin) {
    if (ackNow) ackLater(e, s); // with our FIN if the application closes at once
  } else if (ackNow) ackImmediately(e, s);
}

/** Linux's TCP_MAX_QUICKACKS. */
const MAX_QUICKACKS = 16;
/**
 * Outside quick-ACK mode, the most full segments one ACK covers. In-order data is ACKed once
 * per poll round (after the application's reads, so the ACK carries their window), and
 * within a round at least every this many segments. Linux's receiver stretches its ACKs the
 * same way (per GRO super-packet, or per read of the application: measured on this wire, a
 * Linux receiver ACKed a bulk flow once per 18 segments), and an ACK per two segments cost
 * the sending host a softirq round per ACK: bulk discard from a Linux sender went from
 * 185 to 237 MB/s through the forwarders, 360 to 420 MB/s on the direct link, when the
 * bridge stopped ACKing every second segment. While the peer is in slow start (the first
 * segments, and after idle) every segment is still ACKed at once.
 */
const STRETCH_ACK_SEGS = 16;

/**
 * Sends an ACK from the input path, not at the end of the poll round: within a burst received
 * in one round, a quick ACK per segment while the peer is in slow start, one per
 * STRETCH_ACK_SEGS after that, and one per out-of-order segment (RFC 5681 §4.2), so that the
 * peer keeps its clock.
 */
function ackImmediately(e: TcpEngine, s: TcpSocket): void {
  s.ackNow = true;
  emit(e, s, seqDiff(s.sndNxt, s.sndUna), 0, TCP_ACK, false); // on no buffer, the flush sends it
}

export function consumeFin(e: TcpEngine, s: TcpSocket): void {
  s.rcvFin = true;
  s.rcvFinPending = false;
  s.rcvNxt = (s.rcvNxt + 1) >>> 0;
  s.ofo.clear();
  e.event(s, EV_READABLE | EV_PEER_CLOSED);
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
      enterTimeWait(e, s);
      break;
  }
  ackLater(e, s);
}

export function enterTimeWait(e: TcpEngine, s: TcpSocket): void {
  s.state = TIME_WAIT;
  e.event(s, EV_CLOSED);
  // The wait goes on as a small record; the socket leaves the table (timewait.ts).
  timeWaitEnter(e, s);
}
