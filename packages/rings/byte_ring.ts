/**
 * Single-producer single-consumer byte rings (the S-type rings) over a slice of shared memory.
 *
 * A ring is a control block of two cache lines (the producer index on the first, the consumer
 * index on the second, so each side writes only its own line) followed by `capacity` data bytes,
 * `capacity` a power of two. Indices are free-running u32 counters: used bytes are
 * `(prod - cons) >>> 0` and a position in the data is `index & (capacity - 1)`. Each side
 * publishes its own index with `Atomics.store` (release) after touching the data, reads the
 * other's with `Atomics.load` (acquire) before touching it, and keeps a private cached copy of
 * the other's index so it reads the other cache line only when the cache says it must.
 *
 * The side's own index lives in a private field and is only ever stored to shared memory, never
 * read back: the other side (the application, for the NIC) may scribble on the whole region.
 * Every index read from shared memory is checked: it must lie between what was last seen and
 * what the reader itself published, so `used <= capacity` always holds and no copy ever leaves
 * the data area. A bad index is refused (0 bytes or `RING_FAULT`) and counted in `faults`;
 * nothing here throws on bad shared data. Misuse by the local caller (copying past what
 * `readable()` reported) throws a RangeError: that is a bug on our side, not the peer's.
 *
 * @example
 * ```ts
 * import { HostTxProducer, NicTxConsumer, BYTE_RING_CTRL_SIZE } from "./byte_ring.ts";
 * const mem = new SharedArrayBuffer(BYTE_RING_CTRL_SIZE + 1024);
 * const host = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, 1024);
 * const nic = new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, 1024);
 * host.write(new TextEncoder().encode("hello"), 0, 5);
 * const out = new Uint8Array(5);
 * nic.copyOut(0, out, 0, nic.readable());
 * nic.release(5);
 * if (new TextDecoder().decode(out) !== "hello") throw new Error("lost bytes");
 * ```
 * @module
 */

import type { RxStream, TxStream } from "./stream.ts";
import { _copyBytes, _ViewCache } from "./_copy.ts";
import { _NativeCache, nativeCopy, nativePointer } from "./_native.ts";
import type { CopyLibrary } from "../../ffi/copy.ts";

/** Size of a cache line; the two indices never share one. */
export const CACHE_LINE = 64;
/** Byte offset of the producer index (u32) in a ring's control block. */
export const RING_PROD_OFFSET = 0;
/** Byte offset of the consumer index (u32) in a ring's control block. */
export const RING_CONS_OFFSET = CACHE_LINE;
/** Size of a ring's control block: two cache lines. */
export const BYTE_RING_CTRL_SIZE = 2 * CACHE_LINE;
/** Returned by host-side calls when the peer's index is inconsistent. */
export const RING_FAULT = -1;

const PROD_WORD = RING_PROD_OFFSET >> 2;
const CONS_WORD = RING_CONS_OFFSET >> 2;

/** Throws unless `capacity` is a power of two in [8, 2^30]. Parameters are trusted, data is not. */
export function checkRingCapacity(capacity: number): void {
  if (
    !Number.isInteger(capacity) || capacity < 8 || capacity > 2 ** 30 ||
    (capacity & (capacity - 1)) !== 0
  ) {
    throw new RangeError(`ring capacity ${capacity} is not a power of two in [8, 2^30]`);
  }
}

/** Shared state of every byte ring side: placement, views made once, fault counters. */
abstract class _ByteRingSide {
  /** Data capacity in bytes (a power of two). */
  readonly capacity: number;
  /** How many times an index read from shared memory was refused as inconsistent. */
  faults = 0;
  /** Whether the last index read from shared memory was refused. */
  faulted = false;
  protected readonly mask: number;
  protected readonly index: Uint32Array;
  protected readonly data: Uint8Array;
  protected readonly dataView: DataView;
  protected readonly callerViews: _ViewCache = new _ViewCache();
  /** The data area's address when the ring lives in registered native memory, else null. */
  protected readonly nativeData: Deno.PointerObject | null;
  protected readonly native: CopyLibrary | null;
  protected readonly callerNative: _NativeCache = new _NativeCache();

