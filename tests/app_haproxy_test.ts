/**
 * HAProxy 2.6 (Debian's), unmodified, under the shim in master-worker mode (`-W`) with
 * `nbthread 4`, in front of a lighttpd that is offloaded too: the client in the namespace
 * reaches HAProxy through the bridge, and HAProxy's own connections to the backend (the
 * bridge's address, another port) and its health checks (`check inter 500`) go through PnO as
 * well. wrk through it gets only 2xx and no socket error; 10 MiB come through byte-exact; a
 * reload through the master (SIGUSR2: the master re-executes itself, execve, keeping the listeners,
 * and a new worker takes them from the old one over the stats socket, `expose-fd listeners`)
 * during `Connection: close` load loses no request. The host kernel holds none of the
 * connections. The reload also runs on the kernel (twin link, no shim) as the control.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import {
  AppProcess,
  kernelEstablished,
  runCaptured,
  runInNs,
  sha256File,
  tcpOpen,
  waitUntil,
} from "../cli/apps.ts";
import { SHIM_LIBRARY } from "../packages/shim/launcher.ts";
import { type AppWire, parseWrk, withAppWire, type WrkResult } from "./_app_harness.ts";

const TAG = "tmphap";
const SUBNET = 234; // and 235 for the twin link
const PORT = 22980;
const BACKEND_PORT = 22982;

interface Proxy {
  ctx: AppWire;
  mode: "shim" | "kernel";
  haproxy: AppProcess;
  lighttpd: AppProcess;
  host: string;
  url(file: string): string;
  /** HAProxy's runtime API (the stats socket): one command's answer. */
  admin(command: string): Promise<string>;
  evidence(): Promise<string>;
}

/** lighttpd then HAProxy, both under the shim (or both on the kernel for the control). */
async function withProxy(mode: "shim" | "kernel", body: (p: Proxy) => Promise<void>) {
  await withAppWire(TAG, SUBNET, async (ctx) => {
    const dir = ctx.dir;
    await Deno.mkdir(`${dir}/www`);
    for (const [name, size] of [["1k.bin", 1024], ["10m.bin", 10 << 20]] as const) {
      const data = new Uint8Array(size);
      for (let o = 0; o < size; o += 65536) crypto.getRandomValues(data.subarray(o, o + 65536));
      await Deno.writeFile(`${dir}/www/${name}`, data);
    }
    const host = mode === "shim" ? ctx.bridgeIp : ctx.w.twin!.hostAddress.split("/")[0];
    await Deno.writeTextFile(
      `${dir}/lighttpd.conf`,
      [
        `server.bind = "${host}"`,
        `server.port = ${BACKEND_PORT}`,
        `server.document-root = "${dir}/www"`,
        `server.errorlog = "${dir}/lighttpd-error.log"`,
        `server.max-connections = 4096`,
        `server.max-fds = 8192`,
        `mimetype.assign = (".bin" => "application/octet-stream")`,
        "",
      ].join("\n"),
    );
    const sock = `${dir}/haproxy.sock`;
    await Deno.writeTextFile(
      `${dir}/haproxy.cfg`,
      [
        "global",
        "  nbthread 4",
        "  maxconn 4096",
        `  pidfile ${dir}/haproxy.pid`,
        `  stats socket ${sock} mode 600 level admin expose-fd listeners`,
        // A line on stdout (kept by the harness) for each request that did not end normally
        // (dontlog-normal): its termination state says which side ended it (CR--: the client's
        // side read as closed before a whole request).
        "  log stdout format raw local0 info",
        "defaults",
        "  log global",
        "  option httplog",
        "  option dontlog-normal",
        "  mode http",
        "  option http-keep-alive",
        "  timeout connect 5s",
        "  timeout client 30s",
        "  timeout server 30s",
        "frontend fe",
        `  bind ${mode === "shim" ? "*" : host}:${PORT}`,
        "  default_backend be",
        "backend be",
        "  option httpchk GET /1k.bin",
        `  server lighttpd ${host}:${BACKEND_PORT} check inter 500`,
        "",
      ].join("\n"),
    );
    // Under the shim the harness stops what it started; the control's programs are ours.
    const kernelApps: AppProcess[] = [];
    const start = (argv: string[], name: string) => {
      if (mode === "shim") return ctx.shimmed(argv, { name });
      const app = AppProcess.start(argv, { name });
      kernelApps.push(app);
      return app;
    };
    try {
      if (mode === "shim") await Deno.stat(SHIM_LIBRARY);
      const lighttpd = start(["lighttpd", "-D", "-f", `${dir}/lighttpd.conf`], "lighttpd");
      await waitUntil(async () => {
        if (!lighttpd.alive()) throw new Error(`lighttpd exited:\n${lighttpd.output}`);
        return await tcpOpen(ctx.w, host, BACKEND_PORT);
      }, "lighttpd accepts connections");
      const haproxy = start(["haproxy", "-W", "-f", `${dir}/haproxy.cfg`], "haproxy");
      const admin = async (command: string) => {
        // Before the socket exists nc exits at once (and writing its stdin fails): "".
        const r = await runCaptured(["timeout", "10", "nc", "-U", "-N", sock], {
          stdin: new TextEncoder().encode(`${command}\n`),
        }).catch(() => null);
        return r?.stdout ?? "";
      };
      const evidence = async () =>
        [
          `haproxy show servers state:\n${await admin("show servers state").catch(() => "")}`,
          `lighttpd error.log:\n${
            (await Deno.readTextFile(`${dir}/lighttpd-error.log`).catch(() => "")).slice(-2000)
          }`,
          await ctx.evidence(),
          `--- haproxy: requests that did not end normally:\n${
            haproxy.output.split("\n").filter((l) => /\] fe /.test(l)).slice(-40).join("\n")
          }`,
          `--- haproxy output:\n${
            haproxy.output.split("\n").filter((l) => !/\] fe /.test(l)).join("\n").slice(-3000)
          }`,
        ].join("\n");
      // Up: the backend is UP by its health checks (which go through PnO under the shim).
      await waitUntil(
        async () => {
          if (!haproxy.alive()) throw new Error(`haproxy exited:\n${haproxy.output}`);
          // `show stat` is CSV: proxy, server, ..., status (UP once a check passed).
          return /^be,lighttpd,.*,UP,/m.test(await admin("show stat"));
        },
        "HAProxy's health checks see lighttpd up",
        20_000,
      ).catch(async (err) => {
        throw new Error(`${(err as Error).message}\n${await evidence()}`);
      });
      await body({
        ctx,
        mode,
        haproxy,
        lighttpd,
        host,
        url: (file) => `http://${host}:${PORT}/${file}`,
        admin,
        evidence,
      });
    } finally {
      for (const app of kernelApps.reverse()) await app.stop("SIGTERM", 5_000);
    }
  });
}

