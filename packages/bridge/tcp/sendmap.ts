/**
 * The send map: one record per segment in flight, in sequence order, with the time it was
 * last (re)transmitted and whether the peer SACKed it, as FreeBSD's RACK stack keeps its
 * `rack_sendmap` and Linux its retransmit queue. RACK (RFC 8985) needs the send time of each
 * segment to tell a loss from reordering; the bytes themselves stay in the send ring.
 *
 * A ring of parallel typed arrays that starts small and doubles when a flight outgrows it
 * (memory follows the window; no allocation per segment once grown), and shrinks again when
 * the flight stays small (`shrinkIfSmall`, from the quiet-connection sweep in autotune.ts,
 * never on the data path), as the rings' backing does. Sequence numbers are compared modulo
 * 2^32.
 *
 * @module
 */

import { seqDiff, seqGe, seqGt, seqLe, seqLt } from "../wire/tcp.ts";

/** The peer holds this segment (SACKed). */
export const SM_SACKED = 1;
/** Marked lost and not yet retransmitted. */
export const SM_LOST = 2;
/** Retransmitted at least once (its send time is the last retransmission's). */
export const SM_RETRANS = 4;

/** Records a new map holds, and the least a shrunk one keeps. */
export const SEND_MAP_INITIAL = 16;
/** Bytes one record costs: start and end (4 each), send time (8), flags (1). */
export const SEND_MAP_RECORD_BYTES = 17;

/** Per-segment records of the flight. */
export class SendMap {
  private start = new Uint32Array(SEND_MAP_INITIAL);
  private end = new Uint32Array(SEND_MAP_INITIAL);
  private sentAt = new Float64Array(SEND_MAP_INITIAL);
  private flag = new Uint8Array(SEND_MAP_INITIAL);
  private mask = SEND_MAP_INITIAL - 1;
  private head = 0;
  /** Records in the map. */
  count = 0;
  /** Bytes in records marked SACKed, and in records marked lost (not yet resent). */
  sackedBytes = 0;
  lostBytes = 0;
  /** Retransmitted records not yet acknowledged or SACKed. */
  retransOut = 0;
  /** The most records held at once since the last `shrinkIfSmall` (the flight it had to fit). */
  private highWater = 0;

  /** Records the arrays can hold before they grow (a power of two). */
  get capacity(): number {
    return this.mask + 1;
  }

  /** Slot of the i-th record (0 = lowest sequence). */
  private at(i: number): number {
    return (this.head + i) & this.mask;
  }

  left(i: number): number {
    return this.start[this.at(i)];
  }
  right(i: number): number {
    return this.end[this.at(i)];
  }
  time(i: number): number {
    return this.sentAt[this.at(i)];
  }
  flags(i: number): number {
    return this.flag[this.at(i)];
  }

  /**
   * The next record, for `pushNext`: the data path stores a segment's edges and send time here
   * rather than passing them, since a sequence number of 2^30 or more or a fractional time
   * passed to a call V8 did not inline is boxed as a heap number (16 bytes each, three per
   * segment sent; bench/tcp_engine.ts), and a number field is written in place.
   */
  nextLeft = 0;
  nextRight = 0;
  nextSentAt = 0;
  /** SND.UNA for `ackNext`, stored rather than passed for the same reason. */
  nextUna = 0;

  /** Records a new segment [l, r) sent at `now` (above every record in the map). */
  push(l: number, r: number, now: number): void {
    this.nextLeft = l;
    this.nextRight = r;
    this.nextSentAt = now;
    this.pushNext();
  }

  /** Records the segment [nextLeft, nextRight) sent at `nextSentAt`. */
  pushNext(): void {
    if (this.count > this.mask) this.grow();
    const k = this.at(this.count);
    this.start[k] = this.nextLeft;
    this.end[k] = this.nextRight;
    this.sentAt[k] = this.nextSentAt;
    this.flag[k] = 0;
    if (++this.count > this.highWater) this.highWater = this.count;
  }

