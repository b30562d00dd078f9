/**
 * TCP header (RFC 9293 §3.1) and options (RFC 9293 MSS, RFC 7323 window scale and timestamps,
 * RFC 2018 SACK): a stateless view over bytes.
 *
 * Two shapes, as elsewhere in `wire/`: free functions that read or write one field at an offset
 * (the engine's hot path uses them directly), and {@linkcode TcpSegment}, the parsed meaning of
 * one segment, which the caller allocates once and reuses: `parse` never allocates and never
 * throws on hostile bytes, `emit` writes into a buffer the caller owns.
 *
 * @example
 * ```ts
 * import { TcpSegment, TCP_SYN, tcpSetChecksum, tcpChecksumOk } from "./tcp.ts";
 * const seg = new TcpSegment();
 * seg.srcPort = 40000; seg.dstPort = 80; seg.seq = 1; seg.flags = TCP_SYN; seg.window = 65535;
 * seg.mss = 1460; seg.wscale = 7; seg.sackPermitted = true;
 * const buf = new Uint8Array(64);
 * const len = seg.emit(buf, 0);
 * tcpSetChecksum(buf, 0, len, 0x0a000001, 0x0a000002);
 * if (!tcpChecksumOk(buf, 0, len, 0x0a000001, 0x0a000002)) throw new Error("bad sum");
 * const back = new TcpSegment();
 * if (back.parse(buf, 0, len) !== 0 || back.mss !== 1460) throw new Error("bad parse");
 * ```
 * @module
 */

import { checksumAdd, checksumAddPseudoV4, checksumFinish } from "./checksum.ts";

/** IP protocol number of TCP. */
export const IPPROTO_TCP = 6;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

/** Minimum header length (no options). */
export const TCP_HEADER_LEN = 20;
/** Maximum header length (data offset 15). */
export const TCP_MAX_HEADER_LEN = 60;

export const TCPOPT_EOL = 0;
export const TCPOPT_NOP = 1;
export const TCPOPT_MSS = 2;
export const TCPOPT_WSCALE = 3;
export const TCPOPT_SACK_PERMITTED = 4;
export const TCPOPT_SACK = 5;
export const TCPOPT_TIMESTAMP = 8;

/** Parse results: 0 is success, the rest name why a segment was rejected. */
export const TCP_OK = 0;
export const TCP_ERR_SHORT = 1;
export const TCP_ERR_DATA_OFFSET = 2;

/** Largest RFC 7323 window shift. */
export const TCP_MAX_WSCALE = 14;

// ---- field access at an offset (no allocation) ----

export function tcpSrcPort(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}
export function tcpDstPort(b: Uint8Array, o: number): number {
  return (b[o + 2] << 8) | b[o + 3];
}
export function tcpSeq(b: Uint8Array, o: number): number {
  return ((b[o + 4] << 24) | (b[o + 5] << 16) | (b[o + 6] << 8) | b[o + 7]) >>> 0;
}
export function tcpAck(b: Uint8Array, o: number): number {
  return ((b[o + 8] << 24) | (b[o + 9] << 16) | (b[o + 10] << 8) | b[o + 11]) >>> 0;
}
/** Header length in bytes (data offset times four). */
export function tcpHeaderLen(b: Uint8Array, o: number): number {
  return (b[o + 12] >> 4) << 2;
}
export function tcpFlags(b: Uint8Array, o: number): number {
  return b[o + 13];
}
export function tcpWindow(b: Uint8Array, o: number): number {
  return (b[o + 14] << 8) | b[o + 15];
}
export function tcpChecksumField(b: Uint8Array, o: number): number {
  return (b[o + 16] << 8) | b[o + 17];
}

/** Writes a 32-bit big-endian value. */
export function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

/** Writes a 16-bit big-endian value. */
export function put16(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 8;
  b[o + 1] = v;
}

/**
 * Writes the fixed 20 bytes of a header; `hdrLen` includes options (a multiple of 4). The
 * checksum and urgent pointer are zeroed.
 */
export function tcpWriteHeader(
  b: Uint8Array,
  o: number,
  srcPort: number,
  dstPort: number,
  seq: number,
  ack: number,
  hdrLen: number,
  flags: number,
  window: number,
): void {
  b[o] = srcPort >>> 8;
  b[o + 1] = srcPort;
  b[o + 2] = dstPort >>> 8;
  b[o + 3] = dstPort;
  b[o + 4] = seq >>> 24;
  b[o + 5] = seq >>> 16;
  b[o + 6] = seq >>> 8;
  b[o + 7] = seq;
  b[o + 8] = ack >>> 24;
  b[o + 9] = ack >>> 16;
  b[o + 10] = ack >>> 8;
  b[o + 11] = ack;
  b[o + 12] = (hdrLen >> 2) << 4;
  b[o + 13] = flags;
  b[o + 14] = window >>> 8;
  b[o + 15] = window;
  b[o + 16] = 0;
  b[o + 17] = 0;
  b[o + 18] = 0;
  b[o + 19] = 0;
}

