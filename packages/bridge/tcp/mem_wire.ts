/**
 * An in-memory wire for TCP engines, driven by a virtual clock: two {@linkcode MemLink}s (one
 * per direction) that carry segments in a preallocated slot pool, and a {@linkcode FaultyLink}
 * that wraps any {@linkcode IpLink} with seeded, deterministic loss, duplication, reordering,
 * extra delay and corruption (like smoltcp's fault injector: the engine does not know).
 *
 * @example
 * ```ts
 * import { MemWire } from "./mem_wire.ts";
 * import { TcpEngine } from "./engine.ts";
 * const wire = new MemWire({ delayMs: 1 });
 * const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1 });
 * const b = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2 });
 * wire.attach(a, b);
 * b.listen(7, 8);
 * const s = a.connect(wire.ipB, 7);
 * wire.runUntil(() => s.state === 4, 1000);
 * ```
 * @module
 */

import type { IpLink } from "./link.ts";
import { mulberry32 } from "./isn.ts";

/** Something that takes segments: a TCP engine. */
export interface SegmentSink {
  input(buf: Uint8Array, off: number, len: number, srcIp: number, dstIp: number, now: number): void;
  poll(nowMs: number): void;
  nextDeadline(): number;
  /** The clock socket calls read between polls; the wire sets it to its own. */
  clock?: () => number;
}

const HEADROOM = 64;

/** One direction of the wire: a pool of packet slots and a delivery queue ordered by time. */
export class MemLink implements IpLink {
  readonly buf: Uint8Array;
  readonly mtu: number;
  /** Base one-way delay in ms. */
  delayMs: number;
  /** Packets in flight beyond which `send` drops (tail drop), 0 = unbounded by pool only. */
  queueLimit: number;
  /** The virtual clock, set by the wire. */
  now = 0;
  sent = 0;
  dropped = 0;
  /** Frames longer than the MTU, dropped as a real link drops them. */
  oversized = 0;

  private readonly slotSize: number;
  private readonly free: Int32Array;
  private freeTop: number;
  private reserved = -1;
  // Min-heap of in-flight packets keyed by (deliverAt, order).
  private readonly hSlot: Int32Array;
  private readonly hAt: Float64Array;
  private readonly hOrd: Float64Array;
  private hLen = 0;
  private order = 0;
  private readonly pSrc: Float64Array;
  private readonly pDst: Float64Array;
  private readonly pLen: Int32Array;

  constructor(mtu = 1500, slots = 8192, delayMs = 1, queueLimit = 0) {
    this.mtu = mtu;
    this.delayMs = delayMs;
    this.queueLimit = queueLimit;
    this.slotSize = (mtu + HEADROOM + 63) & ~63;
    this.buf = new Uint8Array(this.slotSize * slots);
    this.free = new Int32Array(slots);
    for (let i = 0; i < slots; i++) this.free[i] = slots - 1 - i;
    this.freeTop = slots;
    this.hSlot = new Int32Array(slots);
    this.hAt = new Float64Array(slots);
    this.hOrd = new Float64Array(slots);
    this.pSrc = new Float64Array(slots);
    this.pDst = new Float64Array(slots);
    this.pLen = new Int32Array(slots);
  }

  reserve(): number {
    if (this.reserved < 0) {
      if (this.freeTop === 0) return -1;
      this.reserved = this.free[--this.freeTop];
    }
    return this.reserved * this.slotSize + HEADROOM;
  }

  send(srcIp: number, dstIp: number, tcpLen: number): void {
    this.sendDelayed(srcIp, dstIp, tcpLen, 0);
  }

  /** Queues the reserved segment with `extraMs` of delay on top of the base delay. */
  sendDelayed(srcIp: number, dstIp: number, tcpLen: number, extraMs: number): void {
    const slot = this.reserved;
    if (slot < 0) return;
    this.reserved = -1;
    // A frame longer than the MTU does not fit the wire: a veth (or a NIC) drops it.
    if (tcpLen + 20 > this.mtu) {
      this.oversized++;
      this.free[this.freeTop++] = slot;
      return;
    }
    if (this.queueLimit > 0 && this.hLen >= this.queueLimit) {
      this.dropped++;
      this.free[this.freeTop++] = slot;
      return;
    }
    this.pSrc[slot] = srcIp;
    this.pDst[slot] = dstIp;
    this.pLen[slot] = tcpLen;
    this.push(slot, this.now + this.delayMs + extraMs);
    this.sent++;
  }

