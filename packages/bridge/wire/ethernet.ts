/**
 * Ethernet II frames: a checked view over frame bytes and an emitter.
 *
 * @module
 */

/** Length of the Ethernet II header (no 802.1Q tag). */
export const ETHERNET_HEADER_LEN = 14;
/** EtherType of IPv4. */
export const ETHERTYPE_IPV4 = 0x0800;
/** EtherType of ARP. */
export const ETHERTYPE_ARP = 0x0806;

/**
 * A reusable view of one Ethernet frame: `wrap` points it at bytes and says whether they can
 * hold a header; it never copies and never throws.
 */
export class EthernetFrame {
  buf: Uint8Array = new Uint8Array(0);
  offset = 0;
  length = 0;

  /** Points the view at `len` bytes of `buf` from `off`; false if too short for a header. */
  wrap(buf: Uint8Array, off: number, len: number): boolean {
    this.buf = buf;
    this.offset = off;
    this.length = len;
    return len >= ETHERNET_HEADER_LEN && off + len <= buf.length;
  }

  get etherType(): number {
    return (this.buf[this.offset + 12] << 8) | this.buf[this.offset + 13];
  }

  /** Offset in `buf` of the destination MAC (the source follows 6 bytes later). */
  get dstOffset(): number {
    return this.offset;
  }

  get srcOffset(): number {
    return this.offset + 6;
  }

  get payloadOffset(): number {
    return this.offset + ETHERNET_HEADER_LEN;
  }

  get payloadLength(): number {
    return this.length - ETHERNET_HEADER_LEN;
  }

  /** True when the destination is `mac` or the broadcast address. */
  isFor(mac: Uint8Array): boolean {
    const b = this.buf, o = this.offset;
    let mine = true, broadcast = true;
    for (let i = 0; i < 6; i++) {
      if (b[o + i] !== mac[i]) mine = false;
      if (b[o + i] !== 0xff) broadcast = false;
    }
    return mine || broadcast;
  }

  /** True when the source MAC is a unicast address (multicast bit clear). */
  get srcIsUnicast(): boolean {
    return (this.buf[this.offset + 6] & 1) === 0;
  }
}

/**
 * Writes an Ethernet header at `off`: destination from `dst[dstOff..+6]`, source `src`.
 * Returns the offset of the payload.
 */
export function emitEthernet(
  buf: Uint8Array,
  off: number,
  dst: Uint8Array,
  dstOff: number,
  src: Uint8Array,
  etherType: number,
): number {
  for (let i = 0; i < 6; i++) {
    buf[off + i] = dst[dstOff + i];
    buf[off + 6 + i] = src[i];
  }
  buf[off + 12] = etherType >> 8;
  buf[off + 13] = etherType & 0xff;
  return off + ETHERNET_HEADER_LEN;
}

/** Formats a MAC address as aa:bb:cc:dd:ee:ff. */
export function formatMac(mac: Uint8Array, off = 0): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push(mac[off + i].toString(16).padStart(2, "0"));
  return parts.join(":");
}

/** Parses aa:bb:cc:dd:ee:ff into six bytes; throws on anything else (configuration input). */
export function parseMac(text: string): Uint8Array {
  const parts = text.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new Error(`not a MAC address: ${text}`);
  }
  return new Uint8Array(parts.map((p) => parseInt(p, 16)));
}
