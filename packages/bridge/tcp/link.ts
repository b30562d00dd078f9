/**
 * What the TCP engine needs from the IP layer below it: buffers it may write a segment into,
 * and a way to hand a finished segment down.
 *
 * The link lends memory (an mbuf in the DPDK pool, a slot of the in-memory wire): `reserve`
 * returns the offset in `buf` where the TCP header goes, leaving room in front for the link's
 * own IPv4 and Ethernet headers. The engine writes header, options and payload there with
 * direct byte stores, computes the TCP checksum, and calls `send`. At most one buffer is
 * reserved at a time; `buf` is read again after every `reserve` (a link may lend a different
 * view each time) and is valid until the matching `send`.
 *
 * @module
 */

/** The engine's view of the IPv4 layer that carries its segments. */
export interface IpLink {
  /** Memory the link lends; the reserved segment lives in it until `send`. */
  readonly buf: Uint8Array;
  /** IP MTU in bytes: the engine keeps IPv4 (20) + TCP header + payload within it. */
  readonly mtu: number;
  /** Offset in `buf` where the TCP header starts, with `mtu - 20` bytes free; -1 if none. */
  reserve(): number;
  /** Queues the reserved segment (`tcpLen` bytes, header + payload) from `srcIp` to `dstIp`. */
  send(srcIp: number, dstIp: number, tcpLen: number): void;
}
