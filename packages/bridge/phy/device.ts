/**
 * The device contract between the interface layer and whatever moves frames (smoltcp's phy).
 *
 * A device lends memory: received frames are (offset, length) pairs into `rxBuf`, and frames
 * to send are written straight into `txBuf` at an offset the device reserves. Nothing is
 * copied between the wire and the parser. The DPDK port, the in-memory wire of the tests and
 * any capture or fault-injecting wrapper all implement this one interface.
 *
 * @module
 */
export interface FrameDevice {
  /** Memory holding received frames. */
  readonly rxBuf: Uint8Array;
  /** Memory the device lends for outgoing frames (may be the same as `rxBuf`). */
  readonly txBuf: Uint8Array;
  /** Largest frame, in bytes, a transmit slot holds. */
  readonly frameRoom: number;
  /** Receives a burst; returns how many frames `rxOffset`/`rxLength` now describe. */
  receive(): number;
  rxOffset(i: number): number;
  rxLength(i: number): number;
  /** Reserves a transmit slot; returns its offset in `txBuf`, or -1 when none is free. */
  reserve(): number;
  /** Queues the slot last reserved, holding `len` bytes. */
  commit(len: number): void;
  /** Sends what was committed; returns the number of frames the device took. */
  flush(): number;
}
