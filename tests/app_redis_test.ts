/**
 * redis-server, the Debian binary, unmodified, under the shim: its TCP runs in the bridge and
 * real Linux clients (redis-benchmark, redis-cli) reach it from the client namespace.
 * Every request is answered (redis-benchmark's counts and redis's own command statistics
 * agree), data round-trips byte for byte, a BGSAVE (fork: the child closes its copies of the
 * sockets) neither fails nor costs a client, 1,000 clients at once are served, and the host
 * kernel holds no connection of it while the bridge counts its commands.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import {
  type AppProcess,
  appStats,
  type BenchmarkRun,
  commandCalls,
  kernelEstablished,
  parseInfo,
  redisBenchmark,
  redisCli,
  sha256,
  waitUntil,
} from "../cli/apps.ts";
import { cpuSeconds } from "../cli/processes.ts";
import { type AppWire, withAppWire } from "./_app_harness.ts";

const TAG = "aredis";
const SUBNET = 210; // and 211 for the twin link
const PORT = 6379;

/** The tests redis-benchmark runs and the names its CSV gives them. */
const TESTS = "set,get,incr,lpush,lpop,mset";
const CSV_NAMES = ["SET", "GET", "INCR", "LPUSH", "LPOP", "MSET (10 keys)"];
const COMMANDS = ["set", "get", "incr", "lpush", "lpop", "mset"];

interface Redis extends AppWire {
  redis: AppProcess;
  cli(args: string[], stdin?: Uint8Array): Promise<string>;
  info(section: string): Promise<Record<string, string>>;
  /** The bridge's TCP counters. */
  tcp(): Promise<Record<string, number>>;
  /** RSTs the bridge had sent when redis was up (connections refused before it listened). */
  rstAtStart: number;
}

/** A wire, a bridge and redis-server under the shim (data in a temporary --dir). */
async function withRedis(extra: string[], body: (r: Redis) => Promise<void>): Promise<void> {
  await withAppWire(TAG, SUBNET, async (ctx) => {
    const redis = ctx.shimmed([
      "redis-server",
      "--port",
      String(PORT),
      "--bind",
      "0.0.0.0",
      "--save",
      "",
      "--appendonly",
      "no",
      "--protected-mode",
      "no",
      "--dir",
      ctx.dir,
      "--logfile",
      "",
      ...extra,
    ], { name: "redis-server" });
    const cli = (args: string[], stdin?: Uint8Array) =>
      redisCli(ctx.w, ctx.bridgeIp, PORT, args, stdin);
    await waitUntil(async () => {
      if (!redis.alive()) throw new Error(`redis-server exited:\n${redis.output}`);
      return (await cli(["PING"]).catch(() => "")).trim() === "PONG";
    }, "redis-server answers PING through the bridge");
    const tcp = async () =>
      (await ctx.bridge.stats() as unknown as { tcp: Record<string, number> }).tcp;
    await body({
      ...ctx,
      redis,
      cli,
      info: async (section) => parseInfo(await cli(["INFO", section])),
      tcp,
      rstAtStart: (await tcp()).rstOut,
    });
  });
}

/** Asserts a redis-benchmark run finished cleanly with every test in its CSV. */
async function assertBenchmark(r: Redis, run: BenchmarkRun, names: string[]): Promise<void> {
  const why = async () =>
    `exit ${run.code}${run.timedOut ? " (timed out)" : ""}\nstdout:\n${run.stdout}\nstderr tail:\n${
      run.stderr.slice(-2000)
    }\n${await r.evidence(run.timedOut ? r.redis : undefined)}`;
  if (run.code !== 0) throw new Error(`redis-benchmark failed: ${await why()}`);
  for (const name of names) {
    const row = run.rows.get(name);
    assert(row && row.rps > 0, `no result for ${name}: ${await why()}`);
  }
  assert(!/error/i.test(run.stderr), `redis-benchmark reported errors: ${await why()}`);
}

/** Asserts redis executed exactly `n` calls of each command since the last CONFIG RESETSTAT. */
async function assertCalls(r: Redis, n: number, commands: string[]): Promise<void> {
  const calls = commandCalls(await r.info("commandstats"));
  for (const c of commands) assertEquals(calls[c], n, `${c} calls: ${JSON.stringify(calls)}`);
}

