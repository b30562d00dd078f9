/**
 * redis-server as a daemon under the shim: `--daemonize yes` (the launched process forks and
 * exits; the child calls setsid, points its standard fds at /dev/null and only then opens its
 * listeners, so it attaches to the bridge on its own), found by its pid file. redis-benchmark
 * from the client namespace is answered in full (redis's command statistics count every
 * request), the bridge lists the daemon as attached, the host kernel holds none of its
 * connections, and SIGTERM to the pid file's PID ends it cleanly (it removes its pid file).
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import {
  appStats,
  commandCalls,
  kernelEstablished,
  parseInfo,
  redisBenchmark,
  redisCli,
  runCaptured,
  waitUntil,
} from "../cli/apps.ts";
import { shimEnv } from "../packages/shim/launcher.ts";
import { DetachedDaemon, withAppWire } from "./_app_harness.ts";

const TAG = "tmprd";
const SUBNET = 238; // and 239 for the twin link
const PORT = 22996;

Deno.test("redis-server --daemonize yes under the shim: benchmark answered in full, stopped by its pid file's PID", async () => {
  await withAppWire(TAG, SUBNET, async (ctx) => {
    const pidFile = `${ctx.dir}/redis.pid`;
    const log = `${ctx.dir}/redis.log`;
    const daemon = new DetachedDaemon("redis-server", pidFile);
    try {
      const launch = await runCaptured([
        "redis-server",
        "--daemonize",
        "yes",
        "--pidfile",
        pidFile,
        "--logfile",
        log,
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
      ], { env: shimEnv({ control: ctx.control, required: true }) });
      const logText = () => Deno.readTextFile(log).catch(() => "");
      assertEquals(
        launch.code,
        0,
        `launcher: ${launch.stdout}${launch.stderr}\n${await logText()}`,
      );
      await waitUntil(async () => (await daemon.track()).master !== null, "the pid file", 10_000)
        .catch(async (err) => {
          throw new Error(`${(err as Error).message}\n${await logText()}`);
        });
      const pid = (await daemon.track()).master;
      if (pid === null) {
        throw new Error(`the pid file names no running process\n${await logText()}`);
      }
      // Detached: its own session, not the launcher's child.
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      assertEquals(Number(fields[3]), pid, `session id of ${pid}: ${stat}`);
      const cli = (args: string[]) => redisCli(ctx.w, ctx.bridgeIp, PORT, args);
      await waitUntil(
        async () => (await cli(["PING"]).catch(() => "")).trim() === "PONG",
        "the daemon answers PING through the bridge",
      ).catch(async (err) => {
        throw new Error(`${(err as Error).message}\n${await logText()}\n${await ctx.evidence()}`);
      });
      await cli(["CONFIG", "RESETSTAT"]);
      const n = 50_000;
      const running = redisBenchmark(ctx.w, ctx.bridgeIp, PORT, [
        "-t",
        "set,get",
        "-n",
        String(n),
        "-c",
        "50",
      ]);
      let finished = false;
      void running.finally(() => finished = true);
      const seen: string[] = [];
      while (!finished) {
        seen.push(...await kernelEstablished(PORT));
        await new Promise((r) => setTimeout(r, 250));
      }
      const run = await running;
      const why = async () =>
        `exit ${run.code}\n${run.stdout}\n${
          run.stderr.slice(-2000)
        }\n${await logText()}\n${await ctx
          .evidence()}`;
      assertEquals(run.code, 0, await why());
      assert(run.rows.get("SET") && run.rows.get("GET"), await why());
      const calls = commandCalls(parseInfo(await cli(["INFO", "commandstats"])));
      assertEquals(calls.set, n, JSON.stringify(calls));
      assertEquals(calls.get, n, JSON.stringify(calls));
      assertEquals(seen, [], "the host kernel held the daemon's connections");
      const app = appStats(await ctx.bridge.stats(), pid);
      assert(
        app && app.commands > 0,
        `the bridge does not list the daemon (pid ${pid}) as attached`,
      );
      console.log(
        `   daemon ${pid}: SET ${run.rows.get("SET")!.rps.toFixed(0)}/s, GET ${
          run.rows.get("GET")!.rps.toFixed(0)
        }/s`,
      );
      // SIGTERM by the pid file's PID: redis exits by itself and removes its pid file.
      assert(daemon.signal(pid, "SIGTERM"));
      await waitUntil(() => daemon.alive().length === 0, "the daemon exits on SIGTERM", 10_000);
      await waitUntil(
        async () => (await daemon.pidFromFile()) === null,
        "the daemon removed its pid file",
        5_000,
      );
      assert((await logText()).includes("ready to exit, bye bye"), await logText());
    } finally {
      const killed = await daemon.stop("SIGTERM", 5_000);
      if (killed.length > 0) console.log(`   killed at the end: ${killed.join(" ")}`);
    }
  });
});