  constructor(buffer: ArrayBufferLike, ctrlOffset: number, dataOffset: number, capacity: number) {
    checkRingCapacity(capacity);
    if (ctrlOffset % CACHE_LINE !== 0 || dataOffset % 8 !== 0) {
      throw new RangeError(`ring control ${ctrlOffset} or data ${dataOffset} misaligned`);
    }
    if (
      ctrlOffset < 0 || ctrlOffset + BYTE_RING_CTRL_SIZE > buffer.byteLength || dataOffset < 0 ||
      dataOffset + capacity > buffer.byteLength
    ) {
      throw new RangeError("ring does not fit in its buffer");
    }
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.index = new Uint32Array(buffer, ctrlOffset, BYTE_RING_CTRL_SIZE >> 2);
    this.data = new Uint8Array(buffer, dataOffset, capacity);
    this.dataView = new DataView(buffer, dataOffset, capacity);
    const ptr = nativePointer(buffer, dataOffset);
    this.native = ptr === null ? null : nativeCopy();
    this.nativeData = this.native === null ? null : ptr;
  }

  /** Counts a refused index and reports it. */
  protected refuse(): void {
    this.faults++;
    this.faulted = true;
  }

  /** Copies `len` ring bytes starting at free-running index `at` into `dst`, wrapping. */
  protected fromRing(at: number, dst: Uint8Array, dstOffset: number, len: number): void {
    if (this.nativeData !== null) {
      // Both sides native (the region and the mbuf pool): one memcpy call, no view.
      const p = this.callerNative.pointerOf(dst);
      if (p !== null) {
        this.native!.pno_copy_from_ring(p, dstOffset, this.nativeData, this.capacity, at, len);
        return;
      }
    }
    const pos = at & this.mask;
    const first = Math.min(len, this.capacity - pos);
    const dv = this.callerViews.viewOf(dst);
    _copyBytes(dst, dv, dstOffset, this.data, this.dataView, pos, first);
    if (len > first) {
      _copyBytes(dst, dv, dstOffset + first, this.data, this.dataView, 0, len - first);
    }
  }

  /** Copies `len` bytes of `src` into the ring starting at free-running index `at`, wrapping. */
  protected toRing(at: number, src: Uint8Array, srcOffset: number, len: number): void {
    if (this.nativeData !== null) {
      const p = this.callerNative.pointerOf(src);
      if (p !== null) {
        this.native!.pno_copy_to_ring(this.nativeData, this.capacity, at, p, srcOffset, len);
        return;
      }
    }
    const pos = at & this.mask;
    const first = Math.min(len, this.capacity - pos);
    const sv = this.callerViews.viewOf(src);
    _copyBytes(this.data, this.dataView, pos, src, sv, srcOffset, first);
    if (len > first) {
      _copyBytes(this.data, this.dataView, 0, src, sv, srcOffset + first, len - first);
    }
  }
}

/** Throws a RangeError unless `[off, off+len)` lies inside `arr` (local caller misuse). */
function checkSpan(arr: Uint8Array, off: number, len: number): void {
  if (!(off >= 0 && len >= 0 && off + len <= arr.length)) {
    throw new RangeError(`span ${off}+${len} outside buffer of ${arr.length}`);
  }
}

/**
 * Base of the two consumer sides: owns `cons`, caches `prod`. `refreshProd` accepts a producer
 * index only if it did not move backwards and leaves `used <= capacity`.
 */
abstract class _ConsumerSide extends _ByteRingSide {
  protected cons: number;
  protected cachedProd: number;

  constructor(buffer: ArrayBufferLike, ctrlOffset: number, dataOffset: number, capacity: number) {
    super(buffer, ctrlOffset, dataOffset, capacity);
    // A fresh ring starts at cons == prod; attaching to a live one trusts its indices once.
    this.cons = Atomics.load(this.index, CONS_WORD);
    this.cachedProd = this.cons;
    this.refreshProd();
  }

  /** Reads the producer index; returns the bytes available, or -1 if the index is refused. */
  protected refreshProd(): number {
    const prod = Atomics.load(this.index, PROD_WORD);
    const used = (prod - this.cons) >>> 0;
    const seen = (this.cachedProd - this.cons) >>> 0;
    if (used > this.capacity || used < seen) {
      this.refuse();
      return -1;
    }
    this.faulted = false;
    this.cachedProd = prod;
    return used;
  }

