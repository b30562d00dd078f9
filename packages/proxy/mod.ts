/**
 * The host side of PnO's control plane: the proxy that admits applications under a policy,
 * creates their regions, has the bridge map them, forwards waiters' wake sockets and, when an
 * application's last process exits (pidfd), has the bridge finish and free its region.
 *
 * @module
 */
export { Proxy, ProxyCounters, type ProxyOptions, type ProxyStats } from "./proxy.ts";
export {
  type Admission,
  admit,
  type Limits,
  loadPolicy,
  OPEN_POLICY,
  parseBytes,
  parsePolicy,
  type Policy,
} from "./policy.ts";
export { type BridgeInfo, BridgeLink } from "./bridge_link.ts";
export { pidfdOpen, ProcessWatcher } from "./pidfd.ts";
export { proxyStatsApp } from "./stats_server.ts";
