/**
 * The NIC side's view of one socket's S-type rings, as the TCP engine uses them.
 *
 * The TX byte ring is the socket's send buffer: the application produces, the engine reads at
 * any offset from the consumer index (first transmission and retransmission alike) and releases
 * bytes only when the peer acknowledges them. The RX byte ring is the receive buffer: the engine
 * copies payload at any offset past the producer index (out-of-order data lands in place) and
 * publishes only the in-order prefix, so the free space is exactly the window it advertises.
 *
 * @module
 */

/** Consumer side of a TX byte ring, seen from the NIC. */
export interface TxStream {
  /** Bytes written by the application and not yet released (in flight plus unsent). */
  readable(): number;
  /** Copies `len` bytes that start `offset` bytes past the consumer index into `dst`. */
  copyOut(offset: number, dst: Uint8Array, dstOffset: number, len: number): void;
  /**
   * `copyOut`, also summing the bytes copied for the Internet checksum in the same pass (the
   * sum `checksumAdd(0, dst, dstOffset, len)` would give, folded to 16 bits). Returns -1 when
   * this stream copied without summing (no native library): the caller sums `dst` itself.
   */
  copyOutSum?(offset: number, dst: Uint8Array, dstOffset: number, len: number): number;
  /** Releases `n` bytes at the consumer index (they were acknowledged). */
  release(n: number): void;
}

/** Producer side of an RX byte ring, seen from the NIC. */
export interface RxStream {
  /** Free bytes: capacity minus what the application has not yet read. */
  writable(): number;
  /** Copies `len` bytes of `src` to `offset` bytes past the producer index, not yet visible. */
  copyIn(offset: number, src: Uint8Array, srcOffset: number, len: number): void;
  /**
   * `copyIn`, also summing for the Internet checksum in the same pass the `head` bytes before
   * `srcOffset` (an even count, default 0: a segment's header, summed but not copied) and the
   * bytes copied: the sum `checksumAdd(0, src, srcOffset - head, head + len)` would give, folded
   * to 16 bits. Returns -1, having copied nothing, when this stream cannot sum as it copies (no
   * native library, memory it cannot reach natively): the caller verifies and copies the usual
   * way. The bytes land in free space, unpublished: a caller that finds the sum wrong publishes
   * nothing.
   */
  copyInSum?(
    offset: number,
    src: Uint8Array,
    srcOffset: number,
    len: number,
    head?: number,
  ): number;
  /** Makes the next `n` bytes at the producer index visible to the application. */
  publish(n: number): void;
}
