/**
 * `GET /events`: Server-Sent Events, one `stats` event (the /stats JSON) per interval
 * (`?interval=MS`, at least the bridge's publish interval; default from the server's options).
 *
 * @module
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import type { SourceRef } from "./source.ts";

/** The /events sub-app; `defaultMs` is the interval when the client names none. */
export function eventsRoute(source: SourceRef, defaultMs: number): Hono {
  return new Hono().get("/", (c) => {
    const asked = Number(c.req.query("interval") ?? defaultMs);
    if (!Number.isFinite(asked) || asked <= 0) {
      return c.json({ error: `interval ${c.req.query("interval")}: a number of ms` }, 400);
    }
    const ms = Math.max(asked, 50);
    return streamSSE(c, async (stream) => {
      let id = 0;
      let closed = false;
      stream.onAbort(() => {
        closed = true;
      });
      while (!closed) {
        const s = source();
        await stream.writeSSE(
          s === null
            ? { event: "waiting", data: "{}", id: String(id++) }
            : { event: "stats", data: JSON.stringify(s.snapshot()), id: String(id++) },
        );
        await stream.sleep(ms);
      }
    });
  });
}
