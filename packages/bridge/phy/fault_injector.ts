/**
 * A FrameDevice that wraps any other and impairs the link in both directions, as tc netem
 * would on a kernel without sch_netem (smoltcp's phy/fault_injector): it drops, duplicates,
 * delays (with optional jitter) and reorders received and transmitted frames, drawing from a
 * seeded PRNG per direction so that a run can be repeated. The stack does not know it is
 * there: `pno bridge --loss 1 --delay 10 --reorder 25`.
 *
 * Held frames (delayed, or a duplicate waiting for its turn) live in one preallocated pool of
 * fixed slots; a frame that finds the pool full is dropped and counted. Frames that pass
 * straight through are not copied: received ones are lent from the inner device's `rxBuf`,
 * transmitted ones are written by the stack into the inner device's `txBuf`. A burst comes
 * either from the inner device or from the pool (`rxBuf` is the one of the current burst), so
 * when held frames fall due the bursts alternate between the two. Nothing is allocated per
 * frame. The owner's poll loop must not sleep past `nextDue()`.
 *
 * @module
 */
import type { FrameDevice } from "./device.ts";

/** What to inject; all plain numbers, so a worker can be handed them. */
export interface FaultSettings {
  /** Share of frames dropped, percent. */
  lossPercent?: number;
  /** Share of frames sent twice, percent (each copy gets its own delay). */
  duplicatePercent?: number;
  /** Delay of every frame, ms. */
  delayMs?: number;
  /** The delay is uniform in [delay - jitter, delay + jitter] ms (held frames then reorder). */
  jitterMs?: number;
  /** netem's meaning: this share of frames skips the delay, overtaking delayed ones. */
  reorderPercent?: number;
  /** PRNG seed (default 1); the same seed and traffic give the same faults. */
  seed?: number;
  /** Frame slots of the pool (default 4096). */
  slots?: number;
  /** Bytes per slot (default 2048). */
  slotSize?: number;
}

/** What the injector did, in frames (both directions together). */
export class FaultCounters {
  /** Lost at random (`lossPercent`). */
  dropped = 0;
  /** Extra copies made (`duplicatePercent`). */
  duplicated = 0;
  /** Copies held for a delay. */
  delayed = 0;
  /** Copies that skipped the delay (`reorderPercent`). */
  reordered = 0;
  /** Copies dropped because no slot of the pool was free (or the frame exceeds a slot). */
  poolFull = 0;

  snapshot(): Record<string, number> {
    return {
      dropped: this.dropped,
      duplicated: this.duplicated,
      delayed: this.delayed,
      reordered: this.reordered,
      poolFull: this.poolFull,
    };
  }
}

/** Most frames surfaced from the pool in one receive burst. */
const POOL_BURST = 64;

/** mulberry32: a small, fast, seedable 32-bit PRNG; `next()` is uniform in [0, 1). */
class Prng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** A binary min-heap of slot numbers ordered by due time, then by arrival (FIFO on ties). */
class SlotHeap {
  private readonly items: Int32Array;
  size = 0;

  constructor(
    capacity: number,
    private readonly due: Float64Array,
    private readonly order: Float64Array,
  ) {
    this.items = new Int32Array(capacity);
  }

  /** The slot due first (the heap must not be empty). */
  top(): number {
    return this.items[0];
  }

  /** Due time of the first slot, Infinity when empty. */
  nextDue(): number {
    return this.size === 0 ? Infinity : this.due[this.items[0]];
  }

  push(slot: number): void {
    const a = this.items;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(slot, a[parent])) break;
      a[i] = a[parent];
      i = parent;
    }
    a[i] = slot;
  }

  pop(): number {
    const a = this.items;
    const first = a[0];
    const last = a[--this.size];
    const n = this.size;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && this.before(a[child + 1], a[child])) child++;
      if (!this.before(a[child], last)) break;
      a[i] = a[child];
      i = child;
    }
    if (n > 0) a[i] = last;
    return first;
  }

  private before(x: number, y: number): boolean {
    const dx = this.due[x], dy = this.due[y];
    return dx < dy || (dx === dy && this.order[x] < this.order[y]);
  }
}

/** Copies `len` bytes without making views (no allocation per frame). */
function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, from: number, len: number): void {
  for (let i = 0; i < len; i++) dst[at + i] = src[from + i];
}

