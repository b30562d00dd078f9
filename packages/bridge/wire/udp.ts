/**
 * UDP (RFC 768): a checked view. The bridge offloads TCP only; UDP to the bridge's address is
 * validated and counted, so the view exists for counters today and for services later.
 *
 * @module
 */
import { checksumAdd, checksumAddPseudoV4, checksumFinish } from "./checksum.ts";
import { IP_PROTO_UDP } from "./ipv4.ts";

export const UDP_HEADER_LEN = 8;

/** A reusable, checked view of a UDP datagram. */
export class UdpDatagram {
  buf: Uint8Array = new Uint8Array(0);
  offset = 0;
  length = 0;

  /**
   * False when the datagram is shorter than its header, its length field disagrees with the
   * IP payload, or its checksum (when present) is wrong.
   */
  wrap(buf: Uint8Array, off: number, len: number, src: number, dst: number): boolean {
    this.buf = buf;
    this.offset = off;
    if (len < UDP_HEADER_LEN || off + len > buf.length) return false;
    const declared = (buf[off + 4] << 8) | buf[off + 5];
    if (declared < UDP_HEADER_LEN || declared > len) return false;
    this.length = declared;
    const wire = (buf[off + 6] << 8) | buf[off + 7];
    if (wire === 0) return true; // the sender did not compute one (allowed over IPv4)
    const sum = checksumAdd(
      checksumAddPseudoV4(0, src, dst, IP_PROTO_UDP, declared),
      buf,
      off,
      declared,
    );
    return checksumFinish(sum) === 0;
  }

  get srcPort(): number {
    return (this.buf[this.offset] << 8) | this.buf[this.offset + 1];
  }

  get dstPort(): number {
    return (this.buf[this.offset + 2] << 8) | this.buf[this.offset + 3];
  }

  get payloadOffset(): number {
    return this.offset + UDP_HEADER_LEN;
  }

  get payloadLength(): number {
    return this.length - UDP_HEADER_LEN;
  }
}
