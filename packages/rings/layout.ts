/**
 * The versioned layout of a per-application region: the one source of truth for every offset
 * the bridge, the proxy and the C shim use (the C header is generated from this file).
 *
 * ```
 * 0                 header (pno_region_header, 128 B, padded to a page)
 * doorbellOffset    doorbells: line 0 host->NIC (region), line 1+t NIC->thread t (64 B each)
 * gTableOffset      G-ring pairs, one per application thread, gPairStride apart:
 *                     cmd ring control (128 B), cmd slots, cpl ring control (128 B), cpl slots
 * sTableOffset      S-ring pairs, one per socket, sPairStride apart:
 *                     TX ring control (128 B), TX data, RX ring control (128 B), RX data
 * stateTableOffset  socket state entries (pno_sock_state, 16 B each)
 * totalSize         end, a whole number of pages
 * ```
 *
 * Tables start on page boundaries; every ring control block on a cache line.
 *
 * @example
 * ```ts
 * import { computeLayout, validateHeader, writeRegionHeader } from "./layout.ts";
 * const layout = computeLayout({ maxThreads: 2, maxSockets: 4, cmdSlots: 64, cplSlots: 64,
 *   txBytes: 4096, rxBytes: 4096 });
 * const mem = new ArrayBuffer(layout.totalSize);
 * writeRegionHeader(mem, layout);
 * if (validateHeader(mem, mem.byteLength) !== null) throw new Error("bad header");
 * ```
 * @module
 */

import { checkStruct, offsetOf, type StructSpec } from "./_schema.ts";
import { BYTE_RING_CTRL_SIZE, CACHE_LINE, checkRingCapacity } from "./byte_ring.ts";
import { checkSlotCount, DESC_SIZE } from "./desc_ring.ts";

/** "PNOR" read as a little-endian u32. */
export const REGION_MAGIC = 0x524f4e50;
/** Bumped on any incompatible change of this file or of descriptors.ts. */
export const LAYOUT_VERSION = 1;
/** Page size the tables are aligned to. */
export const PAGE_SIZE = 4096;
/** Feature bits (none defined yet; a consumer refuses bits it does not know). */
export const FEATURES_KNOWN = 0;

/** Ring control block: producer and consumer indices on separate cache lines. */
export const RING_CTRL: StructSpec = {
  name: "pno_ring_ctrl",
  size: BYTE_RING_CTRL_SIZE,
  align: CACHE_LINE,
  doc: "Ring indices: free-running u32, each on its own cache line.",
  fields: [
    { name: "prod", type: "u32", offset: 0, doc: "producer index (bytes or slots)" },
    { name: "cons", type: "u32", offset: CACHE_LINE, doc: "consumer index" },
  ],
};

/** The region header. */
export const REGION_HEADER: StructSpec = {
  name: "pno_region_header",
  size: 128,
  align: 8,
  doc: "Region header; offsets are from the start of the region.",
  fields: [
    { name: "magic", type: "u32", offset: 0, doc: "PNO_REGION_MAGIC" },
    { name: "version", type: "u32", offset: 4, doc: "PNO_LAYOUT_VERSION" },
    { name: "total_size", type: "u64", offset: 8, doc: "bytes mapped" },
    { name: "header_size", type: "u32", offset: 16, doc: "bytes before the doorbells" },
    { name: "features", type: "u32", offset: 20, doc: "feature bits" },
    { name: "max_threads", type: "u32", offset: 24, doc: "G-ring pairs" },
    { name: "max_sockets", type: "u32", offset: 28, doc: "S-ring pairs and state entries" },
    { name: "cmd_slots", type: "u32", offset: 32, doc: "slots per command ring" },
    { name: "cpl_slots", type: "u32", offset: 36, doc: "slots per completion ring" },
    { name: "desc_size", type: "u32", offset: 40, doc: "bytes per slot" },
    { name: "tx_bytes", type: "u32", offset: 44, doc: "TX ring data bytes" },
    { name: "rx_bytes", type: "u32", offset: 48, doc: "RX ring data bytes" },
    { name: "g_pair_stride", type: "u32", offset: 52, doc: "bytes between G-ring pairs" },
    { name: "s_pair_stride", type: "u32", offset: 56, doc: "bytes between S-ring pairs" },
    { name: "state_stride", type: "u32", offset: 60, doc: "bytes between state entries" },
    { name: "doorbell_offset", type: "u64", offset: 64, doc: "doorbell table" },
    { name: "g_table_offset", type: "u64", offset: 72, doc: "G-ring pair table" },
    { name: "s_table_offset", type: "u64", offset: 80, doc: "S-ring pair table" },
    { name: "state_table_offset", type: "u64", offset: 88, doc: "socket state table" },
    { name: "doorbell_stride", type: "u32", offset: 96, doc: "bytes between doorbells" },
  ],
};

