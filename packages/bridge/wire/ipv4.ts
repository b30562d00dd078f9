/**
 * IPv4 headers (RFC 791): a checked view, the header emitter, and address helpers.
 *
 * `Ipv4Packet.wrap` validates everything a receiver must before trusting a field: version,
 * IHL, total length against the frame, the header checksum, and fragmentation (the bridge
 * does not reassemble; fragments are dropped and counted). It returns a reason code instead
 * of throwing, so hostile frames cost a counter increment and nothing else.
 *
 * @module
 */
import { checksumAdd, checksumFinish } from "./checksum.ts";

/** Length of an IPv4 header without options. */
export const IPV4_HEADER_LEN = 20;
/** IP protocol numbers the bridge handles. */
export const IP_PROTO_ICMP = 1;
export const IP_PROTO_TCP = 6;
export const IP_PROTO_UDP = 17;

/** Why `Ipv4Packet.wrap` refused a packet; 0 means it is sound. */
export enum Ipv4Error {
  Ok = 0,
  Truncated = 1,
  BadVersion = 2,
  BadHeaderLength = 3,
  BadTotalLength = 4,
  BadChecksum = 5,
  Fragment = 6,
  BadSource = 7,
}

/** Names of the `Ipv4Error` codes, for counters and logs. */
export const IPV4_ERROR_NAMES = [
  "ok",
  "truncated",
  "bad-version",
  "bad-header-length",
  "bad-total-length",
  "bad-checksum",
  "fragment",
  "bad-source",
] as const;

/** A reusable, checked view of one IPv4 packet. */
export class Ipv4Packet {
  buf: Uint8Array = new Uint8Array(0);
  offset = 0;
  headerLength = 0;
  totalLength = 0;

  /**
   * Points the view at `len` bytes from `off` (Ethernet padding may follow the packet) and
   * validates the header.
   */
  wrap(buf: Uint8Array, off: number, len: number): Ipv4Error {
    this.buf = buf;
    this.offset = off;
    if (len < IPV4_HEADER_LEN || off + len > buf.length) return Ipv4Error.Truncated;
    const vihl = buf[off];
    if (vihl >> 4 !== 4) return Ipv4Error.BadVersion;
    const ihl = (vihl & 0xf) * 4;
    if (ihl < IPV4_HEADER_LEN || ihl > len) return Ipv4Error.BadHeaderLength;
    const total = (buf[off + 2] << 8) | buf[off + 3];
    if (total < ihl || total > len) return Ipv4Error.BadTotalLength;
    if (checksumFinish(checksumAdd(0, buf, off, ihl)) !== 0) return Ipv4Error.BadChecksum;
    // MF set or a non-zero fragment offset: part of a fragmented datagram.
    if ((buf[off + 6] & 0x3f) !== 0 || buf[off + 7] !== 0) return Ipv4Error.Fragment;
    const src0 = buf[off + 12];
    if (src0 === 0 || src0 === 127 || src0 >= 224) return Ipv4Error.BadSource;
    this.headerLength = ihl;
    this.totalLength = total;
    return Ipv4Error.Ok;
  }

  get protocol(): number {
    return this.buf[this.offset + 9];
  }

  get ttl(): number {
    return this.buf[this.offset + 8];
  }

  /** Source address as an unsigned 32-bit number. */
  get src(): number {
    return readU32(this.buf, this.offset + 12);
  }

  /** Destination address as an unsigned 32-bit number. */
  get dst(): number {
    return readU32(this.buf, this.offset + 16);
  }

  get payloadOffset(): number {
    return this.offset + this.headerLength;
  }

  get payloadLength(): number {
    return this.totalLength - this.headerLength;
  }
}

/**
 * Writes a 20-byte IPv4 header at `off` with its checksum (DF set, no options).
 * Returns the offset of the payload.
 */
export function emitIpv4(
  buf: Uint8Array,
  off: number,
  src: number,
  dst: number,
  protocol: number,
  payloadLength: number,
  ident: number,
  ttl = 64,
): number {
  const total = IPV4_HEADER_LEN + payloadLength;
  buf[off] = 0x45;
  buf[off + 1] = 0;
  buf[off + 2] = total >> 8;
  buf[off + 3] = total & 0xff;
  buf[off + 4] = (ident >> 8) & 0xff;
  buf[off + 5] = ident & 0xff;
  buf[off + 6] = 0x40; // DF: the bridge never fragments; PMTU discovery does the rest.
  buf[off + 7] = 0;
  buf[off + 8] = ttl;
  buf[off + 9] = protocol;
  buf[off + 10] = 0;
  buf[off + 11] = 0;
  writeU32(buf, off + 12, src);
  writeU32(buf, off + 16, dst);
  const sum = checksumFinish(checksumAdd(0, buf, off, IPV4_HEADER_LEN));
  buf[off + 10] = sum >> 8;
  buf[off + 11] = sum & 0xff;
  return off + IPV4_HEADER_LEN;
}

/** Reads a big-endian u32. */
export function readU32(buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}

/** Writes a big-endian u32. */
export function writeU32(buf: Uint8Array, off: number, value: number): void {
  buf[off] = value >>> 24;
  buf[off + 1] = (value >>> 16) & 0xff;
  buf[off + 2] = (value >>> 8) & 0xff;
  buf[off + 3] = value & 0xff;
}

/** Parses dotted-quad text into a u32; throws on anything else (configuration input). */
export function parseIpv4(text: string): number {
  const parts = text.split(".");
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new Error(`not an IPv4 address: ${text}`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0) >>> 0;
}

/** Formats a u32 as dotted-quad text. */
export function formatIpv4(addr: number): string {
  return `${addr >>> 24}.${(addr >>> 16) & 0xff}.${(addr >>> 8) & 0xff}.${addr & 0xff}`;
}

/** Parses "a.b.c.d/len" into an address and prefix length. */
export function parseCidr(text: string): { addr: number; prefix: number } {
  const [ip, len] = text.split("/");
  const prefix = len === undefined ? 32 : Number(len);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) {
    throw new Error(`bad prefix length in ${text}`);
  }
  return { addr: parseIpv4(ip), prefix };
}