async function wrk(
  p: Proxy,
  seconds: number,
  extra: string[],
  during?: () => Promise<void>,
): Promise<WrkResult & { kernelConnections: string[] }> {
  const running = runInNs(
    p.ctx.w,
    [
      "wrk",
      "-t",
      "2",
      "-c",
      "32",
      "-d",
      `${seconds}s`,
      "--timeout",
      "5s",
      ...extra,
      p.url("1k.bin"),
    ],
    seconds + 60,
  );
  let finished = false;
  void running.finally(() => finished = true);
  const seen: string[] = [];
  const sampling = (async () => {
    while (!finished) {
      for (const port of [PORT, BACKEND_PORT]) seen.push(...await kernelEstablished(port));
      await new Promise((r) => setTimeout(r, 250));
    }
  })();
  await during?.();
  await sampling;
  const r = await running;
  if (r.code !== 0) {
    throw new Error(`wrk exit ${r.code}: ${r.stdout}\n${r.stderr}\n${await p.evidence()}`);
  }
  return { ...parseWrk(r.stdout), kernelConnections: seen };
}

async function assertClean(
  p: Proxy,
  label: string,
  r: WrkResult & { kernelConnections: string[] },
) {
  const problems: string[] = [];
  if (r.requests === 0) problems.push("no request completed");
  if (r.socketErrors !== null) problems.push(`wrk saw ${r.socketErrors}`);
  if (r.non2xx !== 0) problems.push(`${r.non2xx} answers were not 2xx`);
  if (p.mode === "shim" && r.kernelConnections.length > 0) {
    problems.push(
      `the host kernel held connections: ${r.kernelConnections.slice(0, 5).join("; ")}`,
    );
  }
  if (p.mode === "kernel" && r.kernelConnections.length === 0) {
    problems.push("the kernel control saw no connection (ss sampling broken)");
  }
  if (problems.length > 0) {
    throw new Error(`${label}: ${problems.join("; ")}\n${r.text}\n${await p.evidence()}`);
  }
  console.log(`   ${label}: ${(r.requests / r.seconds).toFixed(0)} requests/s (${r.requests})`);
}

