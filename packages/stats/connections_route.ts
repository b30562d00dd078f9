/**
 * `GET /connections`: the live connection table, paged and filtered:
 * `?offset=N&limit=N` (default 0, 100; limit at most 1000), `?pid=N`, `?state=ESTABLISHED`,
 * `?port=N` (local or remote).
 *
 * @module
 */
import { Hono } from "hono";
import type { ConnectionQuery } from "./reader.ts";
import { NO_BRIDGE, type SourceRef } from "./source.ts";

/** The /connections sub-app. */
export function connectionsRoute(source: SourceRef): Hono {
  return new Hono().get("/", async (c) => {
    const s = source();
    if (s === null) return c.json(NO_BRIDGE, 503);
    const query: ConnectionQuery = {};
    for (const key of ["offset", "limit", "pid", "port"] as const) {
      const text = c.req.query(key);
      if (text === undefined) continue;
      const n = Number(text);
      if (!Number.isInteger(n) || n < 0) {
        return c.json({ error: `${key}=${text}: a non-negative integer` }, 400);
      }
      query[key] = key === "limit" ? Math.min(n, 1000) : n;
    }
    const state = c.req.query("state");
    if (state !== undefined) query.state = state.toUpperCase();
    return c.json(await s.connections(query));
  });
}
