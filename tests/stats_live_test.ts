/**
 * The live stats served by the proxy from the bridge's stats page, checked against traffic
 * the test makes itself: a known number of pings, connections to the bridge's echo service
 * and echo bytes, and a shimmed echo server attached through the proxy holding connections.
 * A real Prometheus scrapes /metrics and its HTTP API must report the same figures;
 * `promtool check metrics` accepts the exposition; counters only grow; /stats validates
 * against stats.schema.json; /events delivers several updates; /connections lists the
 * application's connections with its pid.
 */
import { assert, assertEquals } from "@std/assert";
import { validateJson } from "@pno/stats";
import type { JsonSchema, StatsSnapshot } from "@pno/stats";
import { runCaptured, waitUntil } from "../cli/apps.ts";
import { inNs, sh, testWire, wireDown, wireUp } from "../cli/wire.ts";
import { BridgeProcess, ping } from "./_harness.ts";
import {
  freePort,
  holdingClients,
  parseExposition,
  PrometheusProcess,
  ProxyProcess,
  readEvents,
  shimmedEchoServer,
} from "./_stats_harness.ts";

const SCHEMA = JSON.parse(
  await Deno.readTextFile(new URL("../packages/stats/stats.schema.json", import.meta.url)),
) as JsonSchema;

const PINGS = 7, ECHO_CONNS = 3, ECHO_BYTES = 20_000, APP_CONNS = 4, APP_BYTES = 30_000;
const APP_PORT = 8407;

