/**
 * Test helpers shared by the two-process tests and their child: the deterministic stream
 * pattern (byte i is a hash of i, so any loss, duplication or reorder shows) and a small PRNG.
 *
 * @module
 */

/** Byte `i` of every test stream; the C test program computes the same function. */
export function patternByte(i: number): number {
  return ((Math.imul(i, 0x9e3779b1) >>> 24) ^ i) & 0xff;
}

/** Fills `dst[off..off+len)` with stream bytes starting at stream index `start`. */
export function fillPattern(dst: Uint8Array, off: number, start: number, len: number): void {
  for (let i = 0; i < len; i++) dst[off + i] = patternByte(start + i);
}

/** Index of the first byte of `src[off..off+len)` that differs from the stream, or -1. */
export function checkPattern(src: Uint8Array, off: number, start: number, len: number): number {
  for (let i = 0; i < len; i++) if (src[off + i] !== patternByte(start + i)) return i;
  return -1;
}

/** xorshift32: deterministic random chunk sizes and pauses from a seed. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed | 0) || 1;
  }
  /** Next integer in [0, n). */
  below(n: number): number {
    let x = this.s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.s = x;
    return (x >>> 0) % n;
  }
}

/** Spins for a random short while, to shuffle the interleaving of two processes. */
export function jitter(rng: Rng): void {
  const n = rng.below(8) === 0 ? rng.below(20000) : 0;
  for (let i = 0; i < n; i++) Atomics.load(SPIN, 0);
}
const SPIN = new Int32Array(1);
