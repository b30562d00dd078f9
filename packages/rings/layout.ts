/**
 * The versioned layout of a per-application region (protocol v2): the one source of truth for
 * every offset the bridge, the proxy and the C shim use (the C header is generated from here).
 *
 * ```
 * 0                 header (pno_region_header, padded to a page)
 * doorbellOffset    line 0: host to NIC (the bridge's sleeping flag and a sequence)
 * threadTable       per application thread, claimed on first use (owner line, command ring,
 *                   completion ring); completions go back to the thread that issued
 * waiterTable       per waiter (an epoll instance, or a thread blocked in poll/accept/read):
 *                   owner line with its sleeping flag, and its event queue (NIC to host)
 * procTable         per process of the application tree: its pid and, per socket, how many
 *                   of its fds refer to it (so a dead process's references can be dropped)
 * sockTable         per socket: a line the NIC writes and a line the host writes
 * streamTable       per socket: TX ring, RX ring (a listener's RX ring is its accept queue)
 * totalSize         end, a whole number of pages
 * ```
 *
 * The region is a memfd: pages nobody touched cost nothing, so the stream table is sized for
 * the largest rings while an idle connection costs its two state lines and the pages its
 * traffic touched; the bridge punches out the RX pages of a drained, idle ring.
 *
 * @example
 * ```ts
 * import { computeLayout, validateHeader, writeRegionHeader } from "./layout.ts";
 * const layout = computeLayout({ maxThreads: 2, maxWaiters: 2, maxProcs: 2, maxSockets: 4,
 *   cmdSlots: 64, cplSlots: 64, evSlots: 64, txBytes: 4096, rxBytes: 4096 });
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
export const LAYOUT_VERSION = 2;
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
  size: 192,
  align: 8,
  doc: "Region header; offsets are from the start of the region.",
  fields: [
    { name: "magic", type: "u32", offset: 0, doc: "PNO_REGION_MAGIC" },
    { name: "version", type: "u32", offset: 4, doc: "PNO_LAYOUT_VERSION" },
    { name: "total_size", type: "u64", offset: 8, doc: "bytes mapped" },
    { name: "features", type: "u32", offset: 16, doc: "feature bits" },
    { name: "max_threads", type: "u32", offset: 20, doc: "thread entries (command rings)" },
    { name: "max_waiters", type: "u32", offset: 24, doc: "waiter entries (event queues)" },
    { name: "max_procs", type: "u32", offset: 28, doc: "process entries" },
    { name: "max_sockets", type: "u32", offset: 32, doc: "socket entries" },
    { name: "cmd_slots", type: "u32", offset: 36, doc: "slots per command ring" },
    { name: "cpl_slots", type: "u32", offset: 40, doc: "slots per completion ring" },
    { name: "ev_slots", type: "u32", offset: 44, doc: "slots per waiter event queue" },
    { name: "tx_bytes", type: "u32", offset: 48, doc: "TX ring data bytes" },
    { name: "rx_bytes", type: "u32", offset: 52, doc: "RX ring data bytes" },
    { name: "local_ip", type: "u32", offset: 56, doc: "the bridge's IPv4 address, host order" },
    { name: "region_id", type: "u32", offset: 60, doc: "the bridge's id of this region" },
    { name: "thread_stride", type: "u32", offset: 64, doc: "bytes between thread entries" },
    { name: "waiter_stride", type: "u32", offset: 68, doc: "bytes between waiter entries" },
    { name: "proc_stride", type: "u32", offset: 72, doc: "bytes between process entries" },
    { name: "sock_stride", type: "u32", offset: 76, doc: "bytes between socket entries" },
    { name: "stream_stride", type: "u32", offset: 80, doc: "bytes between stream pairs" },
    { name: "doorbell_offset", type: "u64", offset: 88, doc: "host-to-NIC doorbell line" },
    { name: "thread_table", type: "u64", offset: 96, doc: "thread entries" },
    { name: "waiter_table", type: "u64", offset: 104, doc: "waiter entries" },
    { name: "proc_table", type: "u64", offset: 112, doc: "process entries" },
    { name: "sock_table", type: "u64", offset: 120, doc: "socket entries" },
    { name: "stream_table", type: "u64", offset: 128, doc: "stream ring pairs" },
  ],
};

/**
 * The host-to-NIC doorbell. Host producers bump `seq` after publishing a batch; the bridge
 * sets `sleeping` before it parks, so a producer that sees it set kicks the bridge's waker.
 */
