/**
 * The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core
 * from npm, opens the proxy's live stats page while traffic runs; the graphs must move (new
 * samples, a later time axis, throughput above zero), the connection table must fill with
 * the held connections, and a screenshot is saved with the test's output.
 */
import { assert, assertEquals } from "@std/assert";
import { chromium } from "playwright-core";
import { waitUntil } from "../cli/apps.ts";
import { inNs, testWire, wireDown, wireUp } from "../cli/wire.ts";
import { BridgeProcess, TestChild } from "./_harness.ts";
import {
  freePort,
  holdingClients,
  ProxyProcess,
  shimmedEchoServer,
  testOutputDir,
} from "./_stats_harness.ts";

const HELD = 6, APP_PORT = 8409;

/** Echoes 256 KiB at a time through the bridge's echo service until its deadline. */
const TRAFFIC = `
import socket, sys, time
host, until = sys.argv[1], time.time() + float(sys.argv[2])
block = bytes(262144)
while time.time() < until:
    c = socket.create_connection((host, 7))
    c.sendall(block)
    c.shutdown(socket.SHUT_WR)
    while c.recv(65536):
        pass
    c.close()
`;

interface DashboardState {
  samples: number;
  connRows: number;
  xMax: number;
  rxMax: number;
  rows: number;
}

Deno.test({
  name: "dashboard: chromium shows moving graphs and a filling connection table",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const w = testWire("tstdash", 242);
    const dir = await Deno.makeTempDir({ prefix: "pno-tstdash-" });
    const ip = w.bridgeAddress.split("/")[0];
    let bridge: BridgeProcess | null = null;
    let proxy: ProxyProcess | null = null;
    const stops: Array<() => Promise<unknown>> = [];
    try {
      await wireUp(w);
      bridge = await BridgeProcess.start(w, ["--control", `${dir}/bridge.sock`]);
      proxy = await ProxyProcess.start(`${dir}/bridge.sock`, `${dir}/proxy.sock`, freePort());
      const { app } = await shimmedEchoServer(`${dir}/proxy.sock`, APP_PORT);
      stops.push(() => app.stop());
      const traffic = TestChild.run(inNs(w, "python3", "-c", TRAFFIC, ip, "30"));
      stops.push(() => traffic.kill());

      const browser = await chromium.launch({
        executablePath: "/usr/bin/chromium",
        headless: true,
        args: ["--no-sandbox"],
      });
      stops.push(() => browser.close());
      const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
      const errors: string[] = [];
      page.on("pageerror", (e) => errors.push(e.message));
      await page.goto(proxy.live);
      const state = () =>
        page.evaluate((): DashboardState => {
          // deno-lint-ignore no-explicit-any
          const d = (globalThis as any).pnoDashboard;
          const tput = d.charts.tput;
          return {
            samples: d.samples,
            connRows: d.connRows,
            xMax: tput.data[0].length ? tput.data[0][tput.data[0].length - 1] : 0,
            rxMax: Math.max(0, ...tput.data[1]),
            // deno-lint-ignore no-explicit-any
            rows: (globalThis as any).document.querySelectorAll("#conns tbody tr").length,
          };
        });
      try {
        await waitUntil(
          async () => (await state()).samples >= 2,
          "the graphs have samples",
          15_000,
        );
        const first = await state();
        // Connections arrive while the page is open: the table fills.
        const clients = await holdingClients(w, ip, APP_PORT, HELD, 10_000);
        stops.push(() => clients.kill());
        await waitUntil(
          async () => (await state()).rows >= HELD,
          "the connection table fills",
          15_000,
        );
        await waitUntil(
          async () => (await state()).samples >= first.samples + 3,
          "the graphs take new samples",
          15_000,
        );
        const later = await state();
        assert(later.xMax > first.xMax, `time axis moved: ${first.xMax} -> ${later.xMax}`);
        assert(later.rxMax > 0, "throughput above zero while traffic runs");
        const appRow = await page.locator("#apps tbody tr").first().innerText();
        assert(appRow.includes(String(app.pid)) && appRow.includes("python3"), appRow);
        const held = await page.locator("#conns tbody tr", { hasText: `:${APP_PORT}` }).count();
        assertEquals(held >= HELD, true, `${held} rows of the application's connections`);
        const shot = `${testOutputDir()}/stats_dashboard.png`;
        await page.screenshot({ path: shot, fullPage: true });
        console.log(`dashboard screenshot: ${shot}`);
        assertEquals(errors, []);
      } catch (err) {
        // What the page showed when it failed, to tell a slow host from a broken page.
        const shot = `${testOutputDir()}/stats_dashboard_failure.png`;
        await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
        throw new Error(
          `${(err as Error).message}; page state ${
            JSON.stringify(await state().catch(() => null))
          }; ` +
            `page errors ${JSON.stringify(errors)}; screenshot ${shot}`,
        );
      }
    } finally {
      for (const stop of stops.reverse()) await stop().catch(() => {});
      await proxy?.stop();
      await bridge?.stop();
      await wireDown(w);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
