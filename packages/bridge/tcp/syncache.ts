/**
 * SYN cookies (as Linux and FreeBSD's tcp_syncache.c): a SYN-ACK that keeps no state, and the
 * ACK that creates the connection from it.
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import {
  optWriteMss,
  optWriteSackPermTs,
  optWriteTs,
  optWriteWscale,
  seqGt,
  TCP_ACK,
  TCP_FIN,
  TCP_SYN,
  type TcpSegment,
  tcpSetChecksum,
  tcpWriteHeader,
} from "../wire/tcp.ts";
import { CLOSED, ESTABLISHED, type TcpSocket } from "./socket.ts";
import * as K from "./counters.ts";
import { hash4 } from "./isn.ts";
import { established, processText, setMss, toAcceptQueue } from "./input.ts";

/** A cookie's time counter ticks every 64 s; a cookie is good for this period and the next. */
export const COOKIE_PERIOD_MS = 64000;
/** MSS values a cookie can encode (3 bits), as Linux's msstab. */
export const COOKIE_MSS = [536, 1220, 1440, 1460, 4312, 8960];
/** Window-scale field of a cookie timestamp meaning "no window scaling". */
export const TS_OPT_NO_WS = 0xf;

/**
 * The cookie for a SYN (our ISN): 5 bits of a 64 s clock, 3 bits naming the MSS, 24 bits of a
 * keyed hash of the 4-tuple, the peer's ISN, the clock and the MSS index (RFC 4987 §3.6).
 */
export function cookieMake(
  k0: number,
  k1: number,
  lip: number,
  lport: number,
  rip: number,
  rport: number,
  peerIsn: number,
  peerMss: number,
  nowMs: number,
): number {
  let mi = 0;
  while (mi + 1 < COOKIE_MSS.length && COOKIE_MSS[mi + 1] <= peerMss) mi++;
  const t = Math.floor(nowMs / COOKIE_PERIOD_MS) & 31;
  const h = hash4(k0, k1, lip, rip, (lport << 16) | rport, (peerIsn ^ (t | (mi << 5))) | 0);
  return ((t << 27) | (mi << 24) | (h & 0xffffff)) >>> 0;
}

/**
 * The MSS a cookie encodes if it is ours, for this 4-tuple and peer ISN, and at most one clock
 * period old; 0 if not.
 */
export function cookieCheck(
  k0: number,
  k1: number,
  lip: number,
  lport: number,
  rip: number,
  rport: number,
  peerIsn: number,
  cookie: number,
  nowMs: number,
): number {
  const t = cookie >>> 27;
  const mi = (cookie >>> 24) & 7;
  const cur = Math.floor(nowMs / COOKIE_PERIOD_MS) & 31;
  if (((cur - t) & 31) > 1 || mi >= COOKIE_MSS.length) return 0;
  const h = hash4(k0, k1, lip, rip, (lport << 16) | rport, (peerIsn ^ (t | (mi << 5))) | 0);
  return ((h ^ cookie) & 0xffffff) === 0 ? COOKIE_MSS[mi] : 0;
}

