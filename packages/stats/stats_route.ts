/**
 * `GET /stats`: every figure of the page as JSON (schema: stats.schema.json).
 *
 * @module
 */
import { Hono } from "hono";
import { NO_BRIDGE, type SourceRef } from "./source.ts";

/** The /stats sub-app. */
export function statsRoute(source: SourceRef): Hono {
  return new Hono().get("/", (c) => {
    const s = source();
    return s === null ? c.json(NO_BRIDGE, 503) : c.json(s.snapshot());
  });
}