/** Checksum of a TCP segment (header + payload, `len` bytes) with the IPv4 pseudo-header. */
export function tcpChecksum(b: Uint8Array, o: number, len: number, src: number, dst: number) {
  const s = checksumAddPseudoV4(0, src, dst, IPPROTO_TCP, len);
  return checksumFinish(checksumAdd(s, b, o, len));
}

/** Computes and stores the checksum of a segment whose checksum field may hold anything. */
export function tcpSetChecksum(b: Uint8Array, o: number, len: number, src: number, dst: number) {
  b[o + 16] = 0;
  b[o + 17] = 0;
  const c = tcpChecksum(b, o, len, src, dst);
  b[o + 16] = c >>> 8;
  b[o + 17] = c;
}

/**
 * As `tcpSetChecksum`, for a segment whose payload (the `payloadLen` bytes after `hdrLen` header
 * bytes, a multiple of 4) was summed as it was copied in: `payloadSum` is its `checksumAdd`
 * partial sum, so only the header is read here.
 */
export function tcpSetChecksumSummed(
  b: Uint8Array,
  o: number,
  hdrLen: number,
  payloadLen: number,
  payloadSum: number,
  src: number,
  dst: number,
) {
  b[o + 16] = 0;
  b[o + 17] = 0;
  const s = checksumAddPseudoV4(payloadSum, src, dst, IPPROTO_TCP, hdrLen + payloadLen);
  const c = checksumFinish(checksumAdd(s, b, o, hdrLen));
  b[o + 16] = c >>> 8;
  b[o + 17] = c;
}

/** True when the checksum of a received segment verifies (sums to zero with the pseudo-header). */
export function tcpChecksumOk(
  b: Uint8Array,
  o: number,
  len: number,
  src: number,
  dst: number,
): boolean {
  return tcpChecksum(b, o, len, src, dst) === 0;
}

/**
 * As `tcpChecksumOk`, for a received segment of `len` bytes summed elsewhere (as its payload
 * was copied into a receive ring): `sum` is `checksumAdd(0, ...)` of all its bytes, header and
 * payload, folded or not.
 */
export function tcpSumOk(sum: number, len: number, src: number, dst: number): boolean {
  return checksumFinish(checksumAddPseudoV4(sum, src, dst, IPPROTO_TCP, len)) === 0;
}

// ---- option writers: each returns the offset after what it wrote ----

export function optWriteMss(b: Uint8Array, o: number, mss: number): number {
  b[o] = TCPOPT_MSS;
  b[o + 1] = 4;
  b[o + 2] = mss >>> 8;
  b[o + 3] = mss;
  return o + 4;
}

/** NOP + window scale (4 bytes, keeps alignment). */
export function optWriteWscale(b: Uint8Array, o: number, shift: number): number {
  b[o] = TCPOPT_NOP;
  b[o + 1] = TCPOPT_WSCALE;
  b[o + 2] = 3;
  b[o + 3] = shift;
  return o + 4;
}

/** SACK-permitted + timestamps, Linux's 12-byte layout. */
export function optWriteSackPermTs(b: Uint8Array, o: number, val: number, ecr: number): number {
  b[o] = TCPOPT_SACK_PERMITTED;
  b[o + 1] = 2;
  b[o + 2] = TCPOPT_TIMESTAMP;
  b[o + 3] = 10;
  put32(b, o + 4, val);
  put32(b, o + 8, ecr);
  return o + 12;
}

/** NOP NOP + SACK-permitted (4 bytes), for when timestamps are off. */
export function optWriteSackPerm(b: Uint8Array, o: number): number {
  b[o] = TCPOPT_NOP;
  b[o + 1] = TCPOPT_NOP;
  b[o + 2] = TCPOPT_SACK_PERMITTED;
  b[o + 3] = 2;
  return o + 4;
}

/** NOP NOP + timestamps (12 bytes). */
export function optWriteTs(b: Uint8Array, o: number, val: number, ecr: number): number {
  b[o] = TCPOPT_NOP;
  b[o + 1] = TCPOPT_NOP;
  b[o + 2] = TCPOPT_TIMESTAMP;
  b[o + 3] = 10;
  put32(b, o + 4, val);
  put32(b, o + 8, ecr);
  return o + 12;
}