  /** Bytes available, from the cache, reading the producer only when the cache has fewer. */
  protected available(want: number): number {
    const cached = (this.cachedProd - this.cons) >>> 0;
    if (cached >= want) return cached;
    const fresh = this.refreshProd();
    return fresh < 0 ? cached : fresh;
  }

  /** Releases `n` bytes and publishes the consumer index (release). */
  protected advance(n: number): void {
    this.cons = (this.cons + n) >>> 0;
    Atomics.store(this.index, CONS_WORD, this.cons);
  }
}

/**
 * Base of the two producer sides: owns `prod`, caches `cons`. `refreshCons` accepts a consumer
 * index only if it lies between the last one seen and `prod`.
 */
abstract class _ProducerSide extends _ByteRingSide {
  protected prod: number;
  protected cachedCons: number;

  constructor(buffer: ArrayBufferLike, ctrlOffset: number, dataOffset: number, capacity: number) {
    super(buffer, ctrlOffset, dataOffset, capacity);
    this.prod = Atomics.load(this.index, PROD_WORD);
    // The consumer may be up to a whole ring behind (unacknowledged bytes of a TX ring): accept
    // any index in [prod - capacity, prod] at the first look.
    this.cachedCons = (this.prod - capacity) >>> 0;
    this.refreshCons();
  }

  /** Reads the consumer index; returns the free bytes, or -1 if the index is refused. */
  protected refreshCons(): number {
    const cons = Atomics.load(this.index, CONS_WORD);
    const moved = (cons - this.cachedCons) >>> 0;
    const unread = (this.prod - this.cachedCons) >>> 0;
    // Valid iff cachedCons <= cons <= prod in free-running order.
    if (moved > unread || unread > this.capacity) {
      this.refuse();
      return -1;
    }
    this.faulted = false;
    this.cachedCons = cons;
    return this.capacity - ((this.prod - cons) >>> 0);
  }

  /** Free bytes, from the cache, reading the consumer only when the cache has fewer. */
  protected free(want: number): number {
    const cached = this.capacity - ((this.prod - this.cachedCons) >>> 0);
    if (cached >= want) return cached;
    const fresh = this.refreshCons();
    return fresh < 0 ? cached : fresh;
  }

  /** Publishes `n` more bytes (release). */
  protected advance(n: number): void {
    this.prod = (this.prod + n) >>> 0;
    Atomics.store(this.index, PROD_WORD, this.prod);
  }
}

/**
 * NIC side of a TX ring: the TCP engine reads unsent and unacknowledged bytes at any offset
 * from the consumer index and releases them when acknowledged.
 */
export class NicTxConsumer extends _ConsumerSide implements TxStream {
  /**
   * Bytes written by the application and not yet released. While the producer index is bad
   * (`faulted`), the count last validated: those bytes were checked and stay safe to send.
   */
  readable(): number {
    const fresh = this.refreshProd();
    return fresh < 0 ? (this.cachedProd - this.cons) >>> 0 : fresh;
  }

  /** Copies `len` bytes starting `offset` past the consumer index into `dst`. */
  copyOut(offset: number, dst: Uint8Array, dstOffset: number, len: number): void {
    checkSpan(dst, dstOffset, len);
    if (!(offset >= 0 && offset + len <= this.available(offset + len))) {
      throw new RangeError(`copyOut ${offset}+${len} past readable bytes`);
    }
    this.fromRing((this.cons + offset) >>> 0, dst, dstOffset, len);
  }

  /** `copyOut` summed in the same pass when both sides are native; else -1 (TxStream). */
  copyOutSum(offset: number, dst: Uint8Array, dstOffset: number, len: number): number {
    if (this.nativeData !== null) {
      const p = this.callerNative.pointerOf(dst);
      if (p !== null) {
        checkSpan(dst, dstOffset, len);
        if (!(offset >= 0 && offset + len <= this.available(offset + len))) {
          throw new RangeError(`copyOut ${offset}+${len} past readable bytes`);
        }
        const at = (this.cons + offset) >>> 0;
        return this.native!.pno_copy_from_ring_csum(
          p,
          dstOffset,
          this.nativeData,
          this.capacity,
          at,
          len,
        );
      }
    }
    this.copyOut(offset, dst, dstOffset, len);
    return -1;
  }