/** Checks a percentage setting and returns it as a probability. */
function probability(name: string, pct: number | undefined): number {
  const p = pct ?? 0;
  if (!(p >= 0 && p <= 100)) throw new RangeError(`${name} ${pct}: a percentage from 0 to 100`);
  return p / 100;
}

/** Checks a duration setting in ms. */
function duration(name: string, ms: number | undefined): number {
  const d = ms ?? 0;
  if (!(d >= 0 && d < 3_600_000)) throw new RangeError(`${name} ${ms}: milliseconds, 0 or more`);
  return d;
}

export class FaultInjector implements FrameDevice {
  readonly counters: FaultCounters = new FaultCounters();
  /** The pool: every held frame, one slot each, in a single ArrayBuffer. */
  private readonly pool: Uint8Array;
  private readonly slotSize: number;
  private readonly lens: Uint32Array;
  private readonly dueAt: Float64Array;
  private readonly order: Float64Array;
  private readonly free: Int32Array;
  private freeTop: number;
  private arrivals = 0;
  private readonly rxHeld: SlotHeap;
  private readonly txHeld: SlotHeap;
  private readonly rxRng: Prng;
  private readonly txRng: Prng;
  private readonly loss: number;
  private readonly dup: number;
  private readonly reorder: number;
  private readonly delayMs: number;
  private readonly jitterMs: number;
  /** Indices into the inner device's burst of the frames surfaced now (a duplicate twice). */
  private map = new Int32Array(2 * 256);
  /** Pool slots of the current burst when it comes from the pool; freed on the next burst. */
  private readonly surfaced = new Int32Array(POOL_BURST);
  private surfacedCount = 0;
  private fromPool = false;
  private poolNext = true;
  private lastTx = -1;

  constructor(
    private readonly inner: FrameDevice,
    settings: FaultSettings,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.loss = probability("loss", settings.lossPercent);
    this.dup = probability("duplicate", settings.duplicatePercent);
    this.reorder = probability("reorder", settings.reorderPercent);
    this.delayMs = duration("delay", settings.delayMs);
    this.jitterMs = duration("jitter", settings.jitterMs);
    if (this.reorder > 0 && this.delayMs === 0) {
      throw new RangeError("reorder makes frames skip the delay: give a delay too");
    }
    const slots = settings.slots ?? 4096, size = settings.slotSize ?? 2048;
    if (!Number.isInteger(slots) || slots < 1 || !Number.isInteger(size) || size < 64) {
      throw new RangeError(`fault injector pool of ${slots} x ${size} B`);
    }
    this.slotSize = size;
    this.pool = new Uint8Array(new ArrayBuffer(slots * size));
    this.lens = new Uint32Array(slots);
    this.dueAt = new Float64Array(slots);
    this.order = new Float64Array(slots);
    this.free = new Int32Array(slots);
    for (let i = 0; i < slots; i++) this.free[i] = slots - 1 - i;
    this.freeTop = slots;
    this.rxHeld = new SlotHeap(slots, this.dueAt, this.order);
    this.txHeld = new SlotHeap(slots, this.dueAt, this.order);
    const seed = settings.seed ?? 1;
    this.rxRng = new Prng(seed);
    this.txRng = new Prng(seed ^ 0x9e3779b9);
  }

  get rxBuf(): Uint8Array {
    return this.fromPool ? this.pool : this.inner.rxBuf;
  }

  get txBuf(): Uint8Array {
    return this.inner.txBuf;
  }

  get frameRoom(): number {
    return Math.min(this.inner.frameRoom, this.slotSize);
  }

  /** Frames held in the pool now, both directions. */
  get held(): number {
    return this.rxHeld.size + this.txHeld.size + this.surfacedCount;
  }

  /** When the next held frame falls due (performance.now() ms), Infinity if none. */
  nextDue(): number {
    return Math.min(this.rxHeld.nextDue(), this.txHeld.nextDue());
  }

