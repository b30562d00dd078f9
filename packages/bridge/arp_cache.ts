/**
 * The neighbour cache: IPv4 address to MAC, with expiry, in preallocated tables.
 *
 * Entries are learnt from ARP requests and replies addressed to us and from IPv4 frames of
 * on-link senders (as smoltcp does), and they expire after `ttlMs`. Lookups and updates are
 * linear over a small fixed table: a bridge talks to a handful of on-link neighbours (its
 * gateway and the hosts of its subnet), and a scan of 64 numbers beats hashing at that size.
 * When full, the entry that expires first is replaced.
 *
 * @example
 * ```ts
 * import { ArpCache } from "./arp_cache.ts";
 * const cache = new ArpCache(8, 60_000);
 * cache.update(0x0a580001, new Uint8Array([2, 0, 0, 0, 0, 1]), 0, 1000);
 * if (cache.lookup(0x0a580001, 2000) < 0) throw new Error("expected a hit");
 * ```
 * @module
 */

export class ArpCache {
  /** Six bytes per entry; `lookup` returns an offset into this array. */
  readonly macs: Uint8Array;
  private readonly ips: Uint32Array;
  private readonly expires: Float64Array;
  /** Next time a request for an unresolved address may be sent, per slot of `pendingIps`. */
  private readonly pendingIps: Uint32Array;
  private readonly pendingUntil: Float64Array;
  /**
   * The slot last found or written: a flow's frames come from and go to one neighbour, and
   * every IPv4 frame from an on-link sender refreshes its entry (two scans of the table
   * each, 1.2% of the bridge's samples in a bulk receive before this).
   */
  private lastSlot = 0;

  constructor(readonly capacity = 64, readonly ttlMs = 60_000, readonly requestIntervalMs = 1000) {
    this.macs = new Uint8Array(capacity * 6);
    this.ips = new Uint32Array(capacity);
    this.expires = new Float64Array(capacity);
    this.pendingIps = new Uint32Array(capacity);
    this.pendingUntil = new Float64Array(capacity);
  }

  /** Offset into `macs` of the live entry for `ip`, or -1. */
  lookup(ip: number, nowMs: number): number {
    const k = this.lastSlot;
    if (this.ips[k] === ip && this.expires[k] > nowMs) return k * 6;
    for (let i = 0; i < this.capacity; i++) {
      if (this.ips[i] === ip && this.expires[i] > nowMs) {
        this.lastSlot = i;
        return i * 6;
      }
    }
    return -1;
  }

  /** Records `ip` at the MAC in `src[off..off+6]`, refreshing its lifetime. */
  update(ip: number, src: Uint8Array, off: number, nowMs: number): void {
    const k = this.lastSlot;
    if (this.ips[k] === ip && this.expires[k] > nowMs && this.sameMac(k, src, off)) {
      // A live entry, unchanged: only its lifetime moves (no request can be pending for an
      // address whose entry is live: requests go out only when a lookup fails).
      this.expires[k] = nowMs + this.ttlMs;
      return;
    }
    let slot = -1;
    let oldest = 0;
    for (let i = 0; i < this.capacity; i++) {
      if (this.ips[i] === ip) {
        slot = i;
        break;
      }
      if (this.expires[i] < this.expires[oldest]) oldest = i;
    }
    if (slot < 0) slot = oldest;
    this.ips[slot] = ip;
    this.expires[slot] = nowMs + this.ttlMs;
    for (let i = 0; i < 6; i++) this.macs[slot * 6 + i] = src[off + i];
    this.clearPending(ip);
    this.lastSlot = slot;
  }

  private sameMac(slot: number, src: Uint8Array, off: number): boolean {
    const m = this.macs, o = slot * 6;
    return m[o] === src[off] && m[o + 1] === src[off + 1] && m[o + 2] === src[off + 2] &&
      m[o + 3] === src[off + 3] && m[o + 4] === src[off + 4] && m[o + 5] === src[off + 5];
  }

  /** True if a request for `ip` may go out now (at most one per interval per address). */
  shouldRequest(ip: number, nowMs: number): boolean {
    let free = -1;
    for (let i = 0; i < this.capacity; i++) {
      if (this.pendingIps[i] === ip && this.pendingUntil[i] > nowMs) return false;
      if (free < 0 && (this.pendingUntil[i] <= nowMs || this.pendingIps[i] === ip)) free = i;
    }
    if (free < 0) return false;
    this.pendingIps[free] = ip;
    this.pendingUntil[free] = nowMs + this.requestIntervalMs;
    return true;
  }

  /** Live entries, for stats. */
  size(nowMs: number): number {
    let n = 0;
    for (let i = 0; i < this.capacity; i++) if (this.expires[i] > nowMs) n++;
    return n;
  }

  private clearPending(ip: number): void {
    for (let i = 0; i < this.capacity; i++) {
      if (this.pendingIps[i] === ip) this.pendingUntil[i] = 0;
    }
  }
}
