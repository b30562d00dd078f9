/**
 * SACK option processing on the sender (RFC 2018, RFC 2883), as FreeBSD's tcp_sack.c: the
 * blocks of an ACK mark the send map's segments, and a D-SACK block is told apart.
 *
 * @module
 */

import { seqGe, seqGt, seqLe, seqLt, type TcpSegment } from "../wire/tcp.ts";
import type { TcpSocket } from "./socket.ts";

/**
 * Marks the send map's segments that the SACK blocks of an arriving ACK cover (calling
 * `delivered` for each newly SACKed one), and records its D-SACK block in
 * `dsackLeft`/`dsackRight` (equal when there is none). RFC 2883 §4: the first block is a
 * D-SACK when it lies below the cumulative ACK or inside the second block.
 */
export function sackUpdate(
  s: TcpSocket,
  seg: TcpSegment,
  delivered: ((i: number) => void) | null,
): boolean {
  s.dsackLeft = s.dsackRight = 0;
  let dsack = false;
  if (seg.sackCount > 0) {
    const l0 = seg.sack[0], r0 = seg.sack[1];
    if (
      seqLt(l0, r0) &&
      (seqLe(r0, seg.ack) ||
        (seg.sackCount > 1 && seqGe(l0, seg.sack[2]) && seqLe(r0, seg.sack[3])))
    ) {
      dsack = true;
      s.dsackLeft = l0;
      s.dsackRight = r0;
    }
  }
  for (let i = dsack ? 1 : 0; i < seg.sackCount; i++) {
    let l = seg.sack[2 * i];
    const r = seg.sack[2 * i + 1];
    if (!seqLt(l, r) || seqGt(r, s.sndNxt) || seqLe(r, s.sndUna)) continue; // bogus or old
    if (seqLt(l, s.sndUna)) l = s.sndUna;
    s.sm.sack(l, r, delivered);
  }
  return dsack;
}
