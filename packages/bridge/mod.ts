/**
 * The NIC side of PnO: the bridge that owns the DPDK port and serves the wire.
 *
 * @module
 */
export { type Bridge, type BridgeOptions, type BridgeStats, startBridge } from "./bridge.ts";
export { Interface, InterfaceCounters, type TcpHandler } from "./iface.ts";
export { ArpCache } from "./arp_cache.ts";
export type { FrameDevice } from "./phy/device.ts";
export { MemoryDevice } from "./phy/mem_device.ts";
export { PollLoop } from "./poll_loop.ts";
export { QueueStack, type QueueStats } from "./queue_stack.ts";
export { statsApp } from "./stats_server.ts";