Deno.test("redis under the shim: benchmark with -P 1 and -P 16, every request answered, offloaded", async () => {
  await withRedis([], async (r) => {
    let expectedCounter = 0;
    for (const pipeline of [1, 16]) {
      await r.cli(["CONFIG", "RESETSTAT"]);
      const n = 100_000;
      const running = redisBenchmark(
        r.w,
        r.bridgeIp,
        PORT,
        ["-t", TESTS, "-n", String(n), "-c", "50", "-P", String(pipeline)],
        300,
      );
      // Proof of offload while it runs: the host kernel has no connection on 6379 at any
      // sample, and the bridge counts the application's commands and events.
      let finished = false;
      void running.finally(() => finished = true);
      const seen: string[] = [];
      let samples = 0;
      const mid: { commands: number; events: number }[] = [];
      // -P 16 is over in about a second on net_af_xdp: sample often enough to see it run.
      const sampleMs: number[] = [];
      while (!finished) {
        const t0 = performance.now();
        seen.push(...await kernelEstablished(PORT));
        samples++;
        const app = appStats(await r.bridge.stats(), r.redis.pid);
        if (app) mid.push({ commands: app.commands, events: app.events });
        sampleMs.push(performance.now() - t0);
        await new Promise((res) => setTimeout(res, 50));
      }
      const run = await running;
      await assertBenchmark(r, run, CSV_NAMES);
      assert(samples >= 3, `only ${samples} samples of ss during the run`);
      assertEquals(seen, [], "the host kernel held redis connections");
      assert(mid.length > 0, `the bridge never listed redis (pid ${r.redis.pid}) as attached`);
      const last = mid[mid.length - 1];
      assert(last.commands > 0 && last.events > 0, `bridge counters: ${JSON.stringify(last)}`);

      // Every request was executed exactly once (redis-benchmark issues exactly -n of each
      // test, -n being a multiple of -P).
      await assertCalls(r, n, COMMANDS);
      expectedCounter += n;
      // Without -r the keys are the literal placeholders: INCR counted every request, LPOP
      // emptied what LPUSH filled (so the list is gone), SET/MSET wrote one key.
      assertEquals((await r.cli(["GET", "counter:__rand_int__"])).trim(), String(expectedCounter));
      assertEquals((await r.cli(["EXISTS", "mylist"])).trim(), "0");
      assertEquals((await r.cli(["DBSIZE"])).trim(), "2");
      const stats = await r.info("stats");
      assertEquals(stats.rejected_connections, "0");
      // 6 tests x 50 clients, plus the benchmark's own CONFIG GET connection(s).
      assert(
        Number(stats.total_connections_received) >= 300,
        `connections received: ${stats.total_connections_received}`,
      );
      console.log(
        `   -P ${pipeline}: ` +
          CSV_NAMES.map((t) => `${t} ${run.rows.get(t)!.rps.toFixed(0)}/s`).join(", ") +
          ` (${
            run.seconds.toFixed(1)
          } s; bridge: ${last.commands} commands, ${last.events} events; ${samples} samples of ss ` +
          `and /stats, the slowest ${Math.max(...sampleMs).toFixed(0)} ms)`,
      );
    }
    // All the benchmark's connections closed: only the one asking is left.
    await waitUntil(
      async () => (await r.info("clients")).connected_clients === "1",
      "redis sees every benchmark client gone",
      10_000,
    );
    const bridgeTcp = await r.tcp();
    assert(bridgeTcp.passiveOpens >= 600, `bridge passive opens: ${bridgeTcp.passiveOpens}`);
    assertEquals(bridgeTcp.rstOut, r.rstAtStart, "the bridge reset connections");
  });
});