/** NOP NOP + SACK with `n` blocks taken from `blocks` (pairs of left, right edges). */
export function optWriteSack(b: Uint8Array, o: number, blocks: Uint32Array, n: number): number {
  b[o] = TCPOPT_NOP;
  b[o + 1] = TCPOPT_NOP;
  b[o + 2] = TCPOPT_SACK;
  b[o + 3] = 2 + 8 * n;
  let p = o + 4;
  for (let i = 0; i < n; i++) {
    put32(b, p, blocks[2 * i]);
    put32(b, p + 4, blocks[2 * i + 1]);
    p += 8;
  }
  return p;
}

/**
 * One segment's meaning. Allocate once, reuse for every `parse`: option fields are reset by
 * each parse (`mss`, `wscale` are -1 when absent).
 */
export class TcpSegment {
  srcPort = 0;
  dstPort = 0;
  seq = 0;
  ack = 0;
  flags = 0;
  window = 0;
  urgent = 0;
  /** Header length in bytes, options included. */
  hdrLen = TCP_HEADER_LEN;
  /** Offset of the payload in the parsed buffer. */
  payloadOff = 0;
  payloadLen = 0;
  mss = -1;
  wscale = -1;
  sackPermitted = false;
  hasTimestamp = false;
  tsVal = 0;
  tsEcr = 0;
  /** Number of SACK blocks (at most 4); their edges are in `sack` as (left, right) pairs. */
  sackCount = 0;
  readonly sack: Uint32Array = new Uint32Array(8);
  /** An option was malformed and ignored (with those after it, if its length was bad). */
  badOptions = false;

  /**
   * Parses `len` bytes at `off` (header + payload). Returns TCP_OK or a TCP_ERR_* code; the
   * checksum is not checked here (see {@linkcode tcpChecksumOk}). Unknown options are skipped;
   * malformed ones are ignored and flagged in `badOptions`, never fatal to the segment, as
   * Linux's tcp_parse_options does: an option with the wrong length for its kind is skipped,
   * one whose length is impossible ends the parse.
   */
  parse(b: Uint8Array, off: number, len: number): number {
    if (len < TCP_HEADER_LEN || off < 0 || off + len > b.length) return TCP_ERR_SHORT;
    const hl = tcpHeaderLen(b, off);
    if (hl < TCP_HEADER_LEN || hl > len) return TCP_ERR_DATA_OFFSET;
    this.srcPort = tcpSrcPort(b, off);
    this.dstPort = tcpDstPort(b, off);
    // The 32-bit fields are read here, not through tcpSeq/tcpAck: a number of 2^30 or more
    // returned by a call V8 did not inline into the caller is boxed as a heap number (16
    // bytes per field and segment; bench/tcp_engine.ts), stored into a field it is not.
    this.seq = ((b[off + 4] << 24) | (b[off + 5] << 16) | (b[off + 6] << 8) | b[off + 7]) >>> 0;
    this.ack = ((b[off + 8] << 24) | (b[off + 9] << 16) | (b[off + 10] << 8) | b[off + 11]) >>> 0;
    this.flags = b[off + 13];
    this.window = tcpWindow(b, off);
    this.urgent = (b[off + 18] << 8) | b[off + 19];
    this.hdrLen = hl;
    this.payloadOff = off + hl;
    this.payloadLen = len - hl;
    this.mss = -1;
    this.wscale = -1;
    this.sackPermitted = false;
    this.hasTimestamp = false;
    this.tsVal = 0;
    this.tsEcr = 0;
    this.sackCount = 0;
    this.badOptions = false;
    if (hl === TCP_HEADER_LEN) return TCP_OK;
    this.parseOptions(b, off + TCP_HEADER_LEN, off + hl);
    return TCP_OK;
  }