  /** Releases the reserved slot without sending (a dropped segment). */
  discard(): void {
    if (this.reserved >= 0) {
      this.free[this.freeTop++] = this.reserved;
      this.reserved = -1;
    }
  }

  /** Packets in flight. */
  inFlight(): number {
    return this.hLen;
  }

  /** Delivery time of the next packet, Infinity if none. */
  nextAt(): number {
    return this.hLen > 0 ? this.hAt[0] : Infinity;
  }

  /** Hands every packet due at `now` to `sink`. */
  deliver(sink: SegmentSink, now: number): number {
    let n = 0;
    while (this.hLen > 0 && this.hAt[0] <= now) {
      const slot = this.pop();
      sink.input(
        this.buf,
        slot * this.slotSize + HEADROOM,
        this.pLen[slot],
        this.pSrc[slot],
        this.pDst[slot],
        now,
      );
      this.free[this.freeTop++] = slot;
      n++;
    }
    return n;
  }

  private less(i: number, j: number): boolean {
    return this.hAt[i] < this.hAt[j] ||
      (this.hAt[i] === this.hAt[j] && this.hOrd[i] < this.hOrd[j]);
  }

  private swap(i: number, j: number): void {
    const s = this.hSlot[i];
    this.hSlot[i] = this.hSlot[j];
    this.hSlot[j] = s;
    const a = this.hAt[i];
    this.hAt[i] = this.hAt[j];
    this.hAt[j] = a;
    const o = this.hOrd[i];
    this.hOrd[i] = this.hOrd[j];
    this.hOrd[j] = o;
  }

  private push(slot: number, at: number): void {
    let i = this.hLen++;
    this.hSlot[i] = slot;
    this.hAt[i] = at;
    this.hOrd[i] = this.order++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.less(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  private pop(): number {
    const top = this.hSlot[0];
    const last = --this.hLen;
    if (last > 0) {
      this.hSlot[0] = this.hSlot[last];
      this.hAt[0] = this.hAt[last];
      this.hOrd[0] = this.hOrd[last];
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < last && this.less(l, m)) m = l;
        if (r < last && this.less(r, m)) m = r;
        if (m === i) break;
        this.swap(i, m);
        i = m;
      }
    }
    return top;
  }
}

/** Fault settings; probabilities are per segment. */
export interface Faults {
  loss?: number;
  duplicate?: number;
  /** Probability that a segment is held back by `reorderMs`, so later ones overtake it. */
  reorder?: number;
  reorderMs?: number;
  /** Uniform extra delay in [0, jitterMs) for every segment (reorders too). */
  jitterMs?: number;
  /** Probability of flipping one byte (the checksum must catch it). */
  corrupt?: number;
  seed?: number;
}

/** Wraps a {@linkcode MemLink} with faults. */
export class FaultyLink implements IpLink {
  readonly inner: MemLink;
  faults: Faults;
  lost = 0;
  duplicated = 0;
  reordered = 0;
  corrupted = 0;
  private readonly rnd: () => number;
  private off = -1;

  constructor(inner: MemLink, faults: Faults) {
    this.inner = inner;
    this.faults = faults;
    this.rnd = mulberry32(faults.seed ?? 1);
  }

  get buf(): Uint8Array {
    return this.inner.buf;
  }

  get mtu(): number {
    return this.inner.mtu;
  }

  reserve(): number {
    this.off = this.inner.reserve();
    return this.off;
  }

  private chance(p: number | undefined): boolean {
    return p !== undefined && p > 0 && this.rnd() / 4294967296 < p;
  }

