/**
 * Generates `ffi/include/pno_rings.h` from layout.ts and descriptors.ts: the structs with the
 * same offsets (checked by _Static_assert), the opcodes, and static inline ring operations for
 * the C shim (host side: command producer, completion consumer, TX writer, RX reader).
 *
 * Run with `deno task gen`; layout_test.ts checks that the committed header is current.
 *
 * @module
 */

import { fieldSize, type StructSpec } from "./_schema.ts";
import { BYTE_RING_CTRL_SIZE, RING_FAULT } from "./byte_ring.ts";
import { DESC_SIZE } from "./desc_ring.ts";
import * as D from "./descriptors.ts";
import * as L from "./layout.ts";

/** Path of the generated header, relative to the repository root. */
export const HEADER_PATH = "ffi/include/pno_rings.h";

function ctype(t: string): string {
  return {
    u8: "uint8_t",
    u16: "uint16_t",
    u32: "uint32_t",
    i32: "int32_t",
    u64: "uint64_t",
  }[t]!;
}

/** C declaration of one struct, padding made explicit, offsets asserted. */
export function structToC(s: StructSpec): string {
  const out: string[] = [`/** ${s.doc} */`, `struct ${s.name} {`];
  let at = 0;
  let pad = 0;
  for (const f of s.fields) {
    if (f.offset > at) out.push(`\tuint8_t _pad${pad++}[${f.offset - at}];`);
    const t = typeof f.type === "string" ? ctype(f.type) : `struct ${f.type.name}`;
    const arr = f.count !== undefined ? `[${f.count}]` : "";
    out.push(`\t${t} ${f.name}${arr};${f.doc ? ` /* ${f.doc} */` : ""}`);
    at = f.offset + fieldSize(f);
  }
  if (s.size > at) out.push(`\tuint8_t _pad${pad++}[${s.size - at}];`);
  out.push(`} __attribute__((aligned(${s.align})));`);
  out.push(`_Static_assert(sizeof(struct ${s.name}) == ${s.size}, "${s.name} size");`);
  for (const f of s.fields) {
    out.push(
      `_Static_assert(offsetof(struct ${s.name}, ${f.name}) == ${f.offset}, "${s.name}.${f.name}");`,
    );
  }
  return out.join("\n");
}

function define(name: string, value: number | string, doc?: string): string {
  const v = typeof value === "number" && value > 0xffff ? `0x${value.toString(16)}u` : value;
  return `#define ${name} ${v}${doc ? ` /* ${doc} */` : ""}`;
}

