/**
 * Native memory areas the rings may copy between with libpno_copy instead of TypeScript: an
 * ArrayBuffer is native once registered with the address it views (the region mapping, the
 * DPDK mbuf pool). Plain ArrayBuffers (tests, the in-memory wire) are never registered and keep
 * the TypeScript copies.
 *
 * @module
 */
import { type CopyLibrary, openCopy } from "../../ffi/copy.ts";

const bases = new WeakMap<ArrayBufferLike, bigint>();

/**
 * Declares that `buffer` views native memory starting at `base` (from
 * `Deno.UnsafePointerView.getArrayBuffer(base, size)`), so copies into and out of it may use
 * libpno_copy. Any size: libpno_copy's u32 offsets are taken from a pointer to the ring's own
 * data or to the caller's array (`nativePointer`), never from the start of a large region (an
 * application's region is a sparse memfd of several GiB).
 */
export function registerNativeMemory(buffer: ArrayBufferLike, base: Deno.PointerValue): void {
  if (base === null) return;
  bases.set(buffer, BigInt(Deno.UnsafePointer.value(base)));
}

/** The native library, or null (not built, or PNO_NATIVE_COPY=0). */
export function nativeCopy(): CopyLibrary | null {
  if (Deno.env.get("PNO_NATIVE_COPY") === "0") return null;
  return openCopy();
}

/** A pointer to `byteOffset` bytes into a registered buffer, or null if it is not native. */
export function nativePointer(
  buffer: ArrayBufferLike,
  byteOffset: number,
): Deno.PointerObject | null {
  const base = bases.get(buffer);
  if (base === undefined) return null;
  return Deno.UnsafePointer.create(base + BigInt(byteOffset));
}

/**
 * Remembers the native pointer of the last caller array seen (the bridge copies into and out
 * of one mbuf pool), so a native copy finds its pointer without allocating.
 */
export class _NativeCache {
  private lastArray: Uint8Array | null = null;
  private lastPtr: Deno.PointerObject | null = null;

  /** The pointer to `array[0]`, or null if its buffer is not native. */
  pointerOf(array: Uint8Array): Deno.PointerObject | null {
    if (array !== this.lastArray) {
      this.lastArray = array;
      this.lastPtr = nativePointer(array.buffer, array.byteOffset);
    }
    return this.lastPtr;
  }
}