export function sendCookieSynAck(e: TcpEngine, l: TcpSocket, seg: TcpSegment): void {
  const c = e.counters;
  const lip = e.inDst;
  const rip = e.inSrc;
  const lport = seg.dstPort;
  const rport = seg.srcPort;
  const peerMss = seg.mss > 0 ? seg.mss : 536;
  const iss = cookieMake(e.k[2], e.k[3], lip, lport, rip, rport, seg.seq, peerMss, e.now);
  const link = e.link;
  const off = link.reserve();
  if (off < 0) {
    c[K.C_NO_BUFFER]++;
    return;
  }
  const b = link.buf;
  let p = optWriteMss(b, off + 20, Math.min(e.link.mtu - 40, 65535));
  const ts = e.tsEnabled && seg.hasTimestamp;
  const sack = e.sackEnabled && seg.sackPermitted;
  const ws = e.wsEnabled && seg.wscale >= 0;
  if (ts) {
    // The peer's options ride in the low bits of our timestamp (as Linux does).
    const opts = (ws ? seg.wscale : TS_OPT_NO_WS) | (sack ? 0x10 : 0) | 0x20;
    const nowTs = (e.now + e.tsOffsetTuple(lip, lport, rip, rport)) >>> 0;
    let v = ((nowTs & ~63) | opts) >>> 0;
    if (seqGt(v, nowTs)) v = (v - 64) >>> 0;
    p = sack ? optWriteSackPermTs(b, p, v, seg.tsVal) : optWriteTs(b, p, v, seg.tsVal);
    if (ws) p = optWriteWscale(b, p, l.rcvWscale);
  }
  const hl = p - off;
  const wnd = Math.min(l.rcvCap, 65535);
  tcpWriteHeader(b, off, lport, rport, iss, (seg.seq + 1) >>> 0, hl, TCP_SYN | TCP_ACK, wnd);
  tcpSetChecksum(b, off, hl, lip, rip);
  link.send(lip, rip, hl);
  c[K.C_SEGS_OUT]++;
  c[K.C_SYN_COOKIES_SENT]++;
}

/** An ACK to a listener: a valid cookie creates the connection. */
export function cookieAck(e: TcpEngine, l: TcpSocket, seg: TcpSegment): boolean {
  const c = e.counters;
  const lip = e.inDst;
  const rip = e.inSrc;
  const lport = seg.dstPort;
  const rport = seg.srcPort;
  const cookie = (seg.ack - 1) >>> 0;
  const peerIsn = (seg.seq - 1) >>> 0;
  const t = cookie >>> 27;
  const cur = Math.floor(e.now / COOKIE_PERIOD_MS) & 31;
  if (((cur - t) & 31) > 1) return false;
  const mss = cookieCheck(e.k[2], e.k[3], lip, lport, rip, rport, peerIsn, cookie, e.now);
  if (mss === 0) {
    c[K.C_SYN_COOKIES_BAD]++;
    return false;
  }
  if (l.acceptLen >= l.backlog) {
    c[K.C_DROP_BACKLOG]++;
    return true;
  }
  const s = e.newSocket(l.childOpts ?? {});
  s.localIp = lip;
  s.localPort = lport;
  s.remoteIp = rip;
  s.remotePort = rport;
  if (!e.attachStreams(s, l.childOpts)) {
    e.liveCount--;
    return true;
  }
  s.onEvent = l.childOpts?.onEvent ?? l.onEvent;
  s.childOpts = l.childOpts;
  s.iss = cookie;
  s.tsOffset = e.tsOffsetFor(s);
  const ecr = seg.tsEcr;
  s.tsOn = e.tsEnabled && seg.hasTimestamp && (ecr & 0x20) !== 0;
  if (s.tsOn) {
    s.tsRecent = seg.tsVal;
    s.tsRecentAt = e.now;
    s.sackOn = e.sackEnabled && (ecr & 0x10) !== 0;
    s.wsOn = e.wsEnabled && (ecr & 0xf) !== TS_OPT_NO_WS;
    s.sndWscale = s.wsOn ? Math.min(ecr & 0xf, 14) : 0;
    s.rcvWscale = s.wsOn ? l.rcvWscale : 0;
  }
  s.peerMss = mss;
  setMss(e, s);
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
  e.table.insert(s);
  c[K.C_SYN_COOKIES_OK]++;
  c[K.C_PASSIVE_OPENS]++;
  s.parent = l;
  l.synQueueLen++; // balanced by toAcceptQueue
  established(e, s);
  toAcceptQueue(e, s);
  if (s.state !== CLOSED && (seg.payloadLen > 0 || (seg.flags & TCP_FIN))) {
    processText(e, s, seg, 0);
  }
  return true;
}
