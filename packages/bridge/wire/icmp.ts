/**
 * ICMPv4 (RFC 792): a checked view and the echo reply written in place of a request.
 *
 * @module
 */
import { checksumAdd, checksumFinish } from "./checksum.ts";

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_ECHO_REQUEST = 8;
/** Destination unreachable code: fragmentation needed and DF set (RFC 1191). */
export const ICMP_FRAG_NEEDED = 4;
/** Smallest ICMP message: type, code, checksum and four bytes of rest-of-header. */
export const ICMP_HEADER_LEN = 8;

/** A reusable, checked view of an ICMP message. */
export class IcmpMessage {
  buf: Uint8Array = new Uint8Array(0);
  offset = 0;
  length = 0;

  /** False when the message is too short or its checksum is wrong. */
  wrap(buf: Uint8Array, off: number, len: number): boolean {
    this.buf = buf;
    this.offset = off;
    this.length = len;
    if (len < ICMP_HEADER_LEN || off + len > buf.length) return false;
    return checksumFinish(checksumAdd(0, buf, off, len)) === 0;
  }

  get type(): number {
    return this.buf[this.offset];
  }

  get code(): number {
    return this.buf[this.offset + 1];
  }

  get echoIdent(): number {
    return (this.buf[this.offset + 4] << 8) | this.buf[this.offset + 5];
  }

  get echoSequence(): number {
    return (this.buf[this.offset + 6] << 8) | this.buf[this.offset + 7];
  }

  /** "Fragmentation needed": the next hop's MTU (RFC 1191 §4). */
  get nextHopMtu(): number {
    return (this.buf[this.offset + 6] << 8) | this.buf[this.offset + 7];
  }

  /** Offset of the quoted datagram (its IPv4 header) in an error message. */
  get quoteOffset(): number {
    return this.offset + ICMP_HEADER_LEN;
  }
}

/**
 * Writes an echo reply at `off` that answers the request `req` (same identifier, sequence and
 * data). `buf` and `req.buf` may be different memory: the request is read, the reply written.
 * Returns the reply's length.
 */
export function emitEchoReply(buf: Uint8Array, off: number, req: IcmpMessage): number {
  const len = req.length;
  const src = req.buf, from = req.offset;
  for (let i = 0; i < len; i++) buf[off + i] = src[from + i];
  buf[off] = ICMP_ECHO_REPLY;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  const sum = checksumFinish(checksumAdd(0, buf, off, len));
  buf[off + 2] = sum >> 8;
  buf[off + 3] = sum & 0xff;
  return len;
}