const RING_OPS = `
/* ---- Ring operations (host side) -------------------------------------------------------------
 * Free-running u32 indices; each side owns one index (kept in the handle, only ever stored to
 * shared memory) and caches the other, reading it with acquire only when the cache is short.
 * Indices from shared memory are checked: a bad one makes the call return PNO_RING_FAULT and
 * counts it in faults; no copy ever leaves the ring. */

/** One side of a byte ring (S-type): TX producer or RX consumer. */
struct pno_bring {
	struct pno_ring_ctrl *ctrl;
	uint8_t *data;
	uint32_t cap;    /* power of two */
	uint32_t own;    /* this side's index */
	uint32_t cached; /* the other side's index, last validated */
	uint32_t faults;
};

/** One side of a descriptor ring (G-type): command producer or completion consumer. */
struct pno_dring {
	struct pno_ring_ctrl *ctrl;
	uint8_t *slots;
	uint32_t n;      /* slots, power of two */
	uint32_t own;
	uint32_t cached;
	uint32_t faults;
};

static inline void pno_bring_init_producer(struct pno_bring *r, void *ctrl, void *data,
					   uint32_t cap)
{
	r->ctrl = (struct pno_ring_ctrl *)ctrl;
	r->data = (uint8_t *)data;
	r->cap = cap;
	r->own = __atomic_load_n(&r->ctrl->prod, __ATOMIC_RELAXED);
	/* The consumer may be up to a whole ring behind: the first look at it re-reads it. */
	r->cached = r->own - r->cap;
	r->faults = 0;
}

static inline void pno_bring_init_consumer(struct pno_bring *r, void *ctrl, void *data,
					   uint32_t cap)
{
	r->ctrl = (struct pno_ring_ctrl *)ctrl;
	r->data = (uint8_t *)data;
	r->cap = cap;
	r->own = __atomic_load_n(&r->ctrl->cons, __ATOMIC_RELAXED);
	r->cached = r->own;
	r->faults = 0;
}

/** Producer: free bytes after re-reading the consumer index, or PNO_RING_FAULT. */
static inline int64_t pno_bring_writable(struct pno_bring *r)
{
	uint32_t cons = __atomic_load_n(&r->ctrl->cons, __ATOMIC_ACQUIRE);
	if ((uint32_t)(cons - r->cached) > (uint32_t)(r->own - r->cached)) {
		r->faults++;
		return PNO_RING_FAULT;
	}
	r->cached = cons;
	return (int64_t)r->cap - (uint32_t)(r->own - cons);
}

/** Producer: copies up to len bytes in and publishes them; bytes written or PNO_RING_FAULT. */
static inline int64_t pno_bring_write(struct pno_bring *r, const void *src, uint32_t len)
{
	int64_t room = (int64_t)r->cap - (uint32_t)(r->own - r->cached);
	if (room < (int64_t)len) {
		room = pno_bring_writable(r);
		if (room < 0)
			return PNO_RING_FAULT;
	}
	uint32_t n = room < (int64_t)len ? (uint32_t)room : len;
	uint32_t pos = r->own & (r->cap - 1);
	uint32_t first = n < r->cap - pos ? n : r->cap - pos;
	memcpy(r->data + pos, src, first);
	memcpy(r->data, (const uint8_t *)src + first, n - first);
	r->own += n;
	__atomic_store_n(&r->ctrl->prod, r->own, __ATOMIC_RELEASE);
	return n;
}

/** Consumer: bytes available after re-reading the producer index, or PNO_RING_FAULT. */
static inline int64_t pno_bring_readable(struct pno_bring *r)
{
	uint32_t prod = __atomic_load_n(&r->ctrl->prod, __ATOMIC_ACQUIRE);
	uint32_t used = prod - r->own;
	if (used > r->cap || used < (uint32_t)(r->cached - r->own)) {
		r->faults++;
		return PNO_RING_FAULT;
	}
	r->cached = prod;
	return used;
}

/** Consumer: copies up to len bytes out and releases them; bytes read or PNO_RING_FAULT. */
static inline int64_t pno_bring_read(struct pno_bring *r, void *dst, uint32_t len)
{
	int64_t avail = (uint32_t)(r->cached - r->own);
	if (avail < (int64_t)len) {
		avail = pno_bring_readable(r);
		if (avail < 0)
			return PNO_RING_FAULT;
	}
	uint32_t n = avail < (int64_t)len ? (uint32_t)avail : len;
	uint32_t pos = r->own & (r->cap - 1);
	uint32_t first = n < r->cap - pos ? n : r->cap - pos;
	memcpy(dst, r->data + pos, first);
	memcpy((uint8_t *)dst + first, r->data, n - first);
	r->own += n;
	__atomic_store_n(&r->ctrl->cons, r->own, __ATOMIC_RELEASE);
	return n;
}

static inline void pno_dring_init_producer(struct pno_dring *r, void *ctrl, void *slots,
					   uint32_t n)
{
	r->ctrl = (struct pno_ring_ctrl *)ctrl;
	r->slots = (uint8_t *)slots;
	r->n = n;
	r->own = __atomic_load_n(&r->ctrl->prod, __ATOMIC_RELAXED);
	/* The consumer may be up to a whole ring behind: the first look at it re-reads it. */
	r->cached = r->own - r->n;
	r->faults = 0;
}

static inline void pno_dring_init_consumer(struct pno_dring *r, void *ctrl, void *slots,
					   uint32_t n)
{
	r->ctrl = (struct pno_ring_ctrl *)ctrl;
	r->slots = (uint8_t *)slots;
	r->n = n;
	r->own = __atomic_load_n(&r->ctrl->cons, __ATOMIC_RELAXED);
	r->cached = r->own;
	r->faults = 0;
}

/** Producer: reserves up to k slots; how many (0 when full) or PNO_RING_FAULT. */
static inline int64_t pno_dring_reserve(struct pno_dring *r, uint32_t k)
{
	uint32_t room = r->n - (uint32_t)(r->own - r->cached);
	if (room < k) {
		uint32_t cons = __atomic_load_n(&r->ctrl->cons, __ATOMIC_ACQUIRE);
		if ((uint32_t)(cons - r->cached) > (uint32_t)(r->own - r->cached)) {
			r->faults++;
			return PNO_RING_FAULT;
		}
		r->cached = cons;
		room = r->n - (uint32_t)(r->own - cons);
	}
	return room < k ? room : k;
}

/** Producer: the i-th reserved slot. */
static inline void *pno_dring_prod_slot(struct pno_dring *r, uint32_t i)
{
	return r->slots + (size_t)((r->own + i) & (r->n - 1)) * PNO_DESC_SIZE;
}

/** Producer: publishes k filled slots with one release store. */
static inline void pno_dring_publish(struct pno_dring *r, uint32_t k)
{
	r->own += k;
	__atomic_store_n(&r->ctrl->prod, r->own, __ATOMIC_RELEASE);
}

/** Consumer: published slots available (at most max), 0 when empty, or PNO_RING_FAULT. */
static inline int64_t pno_dring_peek(struct pno_dring *r, uint32_t max)
{
	uint32_t avail = r->cached - r->own;
	if (avail < max) {
		uint32_t prod = __atomic_load_n(&r->ctrl->prod, __ATOMIC_ACQUIRE);
		uint32_t used = prod - r->own;
		if (used > r->n || used < avail) {
			r->faults++;
			return PNO_RING_FAULT;
		}
		r->cached = prod;
		avail = used;
	}
	return avail < max ? avail : max;
}

/** Consumer: the i-th peeked slot. */
static inline const void *pno_dring_cons_slot(const struct pno_dring *r, uint32_t i)
{
	return r->slots + (size_t)((r->own + i) & (r->n - 1)) * PNO_DESC_SIZE;
}

/** Consumer: releases k slots with one release store. */
static inline void pno_dring_release(struct pno_dring *r, uint32_t k)
{
	r->own += k;
	__atomic_store_n(&r->ctrl->cons, r->own, __ATOMIC_RELEASE);
}

/* ---- Region navigation ------------------------------------------------------------------- */

/** 0 if the region header is usable for a mapping of mapped bytes, else a PNO_REGION_ERR_*. */
static inline int pno_region_check(const void *base, uint64_t mapped)
{
	const struct pno_region_header *h = (const struct pno_region_header *)base;
	if (mapped < sizeof(*h))
		return PNO_REGION_ERR_SIZE;
	if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != PNO_REGION_MAGIC)
		return PNO_REGION_ERR_MAGIC;
	if (h->version != PNO_LAYOUT_VERSION)
		return PNO_REGION_ERR_VERSION;
	if (h->total_size != mapped || h->sock_stride != sizeof(struct pno_sock) ||
	    h->stream_table + (uint64_t)h->max_sockets * h->stream_stride > mapped)
		return PNO_REGION_ERR_SIZE;
	return 0;
}

#define PNO_HDR(base) ((const struct pno_region_header *)(base))

/** The host-to-NIC doorbell. */
static inline struct pno_doorbell *pno_region_doorbell(void *base)
{
	return (struct pno_doorbell *)((uint8_t *)base + PNO_HDR(base)->doorbell_offset);
}

/** Thread entry t's owner line. */
static inline struct pno_thread_line *pno_region_thread(void *base, uint32_t t)
{
	return (struct pno_thread_line *)((uint8_t *)base + PNO_HDR(base)->thread_table +
					  (uint64_t)t * PNO_HDR(base)->thread_stride);
}

/** Thread entry t's command ring, producer side. */
static inline void pno_region_cmd_producer(struct pno_dring *r, void *base, uint32_t t)
{
	uint8_t *e = (uint8_t *)pno_region_thread(base, t) + PNO_THREAD_CMD_CTRL;
	pno_dring_init_producer(r, e, e + PNO_RING_CTRL_SIZE, PNO_HDR(base)->cmd_slots);
}

/** Thread entry t's completion ring, consumer side. */
static inline void pno_region_cpl_consumer(struct pno_dring *r, void *base, uint32_t t)
{
	uint8_t *e = (uint8_t *)pno_region_thread(base, t) + PNO_THREAD_CMD_CTRL +
		     PNO_RING_CTRL_SIZE + (size_t)PNO_HDR(base)->cmd_slots * PNO_DESC_SIZE;
	pno_dring_init_consumer(r, e, e + PNO_RING_CTRL_SIZE, PNO_HDR(base)->cpl_slots);
}

/** Waiter entry w's owner line. */
static inline struct pno_waiter_line *pno_region_waiter(void *base, uint32_t w)
{
	return (struct pno_waiter_line *)((uint8_t *)base + PNO_HDR(base)->waiter_table +
					  (uint64_t)w * PNO_HDR(base)->waiter_stride);
}

/** Waiter entry w's event queue, consumer side. */
static inline void pno_region_ev_consumer(struct pno_dring *r, void *base, uint32_t w)
{
	uint8_t *e = (uint8_t *)pno_region_waiter(base, w) + PNO_WAITER_EV_CTRL;
	pno_dring_init_consumer(r, e, e + PNO_RING_CTRL_SIZE, PNO_HDR(base)->ev_slots);
}

/** Process entry p's line. */
static inline struct pno_proc_line *pno_region_proc(void *base, uint32_t p)
{
	return (struct pno_proc_line *)((uint8_t *)base + PNO_HDR(base)->proc_table +
					(uint64_t)p * PNO_HDR(base)->proc_stride);
}

/** Process entry p's fd count for socket s. */
static inline uint16_t *pno_region_proc_refs(void *base, uint32_t p)
{
	return (uint16_t *)((uint8_t *)pno_region_proc(base, p) + PNO_PROC_REFS);
}

/** Socket entry s. */
static inline struct pno_sock *pno_region_sock(void *base, uint32_t s)
{
	return (struct pno_sock *)((uint8_t *)base + PNO_HDR(base)->sock_table +
				   (uint64_t)s * PNO_HDR(base)->sock_stride);
}

static inline uint8_t *pno_region_stream(void *base, uint32_t s)
{
	return (uint8_t *)base + PNO_HDR(base)->stream_table +
	       (uint64_t)s * PNO_HDR(base)->stream_stride;
}

/** Socket s's TX ring, producer side (re-read from shared memory: threads share it). */
static inline void pno_region_tx_producer(struct pno_bring *r, void *base, uint32_t s)
{
	uint8_t *p = pno_region_stream(base, s);
	pno_bring_init_producer(r, p, p + PNO_PAGE_SIZE, PNO_HDR(base)->tx_bytes);
}

/** Socket s's RX ring (a listener's accept queue), consumer side. */
static inline void pno_region_rx_consumer(struct pno_bring *r, void *base, uint32_t s)
{
	uint8_t *p = pno_region_stream(base, s) + PNO_PAGE_SIZE + PNO_HDR(base)->tx_bytes;
	pno_bring_init_consumer(r, p, p + PNO_PAGE_SIZE, PNO_HDR(base)->rx_bytes);
}

/** Host producer side: rings the doorbell after publishing a batch of commands. */
static inline void pno_region_ring_doorbell(void *base)
{
	__atomic_fetch_add(&pno_region_doorbell(base)->seq, 1, __ATOMIC_RELEASE);
}
`;

