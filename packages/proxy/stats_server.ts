/**
 * The proxy's stats endpoint (Hono), on loopback: GET /stats returns its counters and every
 * attached application (region, uid, processes, connections, waiters, limits).
 *
 * @module
 */
import { Hono } from "hono";
import type { Proxy } from "./proxy.ts";

/** The stats app for one proxy. */
export function proxyStatsApp(proxy: Proxy): Hono {
  const app = new Hono();
  app.get("/stats", (c) => c.json(proxy.stats()));
  app.get("/healthz", (c) => c.text("ok"));
  return app;
}
