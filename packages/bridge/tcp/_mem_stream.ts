/**
 * A byte ring in plain memory implementing both sides of the S-ring contract: the engine's
 * {@linkcode TxStream} / {@linkcode RxStream} and the application's `write` / `read`. Sockets
 * that live inside the bridge (services, tests, the benchmark) use one per direction.
 *
 * @module
 */

import type { RxStream, TxStream } from "../../rings/stream.ts";
import { openCopy } from "../../../ffi/copy.ts";

const nativeCopySum = Deno.env.get("PNO_NATIVE_CSUM") === "0"
  ? null
  : openCopy()?.pno_copy_from_ring_csum_arrays ?? null;

/** A single-producer single-consumer byte ring with a power-of-two capacity. */
export class MemStream implements TxStream, RxStream {
  readonly capacity: number;
  private readonly mask: number;
  private readonly data: Uint8Array;
  /** Total bytes ever produced (published) and consumed; their difference is the fill. */
  private prod = 0;
  private cons = 0;

  /**
   * Copies use `set` over a `subarray` view (one short-lived view object per copy, ~30x faster
   * than a byte loop for full-size segments); `loopCopy` copies byte by byte and allocates
   * nothing (the benchmark uses it to show the engine itself is allocation-free).
   */
  constructor(capacity: number, readonly loopCopy = false) {
    let c = 1024;
    while (c < capacity) c *= 2;
    this.capacity = c;
    this.mask = c - 1;
    this.data = new Uint8Array(c);
  }

  /** Bytes produced and not yet consumed. */
  readable(): number {
    return this.prod - this.cons;
  }

  /** Free bytes. */
  writable(): number {
    return this.capacity - (this.prod - this.cons);
  }

  /** Copies `len` bytes starting `offset` bytes past the consumer index into `dst`. */
  copyOut(offset: number, dst: Uint8Array, dstOffset: number, len: number): void {
    const start = (this.cons + offset) & this.mask;
    const first = Math.min(len, this.capacity - start);
    if (this.loopCopy) {
      const d = this.data;
      for (let i = 0; i < first; i++) dst[dstOffset + i] = d[start + i];
      for (let i = first; i < len; i++) dst[dstOffset + i] = d[i - first];
      return;
    }
    dst.set(this.data.subarray(start, start + first), dstOffset);
    if (first < len) dst.set(this.data.subarray(0, len - first), dstOffset + first);
  }

  /** `copyOut` summed in the same pass by libpno_copy; -1 without it (TxStream). */
  copyOutSum(offset: number, dst: Uint8Array, dstOffset: number, len: number): number {
    if (
      nativeCopySum === null || this.loopCopy ||
      !(dstOffset >= 0 && dstOffset + len <= dst.length && len <= this.capacity)
    ) {
      this.copyOut(offset, dst, dstOffset, len);
      return -1;
    }
    const start = (this.cons + offset) & this.mask;
    return nativeCopySum(dst, dstOffset, this.data, this.capacity, start, len);
  }

  /** Consumes `n` bytes. */
  release(n: number): void {
    this.cons += n;
  }

  /** Copies `len` bytes of `src` to `offset` bytes past the producer index (not yet visible). */
  copyIn(offset: number, src: Uint8Array, srcOffset: number, len: number): void {
    const start = (this.prod + offset) & this.mask;
    const first = Math.min(len, this.capacity - start);
    if (this.loopCopy) {
      const d = this.data;
      for (let i = 0; i < first; i++) d[start + i] = src[srcOffset + i];
      for (let i = first; i < len; i++) d[i - first] = src[srcOffset + i];
      return;
    }
    this.data.set(src.subarray(srcOffset, srcOffset + first), start);
    if (first < len) this.data.set(src.subarray(srcOffset + first, srcOffset + len), 0);
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
