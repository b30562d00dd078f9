/**
 * A socket's S-rings seen through the emulated DMA link: every copy between host memory and
 * an mbuf is one DMA transfer that pays the link's latency, jitter and bandwidth cost and is
 * counted. Used only while a knob is set, so the default data path keeps its direct copies.
 *
 * @module
 */
import type { RxStream, TxStream } from "../rings/stream.ts";
import type { DmaLink } from "./dma.ts";

/** The TX ring read across the link (host to NIC). */
export class DmaTxStream implements TxStream {
  constructor(private readonly inner: TxStream, private readonly link: DmaLink) {}

  readable(): number {
    return this.inner.readable();
  }

  copyOut(offset: number, dst: Uint8Array, dstOffset: number, len: number): void {
    this.link.charge(len, false);
    this.inner.copyOut(offset, dst, dstOffset, len);
  }

  copyOutSum(offset: number, dst: Uint8Array, dstOffset: number, len: number): number {
    this.link.charge(len, false);
    if (this.inner.copyOutSum !== undefined) {
      return this.inner.copyOutSum(offset, dst, dstOffset, len);
    }
    this.inner.copyOut(offset, dst, dstOffset, len);
    return -1;
  }

  release(n: number): void {
    this.inner.release(n);
  }
}

/** The RX ring written across the link (NIC to host). */
export class DmaRxStream implements RxStream {
  constructor(private readonly inner: RxStream, private readonly link: DmaLink) {}

  writable(): number {
    return this.inner.writable();
  }

  copyIn(offset: number, src: Uint8Array, srcOffset: number, len: number): void {
    this.link.charge(len, true);
    this.inner.copyIn(offset, src, srcOffset, len);
  }

  copyInSum(offset: number, src: Uint8Array, srcOffset: number, len: number, head = 0): number {
    if (this.inner.copyInSum === undefined) return -1;
    const sum = this.inner.copyInSum(offset, src, srcOffset, len, head);
    if (sum >= 0) this.link.charge(len, true); // -1: nothing moved
    return sum;
  }

  publish(n: number): void {
    this.inner.publish(n);
  }
}