  receive(): number {
    // The previous burst has been processed: its pool slots may be reused.
    for (let i = 0; i < this.surfacedCount; i++) this.free[this.freeTop++] = this.surfaced[i];
    this.surfacedCount = 0;
    const now = this.now();
    // Bursts alternate between the inner device and due frames of the pool, so neither starves.
    if (!this.poolNext || this.rxHeld.nextDue() > now) {
      this.fromPool = false;
      this.poolNext = true;
      const n = this.receiveInner(now);
      if (n > 0 || this.rxHeld.nextDue() > now) return n;
    }
    this.fromPool = true;
    this.poolNext = false;
    const held = this.rxHeld;
    let n = 0;
    while (n < POOL_BURST && held.size > 0 && this.dueAt[held.top()] <= now) {
      this.surfaced[n++] = held.pop();
    }
    return this.surfacedCount = n;
  }

  rxOffset(i: number): number {
    return this.fromPool ? this.surfaced[i] * this.slotSize : this.inner.rxOffset(this.map[i]);
  }

  rxLength(i: number): number {
    return this.fromPool ? this.lens[this.surfaced[i]] : this.inner.rxLength(this.map[i]);
  }

  reserve(): number {
    return this.lastTx = this.inner.reserve();
  }

  commit(len: number): void {
    const at = this.lastTx;
    this.lastTx = -1;
    if (at < 0) return;
    const rng = this.txRng, c = this.counters, buf = this.inner.txBuf;
    if (this.loss > 0 && rng.next() < this.loss) {
      c.dropped++; // the inner slot is left uncommitted: the next reserve() reuses it
      return;
    }
    const now = this.now();
    if (this.dup > 0 && rng.next() < this.dup) {
      c.duplicated++;
      // The copy goes through the pool (due now when not delayed): one inner slot, one commit.
      const d = this.delay(rng);
      if (this.hold(this.txHeld, buf, at, len, now + d) && d > 0) c.delayed++;
    }
    const d = this.delay(rng);
    if (d <= 0) this.inner.commit(len);
    else if (this.hold(this.txHeld, buf, at, len, now + d)) c.delayed++;
  }

  flush(): number {
    const held = this.txHeld;
    if (held.size > 0) {
      const now = this.now();
      while (held.size > 0 && this.dueAt[held.top()] <= now) {
        const at = this.inner.reserve();
        if (at < 0) break; // the device is full: try again next round
        const slot = held.pop();
        const len = this.lens[slot];
        copyBytes(this.inner.txBuf, at, this.pool, slot * this.slotSize, len);
        this.inner.commit(len);
        this.free[this.freeTop++] = slot;
      }
    }
    return this.inner.flush();
  }

  /** Takes the inner device's burst, drops, duplicates and holds; returns what passes now. */
  private receiveInner(now: number): number {
    const inner = this.inner;
    const n = inner.receive();
    if (2 * n > this.map.length) this.map = new Int32Array(2 * n); // grows once, not per frame
    const rng = this.rxRng, c = this.counters, map = this.map;
    let k = 0;
    for (let i = 0; i < n; i++) {
      if (this.loss > 0 && rng.next() < this.loss) {
        c.dropped++;
        continue;
      }
      let copies = 1;
      if (this.dup > 0 && rng.next() < this.dup) {
        c.duplicated++;
        copies = 2;
      }
      for (let j = 0; j < copies; j++) {
        const d = this.delay(rng);
        if (d <= 0) map[k++] = i; // lent in place: a duplicate is the same frame twice
        else if (
          this.hold(this.rxHeld, inner.rxBuf, inner.rxOffset(i), inner.rxLength(i), now + d)
        ) {
          c.delayed++;
        }
      }
    }
    return k;
  }

  /** This copy's delay in ms: 0 when there is none or it is reordered. */
  private delay(rng: Prng): number {
    if (this.delayMs === 0 && this.jitterMs === 0) return 0;
    if (this.reorder > 0 && rng.next() < this.reorder) {
      this.counters.reordered++;
      return 0;
    }
    if (this.jitterMs === 0) return this.delayMs;
    return Math.max(0, this.delayMs + this.jitterMs * (2 * rng.next() - 1));
  }

  /** Copies a frame into a free slot due at `due`; false (counted) when none is free. */
  private hold(heap: SlotHeap, src: Uint8Array, off: number, len: number, due: number): boolean {
    if (this.freeTop === 0 || len > this.slotSize) {
      this.counters.poolFull++;
      return false;
    }
    const slot = this.free[--this.freeTop];
    copyBytes(this.pool, slot * this.slotSize, src, off, len);
    this.lens[slot] = len;
    this.dueAt[slot] = due;
    this.order[slot] = this.arrivals++;
    heap.push(slot);
    return true;
  }
}