Deno.test("haproxy under the shim: nbthread 4, master-worker, to an offloaded lighttpd: wrk keep-alive and Connection: close, no errors", async () => {
  await withProxy("shim", async (p) => {
    await assertClean(p, "keep-alive", await wrk(p, 4, []));
    await assertClean(p, "Connection: close", await wrk(p, 4, ["-H", "Connection: close"]));
    // Four threads in the worker (the master's child).
    const stat = await p.admin("show info");
    assert(/Nbthread: 4/.test(stat), stat);
  });
});

Deno.test("haproxy under the shim: 10 MiB through it, SHA-256 matches", async () => {
  await withProxy("shim", async (p) => {
    const want = await sha256File(`${p.ctx.dir}/www/10m.bin`);
    for (let i = 0; i < 3; i++) {
      const out = `${p.ctx.dir}/got-${i}.bin`;
      const r = await runInNs(
        p.ctx.w,
        [
          "curl",
          "-sS",
          "--fail",
          "-o",
          out,
          "-w",
          "%{http_code} %{size_download}",
          p.url("10m.bin"),
        ],
        120,
      );
      assertEquals(r.code, 0, `curl: ${r.stdout} ${r.stderr}\n${await p.evidence()}`);
      assertEquals(r.stdout.trim(), `200 ${10 << 20}`);
      assertEquals(await sha256File(out), want, `fetch ${i}: SHA-256 differs`);
    }
  });
});

/**
 * Three reloads through the master (SIGUSR2) during 12 s of `Connection: close` load, each
 * sent once the previous one has finished loading ("Loading success"), as an operator's reload
 * waits for the last. Sent blindly 2 s apart, three USR2 made two reloads under the shim
 * (where a reload took up to 2 s): one that arrives before the last reload is through is
 * not a reload of its own.
 */
async function reloadUnderLoad(mode: "shim" | "kernel") {
  await withProxy(mode, async (p) => {
    const master = p.haproxy.pid;
    const workersBefore = (await runCaptured(["pgrep", "-P", String(master)])).stdout.trim();
    const loaded = () => (p.haproxy.output.match(/Loading success/g) ?? []).length;
    const reloadSeconds: number[] = [];
    const r = await wrk(p, 12, ["-H", "Connection: close"], async () => {
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 1500));
        const before = loaded();
        const t0 = performance.now();
        Deno.kill(master, "SIGUSR2");
        await waitUntil(() => loaded() > before, `reload ${i + 1} loads`, 20_000);
        reloadSeconds.push((performance.now() - t0) / 1000);
      }
    });
    await assertClean(p, `${mode}: Connection: close across 3 reloads`, r);
    assert(p.haproxy.alive(), `the master exited:\n${p.haproxy.output}`);
    const out = p.haproxy.output;
    const reloads = (out.match(/Reloading HAProxy/g) ?? []).length;
    assertEquals(reloads, 3, `master output:\n${out.slice(-3000)}`);
    // The premise: every reload happened while wrk ran (12 s).
    const total = reloadSeconds.reduce((a, b) => a + b, 0) + 4.5;
    assert(
      total < r.seconds,
      `the reloads took ${
        reloadSeconds.map((s) => s.toFixed(1)).join(", ")
      } s: not all during the load`,
    );
    console.log(`   reloads took ${reloadSeconds.map((s) => s.toFixed(2)).join(", ")} s`);
    const workersAfter = (await runCaptured(["pgrep", "-P", String(master)])).stdout.trim();
    assert(workersAfter !== workersBefore, `the worker was not replaced: ${workersAfter}`);
    // After the reloads the proxy still forwards.
    const c = await runInNs(
      p.ctx.w,
      ["curl", "-sS", "--fail", "-o", "/dev/null", p.url("1k.bin")],
      30,
    );
    assertEquals(c.code, 0, `curl after the reloads: ${c.stderr}\n${await p.evidence()}`);
  });
}

Deno.test("haproxy on the kernel (control): reload through the master during load loses no request", async () => {
  await reloadUnderLoad("kernel");
});

Deno.test("haproxy under the shim: reload through the master during load loses no request", async () => {
  await reloadUnderLoad("shim");
});
