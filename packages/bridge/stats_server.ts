/**
 * The bridge's own stats endpoint (Hono), on loopback: GET /stats returns every counter,
 * GET /connections every TCP connection with its state, windows, timers and counters. Under
 * /live it serves the same live stats app as the proxy (dashboard, /live/stats, /live/metrics,
 * /live/events, /live/connections), read from the bridge's stats page, for when no proxy runs.
 *
 * @module
 */
import { Hono } from "hono";
import { liveStatsApp, StatsReader } from "@pno/stats";
import type { Bridge } from "./bridge.ts";

/** The stats app for one bridge. */
export function statsApp(bridge: Bridge): Hono {
  const app = new Hono({ strict: false }); // "/live/" is the dashboard too;
  const reader = new StatsReader(bridge.statsPage.mapping.buffer);
  app.get("/stats", async (c) => c.json(await bridge.stats()));
  app.get("/connections", async (c) => c.json(await bridge.connections()));
  app.get("/healthz", (c) => c.text("ok"));
  app.route("/live", liveStatsApp(() => reader, { eventsIntervalMs: 1000 }));
  return app;
}
