/**
 * The bridge's own stats endpoint (Hono), on loopback: GET /stats returns every counter,
 * GET /connections every TCP connection with its state, windows, timers and counters. Under
 * /live it serves the same live stats app as the proxy (dashboard, /live/stats, /live/metrics,
 * /live/events, /live/connections), read from the bridge's stats page, for when no proxy runs.
 * GET /capture?count=N&filter=EXPR streams what the port sends and receives as pcapng
 * (`pno capture`) until N frames or the client hangs up. Loopback only, like the rest: anyone
 * who can reach it could read the traffic.
 *
 * @module
 */
import { Hono } from "hono";
import { liveStatsApp, StatsReader } from "@pno/stats";
import type { Bridge } from "./bridge.ts";
import { type BpfProgram, compileFilter } from "./phy/bpf.ts";
import { SNAP } from "./phy/capture_tap.ts";
import { pcapngHeader } from "./phy/pcapng.ts";

/** The stats app for one bridge. */
export function statsApp(bridge: Bridge): Hono {
  const app = new Hono({ strict: false }); // "/live/" is the dashboard too;
  const reader = new StatsReader(bridge.statsPage.mapping.buffer);
  app.get("/stats", async (c) => c.json(await bridge.stats()));
  app.get("/connections", async (c) => c.json(await bridge.connections()));
  app.get("/healthz", (c) => c.text("ok"));
  app.get("/capture", async (c) => {
    const count = Number(c.req.query("count") ?? Infinity);
    if (!(count >= 1)) return c.json({ error: `count=${c.req.query("count")}: at least 1` }, 400);
    const expr = c.req.query("filter") ?? "";
    let filter: BpfProgram | null = null;
    try {
      if (expr.trim() !== "") filter = await compileFilter(expr);
    } catch (err) {
      return c.json({ error: (err as Error).message }, 400);
    }
    let session;
    try {
      session = bridge.capture(count, filter);
    } catch (err) {
      return c.json({ error: (err as Error).message }, 409);
    }
    const s = session;
    let sentHeader = false;
    const body = new ReadableStream<Uint8Array>({
      async pull(ctl) {
        if (!sentHeader) {
          sentHeader = true;
          ctl.enqueue(pcapngHeader(SNAP));
          return;
        }
        for (;;) {
          const chunk = s.drain();
          if (chunk !== null) {
            ctl.enqueue(chunk);
            return;
          }
          if (s.complete || s.ended) {
            ctl.enqueue(s.end());
            ctl.close();
            return;
          }
          await new Promise((r) => setTimeout(r, 20));
        }
      },
      cancel() {
        s.end();
      },
    });
    return c.body(body, 200, { "content-type": "application/octet-stream" });
  });
  app.route("/live", liveStatsApp(() => reader, { eventsIntervalMs: 1000 }));
  return app;
}
