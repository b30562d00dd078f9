/**
 * Capture on demand: a FrameDevice wrapper, always in place around the port, that copies the
 * frames it receives and sends into a preallocated staging ring while a capture session runs
 * (`pno capture`, served by the bridge's GET /capture). With no session the cost is one null
 * check per burst and per frame sent. Frames pass the session's BPF filter (bpf.ts) first; a
 * full ring drops the frame from the capture (counted), never from the wire. The control path
 * drains the ring into pcapng blocks (pcapng.ts) for the HTTP stream.
 *
 * @module
 */
import { bpfMatch, type BpfProgram } from "./bpf.ts";
import type { FrameDevice } from "./device.ts";
import { pcapngPackets, pcapngStatistics } from "./pcapng.ts";

/** Bytes kept of each frame (MTU-sized frames whole; longer ones truncated, length kept). */
export const SNAP = 2048;
/** Frames the staging ring holds between drains (4 MiB). */
const SLOTS = 2048;

/** One capture in progress. */
export class CaptureSession {
  readonly data: Uint8Array = new Uint8Array(SLOTS * SNAP);
  readonly capLen: Uint32Array = new Uint32Array(SLOTS);
  readonly origLen: Uint32Array = new Uint32Array(SLOTS);
  readonly inbound: Uint8Array = new Uint8Array(SLOTS);
  readonly stampUs: Float64Array = new Float64Array(SLOTS);
  produced = 0;
  consumed = 0;
  /** Frames that passed the filter and were kept, and those the full ring lost. */
  captured = 0;
  dropped = 0;
  private readonly epochUs = Date.now() * 1000 - performance.now() * 1000;
  ended = false;

  constructor(
    readonly count: number,
    readonly filter: BpfProgram | null,
    private readonly detach: () => void,
  ) {}

  /** Data path: keeps a copy of the frame if the filter takes it and there is room. */
  offer(buf: Uint8Array, off: number, len: number, inbound: boolean): void {
    if (this.ended || this.captured >= this.count) return;
    if (this.filter !== null && !bpfMatch(this.filter, buf, off, len)) return;
    if (this.produced - this.consumed >= SLOTS) {
      this.dropped++;
      return;
    }
    const slot = this.produced % SLOTS;
    const kept = Math.min(len, SNAP);
    const data = this.data, at = slot * SNAP;
    for (let i = 0; i < kept; i++) data[at + i] = buf[off + i]; // no view made per frame
    this.capLen[slot] = kept;
    this.origLen[slot] = len;
    this.inbound[slot] = inbound ? 1 : 0;
    this.stampUs[slot] = this.epochUs + performance.now() * 1000;
    this.produced++;
    this.captured++;
  }

  /** Control path: the frames kept since the last drain, as pcapng blocks (null if none). */
  drain(): Uint8Array | null {
    if (this.produced === this.consumed) return null;
    const out = pcapngPackets(this, this.consumed, this.produced, SNAP, SLOTS);
    this.consumed = this.produced;
    return out;
  }

  /** Whether every frame asked for was taken (and drained). */
  get complete(): boolean {
    return this.captured >= this.count && this.produced === this.consumed;
  }

  /** Stops taking frames; returns the closing statistics block. */
  end(): Uint8Array {
    if (!this.ended) {
      this.ended = true;
      this.detach();
    }
    return pcapngStatistics(this.epochUs + performance.now() * 1000, this.captured, this.dropped);
  }
}

/** The wrapper: passes everything through, and offers frames to a session if one runs. */
export class CaptureTap implements FrameDevice {
  private session: CaptureSession | null = null;
  private lastTx = -1;

  constructor(private readonly inner: FrameDevice) {}

  /** Starts a session; throws if one already runs (one capture at a time). */
  start(count: number, filter: BpfProgram | null): CaptureSession {
    if (this.session !== null) throw new Error("a capture is already running on this bridge");
    const s = new CaptureSession(count, filter, () => {
      if (this.session === s) this.session = null;
    });
    this.session = s;
    return s;
  }

  get rxBuf(): Uint8Array {
    return this.inner.rxBuf;
  }

  get txBuf(): Uint8Array {
    return this.inner.txBuf;
  }

  get frameRoom(): number {
    return this.inner.frameRoom;
  }

  receive(): number {
    const n = this.inner.receive();
    const s = this.session;
    if (s !== null) {
      const inner = this.inner;
      for (let i = 0; i < n; i++) s.offer(inner.rxBuf, inner.rxOffset(i), inner.rxLength(i), true);
    }
    return n;
  }

  rxOffset(i: number): number {
    return this.inner.rxOffset(i);
  }

  rxLength(i: number): number {
    return this.inner.rxLength(i);
  }

  reserve(): number {
    return this.lastTx = this.inner.reserve();
  }

  commit(len: number): void {
    const s = this.session;
    if (s !== null && this.lastTx >= 0) s.offer(this.inner.txBuf, this.lastTx, len, false);
    this.inner.commit(len);
  }

  flush(): number {
    return this.inner.flush();
  }
}