export const DOORBELL: StructSpec = {
  name: "pno_doorbell",
  size: CACHE_LINE,
  align: CACHE_LINE,
  doc: "Doorbell: a sequence bumped after each published batch, and a sleeping flag.",
  fields: [
    { name: "seq", type: "u32", offset: 0, doc: "bumped after each published batch" },
    { name: "sleeping", type: "u32", offset: 4, doc: "1 while the bridge is parked" },
    {
      name: "control",
      type: "u32",
      offset: 8,
      doc: "bumped by the host after a frame on its control socket",
    },
  ],
};

/** A thread entry's owner line: claimed with a compare-and-swap of `owner_tid` from 0. */
export const THREAD_LINE: StructSpec = {
  name: "pno_thread_line",
  size: CACHE_LINE,
  align: CACHE_LINE,
  doc: "Owner of a command ring; a ring keeps its indices across owners.",
  fields: [
    { name: "owner_tid", type: "u32", offset: 0, doc: "claiming thread's tid, 0 when free" },
    { name: "owner_pid", type: "u32", offset: 4, doc: "its process" },
  ],
};

/**
 * A waiter's owner line. The waiter sets `sleeping` before it blocks on its wake fd and
 * re-checks its queue; the NIC, after posting, takes the flag (exchange to 0) and kicks the
 * wake fd only if it was set. `overflow` is set by the NIC when the queue was full: the waiter
 * then re-checks every socket it watches.
 */
export const WAITER_LINE: StructSpec = {
  name: "pno_waiter_line",
  size: CACHE_LINE,
  align: CACHE_LINE,
  doc: "A waiter: owner, generation, sleeping flag, overflow flag.",
  fields: [
    { name: "owner_pid", type: "u32", offset: 0, doc: "claiming process, 0 when free" },
    { name: "gen", type: "u32", offset: 4, doc: "bumped by each claim; subscriptions name it" },
    { name: "sleeping", type: "u32", offset: 8, doc: "1 while blocked on the wake fd" },
    { name: "overflow", type: "u32", offset: 12, doc: "events were lost: rescan" },
  ],
};

/** A process entry's head; `refs` (u16 per socket) follows at PROC_REFS. */
export const PROC_LINE: StructSpec = {
  name: "pno_proc_line",
  size: CACHE_LINE,
  align: CACHE_LINE,
  doc: "A process of the application: its pid; per-socket fd counts follow the line.",
  fields: [
    { name: "pid", type: "u32", offset: 0, doc: "pid, 0 when free" },
    { name: "parent", type: "u32", offset: 4, doc: "pid of the process it was forked from" },
  ],
};

/**
 * A socket entry: a line the NIC writes (readiness inputs, addresses, errors) and a line the
 * host writes (the lock shared by threads and processes, the holder count, acknowledgements).
 * Readiness is computed by the host from these and the ring indices, as Linux's tcp_poll does.
 */
export const SOCK_ENTRY: StructSpec = {
  name: "pno_sock",
  size: 2 * CACHE_LINE,
  align: CACHE_LINE,
  doc: "Shared per-socket state: NIC line (0-63) and host line (64-127).",
  fields: [
    { name: "gen", type: "u32", offset: 0, doc: "NIC: generation of the socket in this slot" },
    { name: "kind", type: "u32", offset: 4, doc: "NIC: PNO_KIND_*" },
    { name: "tcp_state", type: "u32", offset: 8, doc: "NIC: RFC 9293 state (engine numbering)" },
    { name: "shutdown", type: "u32", offset: 12, doc: "NIC: PNO_SHUT_RCV | PNO_SHUT_SEND" },
    { name: "err", type: "u32", offset: 16, doc: "NIC: pending error, positive errno" },
    { name: "err_seq", type: "u32", offset: 20, doc: "NIC: bumped when err is set" },
    { name: "local_ip", type: "u32", offset: 24, doc: "NIC: local IPv4, host order" },
    { name: "peer_ip", type: "u32", offset: 28, doc: "NIC: peer IPv4, host order" },
    { name: "local_port", type: "u16", offset: 32, doc: "NIC: local port" },
    { name: "peer_port", type: "u16", offset: 34, doc: "NIC: peer port" },
    { name: "data_ack", type: "u32", offset: 36, doc: "NIC: last data_req it served" },
    { name: "rx_want", type: "u32", offset: 40, doc: "NIC: 1 when it wants to hear of reads" },
    { name: "lock", type: "u32", offset: 64, doc: "host: 0 free, 1 held, 2 held with waiters" },
    { name: "holders", type: "u32", offset: 68, doc: "host: processes holding an fd to it" },
    { name: "err_ack", type: "u32", offset: 72, doc: "host: err_seq consumed by SO_ERROR" },
    { name: "data_req", type: "u32", offset: 76, doc: "host: bumped with each CMD_DATA" },
    { name: "host_shut", type: "u32", offset: 80, doc: "host: PNO_SHUT_RCV after SHUT_RD" },
    {
      name: "placeholder_ino",
      type: "u64",
      offset: 88,
      doc: "host: inode of the placeholder socket (pno ls matches /proc/PID/fd on it)",
    },
  ],
};