/**
 * A doorbell line. Line 0 is host to NIC: host producers bump `seq` after publishing any batch,
 * and the bridge polls that one word per region; the bridge sets `sleeping` before it parks, so
 * the host knows to kick it. Line 1+t is NIC to thread t: the bridge bumps `seq` after
 * publishing completions; thread t sets `sleeping` before it blocks, and only then does the
 * bridge ask for a wakeup (eventfd through the proxy).
 */
export const DOORBELL: StructSpec = {
  name: "pno_doorbell",
  size: CACHE_LINE,
  align: CACHE_LINE,
  doc: "Doorbell: a sequence bumped after each published batch, and a sleeping flag.",
  fields: [
    { name: "seq", type: "u32", offset: 0, doc: "bumped after each published batch" },
    { name: "sleeping", type: "u32", offset: 4, doc: "1 while the consumer side is parked" },
  ],
};

/** Per-socket readiness, read by epoll/poll/select without a syscall. */
export const SOCK_STATE: StructSpec = {
  name: "pno_sock_state",
  size: 16,
  align: 4,
  doc: "Socket readiness: bits set by the NIC, SLEEPING by the host, both with atomic RMW.",
  fields: [
    { name: "bits", type: "u32", offset: 0, doc: "PNO_STATE_* bits" },
    { name: "err", type: "u32", offset: 4, doc: "pending SO_ERROR errno" },
    { name: "seq", type: "u32", offset: 8, doc: "bumped on every change (edge-triggered epoll)" },
  ],
};

/** State bit: the RX ring has bytes, or a listener has a pending connection. */
export const STATE_READABLE = 1;
/** State bit: the TX ring has room. */
export const STATE_WRITABLE = 2;
/** State bit: the peer closed (FIN) or the connection is gone. */
export const STATE_HUP = 4;
/** State bit: an error is pending in `err`. */
export const STATE_ERROR = 8;
/** State bit: a host thread is blocked waiting on this socket; the NIC must wake it. */
export const STATE_SLEEPING = 16;

/** Every layout struct, for the header generator. */
export const LAYOUT_STRUCTS: readonly StructSpec[] = [
  RING_CTRL,
  REGION_HEADER,
  DOORBELL,
  SOCK_STATE,
];
for (const s of LAYOUT_STRUCTS) checkStruct(s);

/** Header field offsets. */
export const HDR_MAGIC: number = offsetOf(REGION_HEADER, "magic");
/** Offset of the layout version. */
export const HDR_VERSION: number = offsetOf(REGION_HEADER, "version");
/** Offset of the total size (u64). */
export const HDR_TOTAL_SIZE: number = offsetOf(REGION_HEADER, "total_size");
/** Offset of the state bits in a state entry. */
export const STATE_BITS: number = offsetOf(SOCK_STATE, "bits");
/** Offset of the pending errno in a state entry. */
export const STATE_ERR: number = offsetOf(SOCK_STATE, "err");
/** Offset of the change counter in a state entry. */
export const STATE_SEQ: number = offsetOf(SOCK_STATE, "seq");
/** Offset of the sequence word in a doorbell. */
export const DOORBELL_SEQ: number = offsetOf(DOORBELL, "seq");
/** Offset of the sleeping flag in a doorbell. */
export const DOORBELL_SLEEPING: number = offsetOf(DOORBELL, "sleeping");

/** What a region is sized for. */
export interface RegionParams {
  /** Application threads (G-ring pairs). */
  readonly maxThreads: number;
  /** Sockets (S-ring pairs and state entries). */
  readonly maxSockets: number;
  /** Slots per command ring (power of two). */
  readonly cmdSlots: number;
  /** Slots per completion/event ring (power of two). */
  readonly cplSlots: number;
  /** TX ring bytes per socket (power of two). */
  readonly txBytes: number;
  /** RX ring bytes per socket (power of two). */
  readonly rxBytes: number;
}

