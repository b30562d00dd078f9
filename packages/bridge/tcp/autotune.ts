/**
 * Buffers that follow the flow, as Linux's autotuning does (tcp_rmem / tcp_wmem): every
 * engine-owned socket starts with small rings (engine `rcvBuf`, `sndBuf`) whose backing grows
 * only as bytes arrive (_mem_stream.ts), and whose capacity grows toward `rcvBufMax` /
 * `sndBufMax` when the flow shows it needs more:
 *
 * - Receive (Linux's dynamic right-sizing, tcp_rcv_space_adjust; Fisk and Feng, "Dynamic
 *   right-sizing in TCP", 2001): once per receiver-side RTT, the bytes the application read
 *   during that RTT are what the sender managed to deliver through the window. If that beat the
 *   previous RTT's figure, the sender is growing (or window-bound): the ring is raised to twice
 *   what was read plus a cushion of 16 segments, and more in proportion to the growth (a sender
 *   in slow start doubles per RTT, and the window we advertise now is used an RTT later). An
 *   application that does not read moves nothing, so its ring never grows.
 * - Send (Linux's tcp_sndbuf_expand on SOCK_NOSPACE): when the application finds the ring
 *   full, the ring is raised to twice the congestion window (a window in flight and one queued
 *   behind it), so the buffer never caps a congestion window that is still growing, and a
 *   flow limited by the network does not buy memory it cannot use.
 *
 * The receiver's RTT comes from the timestamps the sender echoes (RFC 7323 §4: the delay from
 * our segment to the data it released), or without timestamps from the time one window takes
 * to arrive, as Linux's tcp_rcv_rtt_measure_ts and tcp_rcv_rtt_measure estimate it.
 *
 * Window scaling is chosen at the SYN for the largest the receive ring may become (RFC 7323
 * §2.2: the scale is fixed for the connection), and the capacity only grows, so the right edge
 * of the window never moves left (RFC 9293 §3.8.6).
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import { seqDiff, seqGe, type TcpSegment } from "../wire/tcp.ts";
import type { TcpSocket } from "./socket.ts";
import { MemStream } from "./_mem_stream.ts";

/**
 * The shortest receiver RTT the measurement interval uses: timestamps tick in milliseconds,
 * so a shorter delay reads as 0 or 1 (Linux's jiffies-based estimate had the same floor).
 */
export const RCV_RTT_FLOOR_MS = 1;

/** The window scale shift that lets a 16-bit window field offer `cap` bytes (RFC 7323 §2.3). */
export function wscaleFor(cap: number): number {
  let ws = 0;
  while (ws < 14 && Math.floor(cap / 2 ** ws) > 65535) ws++;
  return ws;
}

/** The receive ring's largest capacity: a MemStream's limit, another stream's capacity. */
export function rcvCapLimit(s: TcpSocket): number {
  return s.rx instanceof MemStream ? s.rx.limit : s.rcvCap;
}

/**
 * A receiver RTT sample from a segment that advanced RCV.NXT (called by input after in-order
 * data). With timestamps: the age of the TSval the sender echoes. Without: the time from
 * offering a window to RCV.NXT reaching its edge.
 */
export function rcvRttMeasure(e: TcpEngine, s: TcpSocket, seg: TcpSegment): void {
  const now = e.now;
  if (s.tsOn && seg.hasTimestamp && seg.tsEcr !== 0) {
    const d = seqDiff((now + s.tsOffset) >>> 0, seg.tsEcr);
    // A stale or forged echo (negative, or older than any RTT we would act on) is ignored.
    if (d < 0 || d > 60000) return;
    // Smoothed by 1/8 as SRTT is (RFC 6298); a smaller sample is taken at once.
    s.rcvRtt = s.rcvRtt === 0 || d < s.rcvRtt ? d : s.rcvRtt + (d - s.rcvRtt) / 8;
    return;
  }
  if (s.rcvRttAt !== 0 && !seqGe(s.rcvNxt, s.rcvRttSeq)) return;
  if (s.rcvRttAt !== 0) {
    const d = now - s.rcvRttAt;
    // A window's worth may arrive in less than an RTT but never later: keep the smallest.
    if (s.rcvRtt === 0 || d < s.rcvRtt) s.rcvRtt = d;
  }
  s.rcvRttSeq = (s.rcvNxt + Math.max(0, seqDiff(s.rcvAdvEdge, s.rcvNxt))) >>> 0;
  s.rcvRttAt = now > 0 ? now : 1e-3;
}

