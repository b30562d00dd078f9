/**
 * The Internet checksum (RFC 1071) over byte views, without allocation.
 *
 * `checksumAdd` folds a range into a running 32-bit sum so headers, pseudo-headers and payloads
 * that live in different places can be summed piecewise; `checksumFinish` folds and complements.
 *
 * Ranges of `NATIVE_MIN_BYTES` or more are summed by libpno_copy (ffi/copy/pno_copy.c) in one
 * FFI fast call: measured on this (busy, 2-core) machine, 1,460 bytes in 0.09 to 0.13 us there
 * against 0.95 to 1.1 us in TypeScript, 96 bytes in 0.06 against 0.12 us (`pno bench --engine`
 * prints it; PNO_NATIVE_CSUM=0 keeps the TypeScript sum). Without the
 * library (not built, no FFI), `checksumAddTs` does it, and it is the reference the native sum
 * is tested against.
 *
 * @example
 * ```ts
 * import { checksumAdd, checksumFinish } from "./checksum.ts";
 * const hdr = new Uint8Array([0x45, 0, 0, 0x1c, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
 * const sum = checksumFinish(checksumAdd(0, hdr, 0, hdr.length));
 * hdr[10] = sum >> 8;
 * hdr[11] = sum & 0xff;
 * if (checksumFinish(checksumAdd(0, hdr, 0, hdr.length)) !== 0) throw new Error("bad sum");
 * ```
 * @module
 */

import { openCopy } from "../../../ffi/copy.ts";

/** Below this many bytes the FFI call costs more than the TypeScript loop (measured). */
export const NATIVE_MIN_BYTES = 64;

const nativeSum = Deno.env.get("PNO_NATIVE_CSUM") === "0" ? null : openCopy()?.pno_csum ?? null;

/**
 * True when checksums are summed by libpno_copy: then, and only then, is summing while copying
 * worth trying (with the TypeScript sum, the receive fast path measured 4 to 10% slower than
 * verify-then-copy: its attempt bought nothing).
 */
export const NATIVE_CHECKSUM: boolean = nativeSum !== null;

/**
 * Adds `len` bytes of `buf` starting at `off` to a running sum. The range is taken as if it
 * started on an even byte of the checksummed data: callers sum pieces of even length except
 * the last.
 */
export function checksumAdd(sum: number, buf: Uint8Array, off: number, len: number): number {
  // The native sum trusts its range: only one that lies inside `buf` goes there.
  if (
    nativeSum !== null && len >= NATIVE_MIN_BYTES && sum <= 0xffffffff && off >= 0 &&
    off + len <= buf.length
  ) {
    return nativeSum(sum, buf, off, len);
  }
  return checksumAddTs(sum, buf, off, len);
}

/** `checksumAdd` in TypeScript: the fallback, and the reference for the native sum. */
export function checksumAddTs(sum: number, buf: Uint8Array, off: number, len: number): number {
  const end = off + len;
  let i = off;
  // Fold every 4096 words so the sum stays a small integer (SMI) for V8.
  while (end - i >= 2) {
    const stop = Math.min(end - ((end - i) & 1), i + 8192);
    for (; i < stop; i += 2) sum += (buf[i] << 8) | buf[i + 1];
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (i < end) sum += buf[i] << 8;
  return sum;
}

/** Adds a 16-bit value (a pseudo-header field) to a running sum. */
export function checksumAddWord(sum: number, word: number): number {
  return sum + (word & 0xffff);
}

/** Adds the IPv4 pseudo-header (RFC 793 / RFC 768) for a transport checksum. */
export function checksumAddPseudoV4(
  sum: number,
  src: number,
  dst: number,
  protocol: number,
  length: number,
): number {
  return sum + (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
}

/** Folds the running sum to 16 bits and returns its one's complement. */
export function checksumFinish(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}