Deno.test("redis under the shim: redis-cli sets and gets data, a 1 MiB value round-trips", async () => {
  await withRedis([], async (r) => {
    assertEquals((await r.cli(["SET", "greeting", "hello PnO"])).trim(), "OK");
    assertEquals((await r.cli(["GET", "greeting"])).trim(), "hello PnO");
    assertEquals((await r.cli(["APPEND", "greeting", "!"])).trim(), "10");
    assertEquals((await r.cli(["INCRBY", "n", "41"])).trim(), "41");
    assertEquals((await r.cli(["INCR", "n"])).trim(), "42");
    assertEquals((await r.cli(["RPUSH", "l", "a", "b", "c"])).trim(), "3");
    assertEquals((await r.cli(["LRANGE", "l", "0", "-1"])).trim().split("\n"), ["a", "b", "c"]);
    assertEquals((await r.cli(["DEL", "l"])).trim(), "1");

    // 2,000 commands on one connection (redis-cli reading them from stdin, pipelined).
    const many = Array.from({ length: 1000 }, (_, i) => `SET k${i} v${i}\n`).join("") +
      Array.from({ length: 1000 }, (_, i) => `GET k${i}\n`).join("");
    const answers = (await r.cli([], new TextEncoder().encode(many))).trim().split("\n");
    assertEquals(answers.length, 2000);
    assert(answers.slice(0, 1000).every((a) => a === "OK"), "every SET answered OK");
    assertEquals(answers.slice(1000), Array.from({ length: 1000 }, (_, i) => `v${i}`));

    // 1 MiB of random bytes in, the same bytes out.
    const big = new Uint8Array(1 << 20);
    for (let o = 0; o < big.length; o += 65536) crypto.getRandomValues(big.subarray(o, o + 65536));
    assertEquals((await r.cli(["-x", "SET", "big"], big)).trim(), "OK");
    assertEquals((await r.cli(["STRLEN", "big"])).trim(), String(1 << 20));
    // The value back as bytes (a text decoding would mangle them), straight into a file.
    const file = `${r.dir}/big.out`;
    const got = await new Deno.Command("sh", {
      args: [
        "-c",
        `ip netns exec ${r.w.ns} redis-cli -h ${r.bridgeIp} -p ${PORT} --raw GET big > ${file}`,
      ],
    }).output();
    assert(got.success, "redis-cli GET big");
    const bytes = await Deno.readFile(file);
    // --raw ends the value with a newline of its own.
    assertEquals(bytes.length, (1 << 20) + 1);
    assertEquals(await sha256(bytes.subarray(0, 1 << 20)), await sha256(big));
    assertEquals((await r.cli(["DBSIZE"])).trim(), String(1000 + 3));
  });
});

Deno.test("redis under the shim: BGSAVE during a benchmark completes and costs no client", async () => {
  await withRedis([], async (r) => {
    // Data worth saving: 100,000 keys of 64 bytes.
    const fill = await redisBenchmark(
      r.w,
      r.bridgeIp,
      PORT,
      ["-t", "set", "-n", "200000", "-r", "100000", "-d", "64", "-c", "50", "-P", "16"],
    );
    await assertBenchmark(r, fill, ["SET"]);
    const keys = Number((await r.cli(["DBSIZE"])).trim());
    assert(keys > 80_000, `keys after the fill: ${keys}`);
    await r.cli(["CONFIG", "RESETSTAT"]);
    const n = 200_000;
    const running = redisBenchmark(
      r.w,
      r.bridgeIp,
      PORT,
      ["-t", "set,get", "-n", String(n), "-r", "100000", "-d", "64", "-c", "50"],
    );
    let finished = false;
    void running.finally(() => finished = true);
    await new Promise((res) => setTimeout(res, 1500));
    assert(!finished, "the benchmark ended before BGSAVE could run during it");
    const before = Number((await r.info("persistence")).rdb_last_save_time);
    assertEquals((await r.cli(["BGSAVE"])).trim(), "Background saving started");
    await waitUntil(
      async () => {
        const p = await r.info("persistence");
        return p.rdb_bgsave_in_progress === "0" && Number(p.rdb_last_save_time) >= before &&
          p.rdb_last_bgsave_status !== undefined;
      },
      "BGSAVE finished",
      60_000,
    );
    const saveEndedDuringRun = !finished;
    const run = await running;
    await assertBenchmark(r, run, ["SET", "GET"]);
    const p = await r.info("persistence");
    assertEquals(p.rdb_last_bgsave_status, "ok", JSON.stringify(p));
    assertEquals((await r.info("stats")).rejected_connections, "0");
    await assertCalls(r, n, ["set", "get"]);
    const dump = await Deno.stat(`${r.dir}/dump.rdb`);
    assert(dump.size > 1_000_000, `dump.rdb is ${dump.size} bytes`);
    console.log(
      `   BGSAVE of ${keys} keys (${dump.size} bytes) ${
        saveEndedDuringRun ? "within" : "overlapping"
      } a ${run.seconds.toFixed(1)} s run: SET ${run.rows.get("SET")!.rps.toFixed(0)}/s, ` +
        `GET ${run.rows.get("GET")!.rps.toFixed(0)}/s`,
    );
    // The forked child detached cleanly: the parent still serves, nothing was reset.
    assertEquals((await r.cli(["PING"])).trim(), "PONG");
    assertEquals((await r.tcp()).rstOut, r.rstAtStart, "the bridge reset connections");
  });
});

