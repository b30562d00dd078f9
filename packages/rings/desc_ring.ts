/**
 * Single-producer single-consumer rings of fixed-size descriptor slots (the G-type rings).
 *
 * Same control block and index rules as the byte rings (byte_ring.ts): free-running u32
 * indices counting slots, producer and consumer on separate cache lines, release stores and
 * acquire loads, a private cached copy of the other side's index, and every index read from
 * shared memory checked so that `used <= slots`. Work is batched: the producer reserves up to
 * k slots, fills them in place through `view`, and publishes them with one store; the consumer
 * peeks a batch, reads it in place, and releases it with one store.
 *
 * @example
 * ```ts
 * import { DescRingConsumer, DescRingProducer, DESC_SIZE } from "./desc_ring.ts";
 * import { BYTE_RING_CTRL_SIZE } from "./byte_ring.ts";
 * const mem = new SharedArrayBuffer(BYTE_RING_CTRL_SIZE + 8 * DESC_SIZE);
 * const tx = new DescRingProducer(mem, 0, BYTE_RING_CTRL_SIZE, 8);
 * const rx = new DescRingConsumer(mem, 0, BYTE_RING_CTRL_SIZE, 8);
 * const k = tx.reserve(3);
 * for (let i = 0; i < k; i++) tx.view.setUint32(tx.slotOffset(i), 100 + i, true);
 * tx.publish(k);
 * const n = rx.peek(16);
 * if (n !== 3 || rx.view.getUint32(rx.slotOffset(2), true) !== 102) throw new Error("bad ring");
 * rx.release(n);
 * ```
 * @module
 */

import {
  BYTE_RING_CTRL_SIZE,
  CACHE_LINE,
  RING_CONS_OFFSET,
  RING_FAULT,
  RING_PROD_OFFSET,
} from "./byte_ring.ts";

/** Size of one descriptor slot in bytes. */
export const DESC_SIZE = 64;

const PROD_WORD = RING_PROD_OFFSET >> 2;
const CONS_WORD = RING_CONS_OFFSET >> 2;

/** Throws unless `slots` is a power of two in [2, 2^24]. */
export function checkSlotCount(slots: number): void {
  if (!Number.isInteger(slots) || slots < 2 || slots > 2 ** 24 || (slots & (slots - 1)) !== 0) {
    throw new RangeError(`descriptor ring of ${slots} slots is not a power of two in [2, 2^24]`);
  }
}

/** Placement, views made once and fault counters shared by both sides. */
abstract class _DescRingSide {
  /** Number of slots (a power of two). */
  readonly slots: number;
  /** DataView over the slot area; `slotOffset(i)` gives a slot's byte offset in it. */
  readonly view: DataView;
  /** Bytes of the slot area, for whole-slot copies and clearing. */
  readonly bytes: Uint8Array;
  /** How many times an index read from shared memory was refused as inconsistent. */
  faults = 0;
  /** Whether the last index read from shared memory was refused. */
  faulted = false;
  protected readonly mask: number;
  protected readonly index: Uint32Array;

  constructor(buffer: ArrayBufferLike, ctrlOffset: number, slotsOffset: number, slots: number) {
    checkSlotCount(slots);
    if (ctrlOffset % CACHE_LINE !== 0 || slotsOffset % 8 !== 0) {
      throw new RangeError(
        `descriptor ring control ${ctrlOffset} or slots ${slotsOffset} misaligned`,
      );
    }
    if (
      ctrlOffset < 0 || ctrlOffset + BYTE_RING_CTRL_SIZE > buffer.byteLength || slotsOffset < 0 ||
      slotsOffset + slots * DESC_SIZE > buffer.byteLength
    ) {
      throw new RangeError("descriptor ring does not fit in its buffer");
    }
    this.slots = slots;
    this.mask = slots - 1;
    this.index = new Uint32Array(buffer, ctrlOffset, BYTE_RING_CTRL_SIZE >> 2);
    this.view = new DataView(buffer, slotsOffset, slots * DESC_SIZE);
    this.bytes = new Uint8Array(buffer, slotsOffset, slots * DESC_SIZE);
  }

  protected refuse(): number {
    this.faults++;
    this.faulted = true;
    return RING_FAULT;
  }
}

