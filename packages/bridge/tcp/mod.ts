/**
 * The bridge's TCP engine: public face.
 *
 * @module
 */

export {
  type ConnectOptions,
  type ListenOptions,
  TcpEngine,
  type TcpEngineOptions,
  TcpError,
} from "./engine.ts";
export type { IpLink } from "./link.ts";
export * from "./socket.ts";
export { CC_CUBIC, CC_NEWRENO, type CongestionControl, cubic, newReno } from "./cc.ts";
export { COUNTER_NAMES, type CounterName } from "./counters.ts";
export { MemStream } from "./_mem_stream.ts";
export { type Faults, FaultyLink, MemLink, MemWire, type MemWireOptions } from "./mem_wire.ts";
export { DISCARD_PORT, ECHO_PORT, type Services, SOURCE_PORT, startServices } from "./services.ts";
