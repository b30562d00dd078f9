/**
 * pcapng blocks (draft-ietf-opsawg-pcapng): the section header and one Ethernet interface
 * with microsecond timestamps (`pcapngHeader`), enhanced packet blocks carrying the direction
 * in epb_flags (`pcapngPackets`), and an interface statistics block with the frames captured
 * and dropped (`pcapngStatistics`). Little-endian, as the byte-order magic says.
 *
 * @module
 */

const SHB = 0x0a0d0d0a, IDB = 1, ISB = 5, EPB = 6;
const LINKTYPE_ETHERNET = 1;

/** The section header and the interface description, opening a capture. */
export function pcapngHeader(snap: number): Uint8Array {
  const b = new DataView(new ArrayBuffer(28 + 32));
  b.setUint32(0, SHB, true);
  b.setUint32(4, 28, true);
  b.setUint32(8, 0x1a2b3c4d, true); // byte-order magic
  b.setUint16(12, 1, true); // version 1.0
  b.setUint16(14, 0, true);
  b.setBigInt64(16, -1n, true); // section length unknown
  b.setUint32(24, 28, true);
  b.setUint32(28, IDB, true);
  b.setUint32(32, 32, true);
  b.setUint16(36, LINKTYPE_ETHERNET, true);
  b.setUint32(40, snap, true);
  b.setUint16(44, 9, true); // if_tsresol
  b.setUint16(46, 1, true);
  b.setUint8(48, 6); // 10^-6 s
  b.setUint32(52, 0, true); // opt_endofopt
  b.setUint32(56, 32, true);
  return new Uint8Array(b.buffer);
}

/** What `pcapngPackets` reads: a ring of staged frames. */
export interface StagedFrames {
  readonly data: Uint8Array;
  readonly capLen: Uint32Array;
  readonly origLen: Uint32Array;
  readonly inbound: Uint8Array;
  readonly stampUs: Float64Array;
}

/** Enhanced packet blocks for staged frames `from` to `to` (ring positions). */
export function pcapngPackets(
  s: StagedFrames,
  from: number,
  to: number,
  snap: number,
  slots: number,
): Uint8Array {
  let total = 0;
  for (let i = from; i < to; i++) total += 44 + ((s.capLen[i % slots] + 3) & ~3);
  const out = new Uint8Array(total);
  const b = new DataView(out.buffer);
  let at = 0;
  for (let i = from; i < to; i++) {
    const slot = i % slots, cap = s.capLen[slot], len = 44 + ((cap + 3) & ~3);
    const us = Math.floor(s.stampUs[slot]);
    b.setUint32(at, EPB, true);
    b.setUint32(at + 4, len, true);
    b.setUint32(at + 8, 0, true); // interface 0
    b.setUint32(at + 12, Math.floor(us / 2 ** 32), true);
    b.setUint32(at + 16, us >>> 0, true);
    b.setUint32(at + 20, cap, true);
    b.setUint32(at + 24, s.origLen[slot], true);
    out.set(s.data.subarray(slot * snap, slot * snap + cap), at + 28);
    const opt = at + 28 + ((cap + 3) & ~3);
    b.setUint16(opt, 2, true); // epb_flags
    b.setUint16(opt + 2, 4, true);
    b.setUint32(opt + 4, s.inbound[slot] ? 1 : 2, true); // direction: inbound 01, outbound 10
    b.setUint32(opt + 8, 0, true); // opt_endofopt
    b.setUint32(at + len - 4, len, true);
    at += len;
  }
  return out;
}

/** An interface statistics block: frames captured (isb_ifrecv) and lost (isb_ifdrop). */
export function pcapngStatistics(stampUs: number, captured: number, dropped: number): Uint8Array {
  const b = new DataView(new ArrayBuffer(52));
  const us = Math.floor(stampUs);
  b.setUint32(0, ISB, true);
  b.setUint32(4, 52, true);
  b.setUint32(8, 0, true);
  b.setUint32(12, Math.floor(us / 2 ** 32), true);
  b.setUint32(16, us >>> 0, true);
  b.setUint16(20, 4, true); // isb_ifrecv
  b.setUint16(22, 8, true);
  b.setBigUint64(24, BigInt(captured), true);
  b.setUint16(32, 5, true); // isb_ifdrop
  b.setUint16(34, 8, true);
  b.setBigUint64(36, BigInt(dropped), true);
  b.setUint32(44, 0, true);
  b.setUint32(48, 52, true);
  return new Uint8Array(b.buffer);
}
