/**
 * The bridge's DMA module: the only bridge code that reaches host memory. Here the "PCIe link"
 * is a shared mapping of the application's region (a memfd); a BlueField build replaces this
 * file with DOCA DMA and keeps its interface.
 *
 * Every transfer names a host range by offset into the region and is checked against the
 * region before any byte moves: a bad range is rejected (`DMA_REJECTED`) and counted, never
 * thrown. Knobs emulate what a real link adds: a fixed per-transfer latency, random jitter on
 * top, and a bandwidth cap (token bucket). All waits are busy-waits, as a polling DPU core's
 * would be, and the hot path allocates nothing.
 *
 * The ring objects of @pno/rings (`nicSRings`, `nicGRings`) are built over `dma.buffer`: their
 * copies are the module's zero-latency transfers.
 *
 * @example
 * ```ts ignore
 * import { HostDma } from "./dma.ts";
 * const dma = HostDma.attach(fdFromProxy, { latencyNs: 800, bandwidthBytesPerSec: 12e9 });
 * const n = dma.read(hostOffset, mbuf, 0, 1460); // 1460 or DMA_REJECTED
 * dma.detach();
 * ```
 * @module
 */

import { closeRegion, mapRegionFd, type Region, type RegionLayout } from "@pno/rings";

/** Returned by a transfer whose host range or local span is invalid. */
export const DMA_REJECTED = -1;

/** Emulated link effects; zero means none. */
export interface DmaKnobs {
  /** Fixed latency added to every transfer, in nanoseconds. */
  latencyNs: number;
  /** Uniform random extra latency in [0, jitterNs), in nanoseconds. */
  jitterNs: number;
  /** Bandwidth cap in bytes per second (token bucket); 0 for none. */
  bandwidthBytesPerSec: number;
  /** Bucket depth in bytes: how far a burst may run ahead of the cap. */
  burstBytes: number;
}

/** Transfer counters. */
export interface DmaCounters {
  /** Transfers performed (reads plus writes). */
  transfers: number;
  /** Bytes moved from host to NIC. */
  bytesRead: number;
  /** Bytes moved from NIC to host. */
  bytesWritten: number;
  /** Transfers refused for a bad range. */
  rejected: number;
  /** Latency the knobs added, in ns (what the emulated link cost the data path). */
  injectedNs: number;
}

const NO_KNOBS: DmaKnobs = {
  latencyNs: 0,
  jitterNs: 0,
  bandwidthBytesPerSec: 0,
  burstBytes: 65536,
};

/**
 * The emulated PCIe link of one region: its knobs, its counters, and the cost every transfer
 * pays. Explicit transfers (HostDma.read/write) and the ring copies of the data path (the
 * engine reading a TX ring into an mbuf, writing payload into an RX ring; see dma_streams.ts)
 * both go through `charge`, so the knobs act on real traffic.
 */
export class DmaLink {
  /** Counters, updated in place. */
  readonly counters: DmaCounters = {
    transfers: 0,
    bytesRead: 0,
    bytesWritten: 0,
    rejected: 0,
    injectedNs: 0,
  };
  /** Link effects; may be changed at any time. */
  knobs: DmaKnobs;
  private tokens: number;
  private lastRefillMs: number;

  constructor(knobs: Partial<DmaKnobs> = {}) {
    this.knobs = { ...NO_KNOBS, ...knobs };
    this.tokens = this.knobs.burstBytes;
    this.lastRefillMs = performance.now();
  }

  /** True when any knob adds a cost (otherwise the data path skips the link entirely). */
  get active(): boolean {
    const k = this.knobs;
    return k.latencyNs > 0 || k.jitterNs > 0 || k.bandwidthBytesPerSec > 0;
  }

