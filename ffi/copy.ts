/**
 * The typed dlopen table of libpno_copy (ffi/copy/pno_copy.h): memcpy between native memory
 * areas given as (base pointer, offset), for the ring copies whose both sides are native (the
 * mapped region, the DPDK mbuf pool); the Internet checksum, alone or fused with a ring copy in
 * either direction. Every symbol is a fast call (pointers and u32 only), so a copy costs a few
 * nanoseconds plus memcpy and allocates nothing.
 *
 * @module
 */

/** The symbol table, kept in step with ffi/copy/pno_copy.h by hand. */
export const copySymbols = {
  pno_copy: { parameters: ["pointer", "u32", "pointer", "u32", "u32"], result: "void" },
  pno_copy_from_ring: {
    parameters: ["pointer", "u32", "pointer", "u32", "u32", "u32"],
    result: "void",
  },
  pno_copy_to_ring: {
    parameters: ["pointer", "u32", "u32", "pointer", "u32", "u32"],
    result: "void",
  },
  // The same copies between byte arrays (the rings of the bridge's own services, MemStream):
  // no view object per copy, as `set(subarray(...))` needs.
  pno_copy_from_ring_arrays: {
    name: "pno_copy_from_ring",
    parameters: ["buffer", "u32", "buffer", "u32", "u32", "u32"],
    result: "void",
  },
  pno_copy_to_ring_arrays: {
    name: "pno_copy_to_ring",
    parameters: ["buffer", "u32", "u32", "buffer", "u32", "u32"],
    result: "void",
  },
  // The Internet checksum of any byte array (V8's or native): "buffer" passes its address.
  pno_csum: { parameters: ["u32", "buffer", "u32", "u32"], result: "u32" },
  pno_copy_from_ring_csum: {
    parameters: ["pointer", "u32", "pointer", "u32", "u32", "u32"],
    result: "u32",
  },
  // The same copy and sum between byte arrays (a ring of the bridge's own services).
  pno_copy_from_ring_csum_arrays: {
    name: "pno_copy_from_ring_csum",
    parameters: ["buffer", "u32", "buffer", "u32", "u32", "u32"],
    result: "u32",
  },
  // A received payload into a receive ring, the segment (header and payload) summed in the
  // same pass.
  pno_copy_to_ring_csum: {
    parameters: ["pointer", "u32", "u32", "pointer", "u32", "u32", "u32"],
    result: "u32",
  },
  pno_copy_to_ring_csum_arrays: {
    name: "pno_copy_to_ring_csum",
    parameters: ["buffer", "u32", "u32", "buffer", "u32", "u32", "u32"],
    result: "u32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's functions. */
export type CopyLibrary = Deno.DynamicLibrary<typeof copySymbols>["symbols"];

/** Path of the built library (ffi/build/libpno_copy.so), overridable with PNO_COPY_LIB. */
export function copyLibraryPath(): string {
  return Deno.env.get("PNO_COPY_LIB") ??
    new URL("./build/libpno_copy.so", import.meta.url).pathname;
}

let lib: CopyLibrary | null | undefined;

/**
 * Opens libpno_copy once; null if it cannot be loaded (not built, no FFI permission), in which
 * case callers keep their TypeScript copies.
 */
export function openCopy(path = copyLibraryPath()): CopyLibrary | null {
  if (lib === undefined) {
    try {
      lib = Deno.dlopen(path, copySymbols).symbols;
    } catch {
      lib = null;
    }
  }
  return lib;
}