Deno.test("redis under the shim: 1,000 concurrent clients", async () => {
  await withRedis(["--maxclients", "20000"], async (r) => {
    await r.cli(["CONFIG", "RESETSTAT"]);
    const n = 20_000;
    const run = await redisBenchmark(
      r.w,
      r.bridgeIp,
      PORT,
      ["-t", "set,get", "-n", String(n), "-c", "1000"],
      300,
    );
    await assertBenchmark(r, run, ["SET", "GET"]);
    await assertCalls(r, n, ["set", "get"]);
    const stats = await r.info("stats");
    assertEquals(stats.rejected_connections, "0");
    assert(
      Number(stats.total_connections_received) >= 2000,
      `connections received: ${stats.total_connections_received}`,
    );
    console.log(
      `   1,000 clients: SET ${run.rows.get("SET")!.rps.toFixed(0)}/s, GET ${
        run.rows.get("GET")!.rps.toFixed(0)
      }/s (${run.seconds.toFixed(1)} s)`,
    );
    await waitUntil(
      async () => (await r.info("clients")).connected_clients === "1",
      "redis sees all 1,000 clients gone",
      20_000,
    );
    assertEquals((await r.tcp()).rstOut, r.rstAtStart, "the bridge reset connections");
  });
});

Deno.test("redis under the shim: a host client on 127.0.0.1 is served through the placeholder; a killed bridge leaves redis idle, on loopback, and stoppable", async () => {
  await withRedis([], async (r) => {
    // The offloaded listener on INADDR_ANY also answers on loopback (the kernel's TCP), and
    // both paths reach the same data.
    const host = (args: string[]) =>
      new Deno.Command("redis-cli", { args: ["-h", "127.0.0.1", "-p", String(PORT), ...args] })
        .output().then((o) => new TextDecoder().decode(o.stdout).trim());
    assertEquals(await host(["SET", "via-loopback", "yes"]), "OK");
    assertEquals((await r.cli(["GET", "via-loopback"])).trim(), "yes");
    // The bridge dies (SIGKILL, by its PID): the shim notices its control socket hang up,
    // offloaded connections read as reset and nothing spins.
    Deno.kill(r.bridge.ready.pid, "SIGKILL");
    await r.bridge.child.status;
    await new Promise((ok) => setTimeout(ok, 500));
    const before = cpuSeconds(r.redis.pid);
    await new Promise((ok) => setTimeout(ok, 2000));
    const share = (cpuSeconds(r.redis.pid) - before) / 2;
    assert(share < 0.2, `redis used ${(share * 100).toFixed(0)}% of a core after the bridge died`);
    assertEquals(await host(["PING"]), "PONG");
    const t0 = performance.now();
    const end = await r.redis.stop("SIGTERM", 5000);
    assertEquals(end.signal, null, `redis did not exit on SIGTERM: ${end.output.slice(-400)}`);
    assert(performance.now() - t0 < 5000);
    assert(end.output.includes("the bridge is gone"), end.output.slice(-400));
  });
});