/** Producer side: reserve k slots, fill them through `view`, publish them with one store. */
export class DescRingProducer extends _DescRingSide {
  private prod: number;
  private cachedCons: number;

  constructor(buffer: ArrayBufferLike, ctrlOffset: number, slotsOffset: number, slots: number) {
    super(buffer, ctrlOffset, slotsOffset, slots);
    this.prod = Atomics.load(this.index, PROD_WORD);
    // The consumer may be up to a whole ring behind (a ring taken over): accept any index in
    // [prod - slots, prod] at the first look.
    this.cachedCons = (this.prod - slots) >>> 0;
  }

  /** Reads and checks the consumer index; returns free slots or `RING_FAULT`. */
  private refreshCons(): number {
    const cons = Atomics.load(this.index, CONS_WORD);
    if (((cons - this.cachedCons) >>> 0) > ((this.prod - this.cachedCons) >>> 0)) {
      return this.refuse();
    }
    this.faulted = false;
    this.cachedCons = cons;
    return this.slots - ((this.prod - cons) >>> 0);
  }

  /**
   * Reserves up to `k` slots after the producer index and returns how many (0 when full), or
   * `RING_FAULT` if the consumer index is inconsistent. Reserved slots are written through
   * `view` at `slotOffset(0..n-1)` and become visible only on `publish`.
   */
  reserve(k: number): number {
    let room = this.slots - ((this.prod - this.cachedCons) >>> 0);
    if (room < k) {
      room = this.refreshCons();
      if (room < 0) return RING_FAULT;
    }
    return Math.min(room, k);
  }

  /** Byte offset in `view` of the `i`-th slot past the producer index. */
  slotOffset(i: number): number {
    return ((this.prod + i) & this.mask) * DESC_SIZE;
  }

  /** Publishes `n` filled slots with one release store (one doorbell per batch). */
  publish(n: number): void {
    if (!(n >= 0 && n <= this.slots - ((this.prod - this.cachedCons) >>> 0))) {
      throw new RangeError(`publish ${n} past reserved slots`);
    }
    this.prod = (this.prod + n) >>> 0;
    Atomics.store(this.index, PROD_WORD, this.prod);
  }

  /** Slots published and not yet released by the consumer, or `RING_FAULT`. */
  pending(): number {
    const free = this.refreshCons();
    return free < 0 ? RING_FAULT : this.slots - free;
  }

  /** Free-running producer index (slots published so far), as a doorbell payload. */
  produced(): number {
    return this.prod;
  }
}

/** Consumer side: peek a batch, read it in place through `view`, release it with one store. */
export class DescRingConsumer extends _DescRingSide {
  private cons: number;
  private cachedProd: number;

  constructor(buffer: ArrayBufferLike, ctrlOffset: number, slotsOffset: number, slots: number) {
    super(buffer, ctrlOffset, slotsOffset, slots);
    this.cons = Atomics.load(this.index, CONS_WORD);
    this.cachedProd = this.cons;
  }

  /**
   * Returns how many published slots (at most `max`) can be read at `slotOffset(0..n-1)`, 0 when
   * empty, or `RING_FAULT` if the producer index is inconsistent (the batch peeked before stays
   * readable).
   */
  peek(max: number): number {
    let avail = (this.cachedProd - this.cons) >>> 0;
    if (avail < max) {
      const prod = Atomics.load(this.index, PROD_WORD);
      const used = (prod - this.cons) >>> 0;
      if (used > this.slots || used < avail) return this.refuse();
      this.faulted = false;
      this.cachedProd = prod;
      avail = used;
    }
    return Math.min(avail, max);
  }

  /** Byte offset in `view` of the `i`-th slot past the consumer index. */
  slotOffset(i: number): number {
    return ((this.cons + i) & this.mask) * DESC_SIZE;
  }

  /** Releases `n` consumed slots with one release store. */
  release(n: number): void {
    if (!(n >= 0 && n <= ((this.cachedProd - this.cons) >>> 0))) {
      throw new RangeError(`release ${n} past peeked slots`);
    }
    this.cons = (this.cons + n) >>> 0;
    Atomics.store(this.index, CONS_WORD, this.cons);
  }
}
