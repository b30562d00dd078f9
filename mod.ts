/**
 * PnO's programmatic API: start the bridge from Deno code and read its counters.
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
  DEFAULT_WIRE,
  type Impairments,
  testWire,
  type WireConfig,
  wireDown,
  wireUp,
} from "./cli/wire.ts";