Deno.test({
  name: "live stats: proxy serves the bridge's page; Prometheus scrapes figures that agree",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const w = testWire("tstlive", 240);
    const dir = await Deno.makeTempDir({ prefix: "pno-tstlive-" });
    const ip = w.bridgeAddress.split("/")[0];
    let bridge: BridgeProcess | null = null;
    let proxy: ProxyProcess | null = null;
    let prom: PrometheusProcess | null = null;
    const stops: Array<() => Promise<unknown>> = [];
    try {
      await wireUp(w);
      bridge = await BridgeProcess.start(w, ["--control", `${dir}/bridge.sock`]);
      const port = freePort();
      proxy = await ProxyProcess.start(`${dir}/bridge.sock`, `${dir}/proxy.sock`, port);
      const live = proxy.live;
      assertEquals(live, `http://127.0.0.1:${port}/`);
      prom = await PrometheusProcess.start(dir, `127.0.0.1:${port}`);

      // Traffic the test counts: pings, short echo connections to the bridge's own service.
      assertEquals(await ping(w, ip, PINGS), PINGS);
      for (let i = 0; i < ECHO_CONNS; i++) {
        const out = await sh(inNs(
          w,
          "sh",
          "-c",
          `head -c ${ECHO_BYTES} /dev/urandom | nc -N ${ip} 7 | wc -c`,
        ));
        assertEquals(Number(out.trim()), ECHO_BYTES);
      }
      // An application through the proxy, holding connections open.
      const { app } = await shimmedEchoServer(`${dir}/proxy.sock`, APP_PORT);
      stops.push(() => app.stop());
      const clients = await holdingClients(w, ip, APP_PORT, APP_CONNS, APP_BYTES);
      stops.push(() => clients.kill());

      // /stats: schema, and figures equal to what we did.
      let s = {} as StatsSnapshot;
      await waitUntil(
        async () => {
          s = await (await fetch(`${live}stats`)).json();
          // The page is published every 100 ms: wait for one published after the last echo.
          return s.tcp.passiveOpens === ECHO_CONNS + APP_CONNS && s.apps.length === 1 &&
            s.apps[0].connections === APP_CONNS &&
            s.apps[0].bytesFromHost === APP_CONNS * APP_BYTES;
        },
        "the page shows every connection",
        10_000,
      ).catch((err) => {
        throw new Error(
          `${err.message}: tcp ${JSON.stringify(s.tcp)} apps ${JSON.stringify(s.apps)}`,
        );
      });
      assertEquals(validateJson(s, SCHEMA), []);
      assertEquals(s.iface.icmpEchoIn, PINGS);
      assertEquals(s.iface.icmpEchoOut, PINGS);
      // Segment payload counts duplicates too (a peer's retransmission on a loaded host): at
      // least what was echoed. The per-application figures are Linux's, exact.
      assert(s.tcp.bytesIn >= ECHO_CONNS * ECHO_BYTES + APP_CONNS * APP_BYTES);
      assert(s.tcp.bytesOut >= ECHO_CONNS * ECHO_BYTES + APP_CONNS * APP_BYTES);
      assertEquals(s.tcp.connections >= APP_CONNS, true);
      const a = s.apps[0];
      assertEquals(a.pid, app.pid);
      assertEquals(a.name, "python3");
      assertEquals(a.bytesFromHost, APP_CONNS * APP_BYTES);
      assertEquals(a.bytesToHost, APP_CONNS * APP_BYTES);
      assertEquals(a.listeners, 1);
      assert(Number(a.residentBytes) > 0, "the region has resident pages");
      assertEquals(s.workers.length, 1);
      assert(s.workers[0].busyPolls > 0 && s.bridge.cpuMs > 0);

      // /connections: the application's connections by pid, paged and filtered.
      const conns = await (await fetch(`${live}connections?pid=${app.pid}&state=established`))
        .json();
      assertEquals(conns.total, APP_CONNS);
      for (const c of conns.rows) {
        assertEquals(c.local, `${ip}:${APP_PORT}`);
        assertEquals(c.name, "python3");
        assertEquals([c.bytesReceived, c.bytesAcked], [APP_BYTES, APP_BYTES]);
        assert(c.ino > 0, "the shim recorded the placeholder's inode");
        assert(c.fd > 2, `the application's fd for it: ${c.fd}`);
      }
      const paged = await (await fetch(`${live}connections?limit=2&offset=1`)).json();
      assertEquals(paged.rows.length, Math.min(2, paged.total - 1));
      assertEquals((await fetch(`${live}connections?limit=-1`)).status, 400);

      // /events: several updates, a fresh snapshot each.
      const events = await readEvents(`${live}events?interval=100`, "stats", 4) as StatsSnapshot[];
      assertEquals(events.length, 4);
      for (let i = 1; i < events.length; i++) assert(events[i].time > events[i - 1].time);
      assertEquals(validateJson(events[3], SCHEMA), []);

      // /metrics: promtool accepts it; Prometheus scraped the same figures.
      const text1 = await (await fetch(`${live}metrics`)).text();
      const check = await runCaptured(["promtool", "check", "metrics"], {
        stdin: new TextEncoder().encode(text1),
      });
      assertEquals(check.code, 0, `promtool: ${check.stdout}${check.stderr}`);
      const expect: Array<[string, number]> = [
        ["pno_iface_icmp_echo_in_total", PINGS],
        ["pno_tcp_passive_opens_total", ECHO_CONNS + APP_CONNS],
        [`pno_app_bytes_total{pid="${app.pid}",direction="to_host"}`, APP_CONNS * APP_BYTES],
        [`pno_app_connections{pid="${app.pid}"}`, APP_CONNS],
        [`pno_app_bytes_total{pid="${app.pid}",direction="from_host"}`, APP_CONNS * APP_BYTES],
      ];
      const got = new Map<string, number>();
      await waitUntil(
        async () => {
          for (const [q] of expect) got.set(q, await prom!.value(q));
          return expect.every(([q, v]) => got.get(q) === v);
        },
        "Prometheus has scraped the figures",
        20_000,
      ).catch((err) => {
        throw new Error(`${err.message}: ${JSON.stringify([...got])}`);
      });

      // Counters only grow: more traffic, then every _total sample is at least what it was.
      assertEquals(await ping(w, ip, 3), 3);
      await new Promise((r) => setTimeout(r, 300));
      const before = parseExposition(text1);
      const after = parseExposition(await (await fetch(`${live}metrics`)).text());
      let counters = 0;
      for (const [k, v] of before) {
        if (!k.split("{")[0].endsWith("_total") || !after.has(k)) continue;
        counters++;
        assert(after.get(k)! >= v, `${k} went from ${v} to ${after.get(k)}`);
      }
      assert(counters > 50, `only ${counters} counters compared`);
      assertEquals(after.get('pno_iface_icmp_echo_in_total{worker="0"}'), PINGS + 3);
    } finally {
      for (const stop of stops.reverse()) await stop().catch(() => {});
      await prom?.stop();
      await proxy?.stop();
      await bridge?.stop();
      await wireDown(w);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
