/**
 * `GET /metrics`: the Prometheus text exposition of the page.
 *
 * @module
 */
import { Hono } from "hono";
import { METRICS_CONTENT_TYPE, metricsText } from "./metrics.ts";
import { NO_BRIDGE, type SourceRef } from "./source.ts";

/** The /metrics sub-app. */
export function metricsRoute(source: SourceRef): Hono {
  return new Hono().get("/", (c) => {
    const s = source();
    if (s === null) return c.json(NO_BRIDGE, 503);
    return c.body(metricsText(s.snapshot()), 200, { "content-type": METRICS_CONTENT_TYPE });
  });
}