  send(srcIp: number, dstIp: number, tcpLen: number): void {
    const f = this.faults;
    if (this.chance(f.loss)) {
      this.lost++;
      this.inner.discard();
      return;
    }
    if (this.chance(f.corrupt)) {
      this.corrupted++;
      const i = this.off + (this.rnd() % tcpLen);
      this.inner.buf[i] ^= 1 << (this.rnd() & 7);
    }
    let extra = 0;
    if (f.jitterMs) extra += (this.rnd() % (f.jitterMs * 1000)) / 1000;
    if (this.chance(f.reorder)) {
      this.reordered++;
      extra += f.reorderMs ?? 3;
    }
    const dup = this.chance(f.duplicate);
    if (dup) {
      // Copy the segment into a second slot first.
      const src = this.off;
      const buf = this.inner.buf;
      this.inner.sendDelayed(srcIp, dstIp, tcpLen, extra);
      const o2 = this.inner.reserve();
      if (o2 >= 0) {
        buf.copyWithin(o2, src, src + tcpLen);
        this.duplicated++;
        this.inner.sendDelayed(srcIp, dstIp, tcpLen, extra + 0.5);
      }
      return;
    }
    this.inner.sendDelayed(srcIp, dstIp, tcpLen, extra);
  }
}

/** Options for a {@linkcode MemWire}. */
export interface MemWireOptions {
  mtu?: number;
  slots?: number;
  delayMs?: number;
  queueLimit?: number;
  /** Faults on A→B and B→A. */
  faultsAB?: Faults;
  faultsBA?: Faults;
  ipA?: number;
  ipB?: number;
}

/** Two engines, A and B, joined by two links and a virtual clock. */
export class MemWire {
  readonly ab: MemLink;
  readonly ba: MemLink;
  /** What engine A sends into (faulty or not), and engine B. */
  readonly a: IpLink;
  readonly b: IpLink;
  readonly ipA: number;
  readonly ipB: number;
  now = 0;
  private engA: SegmentSink | null = null;
  private engB: SegmentSink | null = null;

  constructor(o: MemWireOptions = {}) {
    this.ab = new MemLink(o.mtu ?? 1500, o.slots ?? 8192, o.delayMs ?? 1, o.queueLimit ?? 0);
    this.ba = new MemLink(o.mtu ?? 1500, o.slots ?? 8192, o.delayMs ?? 1, o.queueLimit ?? 0);
    this.a = o.faultsAB ? new FaultyLink(this.ab, o.faultsAB) : this.ab;
    this.b = o.faultsBA ? new FaultyLink(this.ba, o.faultsBA) : this.ba;
    this.ipA = o.ipA ?? 0x0a000001;
    this.ipB = o.ipB ?? 0x0a000002;
  }

  attach(a: SegmentSink, b: SegmentSink): void {
    this.engA = a;
    this.engB = b;
    if (a.clock !== undefined) a.clock = () => this.now;
    if (b.clock !== undefined) b.clock = () => this.now;
  }

  /** Advances the clock to `now`: delivers due packets, then polls both engines. */
  step(now: number): void {
    this.now = now;
    this.ab.now = now;
    this.ba.now = now;
    const a = this.engA!;
    const b = this.engB!;
    this.ab.deliver(b, now);
    this.ba.deliver(a, now);
    a.poll(now);
    b.poll(now);
  }

  /** The next time anything happens (packet delivery or engine deadline), at least now + 1 ms. */
  nextTime(): number {
    const t = Math.min(
      this.ab.nextAt(),
      this.ba.nextAt(),
      this.engA!.nextDeadline(),
      this.engB!.nextDeadline(),
    );
    return Math.max(Math.ceil(t), this.now + 1);
  }

  /**
   * Steps until `done()` is true or `maxMs` of virtual time pass; `tick` runs after each step
   * (the test's application). Skips idle time. Returns whether `done()` became true.
   */
  runUntil(done: () => boolean, maxMs: number, tick?: () => void): boolean {
    const end = this.now + maxMs;
    while (!done()) {
      const t = this.nextTime();
      if (t > end) {
        this.step(end);
        tick?.();
        return done();
      }
      this.step(t);
      tick?.();
    }
    return true;
  }
}