  /** Index of the first record whose right edge is above `seq` (count if none). */
  find(seq: number): number {
    let lo = 0, hi = this.count;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (seqLe(this.end[this.at(mid)], seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Drops what the cumulative ACK `una` covers; a record it covers in part keeps the rest.
   * Calls `delivered(i)` for each record leaving that was not SACKed before (RACK's update
   * needs its send time), before it leaves.
   */
  ackTo(una: number, delivered: ((i: number) => void) | null): void {
    this.nextUna = una;
    this.ackNext(delivered);
  }

  /** `ackTo(nextUna, delivered)`. */
  ackNext(delivered: ((i: number) => void) | null): void {
    const una = this.nextUna;
    while (this.count > 0) {
      const k = this.head;
      if (seqGt(this.end[k], una)) {
        if (seqLt(this.start[k], una)) {
          if (this.flag[k] & SM_SACKED) this.sackedBytes -= seqDiff(una, this.start[k]);
          else if (this.flag[k] & SM_LOST) this.lostBytes -= seqDiff(una, this.start[k]);
          this.start[k] = una;
        }
        return;
      }
      const f = this.flag[k];
      if (!(f & SM_SACKED) && delivered !== null) delivered(0);
      this.forget(k);
      this.head = (this.head + 1) & this.mask;
      this.count--;
    }
  }

  private forget(k: number): void {
    const f = this.flag[k], len = seqDiff(this.end[k], this.start[k]);
    if (f & SM_SACKED) this.sackedBytes -= len;
    else if (f & SM_LOST) this.lostBytes -= len;
    if ((f & (SM_RETRANS | SM_SACKED | SM_LOST)) === SM_RETRANS) this.retransOut--;
  }

  /**
   * Marks the records inside [l, r) SACKed; calls `delivered(i)` for each newly SACKed one.
   * Returns the bytes newly SACKed.
   */
  sack(l: number, r: number, delivered: ((i: number) => void) | null): number {
    let n = 0;
    for (let i = this.find(l); i < this.count; i++) {
      const k = this.at(i);
      if (seqGt(this.end[k], r)) break;
      if (seqLt(this.start[k], l) || (this.flag[k] & SM_SACKED)) continue;
      const len = seqDiff(this.end[k], this.start[k]);
      if (delivered !== null) delivered(i);
      const f = this.flag[k];
      if (f & SM_LOST) this.lostBytes -= len;
      else if (f & SM_RETRANS) this.retransOut--;
      this.flag[k] = (f & ~SM_LOST) | SM_SACKED;
      this.sackedBytes += len;
      n += len;
    }
    return n;
  }

  /** Marks record `i` lost (it is neither SACKed nor already lost). */
  markLost(i: number): void {
    const k = this.at(i);
    const f = this.flag[k];
    if (f & (SM_SACKED | SM_LOST)) return;
    if (f & SM_RETRANS) this.retransOut--;
    this.flag[k] = f | SM_LOST;
    this.lostBytes += seqDiff(this.end[k], this.start[k]);
  }

  /** Record `i` was retransmitted at `now`: in flight again, with a new send time. */
  retransmitted(i: number, now: number): void {
    const k = this.at(i);
    const f = this.flag[k];
    if (f & SM_SACKED) return;
    if (f & SM_LOST) this.lostBytes -= seqDiff(this.end[k], this.start[k]);
    else if (f & SM_RETRANS) this.retransOut--;
    this.flag[k] = (f & ~SM_LOST) | SM_RETRANS;
    this.sentAt[k] = now;
    this.retransOut++;
  }

  /** After a timeout: every record lost and SACK marks forgotten (RFC 2018 §8). */
  markAllLost(): void {
    for (let i = 0; i < this.count; i++) {
      const k = this.at(i);
      this.flag[k] &= ~(SM_SACKED | SM_LOST);
      if (this.flag[k] & SM_RETRANS) this.flag[k] &= ~SM_RETRANS;
      this.flag[k] |= SM_LOST;
    }
    this.sackedBytes = 0;
    this.retransOut = 0;
    this.lostBytes = 0;
    for (let i = 0; i < this.count; i++) this.lostBytes += seqDiff(this.right(i), this.left(i));
  }

  /** Splits record `i` at `seq` (inside it) so that [left, seq) and [seq, right) stand alone. */
  split(i: number, seq: number): void {
    if (this.count > this.mask) this.grow();
    const k = this.at(i);
    if (!(seqGt(seq, this.start[k]) && seqLt(seq, this.end[k]))) return;
    // Shift records above i up by one (the map is small; splits are rare: MSS changes).
    for (let j = this.count; j > i + 1; j--) {
      const to = this.at(j), from = this.at(j - 1);
      this.start[to] = this.start[from];
      this.end[to] = this.end[from];
      this.sentAt[to] = this.sentAt[from];
      this.flag[to] = this.flag[from];
    }
    const n = this.at(i + 1);
    this.start[n] = seq;
    this.end[n] = this.end[k];
    this.sentAt[n] = this.sentAt[k];
    this.flag[n] = this.flag[k];
    if ((this.flag[k] & (SM_RETRANS | SM_SACKED | SM_LOST)) === SM_RETRANS) this.retransOut++;
    this.end[k] = seq;
    if (++this.count > this.highWater) this.highWater = this.count;
  }

  /** Takes back every lost mark (the losses proved spurious): all of it is in flight again. */
  clearLost(): void {
    if (this.lostBytes === 0) return;
    for (let i = 0; i < this.count; i++) this.flag[this.at(i)] &= ~SM_LOST;
    this.lostBytes = 0;
  }

  /** Forgets everything. */
  clear(): void {
    this.count = 0;
    this.head = 0;
    this.sackedBytes = this.lostBytes = this.retransOut = 0;
  }

  /** True when `seq` is covered by a SACKed record. */
  isSacked(seq: number): boolean {
    const i = this.find(seq);
    return i < this.count && seqGe(seq, this.left(i)) && (this.flags(i) & SM_SACKED) !== 0;
  }

  /**
   * Called by a periodic sweep (never on the data path): if the most records held at once
   * since the previous call would fit in a quarter of the arrays, moves the records into
   * arrays of twice that high-water mark (at least SEND_MAP_INITIAL), so a connection that once
   * had a large flight does not keep its arrays forever. The factor of two leaves room for the
   * flight to double before it grows again, so a flow near a boundary does not shrink and grow
   * at every sweep. The records in flight always fit: the high-water mark is at least the
   * count. Returns the bytes given back.
   */
  shrinkIfSmall(): number {
    const used = Math.max(this.highWater, this.count);
    this.highWater = this.count;
    let cap = SEND_MAP_INITIAL;
    while (cap < 2 * used) cap *= 2;
    const old = this.mask + 1;
    if (cap >= old) return 0;
    this.resize(cap);
    return (old - cap) * SEND_MAP_RECORD_BYTES;
  }

  private grow(): void {
    this.resize((this.mask + 1) * 2);
  }

  /** Moves the records, in order from index 0, into new arrays of `cap` (>= count) records. */
  private resize(cap: number): void {
    const s = new Uint32Array(cap), e = new Uint32Array(cap);
    const t = new Float64Array(cap), f = new Uint8Array(cap);
    for (let i = 0; i < this.count; i++) {
      const k = this.at(i);
      s[i] = this.start[k];
      e[i] = this.end[k];
      t[i] = this.sentAt[k];
      f[i] = this.flag[k];
    }
    this.start = s;
    this.end = e;
    this.sentAt = t;
    this.flag = f;
    this.mask = cap - 1;
    this.head = 0;
  }
}