/** The whole header text. */
export function generateHeader(): string {
  // Offsets inside entries do not depend on the table sizes: any valid layout gives them.
  const probe = L.computeLayout({
    maxThreads: 1,
    maxWaiters: 1,
    maxProcs: 1,
    maxSockets: 1,
    cmdSlots: 8,
    cplSlots: 8,
    evSlots: 8,
    txBytes: L.PAGE_SIZE,
    rxBytes: L.PAGE_SIZE,
  });
  const opcodes = [...D.COMMAND_STRUCTS, ...D.COMPLETION_STRUCTS]
    .map((s) => `\t${s.name.toUpperCase()} = 0x${s.opcode.toString(16)}, /* ${s.doc} */`)
    .join("\n");
  const parts = [
    "/* Generated by packages/rings/gen_header.ts (deno task gen). Do not edit. */",
    "/* The host-NIC region layout and ring protocol of PnO, from packages/rings. */",
    "#ifndef PNO_RINGS_H",
    "#define PNO_RINGS_H",
    "",
    "#include <stddef.h>",
    "#include <stdint.h>",
    "#include <string.h>",
    "",
    define("PNO_REGION_MAGIC", L.REGION_MAGIC, '"PNOR" little-endian'),
    define("PNO_LAYOUT_VERSION", L.LAYOUT_VERSION),
    define("PNO_PAGE_SIZE", L.PAGE_SIZE),
    define("PNO_DESC_SIZE", DESC_SIZE),
    define("PNO_RING_CTRL_SIZE", BYTE_RING_CTRL_SIZE),
    define("PNO_RING_FAULT", `(${RING_FAULT})`, "a peer index is inconsistent"),
    define("PNO_SOCK_NONE", D.SOCK_NONE),
    define("PNO_THREAD_CMD_CTRL", probe.cmdCtrl, "command ring control within a thread entry"),
    define("PNO_WAITER_EV_CTRL", probe.evCtrl, "event ring control within a waiter entry"),
    define("PNO_PROC_REFS", L.PROC_REFS, "per-socket u16 fd counts within a process entry"),
    define("PNO_KIND_FREE", L.KIND_FREE),
    define("PNO_KIND_BOUND", L.KIND_BOUND),
    define("PNO_KIND_LISTENER", L.KIND_LISTENER),
    define("PNO_KIND_CONN", L.KIND_CONN),
    define("PNO_SHUT_RCV", L.SHUT_RCV),
    define("PNO_SHUT_SEND", L.SHUT_SEND),
    define("PNO_BIND_REUSEADDR", D.BIND_REUSEADDR),
    define("PNO_BIND_REUSEPORT", D.BIND_REUSEPORT),
    define("PNO_SUB_ET", D.SUB_ET),
    define("PNO_SUB_ONESHOT", D.SUB_ONESHOT),
    define("PNO_SUB_EXCLUSIVE", D.SUB_EXCLUSIVE),
    define("PNO_DESC_OK", D.DESC_OK),
    define("PNO_DESC_ERR_OPCODE", D.DESC_ERR_OPCODE),
    define("PNO_DESC_ERR_SOCK", D.DESC_ERR_SOCK),
    define("PNO_DESC_ERR_FIELD", D.DESC_ERR_FIELD),
    define("PNO_REGION_ERR_MAGIC", 1),
    define("PNO_REGION_ERR_VERSION", 2),
    define("PNO_REGION_ERR_SIZE", 3),
    "",
    "/** Descriptor opcodes: commands host to NIC, completions and events NIC to host. */",
    "enum pno_opcode {",
    opcodes,
    "};",
    "",
    ...[...L.LAYOUT_STRUCTS, ...D.DESCRIPTOR_STRUCTS].map((s) => structToC(s) + "\n"),
    RING_OPS,
    "#endif /* PNO_RINGS_H */",
    "",
  ];
  return parts.join("\n");
}

if (import.meta.main) {
  const root = new URL("../../", import.meta.url);
  const path = new URL(HEADER_PATH, root);
  await Deno.mkdir(new URL("./", path), { recursive: true });
  await Deno.writeTextFile(path, generateHeader());
  console.log(`wrote ${path.pathname}`);
}
