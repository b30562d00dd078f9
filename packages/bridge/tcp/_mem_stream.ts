/**
 * A byte ring in plain memory implementing both sides of the S-ring contract: the engine's
 * {@linkcode TxStream} / {@linkcode RxStream} and the application's `write` / `read`. Sockets
 * that live inside the bridge (services, tests, the benchmark) use one per direction.
 *
 * Memory follows use, as a kernel socket's does: the ring has a *capacity* (what the engine
 * may promise: the receive window, the send buffer the application sees), which autotuning
 * raises up to a *limit* (autotune.ts), and a backing array that holds only what the bytes in
 * it need. The array starts empty and doubles when a write or an out-of-order copy reaches past
 * it (from 4 KiB up to the capacity), so an idle connection costs no buffer at all, a small
 * request/response one a page or two, and only a bulk flow the MiBs its bandwidth-delay product
 * calls for: about log2(limit / 4 KiB) allocations in a connection's life, none per packet
 * once the flow has settled. The capacity never shrinks: the right edge of a window once
 * offered stays backed (RFC 9293 §3.8.6).
 *
 * @module
 */

import type { RxStream, TxStream } from "../../rings/stream.ts";
import { openCopy } from "../../../ffi/copy.ts";

const nativeLib = Deno.env.get("PNO_NATIVE_CSUM") === "0" ? null : openCopy();
const nativeCopySum = nativeLib?.pno_copy_from_ring_csum_arrays ?? null;
const nativeCopyInSum = nativeLib?.pno_copy_to_ring_csum_arrays ?? null;
const nativeCopyOut = nativeLib?.pno_copy_from_ring_arrays ?? null;
const nativeCopyIn = nativeLib?.pno_copy_to_ring_arrays ?? null;

/** The smallest backing array, once there are bytes to hold. */
export const MEM_STREAM_MIN_BACKING = 4096;

const EMPTY = new Uint8Array(0);

/** Smallest power of two >= n (n >= 1). */
function pow2AtLeast(n: number): number {
  let c = 1;
  while (c < n) c *= 2;
  return c;
}

/** A single-producer single-consumer byte ring with power-of-two capacity and backing. */
export class MemStream implements TxStream, RxStream {
  /** Bytes the ring may hold (a power of two); grows up to `limit`, never shrinks. */
  capacity: number;
  /** The largest capacity `grow` may reach (window scaling is chosen for it). */
  readonly limit: number;
  private data: Uint8Array = EMPTY;
  private mask = 0;
  /** Total bytes ever produced (published) and consumed; their difference is the fill. */
  private prod = 0;
  private cons = 0;
  /** Backing arrays allocated so far (the first one included). */
  allocations = 0;
  /** Bytes through both ends at the last `trimIfQuiet`; preallocated rings are never trimmed. */
  private trimMark = -1;
  private fixed = false;

  /**
   * Copies are libpno_copy's memcpy when it is loaded (no allocation), else `set` over a
   * `subarray` view (one short-lived view object per copy, ~30x faster than a byte loop for
   * full-size segments); `loopCopy` copies byte by byte and allocates nothing. `limit`
   * (default: the capacity, a fixed-size ring) bounds `grow`.
   */
  constructor(capacity: number, readonly loopCopy = false, limit = capacity) {
    this.capacity = pow2AtLeast(Math.max(1024, capacity));
    this.limit = Math.max(this.capacity, pow2AtLeast(Math.max(1, limit)));
  }

  /** Bytes produced and not yet consumed. */
  readable(): number {
    return this.prod - this.cons;
  }

  /** Free bytes. */
  writable(): number {
    return this.capacity - (this.prod - this.cons);
  }

  /** Total bytes the application has read (TCP's copied_seq, counted from 0). */
  consumed(): number {
    return this.cons;
  }

  /** Bytes of the backing array (what the ring costs in memory now). */
  backingBytes(): number {
    return this.data.length;
  }

  /**
   * Raises the capacity to `cap` rounded up to a power of two, at most `limit`; returns the
   * new capacity. The backing array is not touched: it grows when bytes need it.
   */
  grow(cap: number): number {
    if (cap > this.capacity) this.capacity = Math.min(this.limit, pow2AtLeast(cap));
    return this.capacity;
  }

  /**
   * Called by a periodic sweep: frees the backing array of a ring that is empty now and took
   * no bytes since the previous sweep (a connection gone quiet after a burst keeps its
   * capacity, not its memory; the next bytes allocate 4 KiB again). Returns the bytes freed.
   * The caller makes sure no out-of-order bytes wait past the producer index.
   */
  trimIfQuiet(): number {
    const moved = this.prod + this.cons;
    const quiet = moved === this.trimMark && this.prod === this.cons;
    this.trimMark = moved;
    const bytes = this.data.length;
    if (!quiet || bytes === 0 || this.fixed) return 0;
    this.data = EMPTY;
    this.mask = 0;
    return bytes;
  }

  /** Allocates the whole capacity now (a fixed ring, as the engine had before autotuning). */
  preallocate(): void {
    this.reserve(this.capacity);
    this.fixed = true;
  }

