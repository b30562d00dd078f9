/**
 * The typed dlopen table of libpno_dp (ffi/dp/pno_dp.h), the bridge's DPDK data plane.
 *
 * Burst calls are non-blocking fast calls (a few nanoseconds each); pointers come back as
 * `Deno.PointerValue` and the per-queue metadata arrays are viewed once, at start-up.
 *
 * @module
 */

/** Frames exchanged per rx/tx burst; the metadata arrays hold two u32 per frame. */
export const DP_BURST = 64;
/** Queues per port the library can serve. */
export const DP_MAX_QUEUES = 8;
/** Slots in the u64 array that `pno_dp_stats` fills. */
export const DP_STATS_FIELDS = [
  "ipackets",
  "opackets",
  "ibytes",
  "obytes",
  "imissed",
  "ierrors",
  "oerrors",
  "rxNoMbuf",
  "txDropped",
  "mbufsFree",
  // net_af_xdp only: frames the kernel dropped for a full RX ring or an empty fill ring.
  "rxRingFull",
  "rxFillEmpty",
] as const;

/** `pno_dp_wait`'s answer: bits saying what ended the wait (0: its timeout). */
export const DP_WOKE_WIRE = 1;
export const DP_WOKE_KICK = 2;

/** The symbol table, kept in step with ffi/dp/pno_dp.h by hand. */
export const dpSymbols = {
  pno_dp_last_error: { parameters: [], result: "pointer" },
  pno_dp_eal_init: { parameters: ["buffer", "u32"], result: "i32" },
  pno_dp_pool_create: { parameters: ["u32"], result: "i32" },
  pno_dp_pool_base: { parameters: [], result: "pointer" },
  pno_dp_pool_size: { parameters: [], result: "u64" },
  pno_dp_frame_room: { parameters: [], result: "u32" },
  pno_dp_port_by_name: { parameters: ["buffer"], result: "i32" },
  pno_dp_port_start: { parameters: ["u16", "u16", "u16"], result: "i32" },
  pno_dp_rx_meta: { parameters: ["u16"], result: "pointer" },
  pno_dp_tx_meta: { parameters: ["u16"], result: "pointer" },
  pno_dp_rx_burst: { parameters: ["u16", "u16"], result: "u32" },
  pno_dp_tx_reserve: { parameters: ["u16", "u32"], result: "u32" },
  pno_dp_tx_flush: { parameters: ["u16", "u16", "u32"], result: "u32" },
  pno_dp_stats: { parameters: ["u16", "buffer"], result: "i32" },
  pno_dp_mac: { parameters: ["u16", "buffer"], result: "i32" },
  pno_dp_link: { parameters: ["u16", "buffer"], result: "i32" },
  pno_dp_shutdown: { parameters: ["u16"], result: "i32" },
  pno_dp_rx_intr_probe: { parameters: ["u16", "u16"], result: "i32" },
  pno_dp_wake_open: { parameters: ["buffer"], result: "i32" },
  pno_dp_wake_arm: { parameters: ["i32", "i32"], result: "i32" },
  pno_dp_wake_drain: { parameters: ["i32"], result: "void" },
  pno_dp_rx_wake_fd: { parameters: ["u16"], result: "i32" },
  // Blocks in poll(2): on a thread of Deno's pool, so the event loop turns meanwhile.
  pno_dp_wait: { parameters: ["i32", "i32", "i32"], result: "i32", nonblocking: true },
  // The same, blocking the calling thread (the poll loop's, between its I/O turns).
  pno_dp_wait_here: { name: "pno_dp_wait", parameters: ["i32", "i32", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded library's functions. */
export type DpLibrary = Deno.DynamicLibrary<typeof dpSymbols>["symbols"];

/** Path of the built library (ffi/build/libpno_dp.so), overridable with PNO_DP_LIB. */
export function dpLibraryPath(): string {
  return Deno.env.get("PNO_DP_LIB") ??
    new URL("./build/libpno_dp.so", import.meta.url).pathname;
}

/** Opens libpno_dp; each Deno worker opens its own handle to the one loaded library. */
export function openDp(path = dpLibraryPath()): DpLibrary {
  try {
    return Deno.dlopen(path, dpSymbols).symbols;
  } catch (err) {
    throw new Error(
      `cannot load ${path} (${(err as Error).message}); build it with ./pno build or make -C ffi`,
    );
  }
}

/** The library's message for the last failing step. */
export function dpLastError(dp: DpLibrary): string {
  const ptr = dp.pno_dp_last_error();
  return ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
}
