/**
 * The host-NIC protocol of PnO: a per-application region of G-type rings (commands and
 * completions, fixed-size descriptors) and S-type rings (per-socket TX and RX byte rings), its
 * versioned layout, the region lifecycle and the attach handshake. The C header for the shim
 * (ffi/include/pno_rings.h) is generated from the same layout by gen_header.ts.
 *
 * @module
 */

export type { RxStream, TxStream } from "./stream.ts";
export {
  BYTE_RING_CTRL_SIZE,
  CACHE_LINE,
  HostRxConsumer,
  HostTxProducer,
  NicRxProducer,
  NicTxConsumer,
  RING_FAULT,
} from "./byte_ring.ts";
export { DESC_SIZE, DescRingConsumer, DescRingProducer } from "./desc_ring.ts";
export * from "./descriptors.ts";
export * from "./layout.ts";
export * as errno from "./errno.ts";
export { hostGRings, hostSRings, nicGRings, nicSRings } from "./attach.ts";
export {
  closeRegion,
  createRegion,
  mapFd,
  type Mapping,
  mapRegionFd,
  openRegionPath,
  processMapsRegion,
  type Region,
  regionName,
  unmap,
} from "./region.ts";
export {
  connectControl,
  ControlConn,
  ControlListener,
  type PeerCred,
  type RegionGrant,
  requestRegion,
  serveRegion,
} from "./control.ts";
// The control protocol's frames, for the host proxy (packages/proxy).
export {
  type Frame,
  type Hello,
  HELLO_JOIN,
  HELLO_PROXY,
  MSG_BRIDGE_INFO,
  MSG_ERROR,
  MSG_HELLO,
  MSG_MAP_REGION,
  MSG_REGION,
  MSG_REPLY,
  MSG_STATS_PAGE,
  MSG_UNMAP_REGION,
  MSG_WAIT_FD,
  MSG_WAKER,
  parseHello,
  payloadU32,
  REGION_PARAM_NAMES,
  sendRegion,
  u32Payload,
} from "./control.ts";
export { checkWakeSocket, Waker } from "./waker.ts";