  /**
   * Makes the backing array hold `need` bytes from the consumer index on: the next power of
   * two (at least 4 KiB, at most the capacity), the live bytes moved to their new places.
   */
  private reserve(need: number): void {
    const old = this.data;
    if (need <= old.length) return;
    const size = Math.min(this.capacity, pow2AtLeast(Math.max(need, MEM_STREAM_MIN_BACKING)));
    const next = new Uint8Array(size);
    if (old.length > 0) {
      // Everything within the old backing, from the consumer index on, keeps its offset from
      // it: published bytes and out-of-order bytes past the producer index alike.
      const start = this.cons & this.mask;
      const first = old.length - start;
      const to = this.cons & (size - 1);
      copyWrapped(next, to, old.subarray(start));
      copyWrapped(next, (to + first) & (size - 1), old.subarray(0, start));
    }
    this.data = next;
    this.mask = size - 1;
    this.allocations++;
  }

  /** Copies `len` bytes starting `offset` bytes past the consumer index into `dst`. */
  copyOut(offset: number, dst: Uint8Array, dstOffset: number, len: number): void {
    if (len <= 0) return;
    const size = this.data.length;
    const start = (this.cons + offset) & this.mask;
    const first = Math.min(len, size - start);
    if (this.loopCopy) {
      const d = this.data;
      for (let i = 0; i < first; i++) dst[dstOffset + i] = d[start + i];
      for (let i = first; i < len; i++) dst[dstOffset + i] = d[i - first];
      return;
    }
    if (nativeCopyOut !== null && dstOffset >= 0 && dstOffset + len <= dst.length && len <= size) {
      nativeCopyOut(dst, dstOffset, this.data, size, start, len);
      return;
    }
    dst.set(this.data.subarray(start, start + first), dstOffset);
    if (first < len) dst.set(this.data.subarray(0, len - first), dstOffset + first);
  }

  /** `copyOut` summed in the same pass by libpno_copy; -1 without it (TxStream). */
  copyOutSum(offset: number, dst: Uint8Array, dstOffset: number, len: number): number {
    if (
      nativeCopySum === null || this.loopCopy ||
      !(dstOffset >= 0 && dstOffset + len <= dst.length && len <= this.data.length)
    ) {
      this.copyOut(offset, dst, dstOffset, len);
      return -1;
    }
    // The ring's size for the wrap is its backing's, which may be less than its capacity.
    const start = (this.cons + offset) & this.mask;
    return nativeCopySum(dst, dstOffset, this.data, this.data.length, start, len);
  }

  /** Consumes `n` bytes. */
  release(n: number): void {
    this.cons += n;
  }

  /** Copies `len` bytes of `src` to `offset` bytes past the producer index (not yet visible). */
  copyIn(offset: number, src: Uint8Array, srcOffset: number, len: number): void {
    if (len <= 0) return;
    const need = this.prod - this.cons + offset + len;
    if (need > this.data.length) this.reserve(need);
    const size = this.data.length;
    const start = (this.prod + offset) & this.mask;
    const first = Math.min(len, size - start);
    if (this.loopCopy) {
      const d = this.data;
      for (let i = 0; i < first; i++) d[start + i] = src[srcOffset + i];
      for (let i = first; i < len; i++) d[i - first] = src[srcOffset + i];
      return;
    }
    if (nativeCopyIn !== null && srcOffset >= 0 && srcOffset + len <= src.length && len <= size) {
      nativeCopyIn(this.data, size, start, src, srcOffset, len);
      return;
    }
    this.data.set(src.subarray(srcOffset, srcOffset + first), start);
    if (first < len) this.data.set(src.subarray(srcOffset + first, srcOffset + len), 0);
  }

  /**
   * `copyIn` summed in the same pass by libpno_copy (RxStream); -1, having copied nothing,
   * without the library or for a byte-loop ring.
   */
  copyInSum(offset: number, src: Uint8Array, srcOffset: number, len: number, head = 0): number {
    if (nativeCopyInSum === null || this.loopCopy || len === 0) return -1;
    const need = this.prod - this.cons + offset + len;
    // The native copy trusts its range.
    if (
      !(len > 0 && offset >= 0 && need <= this.capacity && (head & 1) === 0 &&
        srcOffset - head >= 0 && srcOffset + len <= src.length)
    ) {
      throw new RangeError(
        `copyInSum ${offset}+${len} (head ${head}) past the source or free space`,
      );
    }
    if (need > this.data.length) this.reserve(need);
    const start = (this.prod + offset) & this.mask;
    return nativeCopyInSum(this.data, this.data.length, start, src, srcOffset, len, head);
  }

  /** Makes `n` bytes at the producer index visible. */
  publish(n: number): void {
    this.prod += n;
  }

  /** Application side: appends up to `len` bytes, returns how many fit. */
  write(src: Uint8Array, off: number, len: number): number {
    const n = Math.min(len, this.writable());
    if (n > 0) {
      this.copyIn(0, src, off, n);
      this.prod += n;
    }
    return n;
  }

  /** Application side: takes up to `len` bytes, returns how many were read. */
  read(dst: Uint8Array, off: number, len: number): number {
    const n = Math.min(len, this.readable());
    if (n > 0) {
      this.copyOut(0, dst, off, n);
      this.cons += n;
    }
    return n;
  }
}

/** Copies `src` into the ring array `dst` at `at`, wrapping at its end. */
function copyWrapped(dst: Uint8Array, at: number, src: Uint8Array): void {
  const first = Math.min(src.length, dst.length - at);
  dst.set(src.subarray(0, first), at);
  if (first < src.length) dst.set(src.subarray(first), 0);
}
