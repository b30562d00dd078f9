/**
 * Ring objects for one thread's G-rings or one socket's S-rings of a mapped region, for either
 * side. Pure TypeScript over the region's ArrayBuffer: the offsets come from layout.ts.
 *
 * @example
 * ```ts
 * import { computeLayout, writeRegionHeader } from "./layout.ts";
 * import { hostSRings, nicSRings } from "./attach.ts";
 * const layout = computeLayout({ maxThreads: 1, maxWaiters: 1, maxProcs: 1, maxSockets: 2,
 *   cmdSlots: 8, cplSlots: 8, evSlots: 8, txBytes: 4096, rxBytes: 4096 });
 * const mem = new SharedArrayBuffer(layout.totalSize);
 * writeRegionHeader(mem, layout);
 * const host = hostSRings(mem, layout, 1);
 * const nic = nicSRings(mem, layout, 1);
 * host.tx.write(new Uint8Array([1, 2, 3]), 0, 3);
 * if (nic.tx.readable() !== 3) throw new Error("not shared");
 * ```
 * @module
 */

import { HostRxConsumer, HostTxProducer, NicRxProducer, NicTxConsumer } from "./byte_ring.ts";
import { DescRingConsumer, DescRingProducer } from "./desc_ring.ts";
import { type RegionLayout, streamOffset, threadOffset } from "./layout.ts";

function checkIndex(kind: string, i: number, max: number): void {
  if (!(Number.isInteger(i) && i >= 0 && i < max)) throw new RangeError(`${kind} ${i} >= ${max}`);
}

/** The NIC's view of thread `t`'s G-rings: it consumes commands, produces completions. */
export function nicGRings(buffer: ArrayBufferLike, layout: RegionLayout, t: number): {
  commands: DescRingConsumer;
  completions: DescRingProducer;
} {
  checkIndex("thread", t, layout.params.maxThreads);
  const g = threadOffset(layout, t);
  const p = layout.params;
  return {
    commands: new DescRingConsumer(
      buffer,
      g + layout.cmdCtrl,
      g + layout.cmdSlotsOffset,
      p.cmdSlots,
    ),
    completions: new DescRingProducer(
      buffer,
      g + layout.cplCtrl,
      g + layout.cplSlotsOffset,
      p.cplSlots,
    ),
  };
}

/** The host's view of thread `t`'s G-rings: it produces commands, consumes completions. */
export function hostGRings(buffer: ArrayBufferLike, layout: RegionLayout, t: number): {
  commands: DescRingProducer;
  completions: DescRingConsumer;
} {
  checkIndex("thread", t, layout.params.maxThreads);
  const g = threadOffset(layout, t);
  const p = layout.params;
  return {
    commands: new DescRingProducer(
      buffer,
      g + layout.cmdCtrl,
      g + layout.cmdSlotsOffset,
      p.cmdSlots,
    ),
    completions: new DescRingConsumer(
      buffer,
      g + layout.cplCtrl,
      g + layout.cplSlotsOffset,
      p.cplSlots,
    ),
  };
}

/** The NIC's view of socket `s`'s S-rings (what the TCP engine gets as TxStream/RxStream). */
export function nicSRings(buffer: ArrayBufferLike, layout: RegionLayout, s: number): {
  tx: NicTxConsumer;
  rx: NicRxProducer;
} {
  checkIndex("socket", s, layout.params.maxSockets);
  const o = streamOffset(layout, s);
  const p = layout.params;
  return {
    tx: new NicTxConsumer(buffer, o + layout.txCtrl, o + layout.txData, p.txBytes),
    rx: new NicRxProducer(buffer, o + layout.rxCtrl, o + layout.rxData, p.rxBytes),
  };
}

/** The host's view of socket `s`'s S-rings: send() writes TX, recv() reads RX. */
export function hostSRings(buffer: ArrayBufferLike, layout: RegionLayout, s: number): {
  tx: HostTxProducer;
  rx: HostRxConsumer;
} {
  checkIndex("socket", s, layout.params.maxSockets);
  const o = streamOffset(layout, s);
  const p = layout.params;
  return {
    tx: new HostTxProducer(buffer, o + layout.txCtrl, o + layout.txData, p.txBytes),
    rx: new HostRxConsumer(buffer, o + layout.rxCtrl, o + layout.rxData, p.rxBytes),
  };
}
