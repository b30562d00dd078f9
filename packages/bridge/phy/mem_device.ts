/**
 * An in-memory FrameDevice: frames queued by a test (or another device) are received, and
 * transmitted frames are kept for inspection. The frame-level twin of the TCP in-memory wire.
 *
 * @module
 */
import type { FrameDevice } from "./device.ts";

const SLOT = 2048;

export class MemoryDevice implements FrameDevice {
  readonly rxBuf: Uint8Array;
  readonly txBuf: Uint8Array;
  readonly frameRoom = SLOT;
  /** Frames sent by the stack since the last `takeSent()`. */
  private sent: Uint8Array[] = [];
  private pending: Uint8Array[] = [];
  private readonly rxLens: number[] = [];
  private committed = 0;
  private txCount = 0;

  constructor(readonly slots = 64) {
    this.rxBuf = new Uint8Array(slots * SLOT);
    this.txBuf = new Uint8Array(slots * SLOT);
  }

  /** Queues a frame for the next `receive()`. */
  inject(frame: Uint8Array): void {
    this.pending.push(frame);
  }

  receive(): number {
    const n = Math.min(this.pending.length, this.slots);
    for (let i = 0; i < n; i++) {
      const f = this.pending[i].subarray(0, SLOT);
      this.rxBuf.set(f, i * SLOT);
      this.rxLens[i] = f.length;
    }
    this.pending = this.pending.slice(n);
    return n;
  }

  rxOffset(i: number): number {
    return i * SLOT;
  }

  rxLength(i: number): number {
    return this.rxLens[i];
  }

  reserve(): number {
    return this.txCount < this.slots ? this.txCount * SLOT : -1;
  }

  commit(len: number): void {
    this.sent.push(this.txBuf.slice(this.txCount * SLOT, this.txCount * SLOT + len));
    this.txCount++;
    this.committed++;
  }

  flush(): number {
    const n = this.txCount;
    this.txCount = 0;
    return n;
  }

  /** Frames transmitted since the last call. */
  takeSent(): Uint8Array[] {
    const out = this.sent;
    this.sent = [];
    return out;
  }
}