/**
 * The application read from the receive ring: once per receiver RTT, compare what it read in
 * that RTT with the previous RTT and raise the ring's capacity if the flow grew (DRS). The
 * caller then offers the new space (notifyRx).
 */
export function rcvSpaceAdjust(e: TcpEngine, s: TcpSocket): void {
  const rx = s.rx;
  if (!(rx instanceof MemStream)) return;
  const now = e.now;
  const copiedTotal = rx.consumed();
  if (s.rcvSpace === 0) {
    // The first read starts the measurement: the first RTT's yardstick is the initial window
    // (ten segments, RFC 6928), as Linux's tcp_init_buffer_space takes it.
    s.rcvSpace = Math.min(s.rcvCap, 10 * s.rcvMss);
    s.rcvSpaceCopied = copiedTotal;
    s.rcvSpaceAt = now;
    return;
  }
  const rtt = Math.max(s.rcvRtt > 0 ? s.rcvRtt : s.srtt, RCV_RTT_FLOOR_MS);
  if (now - s.rcvSpaceAt < rtt) return;
  const copied = copiedTotal - s.rcvSpaceCopied;
  s.rcvSpaceCopied = copiedTotal;
  s.rcvSpaceAt = now;
  if (copied <= s.rcvSpace) return;
  if (e.autotune && rx.capacity < rx.limit) {
    // Twice what one RTT delivered lets a sender in slow start double once more, or recover
    // a loss in the next RTT; 16 segments absorb jitter. The power-of-two rounding of the ring
    // adds up to as much again. Linux adds a term in proportion to the RTT-on-RTT growth; in
    // this engine's measurement that term took an application reading a steady 8 MB/s over a
    // 10 ms RTT (80 KiB per RTT) to a 1 MiB ring, where 256 KiB carries it.
    let win = 2 * copied + 16 * s.rcvMss;
    // At most two doublings a step, however long the measurement ran.
    if (win > 4 * rx.capacity) win = 4 * rx.capacity;
    if (win > rx.capacity) {
      s.rcvCap = rx.grow(win);
      s.rcvBufGrows++;
    }
  }
  s.rcvSpace = copied;
}

/**
 * The application found the send ring full (SOCK_NOSPACE): make room for twice the congestion
 * window if the ring is smaller than that. Returns true if it grew.
 */
export function sndBufExpand(e: TcpEngine, s: TcpSocket): boolean {
  const tx = s.tx;
  if (!e.autotune || !(tx instanceof MemStream) || tx.capacity >= tx.limit) return false;
  // Before the first ACK cwnd is its initial ten segments (RFC 6928).
  const cwnd = Math.max(s.cwnd, 10 * s.sndMss);
  const want = 2 * cwnd;
  if (want <= tx.capacity) return false;
  tx.grow(want);
  s.sndBufGrows++;
  return true;
}

/** How often `trimQuietBuffers` looks: a ring is trimmed after one to two of these quiet. */
export const TRIM_INTERVAL_MS = 1000;

/**
 * Frees the memory behind the in-memory rings of connections that went quiet: a ring empty at
 * two sweeps in a row with nothing through it between. Every connection's send map (any kind of
 * ring) goes back toward its first size when its flight stayed small since the previous sweep
 * (SendMap.shrinkIfSmall: a flight of 4 MiB in 1448-byte segments grew it to 4,096 records,
 * 68 KiB, kept until the connection closed). Meant for the bridge's idle rounds, at most once
 * per TRIM_INTERVAL_MS (one walk of the connection table); never on the data path. Returns the
 * bytes freed (the caller may then ask for a collection: V8 frees an ArrayBuffer's memory only
 * when it collects it).
 */
export function trimQuietBuffers(e: TcpEngine, nowMs: number): number {
  if (nowMs - e.trimAt < TRIM_INTERVAL_MS) return 0;
  e.trimAt = nowMs;
  let freed = 0;
  e.eachSocket((s) => {
    if (s.tx instanceof MemStream) freed += s.tx.trimIfQuiet();
    // Out-of-order bytes live past the producer index: keep the ring while any wait.
    if (s.rx instanceof MemStream && s.ofo.count === 0) freed += s.rx.trimIfQuiet();
    freed += s.sm.shrinkIfSmall();
  });
  return freed;
}
