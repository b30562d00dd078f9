/**
 * ARP for IPv4 over Ethernet (RFC 826): a checked view and an emitter.
 *
 * @module
 */
import { readU32, writeU32 } from "./ipv4.ts";

/** Length of an Ethernet/IPv4 ARP packet. */
export const ARP_LEN = 28;
export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;

/** A reusable, checked view of an ARP packet. */
export class ArpPacket {
  buf: Uint8Array = new Uint8Array(0);
  offset = 0;

  /** False unless the bytes are an Ethernet/IPv4 ARP request or reply. */
  wrap(buf: Uint8Array, off: number, len: number): boolean {
    this.buf = buf;
    this.offset = off;
    if (len < ARP_LEN || off + len > buf.length) return false;
    const b = buf, o = off;
    const htype = (b[o] << 8) | b[o + 1];
    const ptype = (b[o + 2] << 8) | b[o + 3];
    const op = this.operation;
    return htype === 1 && ptype === 0x0800 && b[o + 4] === 6 && b[o + 5] === 4 &&
      (op === ARP_REQUEST || op === ARP_REPLY);
  }

  get operation(): number {
    return (this.buf[this.offset + 6] << 8) | this.buf[this.offset + 7];
  }

  /** Offset in `buf` of the sender hardware address. */
  get senderMacOffset(): number {
    return this.offset + 8;
  }

  get senderIp(): number {
    return readU32(this.buf, this.offset + 14);
  }

  get targetIp(): number {
    return readU32(this.buf, this.offset + 24);
  }
}

/**
 * Writes an ARP packet at `off`. For a request, pass a zero target MAC.
 */
export function emitArp(
  buf: Uint8Array,
  off: number,
  operation: number,
  senderMac: Uint8Array,
  senderIp: number,
  targetMac: Uint8Array,
  targetMacOff: number,
  targetIp: number,
): number {
  buf[off] = 0;
  buf[off + 1] = 1;
  buf[off + 2] = 0x08;
  buf[off + 3] = 0;
  buf[off + 4] = 6;
  buf[off + 5] = 4;
  buf[off + 6] = 0;
  buf[off + 7] = operation;
  for (let i = 0; i < 6; i++) {
    buf[off + 8 + i] = senderMac[i];
    buf[off + 18 + i] = targetMac[targetMacOff + i];
  }
  writeU32(buf, off + 14, senderIp);
  writeU32(buf, off + 24, targetIp);
  return off + ARP_LEN;
}
