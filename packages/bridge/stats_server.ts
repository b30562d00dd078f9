/**
 * The bridge's own stats endpoint (Hono), on loopback: GET /stats returns every counter,
 * GET /connections every TCP connection with its state, windows, timers and counters.
 *
 * @module
 */
import { Hono } from "hono";
import type { Bridge } from "./bridge.ts";

/** The stats app for one bridge. */
export function statsApp(bridge: Bridge): Hono {
  const app = new Hono();
  app.get("/stats", async (c) => c.json(await bridge.stats()));
  app.get("/connections", async (c) => c.json(await bridge.connections()));
  app.get("/healthz", (c) => c.text("ok"));
  return app;
}
