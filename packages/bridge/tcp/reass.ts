/**
 * Out-of-order receive ranges, as FreeBSD's tcp_reass.c but without a segment queue: the bytes
 * themselves already sit in the receive ring at their offset, so only the ranges are kept,
 * sorted, disjoint and bounded, each with the age of its last change for the SACK blocks it
 * produces (RFC 2018 §4: the most recently changed range first).
 *
 * @module
 */

import { seqGe, seqGt, seqLe, seqLt } from "../wire/tcp.ts";

/**
 * Out-of-order ranges kept per connection; segments that would need more are dropped. Loss
 * with 25% reordering keeps dozens of short holes open at once in a 256 KiB window (each late
 * segment is one), and every drop here costs the peer a retransmission: 64 ranges (768 bytes).
 */
export const OFO_MAX = 64;

/** Sorted, disjoint [left, right) ranges received above RCV.NXT. */
export class ReassemblyRanges {
  /** (left, right) pairs, `count` of them, in sequence order. */
  readonly ranges: Uint32Array = new Uint32Array(2 * OFO_MAX);
  /** Change clock value of each range. */
  private readonly age: Uint32Array = new Uint32Array(OFO_MAX);
  private clock = 0;
  count = 0;

  /** Left edge of range `i`. */
  left(i: number): number {
    return this.ranges[2 * i];
  }

  /** Right edge (exclusive) of range `i`. */
  right(i: number): number {
    return this.ranges[2 * i + 1];
  }

  /**
   * Records [l, r), merged with every range it overlaps or touches. False when it touches
   * none and all OFO_MAX ranges are taken: the caller drops the segment.
   */
  add(l: number, r: number): boolean {
    const o = this.ranges;
    let n = this.count;
    let touches = false;
    for (let i = 0; i < n; i++) {
      if (seqLe(o[2 * i], r) && seqGe(o[2 * i + 1], l)) {
        touches = true;
        break;
      }
    }
    if (!touches && n === OFO_MAX) return false;
    let i = 0;
    while (i < n) {
      const bl = o[2 * i];
      const br = o[2 * i + 1];
      if (seqLe(bl, r) && seqGe(br, l)) {
        if (seqLt(bl, l)) l = bl;
        if (seqGt(br, r)) r = br;
        o.copyWithin(2 * i, 2 * i + 2, 2 * n);
        this.age.copyWithin(i, i + 1, n);
        n--;
      } else i++;
    }
    let pos = 0;
    while (pos < n && seqLt(o[2 * pos], l)) pos++;
    o.copyWithin(2 * pos + 2, 2 * pos, 2 * n);
    this.age.copyWithin(pos + 1, pos, n);
    o[2 * pos] = l;
    o[2 * pos + 1] = r;
    this.age[pos] = ++this.clock;
    this.count = n + 1;
    return true;
  }

  /** Drops the lowest range (it has become in order). */
  removeFirst(): void {
    const n = this.count;
    this.ranges.copyWithin(0, 2, 2 * n);
    this.age.copyWithin(0, 1, n);
    this.count = n - 1;
  }

  /** True when [l, r) lies inside one range (a duplicate of data held out of order). */
  covers(l: number, r: number): boolean {
    for (let i = 0; i < this.count; i++) {
      if (seqLe(this.ranges[2 * i], l) && seqGe(this.ranges[2 * i + 1], r)) return true;
    }
    return false;
  }

  /** Forgets everything. */
  clear(): void {
    this.count = 0;
  }

  /**
   * Writes up to `max` SACK blocks into `out` as (left, right) pairs, the most recently
   * changed range first (RFC 2018 §4); returns how many.
   */
  sackBlocks(out: Uint32Array, max: number, from = 0): number {
    const n = Math.min(max, this.count);
    out = from === 0 ? out : out.subarray(2 * from);
    let lastAge = 0x7fffffff;
    for (let k = 0; k < n; k++) {
      let best = -1;
      let bestAge = -1;
      for (let i = 0; i < this.count; i++) {
        const a = this.age[i];
        if (a < lastAge && a > bestAge) {
          bestAge = a;
          best = i;
        }
      }
      if (best < 0) return k;
      out[2 * k] = this.ranges[2 * best];
      out[2 * k + 1] = this.ranges[2 * best + 1];
      lastAge = bestAge;
    }
    return n;
  }
}