  /** Releases `n` acknowledged bytes at the consumer index. */
  release(n: number): void {
    if (!(n >= 0 && n <= ((this.cachedProd - this.cons) >>> 0))) {
      throw new RangeError(`release ${n} past readable bytes`);
    }
    this.advance(n);
  }
}

/**
 * NIC side of an RX ring: the TCP engine copies payload at any offset past the producer index
 * (out-of-order segments land in place) and publishes the in-order prefix.
 */
export class NicRxProducer extends _ProducerSide implements RxStream {
  /** Free bytes (the receive window); stays at the last good value while the index is bad. */
  writable(): number {
    const fresh = this.refreshCons();
    return fresh < 0 ? this.capacity - ((this.prod - this.cachedCons) >>> 0) : fresh;
  }

  /** Copies `len` bytes of `src` to `offset` bytes past the producer index, not yet visible. */
  copyIn(offset: number, src: Uint8Array, srcOffset: number, len: number): void {
    checkSpan(src, srcOffset, len);
    this.checkFree(offset, len);
    this.toRing((this.prod + offset) >>> 0, src, srcOffset, len);
  }

  /** Throws unless `len` bytes at `offset` past the producer index are free. */
  private checkFree(offset: number, len: number): void {
    if (!(offset >= 0 && offset + len <= this.free(offset + len))) {
      throw new RangeError(`copyIn ${offset}+${len} past free space`);
    }
  }

  /**
   * `copyIn` summed in the same pass when both sides are native (RxStream); else -1, having
   * copied nothing. The sum is of `src` as read: an application scribbling on its ring cannot
   * change it.
   */
  copyInSum(offset: number, src: Uint8Array, srcOffset: number, len: number, head = 0): number {
    if (this.nativeData !== null && (head & 1) === 0) {
      const p = this.callerNative.pointerOf(src);
      if (p !== null) {
        checkSpan(src, srcOffset - head, head + len);
        this.checkFree(offset, len);
        const at = (this.prod + offset) >>> 0;
        return this.native!.pno_copy_to_ring_csum(
          this.nativeData,
          this.capacity,
          at,
          p,
          srcOffset,
          len,
          head,
        );
      }
    }
    return -1;
  }

  /** Makes the next `n` bytes visible to the application. */
  publish(n: number): void {
    if (!(n >= 0 && n <= this.capacity - ((this.prod - this.cachedCons) >>> 0))) {
      throw new RangeError(`publish ${n} past free space`);
    }
    this.advance(n);
  }
}

/** Host side of a TX ring: the application's send(). (The C shim has the same operation.) */
export class HostTxProducer extends _ProducerSide {
  /** Free bytes, or `RING_FAULT` if the consumer index is inconsistent. */
  writable(): number {
    return this.refreshCons();
  }

  /**
   * Copies up to `len` bytes of `src[off..]` into the ring and publishes them. Returns the bytes
   * written (fewer than `len` when the ring is full, 0 when it is) or `RING_FAULT`.
   */
  write(src: Uint8Array, off: number, len: number): number {
    checkSpan(src, off, len);
    let room = this.capacity - ((this.prod - this.cachedCons) >>> 0);
    if (room < len) {
      room = this.refreshCons();
      if (room < 0) return RING_FAULT;
    }
    const n = Math.min(room, len);
    if (n === 0) return 0;
    this.toRing(this.prod, src, off, n);
    this.advance(n);
    return n;
  }
}

/** Host side of an RX ring: the application's recv(). (The C shim has the same operation.) */
export class HostRxConsumer extends _ConsumerSide {
  /** Bytes available, or `RING_FAULT` if the producer index is inconsistent. */
  readable(): number {
    return this.refreshProd();
  }

  /**
   * Copies up to `len` available bytes into `dst[off..]` and releases them. Returns the bytes
   * read (0 when the ring is empty) or `RING_FAULT`.
   */
  read(dst: Uint8Array, off: number, len: number): number {
    checkSpan(dst, off, len);
    let avail = (this.cachedProd - this.cons) >>> 0;
    if (avail < len) {
      avail = this.refreshProd();
      if (avail < 0) return RING_FAULT;
    }
    const n = Math.min(avail, len);
    if (n === 0) return 0;
    this.fromRing(this.cons, dst, off, n);
    this.advance(n);
    return n;
  }
}
