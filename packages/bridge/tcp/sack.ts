/**
 * The sender's SACK scoreboard (RFC 2018, RFC 6675), as FreeBSD's tcp_sack.c: the ranges above
 * SND.UNA that the peer has reported holding, sorted, disjoint, bounded.
 *
 * @module
 */

import { seqDiff, seqGe, seqGt, seqLe, seqLt, type TcpSegment } from "../wire/tcp.ts";
import type { TcpSocket } from "./socket.ts";

/** SACK scoreboard blocks kept per connection. */
export const SB_MAX = 16;

/** Sorted, disjoint [left, right) sequence ranges the peer has SACKed. */
export class SackScoreboard {
  /** (left, right) pairs, `count` of them, in sequence order. */
  readonly blocks: Uint32Array = new Uint32Array(2 * SB_MAX);
  count = 0;
  /** Bytes covered by the blocks. */
  bytes = 0;

  /** Left edge of block `i`. */
  left(i: number): number {
    return this.blocks[2 * i];
  }

  /** Right edge (exclusive) of block `i`. */
  right(i: number): number {
    return this.blocks[2 * i + 1];
  }

  /**
   * Adds [l, r), merging with every block it overlaps or touches. When all SB_MAX blocks are
   * taken, the highest block is forgotten (or the new one, if it is the highest): what is
   * forgotten is merely resent, never lost.
   */
  add(l: number, r: number): void {
    const sb = this.blocks;
    let n = this.count;
    let i = 0;
    while (i < n) {
      const bl = sb[2 * i];
      const br = sb[2 * i + 1];
      if (seqLe(bl, r) && seqGe(br, l)) {
        if (seqLt(bl, l)) l = bl;
        if (seqGt(br, r)) r = br;
        sb.copyWithin(2 * i, 2 * i + 2, 2 * n);
        n--;
      } else i++;
    }
    let pos = 0;
    while (pos < n && seqLt(sb[2 * pos], l)) pos++;
    if (n === SB_MAX) {
      if (pos === n) {
        this.count = n;
        this.sum();
        return;
      }
      n--;
    }
    sb.copyWithin(2 * pos + 2, 2 * pos, 2 * n);
    sb[2 * pos] = l;
    sb[2 * pos + 1] = r;
    this.count = n + 1;
    this.sum();
  }

  /** Forgets what lies below `una` (cumulatively acknowledged). */
  trim(una: number): void {
    const sb = this.blocks;
    let n = this.count;
    while (n > 0 && seqLe(sb[1], una)) {
      sb.copyWithin(0, 2, 2 * n);
      n--;
    }
    if (n > 0 && seqLt(sb[0], una)) sb[0] = una;
    this.count = n;
    this.sum();
  }

  /** Forgets everything. */
  clear(): void {
    this.count = 0;
    this.bytes = 0;
  }

  /** Bytes SACKed from block `i` up (RFC 6675 IsLost counts these above a hole). */
  bytesFrom(i: number): number {
    let t = 0;
    for (let j = i; j < this.count; j++) t += seqDiff(this.blocks[2 * j + 1], this.blocks[2 * j]);
    return t;
  }

  private sum(): void {
    this.bytes = this.bytesFrom(0);
  }
}

/**
 * Merges the SACK blocks of an arriving ACK into the socket's scoreboard, and records its
 * D-SACK block in `dsackLeft`/`dsackRight` (equal when there is none). RFC 2883 §4: the first
 * block is a D-SACK when it lies below the cumulative ACK or inside the second block.
 */
export function sackUpdate(s: TcpSocket, seg: TcpSegment): boolean {
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
    s.sb.add(l, r);
  }
  return dsack;
}
