/**
 * Byte copies between a ring's data area and a caller's buffer, tuned for V8 (measured on this
 * machine, Deno 2.9.6, see bench/rings_micro.ts):
 *
 * - a byte loop runs at about 1 GB/s;
 * - `dst.set(src.subarray(...))` runs at memcpy speed (40-110 GB/s in cache) but pays about
 *   25 ns for the short-lived view it allocates;
 * - a DataView loop of 64-bit words runs at 5-7 GB/s and, once optimized, allocates nothing.
 *   It must use BigUint64 and not Float64: optimized Float64 loads canonicalize NaN payloads
 *   and corrupt bytes (observed), BigUint64 moves the bits exactly.
 *
 * So copies shorter than `SET_THRESHOLD` go word by word with no allocation, and longer ones use
 * `set` on one subarray view, whose cost is then small beside the copy itself.
 *
 * @module
 */

/** Copies of at least this many bytes use `TypedArray.set`; shorter ones a word loop. */
export const SET_THRESHOLD = 256;

/**
 * Caches one DataView for the last caller buffer seen, so a caller that keeps copying into or
 * out of the same arena (the bridge's mbuf memory) never causes an allocation.
 */
export class _ViewCache {
  private lastArray: Uint8Array | null = null;
  private lastView: DataView = new DataView(new ArrayBuffer(0));

  /** The DataView over exactly `array`'s bytes, made once per distinct array. */
  viewOf(array: Uint8Array): DataView {
    if (array !== this.lastArray) {
      this.lastArray = array;
      this.lastView = new DataView(array.buffer, array.byteOffset, array.byteLength);
    }
    return this.lastView;
  }
}

/**
 * Copies `len` bytes from `src[srcOff..]` to `dst[dstOff..]`; `dstView` and `srcView` are
 * DataViews over exactly `dst` and `src`. The caller has checked every bound.
 */
export function _copyBytes(
  dst: Uint8Array,
  dstView: DataView,
  dstOff: number,
  src: Uint8Array,
  srcView: DataView,
  srcOff: number,
  len: number,
): void {
  if (len >= SET_THRESHOLD) {
    dst.set(src.subarray(srcOff, srcOff + len), dstOff);
    return;
  }
  let i = 0;
  for (; i + 8 <= len; i += 8) {
    dstView.setBigUint64(dstOff + i, srcView.getBigUint64(srcOff + i, true), true);
  }
  for (; i < len; i++) dst[dstOff + i] = src[srcOff + i];
}