/** Every offset of a region, computed from its parameters. */
export interface RegionLayout {
  /** The parameters this layout was computed from. */
  readonly params: RegionParams;
  /** Bytes to map (a whole number of pages). */
  readonly totalSize: number;
  /** Bytes reserved for the header (one page). */
  readonly headerSize: number;
  /** Start of the doorbell table (1 + maxThreads lines). */
  readonly doorbellOffset: number;
  /** Start of the G-ring pair table. */
  readonly gTableOffset: number;
  /** Bytes between G-ring pairs. */
  readonly gPairStride: number;
  /** Start of the S-ring pair table. */
  readonly sTableOffset: number;
  /** Bytes between S-ring pairs. */
  readonly sPairStride: number;
  /** Start of the socket state table. */
  readonly stateTableOffset: number;
  /** Within a G pair: command ring control, slots, completion ring control, slots. */
  readonly cmdCtrl: number;
  /** Offset of the command slots within a G pair. */
  readonly cmdSlotsOffset: number;
  /** Offset of the completion ring control within a G pair. */
  readonly cplCtrl: number;
  /** Offset of the completion slots within a G pair. */
  readonly cplSlotsOffset: number;
  /** Within an S pair: TX ring control, TX data, RX ring control, RX data. */
  readonly txCtrl: number;
  /** Offset of the TX data within an S pair. */
  readonly txData: number;
  /** Offset of the RX ring control within an S pair. */
  readonly rxCtrl: number;
  /** Offset of the RX data within an S pair. */
  readonly rxData: number;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Computes every offset of a region; throws a RangeError on parameters out of range. */
export function computeLayout(params: RegionParams): RegionLayout {
  const { maxThreads, maxSockets, cmdSlots, cplSlots, txBytes, rxBytes } = params;
  for (const [name, n] of [["maxThreads", maxThreads], ["maxSockets", maxSockets]] as const) {
    if (!Number.isInteger(n) || n < 1 || n > 65536) {
      throw new RangeError(`${name} ${n} outside [1, 65536]`);
    }
  }
  checkSlotCount(cmdSlots);
  checkSlotCount(cplSlots);
  checkRingCapacity(txBytes);
  checkRingCapacity(rxBytes);
  if (txBytes < CACHE_LINE || rxBytes < CACHE_LINE) {
    throw new RangeError("stream rings must hold at least one cache line");
  }
  const headerSize = PAGE_SIZE;
  const doorbellOffset = headerSize;
  const gTableOffset = alignUp(doorbellOffset + (1 + maxThreads) * DOORBELL.size, PAGE_SIZE);
  const cmdCtrl = 0;
  const cmdSlotsOffset = BYTE_RING_CTRL_SIZE;
  const cplCtrl = cmdSlotsOffset + cmdSlots * DESC_SIZE;
  const cplSlotsOffset = cplCtrl + BYTE_RING_CTRL_SIZE;
  const gPairStride = alignUp(cplSlotsOffset + cplSlots * DESC_SIZE, CACHE_LINE);
  const sTableOffset = alignUp(gTableOffset + maxThreads * gPairStride, PAGE_SIZE);
  const txCtrl = 0;
  const txData = BYTE_RING_CTRL_SIZE;
  const rxCtrl = txData + txBytes;
  const rxData = rxCtrl + BYTE_RING_CTRL_SIZE;
  const sPairStride = alignUp(rxData + rxBytes, CACHE_LINE);
  const stateTableOffset = alignUp(sTableOffset + maxSockets * sPairStride, PAGE_SIZE);
  const totalSize = alignUp(stateTableOffset + maxSockets * SOCK_STATE.size, PAGE_SIZE);
  if (totalSize > 2 ** 40) throw new RangeError(`region of ${totalSize} bytes is too large`);
  return {
    params: { maxThreads, maxSockets, cmdSlots, cplSlots, txBytes, rxBytes },
    totalSize,
    headerSize,
    doorbellOffset,
    gTableOffset,
    gPairStride,
    sTableOffset,
    sPairStride,
    stateTableOffset,
    cmdCtrl,
    cmdSlotsOffset,
    cplCtrl,
    cplSlotsOffset,
    txCtrl,
    txData,
    rxCtrl,
    rxData,
  };
}

/** Offset of thread `t`'s G-ring pair. */
export function gPairOffset(layout: RegionLayout, t: number): number {
  return layout.gTableOffset + t * layout.gPairStride;
}

/** Offset of socket `s`'s S-ring pair. */
export function sPairOffset(layout: RegionLayout, s: number): number {
  return layout.sTableOffset + s * layout.sPairStride;
}

/** Offset of socket `s`'s state entry. */
export function stateOffset(layout: RegionLayout, s: number): number {
  return layout.stateTableOffset + s * SOCK_STATE.size;
}

/** Offset of the region doorbell (host to NIC). */
export function regionDoorbellOffset(layout: RegionLayout): number {
  return layout.doorbellOffset;
}

/** Offset of thread `t`'s doorbell (NIC to host). */
export function threadDoorbellOffset(layout: RegionLayout, t: number): number {
  return layout.doorbellOffset + (1 + t) * DOORBELL.size;
}

const H = (f: string) => offsetOf(REGION_HEADER, f);

/** Writes the header for `layout` at the start of `buffer` (the rest is left as is: zero). */
export function writeRegionHeader(buffer: ArrayBufferLike, layout: RegionLayout): void {
  const v = new DataView(buffer, 0, REGION_HEADER.size);
  const p = layout.params;
  const u32 = (f: string, n: number) => v.setUint32(H(f), n, true);
  const u64 = (f: string, n: number) => v.setBigUint64(H(f), BigInt(n), true);
  u32("version", LAYOUT_VERSION);
  u64("total_size", layout.totalSize);
  u32("header_size", layout.headerSize);
  u32("features", FEATURES_KNOWN);
  u32("max_threads", p.maxThreads);
  u32("max_sockets", p.maxSockets);
  u32("cmd_slots", p.cmdSlots);
  u32("cpl_slots", p.cplSlots);
  u32("desc_size", DESC_SIZE);
  u32("tx_bytes", p.txBytes);
  u32("rx_bytes", p.rxBytes);
  u32("g_pair_stride", layout.gPairStride);
  u32("s_pair_stride", layout.sPairStride);
  u32("state_stride", SOCK_STATE.size);
  u64("doorbell_offset", layout.doorbellOffset);
  u64("g_table_offset", layout.gTableOffset);
  u64("s_table_offset", layout.sTableOffset);
  u64("state_table_offset", layout.stateTableOffset);
  u32("doorbell_stride", DOORBELL.size);
  // Magic last: a reader that sees it sees a complete header (the mapping is shared).
  Atomics.store(new Uint32Array(buffer, 0, 1), 0, REGION_MAGIC);
}

/**
 * Reads the parameters from a header and recomputes the layout, checking the header against
 * it. Returns the layout, or an error string: bad magic, version mismatch, unknown features,
 * or sizes inconsistent with each other or with `mappedLength` (a torn header).
 */
export function readRegionHeader(
  buffer: ArrayBufferLike,
  mappedLength: number,
): RegionLayout | string {
  if (buffer.byteLength < REGION_HEADER.size || mappedLength < REGION_HEADER.size) {
    return `region of ${mappedLength} bytes is smaller than its header`;
  }
  const v = new DataView(buffer, 0, REGION_HEADER.size);
  const u32 = (f: string) => v.getUint32(H(f), true);
  const u64 = (f: string) => Number(v.getBigUint64(H(f), true));
  const magic = u32("magic");
  if (magic !== REGION_MAGIC) {
    return `bad magic 0x${magic.toString(16)} (want 0x${
      REGION_MAGIC.toString(16)
    }): not a PnO region`;
  }
  const version = u32("version");
  if (version !== LAYOUT_VERSION) {
    return `layout version ${version} does not match this build's ${LAYOUT_VERSION}`;
  }
  const features = u32("features");
  if ((features & ~FEATURES_KNOWN) !== 0) {
    return `unknown feature bits 0x${(features & ~FEATURES_KNOWN).toString(16)}`;
  }
  let layout: RegionLayout;
  try {
    layout = computeLayout({
      maxThreads: u32("max_threads"),
      maxSockets: u32("max_sockets"),
      cmdSlots: u32("cmd_slots"),
      cplSlots: u32("cpl_slots"),
      txBytes: u32("tx_bytes"),
      rxBytes: u32("rx_bytes"),
    });
  } catch (e) {
    return `torn header: parameters out of range: ${(e as Error).message}`;
  }
  const expect: [string, number, number][] = [
    ["total_size", u64("total_size"), layout.totalSize],
    ["header_size", u32("header_size"), layout.headerSize],
    ["desc_size", u32("desc_size"), DESC_SIZE],
    ["g_pair_stride", u32("g_pair_stride"), layout.gPairStride],
    ["s_pair_stride", u32("s_pair_stride"), layout.sPairStride],
    ["state_stride", u32("state_stride"), SOCK_STATE.size],
    ["doorbell_offset", u64("doorbell_offset"), layout.doorbellOffset],
    ["g_table_offset", u64("g_table_offset"), layout.gTableOffset],
    ["s_table_offset", u64("s_table_offset"), layout.sTableOffset],
    ["state_table_offset", u64("state_table_offset"), layout.stateTableOffset],
    ["doorbell_stride", u32("doorbell_stride"), DOORBELL.size],
  ];
  for (const [name, got, want] of expect) {
    if (got !== want) return `torn header: ${name} is ${got}, the parameters give ${want}`;
  }
  if (layout.totalSize !== mappedLength || buffer.byteLength < layout.totalSize) {
    return `torn header: total_size ${layout.totalSize} but ${mappedLength} bytes are mapped`;
  }
  return layout;
}

/** Returns null if the header is valid for a mapping of `mappedLength` bytes, else why not. */
export function validateHeader(buffer: ArrayBufferLike, mappedLength: number): string | null {
  const r = readRegionHeader(buffer, mappedLength);
  return typeof r === "string" ? r : null;
}
