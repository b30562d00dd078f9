/**
 * The live stats server: one Hono sub-app per resource, mounted here in one place
 * (STYLE.md's Hono section). The proxy serves it at its root (127.0.0.1:9464 by default); the
 * bridge serves the same app under /live on its loopback stats port, for when no proxy runs.
 *
 * ```text
 * GET /            dashboard (uPlot graphs, applications, connection table)
 * GET /stats       JSON, schema in stats.schema.json
 * GET /metrics     Prometheus text exposition
 * GET /events      Server-Sent Events: a `stats` event per ?interval=MS
 * GET /connections live connection table, ?offset ?limit ?pid ?state ?port
 * ```
 *
 * @module
 */
import { Hono } from "hono";
import { connectionsRoute } from "./connections_route.ts";
import { dashboardRoute } from "./dashboard_route.ts";
import { eventsRoute } from "./events_route.ts";
import { metricsRoute } from "./metrics_route.ts";
import type { SourceRef } from "./source.ts";
import { statsRoute } from "./stats_route.ts";

/** Options of the live stats app. */
export interface LiveStatsOptions {
  /** Interval of /events when the client names none, in ms (default 1000). */
  eventsIntervalMs?: number;
}

/** The live stats app over whatever `source` returns. */
export function liveStatsApp(source: SourceRef, opts: LiveStatsOptions = {}): Hono {
  const app = new Hono({ strict: false }); // "/live/" is the dashboard too;
  app.route("/stats", statsRoute(source));
  app.route("/metrics", metricsRoute(source));
  app.route("/events", eventsRoute(source, opts.eventsIntervalMs ?? 1000));
  app.route("/connections", connectionsRoute(source));
  app.route("/", dashboardRoute());
  return app;
}
