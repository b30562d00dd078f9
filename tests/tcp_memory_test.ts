/**
 * Memory that follows use, against real Linux peers: 5,000 idle kernel connections to the
 * bridge's echo service must cost the bridge under 100 MiB of resident memory (before
 * autotuning every engine-owned socket took two 256 KiB rings up front: about 1.3 GiB), and a
 * bulk echo on one of them afterwards must have its rings grown past their small beginnings
 * (read from the bridge's /connections, not timed).
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { addressOf, withBridge } from "./_harness.ts";
import { PyProcess, tcpStats, waitFor } from "./_tcp_peers.ts";
import { bridgeConnections, IDLE_CLIENT, rssKiB } from "../bench/idle_client.ts";

const N = 5000;
const MiB = 1 << 20;
const BULK = 48 * MiB;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

Deno.test(`${N} idle connections cost the bridge under 100 MiB; a bulk flow on one grows its rings`, async () => {
  await withBridge("tmem1", 80, async (w, bridge) => {
    const pid = bridge.ready.pid;
    const host = addressOf(w.bridgeAddress);
    const marker = await Deno.makeTempFile({ prefix: `${w.ns}-` });
    // Warm-up: a short bulk echo, so JIT code and the loop's pools are in the baseline.
    const warm = PyProcess.start(
      w,
      IDLE_CLIENT,
      [host, "7", "1", marker, String(MiB), "0"],
      60_000,
    );
    try {
      const r = await warm.json<{ bulk: { ok: boolean } }>();
      assert(r.bulk.ok, "warm-up echo");
    } finally {
      await warm.end();
    }
    await waitFor(async () => (await tcpStats(bridge)).connections === 0, 10_000);
    await sleep(2000);
    const baseline = rssKiB(pid);

    await Deno.writeTextFile(marker, "");
    const client = PyProcess.start(
      w,
      IDLE_CLIENT,
      [host, "7", String(N), marker, String(BULK), "1"],
      300_000,
    );
    try {
      const opened = await waitFor(
        async () => {
          const t = await Deno.readTextFile(marker);
          return t.includes("opened");
        },
        150_000,
        200,
      );
      assert(opened, `the client did not open ${N} connections in 150 s`);
      const o = JSON.parse((await Deno.readTextFile(marker)).trim().split("\n").at(-1)!);
      assertEquals(o.errors, [], "client-side errors while opening");
      assertEquals(o.opened, N);
      const open = await waitFor(async () => (await tcpStats(bridge)).connections === N, 10_000);
      assert(open, `bridge holds ${(await tcpStats(bridge)).connections} connections`);
      await sleep(2000);
      const withIdle = rssKiB(pid);
      const growth = withIdle - baseline;
      console.log(
        `bridge RSS: baseline ${mib(baseline)}, with ${N} idle connections ${mib(withIdle)}: ` +
          `${mib(growth)} more, ${(growth * 1024 / N).toFixed(0)} bytes each`,
      );
      assert(growth < 100 * 1024, `${N} idle connections cost ${mib(growth)}`);
      const conns = await bridgeConnections(bridge.ready.stats);
      assertEquals(conns.length, N);
      for (const c of conns) {
        assertEquals(c.sndBufBytes, 0, `an idle connection holds a send buffer: ${c.remote}`);
        assertEquals(c.rcvBufBytes, 0, `an idle connection holds a receive buffer: ${c.remote}`);
      }

      // The bulk echo on the first connection, every byte checked by the client.
      client.kill("SIGUSR1");
      const bulked = await waitFor(
        async () => {
          return (await Deno.readTextFile(marker)).includes("bulk");
        },
        120_000,
        200,
      );
      assert(bulked, "the bulk echo did not finish in 120 s");
      const b = JSON.parse((await Deno.readTextFile(marker)).trim().split("\n").at(-1)!).bulk;
      assert(b.ok, `bulk echo: ${JSON.stringify(b)}`);
      assertEquals(b.received, BULK);
      const rows = await bridgeConnections(bridge.ready.stats);
      const row = rows.find((c) => c.remote === `${o.address}:${b.port}`);
      if (row === undefined) throw new Error(`no row for ${o.address}:${b.port}`);
      console.log(
        `bulk echo of ${BULK / MiB} MiB in ${b.seconds.toFixed(2)} s on connection ` +
          `${row.remote}: rcvBuf ${row.rcvBuf} (${row.rcvBufBytes} B behind it, ` +
          `${row.rcvBufGrows} growths), sndBuf ${row.sndBuf} (${row.sndBufBytes} B, ` +
          `${row.sndBufGrows} growths), receiver RTT ${row.rcvRtt} ms`,
      );
      // Its rings grew past their beginnings (64 KiB receive, 32 KiB send) and have memory.
      assert(Number(row.rcvBuf) > 64 * 1024, `receive ring stayed at ${row.rcvBuf}`);
      assert(Number(row.sndBuf) > 32 * 1024, `send ring stayed at ${row.sndBuf}`);
      assert(Number(row.rcvBufBytes) > 64 * 1024 && Number(row.sndBufBytes) > 32 * 1024);
      assert(Number(row.rcvBuf) <= 4 * MiB && Number(row.sndBuf) <= 4 * MiB, "over the limit");
      // Once quiet, the connection lets its rings' memory go and keeps their capacity (the
      // bridge sweeps quiet rings once a second while idle: gone within two sweeps).
      const trimmed = await waitFor(
        async () => {
          const r = (await bridgeConnections(bridge.ready.stats)).find((c) => c.id === row.id);
          return r !== undefined && r.rcvBufBytes === 0 && r.sndBufBytes === 0 &&
            r.rcvBuf === row.rcvBuf;
        },
        10_000,
        500,
      );
      assert(trimmed, "the quiet connection still holds its rings' memory after 10 s");
      // The others stayed idle and empty.
      assertEquals(rows.filter((c) => c.id !== row.id && Number(c.rcvBufBytes) > 0).length, 0);

      client.kill("SIGUSR2");
      const res = await client.json<{ closed: number }>();
      assertEquals(res.closed, N);
      const emptied = await waitFor(async () => (await tcpStats(bridge)).connections === 0, 30_000);
      assert(emptied, "the bridge's table did not empty after the close");
    } finally {
      await client.end();
      await Deno.remove(marker).catch(() => {});
    }
  }, ["--control", "none"]);
});
