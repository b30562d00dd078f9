/**
 * A FrameDevice that wraps any other and records every frame it receives and sends in a pcap
 * file (smoltcp's phy/pcap_writer): `pno bridge --pcap FILE`, then open FILE in Wireshark or
 * `tshark -r FILE`. The stack does not know it is there. A debugging aid: it writes each frame
 * synchronously, so it costs a syscall per frame.
 *
 * @module
 */
import type { FrameDevice } from "./device.ts";

const LINKTYPE_ETHERNET = 1;
const SNAPLEN = 65535;

export class PcapWriter implements FrameDevice {
  private readonly record = new Uint8Array(16 + 2048);
  private readonly view = new DataView(this.record.buffer);
  private lastTx = -1;
  /** Wall-clock microseconds at performance.now() == 0: one clock for every record. */
  private readonly epochUs = Date.now() * 1000 - performance.now() * 1000;
  /** Frames written to the file. */
  frames = 0;

  constructor(private readonly inner: FrameDevice, private readonly file: Deno.FsFile) {
    const header = new DataView(new ArrayBuffer(24));
    header.setUint32(0, 0xa1b2c3d4, true); // magic, microsecond timestamps
    header.setUint16(4, 2, true);
    header.setUint16(6, 4, true);
    header.setUint32(16, SNAPLEN, true);
    header.setUint32(20, LINKTYPE_ETHERNET, true);
    file.writeSync(new Uint8Array(header.buffer));
  }

  /** Opens (truncating) `path` and wraps `inner`. */
  static open(inner: FrameDevice, path: string): PcapWriter {
    return new PcapWriter(
      inner,
      Deno.openSync(path, { write: true, create: true, truncate: true }),
    );
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
    for (let i = 0; i < n; i++) {
      this.write(this.inner.rxBuf, this.inner.rxOffset(i), this.inner.rxLength(i));
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
    if (this.lastTx >= 0) this.write(this.inner.txBuf, this.lastTx, len);
    this.inner.commit(len);
  }

  flush(): number {
    return this.inner.flush();
  }

  /** Closes the file (the wrapped device stays open). */
  close(): void {
    this.file.close();
  }

  private write(buf: Uint8Array, off: number, len: number): void {
    const kept = Math.min(len, this.record.length - 16);
    const us = Math.floor(this.epochUs + performance.now() * 1000);
    this.view.setUint32(0, Math.floor(us / 1e6), true);
    this.view.setUint32(4, us % 1e6, true);
    this.view.setUint32(8, kept, true);
    this.view.setUint32(12, len, true);
    for (let i = 0; i < kept; i++) this.record[16 + i] = buf[off + i];
    this.file.writeSync(this.record.subarray(0, 16 + kept));
    this.frames++;
  }
}
