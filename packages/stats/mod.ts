/**
 * Live stats: the shared-memory stats page the bridge writes and the proxy maps, its reader,
 * and the Hono app that serves it (JSON, Prometheus, SSE, connections, dashboard).
 *
 * @module
 */
export * from "./page.ts";
export {
  type AppStats,
  type ConnectionPage,
  type ConnectionQuery,
  type ConnectionRow,
  hostCpuMs,
  processName,
  StatsReader,
  type StatsSnapshot,
  type WorkerStats,
} from "./reader.ts";
export { Exposition, METRICS_CONTENT_TYPE, metricsText, snake } from "./metrics.ts";
export { liveStatsApp, type LiveStatsOptions } from "./app.ts";
export type { SourceRef, StatsSource } from "./source.ts";
export { type Schema as JsonSchema, validate as validateJson } from "./json_schema.ts";