  private parseOptions(b: Uint8Array, p: number, end: number): void {
    const syn = (this.flags & TCP_SYN) !== 0;
    while (p < end) {
      const kind = b[p];
      if (kind === TCPOPT_EOL) break;
      if (kind === TCPOPT_NOP) {
        p++;
        continue;
      }
      if (p + 1 >= end) {
        this.badOptions = true;
        return;
      }
      const ol = b[p + 1];
      if (ol < 2 || p + ol > end) {
        this.badOptions = true;
        return;
      }
      switch (kind) {
        case TCPOPT_MSS:
          if (ol !== 4) this.badOptions = true;
          else if (syn) this.mss = (b[p + 2] << 8) | b[p + 3];
          break;
        case TCPOPT_WSCALE:
          // RFC 7323 §2.3: a shift above 14 is used as 14.
          if (ol !== 3) this.badOptions = true;
          else if (syn) this.wscale = b[p + 2] > TCP_MAX_WSCALE ? TCP_MAX_WSCALE : b[p + 2];
          break;
        case TCPOPT_SACK_PERMITTED:
          if (ol !== 2) this.badOptions = true;
          else if (syn) this.sackPermitted = true;
          break;
        case TCPOPT_TIMESTAMP:
          if (ol !== 10) {
            this.badOptions = true;
            break;
          }
          this.hasTimestamp = true;
          // Read here, not through tcpSeq, as `parse` reads SEG.SEQ.
          this.tsVal = ((b[p + 2] << 24) | (b[p + 3] << 16) | (b[p + 4] << 8) | b[p + 5]) >>> 0;
          this.tsEcr = ((b[p + 6] << 24) | (b[p + 7] << 16) | (b[p + 8] << 8) | b[p + 9]) >>> 0;
          break;
        case TCPOPT_SACK: {
          if (ol < 10 || ((ol - 2) & 7) !== 0) {
            this.badOptions = true;
            break;
          }
          const n = (ol - 2) >> 3;
          let q = p + 2;
          for (let i = 0; i < n && this.sackCount < 4; i++, q += 8) {
            const k = this.sackCount++;
            this.sack[2 * k] = tcpSeq(b, q - 4);
            this.sack[2 * k + 1] = tcpSeq(b, q);
          }
          break;
        }
        default:
          break;
      }
      p += ol;
    }
  }

  /** Length of the options `emit` would write, header included. */
  emitHeaderLen(): number {
    const syn = (this.flags & TCP_SYN) !== 0;
    let n = TCP_HEADER_LEN;
    if (syn && this.mss >= 0) n += 4;
    if (this.hasTimestamp) n += 12;
    else if (syn && this.sackPermitted) n += 4;
    if (syn && this.wscale >= 0) n += 4;
    if (this.sackCount > 0) n += 4 + 8 * this.sackCount;
    return n;
  }

  /**
   * Writes the header and its options at `off` (the payload, if any, is the caller's to place
   * after it). Returns the header length. The checksum field is zeroed.
   */
  emit(b: Uint8Array, off: number): number {
    const syn = (this.flags & TCP_SYN) !== 0;
    const hl = this.emitHeaderLen();
    tcpWriteHeader(
      b,
      off,
      this.srcPort,
      this.dstPort,
      this.seq,
      this.ack,
      hl,
      this.flags,
      this.window,
    );
    put16(b, off + 18, this.urgent);
    let p = off + TCP_HEADER_LEN;
    if (syn && this.mss >= 0) p = optWriteMss(b, p, this.mss);
    if (this.hasTimestamp) {
      p = syn && this.sackPermitted
        ? optWriteSackPermTs(b, p, this.tsVal, this.tsEcr)
        : optWriteTs(b, p, this.tsVal, this.tsEcr);
    } else if (syn && this.sackPermitted) p = optWriteSackPerm(b, p);
    if (syn && this.wscale >= 0) p = optWriteWscale(b, p, this.wscale);
    if (this.sackCount > 0) p = optWriteSack(b, p, this.sack, this.sackCount);
    return hl;
  }

  /** Sequence space the segment occupies: payload plus one for SYN and one for FIN. */
  seqLen(): number {
    return this.payloadLen + (this.flags & TCP_SYN ? 1 : 0) + (this.flags & TCP_FIN ? 1 : 0);
  }

  /** Clears everything, as a base for building a segment by hand. */
  reset(): this {
    this.srcPort =
      this.dstPort =
      this.seq =
      this.ack =
      this.flags =
      this.window =
        0;
    this.urgent = 0;
    this.hdrLen = TCP_HEADER_LEN;
    this.payloadOff = this.payloadLen = 0;
    this.mss = this.wscale = -1;
    this.sackPermitted = this.hasTimestamp = false;
    this.tsVal = this.tsEcr = 0;
    this.sackCount = 0;
    return this;
  }
}

// ---- 32-bit sequence arithmetic (RFC 9293 §3.4) ----

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0;
}
export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}
export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}
/** `a - b` as a signed 32-bit distance. */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0;
}
/** `a + n` modulo 2^32, as an unsigned number. */
export function seqAdd(a: number, n: number): number {
  return (a + n) >>> 0;
}