/** One entry of a listener's accept queue (its RX ring carries these instead of bytes). */
export const ACCEPT_ENTRY: StructSpec = {
  name: "pno_accept_entry",
  size: 32,
  align: 4,
  doc: "A connection waiting in a listener's accept queue.",
  fields: [
    { name: "sock", type: "u32", offset: 0, doc: "socket slot of the connection" },
    { name: "gen", type: "u32", offset: 4, doc: "its generation" },
    { name: "peer_ip", type: "u32", offset: 8, doc: "peer IPv4, host order" },
    { name: "local_ip", type: "u32", offset: 12, doc: "local IPv4, host order" },
    { name: "peer_port", type: "u16", offset: 16, doc: "peer port" },
    { name: "local_port", type: "u16", offset: 18, doc: "local port" },
  ],
};

/** `kind`: the slot is free. */
export const KIND_FREE = 0;
/** `kind`: a bound socket, neither listening nor connected yet. */
export const KIND_BOUND = 1;
/** `kind`: a listener (its RX ring is the accept queue). */
export const KIND_LISTENER = 2;
/** `kind`: a connection (active or passive open). */
export const KIND_CONN = 3;
/** `shutdown` bit: no more data will arrive (FIN received, or the connection is gone). */
export const SHUT_RCV = 1;
/** `shutdown` bit: no more data can be sent. */
export const SHUT_SEND = 2;
/** Bytes of a process entry before its per-socket reference counts. */
export const PROC_REFS = CACHE_LINE;

/** Every layout struct, for the header generator. */
export const LAYOUT_STRUCTS: readonly StructSpec[] = [
  RING_CTRL,
  REGION_HEADER,
  DOORBELL,
  THREAD_LINE,
  WAITER_LINE,
  PROC_LINE,
  SOCK_ENTRY,
  ACCEPT_ENTRY,
];
for (const s of LAYOUT_STRUCTS) checkStruct(s);

const S = (f: string) => offsetOf(SOCK_ENTRY, f);
/** Offsets inside a socket entry. */
export const SOCK_GEN: number = S("gen");
/** Offset of the kind. */
export const SOCK_KIND: number = S("kind");
/** Offset of the TCP state. */
export const SOCK_TCP_STATE: number = S("tcp_state");
/** Offset of the shutdown bits. */
export const SOCK_SHUTDOWN: number = S("shutdown");
/** Offset of the pending errno. */
export const SOCK_ERR: number = S("err");
/** Offset of the error sequence. */
export const SOCK_ERR_SEQ: number = S("err_seq");
/** Offset of the local address. */
export const SOCK_LOCAL_IP: number = S("local_ip");
/** Offset of the peer address. */
export const SOCK_PEER_IP: number = S("peer_ip");
/** Offset of the local port (u16). */
export const SOCK_LOCAL_PORT: number = S("local_port");
/** Offset of the peer port (u16). */
export const SOCK_PEER_PORT: number = S("peer_port");
/** Offset of the NIC's data acknowledgement. */
export const SOCK_DATA_ACK: number = S("data_ack");
/** Offset of the NIC's "tell me of reads" flag. */
export const SOCK_RX_WANT: number = S("rx_want");
/** Offset of the host lock word. */
export const SOCK_LOCK: number = S("lock");
/** Offset of the holder count. */
export const SOCK_HOLDERS: number = S("holders");
/** Offset of the host's error acknowledgement. */
export const SOCK_ERR_ACK: number = S("err_ack");
/** Offset of the host's data request counter. */
export const SOCK_DATA_REQ: number = S("data_req");
/** Offset of the host's shutdown bits. */
export const SOCK_HOST_SHUT: number = S("host_shut");
/** Offset of the placeholder's inode (u64), as fstat(2) reports it for the program's fd. */
export const SOCK_PLACEHOLDER_INO: number = S("placeholder_ino");
/** Offset of the sequence word in a doorbell. */
export const DOORBELL_SEQ: number = offsetOf(DOORBELL, "seq");
/** Offset of the sleeping flag in a doorbell. */
export const DOORBELL_SLEEPING: number = offsetOf(DOORBELL, "sleeping");
/**
 * Offset of the control word in a doorbell: the host bumps it after it writes a frame on its
 * control socket (a wake socket, a child joining), so that a busy bridge serves its control
 * I/O at once instead of at its next I/O turn.
 */