  /** Counts one transfer of `len` bytes (toward the host or from it) and pays its cost. */
  charge(len: number, toHost: boolean): void {
    this.counters.transfers++;
    if (toHost) this.counters.bytesWritten += len;
    else this.counters.bytesRead += len;
    const k = this.knobs;
    let waitNs = k.latencyNs;
    if (k.jitterNs > 0) waitNs += Math.random() * k.jitterNs;
    if (k.bandwidthBytesPerSec > 0) {
      const now = performance.now();
      const perMs = k.bandwidthBytesPerSec / 1000;
      this.tokens = Math.min(k.burstBytes, this.tokens + (now - this.lastRefillMs) * perMs);
      this.lastRefillMs = now;
      this.tokens -= len;
      // In debt: wait until the bucket would have refilled to zero.
      if (this.tokens < 0) waitNs = Math.max(waitNs, (-this.tokens / perMs) * 1e6);
    }
    if (waitNs > 0) {
      this.counters.injectedNs += waitNs;
      const until = performance.now() + waitNs / 1e6;
      while (performance.now() < until) { /* busy-wait: a polling core's cost */ }
    }
  }
}

/** One application's region as the bridge reaches it. */
export class HostDma {
  /** The link every transfer pays. */
  readonly link: DmaLink;
  private readonly host: Uint8Array;

  private constructor(private readonly region: Region, knobs: Partial<DmaKnobs>) {
    this.link = new DmaLink(knobs);
    this.host = new Uint8Array(region.buffer);
  }

  /** Counters, updated in place. */
  get counters(): DmaCounters {
    return this.link.counters;
  }

  /** Link effects; may be changed at any time. */
  get knobs(): DmaKnobs {
    return this.link.knobs;
  }

  set knobs(k: DmaKnobs) {
    this.link.knobs = k;
  }

  /**
   * Maps the region behind `fd` (received from the proxy) and checks its header; takes the fd.
   * Throws with the header's reason if it is not a usable region.
   */
  static attach(fd: number, knobs: Partial<DmaKnobs> = {}): HostDma {
    return new HostDma(mapRegionFd(fd), knobs);
  }

  /** The mapped region (for building ring views with @pno/rings' nicGRings / nicSRings). */
  get buffer(): ArrayBuffer {
    return this.region.buffer;
  }

  /** The region's layout, read from and checked against its header. */
  get layout(): RegionLayout {
    return this.region.layout;
  }

  /** Region size in bytes. */
  get size(): number {
    return this.region.size;
  }

  /**
   * Copies `len` host bytes at `hostOffset` into `dst[dstOffset..]`. Returns `len`, or
   * `DMA_REJECTED` if either range is invalid.
   */
  read(hostOffset: number, dst: Uint8Array, dstOffset: number, len: number): number {
    if (!this.admit(hostOffset, dst, dstOffset, len, false)) return DMA_REJECTED;
    dst.set(this.host.subarray(hostOffset, hostOffset + len), dstOffset);
    return len;
  }

  /**
   * Copies `len` bytes of `src[srcOffset..]` to host memory at `hostOffset`. Returns `len`, or
   * `DMA_REJECTED` if either range is invalid.
   */
  write(hostOffset: number, src: Uint8Array, srcOffset: number, len: number): number {
    if (!this.admit(hostOffset, src, srcOffset, len, true)) return DMA_REJECTED;
    this.host.set(src.subarray(srcOffset, srcOffset + len), hostOffset);
    return len;
  }

  /** Unmaps the region and closes its fd. */
  detach(): void {
    closeRegion(this.region);
  }

  /** Validates both ranges, then counts the transfer and pays the emulated link cost. */
  private admit(
    hostOffset: number,
    local: Uint8Array,
    localOffset: number,
    len: number,
    toHost: boolean,
  ): boolean {
    const ok = Number.isInteger(hostOffset) && Number.isInteger(localOffset) &&
      Number.isInteger(len) && hostOffset >= 0 && localOffset >= 0 && len >= 0 &&
      hostOffset + len <= this.region.size && localOffset + len <= local.length;
    if (!ok) {
      this.link.counters.rejected++;
      return false;
    }
    this.link.charge(len, toHost);
    return true;
  }
}
