/**
 * PnO's programmatic API: start the bridge and the host proxy from Deno code, read counters.
 *
 * @example
 * ```ts ignore
 * import { startBridge } from "./mod.ts";
 * const bridge = await startBridge({ iface: "pno1", address: "10.88.0.2/24" });
 * console.log((await bridge.stats()).iface.icmpEchoIn);
 * await bridge.stop();
 * ```
 * @module
 */
export {
  type Bridge,
  type BridgeOptions,
  type BridgeStats,
  startBridge,
} from "./packages/bridge/mod.ts";
export {
  loadPolicy,
  parsePolicy,
  type Policy,
  Proxy,
  type ProxyOptions,
  type ProxyStats,
} from "./packages/proxy/mod.ts";
export {
  DEFAULT_WIRE,
  type Impairments,
  testWire,
  type WireConfig,
  wireDown,
  wireUp,
} from "./cli/wire.ts";