export const DOORBELL_CONTROL: number = offsetOf(DOORBELL, "control");
/** Offset of a waiter's owner pid. */
export const WAITER_OWNER: number = offsetOf(WAITER_LINE, "owner_pid");
/** Offset of a waiter's generation. */
export const WAITER_GEN: number = offsetOf(WAITER_LINE, "gen");
/** Offset of a waiter's sleeping flag. */
export const WAITER_SLEEPING: number = offsetOf(WAITER_LINE, "sleeping");
/** Offset of a waiter's overflow flag. */
export const WAITER_OVERFLOW: number = offsetOf(WAITER_LINE, "overflow");
/** Offset of a thread entry's owner tid. */
export const THREAD_OWNER_TID: number = offsetOf(THREAD_LINE, "owner_tid");
/** Offset of a thread entry's owner pid. */
export const THREAD_OWNER_PID: number = offsetOf(THREAD_LINE, "owner_pid");
/** Offset of a process entry's pid. */
export const PROC_PID: number = offsetOf(PROC_LINE, "pid");
/** Header field offsets. */
export const HDR_MAGIC: number = offsetOf(REGION_HEADER, "magic");
/** Offset of the layout version. */
export const HDR_VERSION: number = offsetOf(REGION_HEADER, "version");
/** Offset of the total size (u64). */
export const HDR_TOTAL_SIZE: number = offsetOf(REGION_HEADER, "total_size");

