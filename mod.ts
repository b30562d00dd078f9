/**
 * PnO's programmatic API: start the bridge and the host proxy from Deno code, read counters,
 * and open PnO sockets from Deno programs: `RingClient.attach(control)` then `listen` and
 * `connect`, which return objects shaped like `Deno.Listener` and `Deno.Conn` whose TCP runs
 * in the bridge (the same protocol the C shim speaks for unmodified programs). The examples
 * need root, a wire and a running bridge, so they are marked `ignore`; the integration tests
 * (tests/rings_e2e_test.ts, tests/proxy_test.ts) run the same calls.
 *
 * @example Start a bridge on a wire, read its counters, stop it
 * ```ts ignore
 * import { startBridge } from "./mod.ts";
 * const bridge = await startBridge({ iface: "pno1", address: "10.88.0.2/24" });
 * console.log((await bridge.stats()).iface.icmpEchoIn);
 * await bridge.stop();
 * ```
 *
 * @example Serve a running bridge's live stats (dashboard, /stats, /metrics, /events)
 * ```ts ignore
 * import { startBridge, liveStatsApp, StatsReader } from "./mod.ts";
 * const bridge = await startBridge({ iface: "pno1", address: "10.88.0.2/24" });
 * const reader = new StatsReader(bridge.statsPage.mapping.buffer);
 * Deno.serve({ hostname: "127.0.0.1", port: 9464 }, liveStatsApp(() => reader).fetch);
 * ```
 *
 * @example An echo server whose TCP is the bridge's (no kernel socket for its port)
 * ```ts ignore
 * import { RingClient } from "./mod.ts";
 * const client = await RingClient.attach("/run/pno/bridge.sock");
 * const listener = await client.listen({ port: 8007 });
 * for await (const conn of listener) {
 *   const buf = new Uint8Array(4096);
 *   for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
 *   conn.close();
 * }
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
export {
  DEFAULT_CONTROL_PATH,
  PnoConn,
  PnoListener,
  RingClient,
  RingError,
} from "./packages/rings/client.ts";
export { checkPolicy as checkShimPolicy, shimEnv } from "./packages/shim/mod.ts";
export {
  type ConnectionRow,
  liveStatsApp,
  metricsText,
  StatsReader,
  type StatsSnapshot,
} from "./packages/stats/mod.ts";