/** What a region is sized for. */
export interface RegionParams {
  /** Application threads that can hold a command ring at once. */
  readonly maxThreads: number;
  /** Waiters (epoll instances and blocked threads) at once. */
  readonly maxWaiters: number;
  /** Processes of the application tree at once. */
  readonly maxProcs: number;
  /** Sockets (state entries and stream pairs). */
  readonly maxSockets: number;
  /** Slots per command ring (power of two). */
  readonly cmdSlots: number;
  /** Slots per completion ring (power of two). */
  readonly cplSlots: number;
  /** Slots per waiter event queue (power of two). */
  readonly evSlots: number;
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
  /** The host-to-NIC doorbell line. */
  readonly doorbellOffset: number;
  /** Thread entries: owner line, command ring (ctrl, slots), completion ring (ctrl, slots). */
  readonly threadTable: number;
  /** Bytes between thread entries. */
  readonly threadStride: number;
  /** Waiter entries: owner line, event ring (ctrl, slots). */
  readonly waiterTable: number;
  /** Bytes between waiter entries. */
  readonly waiterStride: number;
  /** Process entries: line, then u16 references per socket. */
  readonly procTable: number;
  /** Bytes between process entries. */
  readonly procStride: number;
  /** Socket entries. */
  readonly sockTable: number;
  /** Stream pairs: TX ctrl, TX data, RX ctrl, RX data. */
  readonly streamTable: number;
  /** Bytes between stream pairs. */
  readonly streamStride: number;
  /** Within a thread entry: command ring control. */
  readonly cmdCtrl: number;
  /** Within a thread entry: command slots. */
  readonly cmdSlotsOffset: number;
  /** Within a thread entry: completion ring control. */
  readonly cplCtrl: number;
  /** Within a thread entry: completion slots. */
  readonly cplSlotsOffset: number;
  /** Within a waiter entry: event ring control. */
  readonly evCtrl: number;
  /** Within a waiter entry: event slots. */
  readonly evSlotsOffset: number;
  /** Within a stream pair: TX ring control. */
  readonly txCtrl: number;
  /** Within a stream pair: TX data. */
  readonly txData: number;
  /** Within a stream pair: RX ring control. */
  readonly rxCtrl: number;
  /** Within a stream pair: RX data. */
  readonly rxData: number;
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Computes every offset of a region; throws a RangeError on parameters out of range. */
export function computeLayout(params: RegionParams): RegionLayout {
  const { maxThreads, maxWaiters, maxProcs, maxSockets } = params;
  const { cmdSlots, cplSlots, evSlots, txBytes, rxBytes } = params;
  const counts = [
    ["maxThreads", maxThreads, 1024],
    ["maxWaiters", maxWaiters, 65536],
    ["maxProcs", maxProcs, 1024],
    ["maxSockets", maxSockets, 65535],
  ] as const;
  for (const [name, n, max] of counts) {
    if (!Number.isInteger(n) || n < 1 || n > max) {
      throw new RangeError(`${name} ${n} outside [1, ${max}]`);
    }
  }
  checkSlotCount(cmdSlots);
  checkSlotCount(cplSlots);
  checkSlotCount(evSlots);
  checkRingCapacity(txBytes);
  checkRingCapacity(rxBytes);
  if (txBytes < PAGE_SIZE || rxBytes < PAGE_SIZE) {
    throw new RangeError("stream rings must hold at least a page");
  }
  const doorbellOffset = PAGE_SIZE;
  const threadTable = 2 * PAGE_SIZE;
  const cmdCtrl = CACHE_LINE;
  const cmdSlotsOffset = cmdCtrl + BYTE_RING_CTRL_SIZE;
  const cplCtrl = cmdSlotsOffset + cmdSlots * DESC_SIZE;
  const cplSlotsOffset = cplCtrl + BYTE_RING_CTRL_SIZE;
  const threadStride = alignUp(cplSlotsOffset + cplSlots * DESC_SIZE, CACHE_LINE);
  const waiterTable = alignUp(threadTable + maxThreads * threadStride, PAGE_SIZE);
  const evCtrl = CACHE_LINE;
  const evSlotsOffset = evCtrl + BYTE_RING_CTRL_SIZE;
  const waiterStride = alignUp(evSlotsOffset + evSlots * DESC_SIZE, CACHE_LINE);
  const procTable = alignUp(waiterTable + maxWaiters * waiterStride, PAGE_SIZE);
  const procStride = alignUp(PROC_REFS + 2 * maxSockets, PAGE_SIZE);
  const sockTable = alignUp(procTable + maxProcs * procStride, PAGE_SIZE);
  const streamTable = alignUp(sockTable + maxSockets * SOCK_ENTRY.size, PAGE_SIZE);
  // Data areas start on page boundaries so the bridge can give a drained ring's pages back.
  const txCtrl = 0;
  const txData = PAGE_SIZE;
  const rxCtrl = txData + txBytes;
  const rxData = rxCtrl + PAGE_SIZE;
  const streamStride = rxData + rxBytes;
  const totalSize = streamTable + maxSockets * streamStride;
  if (totalSize > 2 ** 40) throw new RangeError(`region of ${totalSize} bytes is too large`);
  return {
    params: {
      maxThreads,
      maxWaiters,
      maxProcs,
      maxSockets,
      cmdSlots,
      cplSlots,
      evSlots,
      txBytes,
      rxBytes,
    },
    totalSize,
    doorbellOffset,
    threadTable,
    threadStride,
    waiterTable,
    waiterStride,
    procTable,
    procStride,
    sockTable,
    streamTable,
    streamStride,
    cmdCtrl,
    cmdSlotsOffset,
    cplCtrl,
    cplSlotsOffset,
    evCtrl,
    evSlotsOffset,
    txCtrl,
    txData,
    rxCtrl,
    rxData,
  };
}

/** Offset of thread entry `t`. */
export function threadOffset(layout: RegionLayout, t: number): number {
  return layout.threadTable + t * layout.threadStride;
}

/** Offset of waiter entry `w`. */
export function waiterOffset(layout: RegionLayout, w: number): number {
  return layout.waiterTable + w * layout.waiterStride;
}

/** Offset of process entry `p`. */
export function procOffset(layout: RegionLayout, p: number): number {
  return layout.procTable + p * layout.procStride;
}

/** Offset of socket entry `s`. */
export function sockOffset(layout: RegionLayout, s: number): number {
  return layout.sockTable + s * SOCK_ENTRY.size;
}

/** Offset of socket `s`'s stream pair. */
export function streamOffset(layout: RegionLayout, s: number): number {
  return layout.streamTable + s * layout.streamStride;
}

const H = (f: string) => offsetOf(REGION_HEADER, f);

/** What the bridge writes into a header besides the layout. */
export interface RegionIdentity {
  /** The bridge's IPv4 address (host order): the shim's policy offloads traffic to it. */
  readonly localIp: number;
  /** The bridge's id for the region (a forked child names it when it joins). */
  readonly regionId: number;
}

/** Writes the header for `layout` at the start of `buffer` (the rest is left as is: zero). */
export function writeRegionHeader(
  buffer: ArrayBufferLike,
  layout: RegionLayout,
  identity: RegionIdentity = { localIp: 0, regionId: 0 },
): void {
  const v = new DataView(buffer, 0, REGION_HEADER.size);
  const p = layout.params;
  const u32 = (f: string, n: number) => v.setUint32(H(f), n, true);
  const u64 = (f: string, n: number) => v.setBigUint64(H(f), BigInt(n), true);
  u32("version", LAYOUT_VERSION);
  u64("total_size", layout.totalSize);
  u32("features", FEATURES_KNOWN);
  u32("max_threads", p.maxThreads);
  u32("max_waiters", p.maxWaiters);
  u32("max_procs", p.maxProcs);
  u32("max_sockets", p.maxSockets);
  u32("cmd_slots", p.cmdSlots);
  u32("cpl_slots", p.cplSlots);
  u32("ev_slots", p.evSlots);
  u32("tx_bytes", p.txBytes);
  u32("rx_bytes", p.rxBytes);
  u32("local_ip", identity.localIp >>> 0);
  u32("region_id", identity.regionId);
  u32("thread_stride", layout.threadStride);
  u32("waiter_stride", layout.waiterStride);
  u32("proc_stride", layout.procStride);
  u32("sock_stride", SOCK_ENTRY.size);
  u32("stream_stride", layout.streamStride);
  u64("doorbell_offset", layout.doorbellOffset);
  u64("thread_table", layout.threadTable);
  u64("waiter_table", layout.waiterTable);
  u64("proc_table", layout.procTable);
  u64("sock_table", layout.sockTable);
  u64("stream_table", layout.streamTable);
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
      maxWaiters: u32("max_waiters"),
      maxProcs: u32("max_procs"),
      maxSockets: u32("max_sockets"),
      cmdSlots: u32("cmd_slots"),
      cplSlots: u32("cpl_slots"),
      evSlots: u32("ev_slots"),
      txBytes: u32("tx_bytes"),
      rxBytes: u32("rx_bytes"),
    });
  } catch (e) {
    return `torn header: parameters out of range: ${(e as Error).message}`;
  }
  const expect: [string, number, number][] = [
    ["total_size", u64("total_size"), layout.totalSize],
    ["thread_stride", u32("thread_stride"), layout.threadStride],
    ["waiter_stride", u32("waiter_stride"), layout.waiterStride],
    ["proc_stride", u32("proc_stride"), layout.procStride],
    ["sock_stride", u32("sock_stride"), SOCK_ENTRY.size],
    ["stream_stride", u32("stream_stride"), layout.streamStride],
    ["doorbell_offset", u64("doorbell_offset"), layout.doorbellOffset],
    ["thread_table", u64("thread_table"), layout.threadTable],
    ["waiter_table", u64("waiter_table"), layout.waiterTable],
    ["proc_table", u64("proc_table"), layout.procTable],
    ["sock_table", u64("sock_table"), layout.sockTable],
    ["stream_table", u64("stream_table"), layout.streamTable],
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

/** The bridge's IPv4 address (host order) from a region header. */
export function readRegionLocalIp(buffer: ArrayBufferLike): number {
  return new DataView(buffer, 0, REGION_HEADER.size).getUint32(H("local_ip"), true);
}
