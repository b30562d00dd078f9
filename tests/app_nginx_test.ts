/**
 * nginx, Debian's nginx-light, unmodified, as it runs in production: `master_process on`,
 * `daemon on` (the launcher forks the master and exits), workers as www-data, 2 and 4 of them
 * accepting on the master's listener (accept_mutex off: EPOLLEXCLUSIVE; on: the shared-memory
 * mutex) or on their own `listen ... reuseport` sockets. wrk from the client namespace, with
 * keep-alive and with `Connection: close`, gets only 2xx answers, no socket error, and nginx's
 * access log counts at least the requests wrk completed; `nginx -s reload` every second during
 * a 10 s run fails no request and slow downloads started before the reloads finish byte-exact
 * on their old workers; `nginx -s quit` lets in-flight downloads finish. The host kernel holds
 * no connection on the port and listens there only on loopback (the shim's placeholder).
 *
 * The reload and quit scenarios run on the kernel first (nginx bound to the twin link's host
 * address, no shim): the positive control that the expectations hold for Linux itself.
 *
 * nginx detaches, so it is found by its pid file; every process of it (master, workers, old
 * workers of a reload) is remembered as it appears and ended by PID, even when a test fails.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { kernelEstablished, runCaptured, runInNs, sha256File, waitUntil } from "../cli/apps.ts";
import { sh } from "../cli/wire.ts";
import { SHIM_LIBRARY, shimEnv } from "../packages/shim/launcher.ts";
import {
  type AppWire,
  DetachedDaemon,
  parseWrk,
  processStart,
  withAppWire,
  type WrkResult,
} from "./_app_harness.ts";

const TAG = "tmpngx";
const SUBNET = 228; // and 229 for the twin link
/** A port no other test uses: nginx's placeholder (and the kernel control) bind it on the host. */
const PORT = 22880;

/** The documents served, by name and size. */
const FILES: [string, number][] = [
  ["1k.bin", 1024],
  ["1m.bin", 1 << 20],
  ["10m.bin", 10 << 20],
];

interface NginxOptions {
  workers: number;
  acceptMutex: boolean;
  reuseport: boolean;
  /** kernel: no shim, listening on the twin link's host address (the control run). */
  mode: "shim" | "kernel";
}

interface Nginx {
  ctx: AppWire;
  opts: NginxOptions;
  daemon: DetachedDaemon;
  /** Where clients connect: the bridge's address (shim) or the twin's host address (kernel). */
  host: string;
  prefix: string;
  url(file: string): string;
  /** `nginx -s <signal>` with this instance's prefix and configuration (no shim: it only signals). */
  signal(sig: "reload" | "quit" | "stop"): Promise<void>;
  /** The worker PIDs now (the master's children). */
  workers(): Promise<number[]>;
  /** Lines of the access log: `pid status bytes`. */
  accessLog(): Promise<string[]>;
  errorLog(): Promise<string>;
  /** Failure evidence: logs, processes, bridge counters. */
  evidence(): Promise<string>;
}

function config(dir: string, o: NginxOptions, listen: string): string {
  return [
    `user www-data;`,
    `worker_processes ${o.workers};`,
    `daemon on;`,
    `master_process on;`,
    `pid ${dir}/nginx.pid;`,
    `lock_file ${dir}/nginx.lock;`,
    `error_log ${dir}/error.log notice;`,
    `worker_rlimit_nofile 8192;`,
    `events {`,
    `  worker_connections 2048;`,
    `  accept_mutex ${o.acceptMutex ? "on" : "off"};`,
    `}`,
    `http {`,
    `  default_type application/octet-stream;`,
    // Debian's nginx.conf: sendfile on, tcp_nopush on.
    `  sendfile on;`,
    `  tcp_nopush on;`,
    `  log_format pno '$pid $status $body_bytes_sent';`,
    `  access_log ${dir}/access.log pno;`,
    `  client_body_temp_path ${dir}/tmp/body;`,
    `  proxy_temp_path ${dir}/tmp/proxy;`,
    `  fastcgi_temp_path ${dir}/tmp/fastcgi;`,
    `  uwsgi_temp_path ${dir}/tmp/uwsgi;`,
    `  scgi_temp_path ${dir}/tmp/scgi;`,
    `  server {`,
    `    listen ${listen}${o.reuseport ? " reuseport" : ""};`,
    `    root ${dir}/www;`,
    `  }`,
    `}`,
    ``,
  ].join("\n");
}

/** A wire, a bridge, and a daemonized nginx (under the shim or, for the control, on the kernel). */
async function withNginx(o: NginxOptions, body: (n: Nginx) => Promise<void>): Promise<void> {
  await withAppWire(TAG, SUBNET, async (ctx) => {
    const dir = ctx.dir;
    // Workers run as www-data: the temporary directory must be readable by them.
    await Deno.chmod(dir, 0o755);
    await Deno.mkdir(`${dir}/www`, { mode: 0o755 });
    await Deno.mkdir(`${dir}/tmp`, { mode: 0o755 });
    for (const [name, size] of FILES) {
      const data = new Uint8Array(size);
      for (let off = 0; off < size; off += 65536) {
        crypto.getRandomValues(data.subarray(off, off + 65536));
      }
      await Deno.writeFile(`${dir}/www/${name}`, data, { mode: 0o644 });
    }
    const twinHost = ctx.w.twin!.hostAddress.split("/")[0];
    const host = o.mode === "shim" ? ctx.bridgeIp : twinHost;
    const listen = o.mode === "shim" ? String(PORT) : `${twinHost}:${PORT}`;
    const conf = `${dir}/nginx.conf`;
    await Deno.writeTextFile(conf, config(dir, o, listen));
    // By its full path, as init systems start it: the binary upgrade re-executes argv[0].
    const base = ["/usr/sbin/nginx", "-p", `${dir}/`, "-c", conf, "-e", `${dir}/error.log`];
    const daemon = new DetachedDaemon("nginx", `${dir}/nginx.pid`);
    try {
      if (o.mode === "shim") await Deno.stat(SHIM_LIBRARY);
      const launch = await runCaptured(base, {
        env: o.mode === "shim" ? shimEnv({ control: ctx.control, required: true }) : {},
      });
      // The master is remembered as soon as its pid file names it, even if starting failed.
      await daemon.track();
      const errorLog = () => Deno.readTextFile(`${dir}/error.log`).catch(() => "");
      if (launch.code !== 0) {
        throw new Error(
          `nginx did not start: exit ${launch.code}\n${launch.stdout}${launch.stderr}\n${await errorLog()}`,
        );
      }
      const workers = async () => {
        const { master } = await daemon.track();
        if (master === null) return [];
        return (await daemon.track()).all.filter((p) => p !== master);
      };
      await waitUntil(
        async () => {
          if ((await daemon.pidFromFile()) === null) return false;
          return (await workers()).length === o.workers;
        },
        `nginx's master runs ${o.workers} workers`,
        15_000,
      ).catch(async (err) => {
        throw new Error(`${(err as Error).message}\n${await errorLog()}`);
      });
      const url = (file: string) => `http://${host}:${PORT}/${file}`;
      // Up: a request answered through the path under test.
      let probe = "";
      await waitUntil(
        async () => {
          const r = await runInNs(ctx.w, [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            url("1k.bin"),
          ], 10);
          probe = `curl exit ${r.code}: ${r.stdout} ${r.stderr}`;
          return r.stdout.trim() === "200";
        },
        "nginx answers through the path under test",
        15_000,
      ).catch(async (err) => {
        const access = await Deno.readTextFile(`${dir}/access.log`).catch(() => "");
        throw new Error(
          `${(err as Error).message}\nlast probe: ${probe}\naccess.log tail:\n${
            access.slice(-1000)
          }\nerror.log:\n${await errorLog()}\n${await ctx.evidence()}`,
        );
      });
      const n: Nginx = {
        ctx,
        opts: o,
        daemon,
        host,
        prefix: dir,
        url,
        async signal(sig) {
          const r = await runCaptured([...base, "-s", sig]);
          if (r.code !== 0) throw new Error(`nginx -s ${sig}: exit ${r.code} ${r.stderr}`);
        },
        workers,
        async accessLog() {
          const text = await Deno.readTextFile(`${dir}/access.log`).catch(() => "");
          return text.split("\n").filter((l) => l !== "");
        },
        errorLog,
        async evidence() {
          const procs = daemon.alive().map((pid) => {
            try {
              return `${pid} ${
                Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ")
              }`;
            } catch {
              return `${pid} (gone)`;
            }
          });
          return [
            `nginx processes: ${procs.join("; ")}`,
            `error.log tail:\n${(await errorLog()).slice(-3000)}`,
            await ctx.evidence(),
          ].join("\n");
        },
      };
      await body(n);
    } finally {
      const killed = await daemon.stop("SIGTERM", 5_000);
      if (killed.length > 0) {
        console.log(`   nginx processes killed at the end: ${killed.join(" ")}`);
      }
    }
  });
}

/** wrk from the namespace; the host kernel's connections on the port are sampled meanwhile. */
async function wrk(
  n: Nginx,
  file: string,
  seconds: number,
  extra: string[],
  connections = 50,
): Promise<WrkResult & { kernelConnections: string[] }> {
  const running = runInNs(
    n.ctx.w,
    [
      "wrk",
      "-t",
      "2",
      "-c",
      String(connections),
      "-d",
      `${seconds}s`,
      "--timeout",
      "5s",
      ...extra,
      n.url(file),
    ],
    seconds + 60,
  );
  let finished = false;
  void running.finally(() => finished = true);
  const seen: string[] = [];
  while (!finished) {
    // Under the shim nothing of nginx's may be a host-kernel connection; on the kernel the
    // sample is the positive control (it must see them).
    seen.push(...await kernelEstablished(PORT));
    await new Promise((r) => setTimeout(r, 250));
  }
  const r = await running;
  if (r.code !== 0) {
    throw new Error(`wrk exit ${r.code}: ${r.stdout}\n${r.stderr}\n${await n.evidence()}`);
  }
  return { ...parseWrk(r.stdout), kernelConnections: seen };
}

/**
 * Only 2xx, no socket error (or, with `closesPerConnection`, only the read/write errors of
 * keep-alive connections the server closed while a request was on its way: at most that many
 * per connection), some requests, and nginx logged at least what wrk completed.
 */
async function assertClean(
  n: Nginx,
  label: string,
  r: WrkResult & { kernelConnections: string[] },
  logBefore: number,
  closes?: { connections: number; perConnection: number },
): Promise<void> {
  const fail = async (what: string) => {
    throw new Error(`${label}: ${what}\n${r.text}\n${await n.evidence()}`);
  };
  if (r.requests === 0) await fail("no request completed");
  if (r.non2xx !== 0) await fail(`${r.non2xx} answers were not 2xx`);
  if (closes === undefined) {
    if (r.socketErrors !== null) await fail(`wrk saw ${r.socketErrors}`);
  } else {
    const e = r.errors;
    const budget = closes.connections * closes.perConnection;
    if (e.connect !== 0 || e.timeout !== 0 || e.read + e.write > budget) {
      await fail(`wrk saw ${r.socketErrors} (at most ${budget} read/write errors allowed)`);
    }
  }
  // Every response wrk counted was a request nginx finished and logged with 200; nginx may log
  // a few more (requests in flight when wrk stopped).
  const log = (await n.accessLog()).slice(logBefore);
  const ok = log.filter((l) => l.split(" ")[1] === "200").length;
  if (ok < r.requests) await fail(`nginx logged ${ok} answers with 200, wrk counted ${r.requests}`);
  if (n.opts.mode === "shim" && r.kernelConnections.length > 0) {
    await fail(`the host kernel held nginx connections: ${r.kernelConnections.join("; ")}`);
  }
  if (n.opts.mode === "kernel" && r.kernelConnections.length === 0) {
    await fail("the kernel control run saw no connection (ss sampling broken)");
  }
  console.log(
    `   ${label}: ${(r.requests / r.seconds).toFixed(0)} requests/s (${r.requests})${
      r.socketErrors ? `, ${r.socketErrors}` : ""
    }`,
  );
}

/** The host's listening TCP sockets on the port (`ss -tlnH`), as local addresses. */
async function kernelListeners(): Promise<string[]> {
  const out = await sh(["ss", "-tlnH"]);
  return out.split("\n").map((l) => l.trim().split(/\s+/)[3] ?? "").filter((a) =>
    a.endsWith(`:${PORT}`)
  );
}

/** Under the shim the host kernel listens on the port only on loopback (the placeholder). */
async function assertOffloadedListener(n: Nginx): Promise<void> {
  const listeners = await kernelListeners();
  if (n.opts.mode === "kernel") {
    assert(listeners.length > 0, "the kernel control run has no listener (ss broken)");
    return;
  }
  assert(
    listeners.every((a) => a.startsWith("127.0.0.1:")),
    `the host kernel listens on ${JSON.stringify(listeners)}\n${await n.evidence()}`,
  );
}

/** Per worker PID, how many 200 answers the log shows (from line `from` on). */
function perWorker(log: string[], from = 0): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of log.slice(from)) {
    const [pid, status] = line.split(" ");
    if (status === "200") m.set(pid, (m.get(pid) ?? 0) + 1);
  }
  return m;
}

/**
 * `clients` curls at once, each fetching `file` `times` times over one connection: every
 * answer must arrive whole and byte-exact within a minute (a stalled connection fails here;
 * wrk would only count fewer requests).
 */
async function assertFetches(n: Nginx, clients: number, times: number, file: string) {
  const want = await sha256File(`${n.prefix}/www/${file}`);
  const results = await Promise.all(Array.from({ length: clients }, async (_, c) => {
    const args = ["curl", "-sS", "--fail", "-m", "60"];
    for (let t = 0; t < times; t++) args.push("-o", `${n.prefix}/fetch-${c}-${t}.bin`, n.url(file));
    const r = await runInNs(n.ctx.w, args, 90);
    if (r.code !== 0) return `client ${c}: curl exit ${r.code}: ${r.stderr.trim()}`;
    for (let t = 0; t < times; t++) {
      if (await sha256File(`${n.prefix}/fetch-${c}-${t}.bin`) !== want) {
        return `client ${c} fetch ${t}: SHA-256 differs`;
      }
      await Deno.remove(`${n.prefix}/fetch-${c}-${t}.bin`);
    }
    return "ok";
  }));
  const bad = results.filter((r) => r !== "ok");
  if (bad.length > 0) {
    throw new Error(
      `${bad.length} of ${clients} clients failed:\n${bad.join("\n")}\n${await n.evidence()}`,
    );
  }
}

/** `count` downloads of 10m.bin at `rate` bytes/s, started now; each resolves with its outcome. */
function slowDownloads(n: Nginx, count: number, rate: string): Promise<string>[] {
  return Array.from({ length: count }, async (_, i) => {
    const out = `${n.prefix}/slow-${i}.bin`;
    const r = await runInNs(
      n.ctx.w,
      [
        "curl",
        "-sS",
        "--limit-rate",
        rate,
        "-o",
        out,
        "-w",
        "%{http_code} %{size_download}",
        n.url("10m.bin"),
      ],
      120,
    );
    if (r.code !== 0) return `download ${i}: curl exit ${r.code}: ${r.stdout} ${r.stderr}`;
    if (r.stdout.trim() !== `200 ${10 << 20}`) return `download ${i}: ${r.stdout}`;
    const want = await sha256File(`${n.prefix}/www/10m.bin`);
    return (await sha256File(out)) === want ? "ok" : `download ${i}: SHA-256 differs`;
  });
}

for (const workers of [2, 4]) {
  for (const acceptMutex of [false, true]) {
    Deno.test(`nginx under the shim: ${workers} workers, accept_mutex ${acceptMutex ? "on" : "off"}: wrk keep-alive and Connection: close, 1 KiB and 1 MiB, no errors`, async () => {
      await withNginx({ workers, acceptMutex, reuseport: false, mode: "shim" }, async (n) => {
        await assertOffloadedListener(n);
        for (const file of ["1k.bin", "1m.bin"]) {
          for (const close of [false, true]) {
            const before = (await n.accessLog()).length;
            // 1 MiB answers: fewer connections, so that a slow path is not a wrk timeout.
            const r = await wrk(
              n,
              file,
              4,
              close ? ["-H", "Connection: close"] : [],
              file === "1k.bin" ? 50 : 16,
            );
            await assertClean(
              n,
              `${close ? "Connection: close" : "keep-alive"} ${file}`,
              r,
              before,
            );
          }
        }
        // wrk does not tell a stalled connection from a slow one: 16 clients fetch 1m.bin
        // three times each on one keep-alive connection; every answer arrives whole.
        await assertFetches(n, 16, 3, "1m.bin");
        // And many fresh connections for the small file: the header goes by writev, the body
        // by sendfile right after it (a body that never followed its header was seen once).
        await assertFetches(n, 32, 4, "1k.bin");
        // The workers are the ones started (none died and was replaced).
        assertEquals((await n.workers()).length, workers, await n.evidence());
        const curl = await runInNs(n.ctx.w, [
          "curl",
          "-sS",
          "-o",
          `${n.prefix}/got.bin`,
          n.url("10m.bin"),
        ], 60);
        assertEquals(curl.code, 0, `curl: ${curl.stderr}\n${await n.evidence()}`);
        assertEquals(
          await sha256File(`${n.prefix}/got.bin`),
          await sha256File(`${n.prefix}/www/10m.bin`),
        );
      });
    });
  }
}

Deno.test("nginx under the shim: 4 workers with listen ... reuseport, every worker serves, no errors", async () => {
  await withNginx({ workers: 4, acceptMutex: false, reuseport: true, mode: "shim" }, async (n) => {
    await assertOffloadedListener(n);
    const before = (await n.accessLog()).length;
    const r = await wrk(n, "1k.bin", 4, ["-H", "Connection: close"]);
    await assertClean(n, "reuseport, Connection: close, 1k.bin", r, before);
    // Thousands of connections hashed over four sockets: each worker's socket got some, as
    // the kernel spreads a SO_REUSEPORT group.
    const spread = perWorker(await n.accessLog(), before);
    const pids = (await n.workers()).map(String);
    for (const pid of pids) {
      assert(
        (spread.get(pid) ?? 0) > 0,
        `worker ${pid} served nothing: ${JSON.stringify([...spread])}\n${await n.evidence()}`,
      );
    }
    const keepBefore = (await n.accessLog()).length;
    const keep = await wrk(n, "1k.bin", 4, []);
    await assertClean(n, "reuseport, keep-alive, 1k.bin", keep, keepBefore);
  });
});

/**
 * `nginx -s reload` every second for 10 s under load, while four slow downloads that began
 * before the first reload run on (old workers keep serving them).
 */
async function reloadUnderLoad(mode: "shim" | "kernel", keepAlive: boolean): Promise<void> {
  await withNginx({ workers: 2, acceptMutex: false, reuseport: false, mode }, async (n) => {
    const mastersBefore = await n.daemon.pidFromFile();
    const before = (await n.accessLog()).length;
    const slow = slowDownloads(n, 4, "800k");
    await new Promise((r) => setTimeout(r, 500));
    const load = wrk(n, "1k.bin", 10, keepAlive ? [] : ["-H", "Connection: close"], 20);
    let reloads = 0;
    let loadDone = false;
    void load.finally(() => loadDone = true);
    const t0 = Date.now();
    while (!loadDone && reloads < 10) {
      // One reload a second, on the second (the first half a second into the run).
      const at = t0 + 500 + reloads * 1000;
      while (Date.now() < at && !loadDone) {
        // Every generation of workers is remembered, so the end can kill leftovers by PID.
        await n.daemon.track();
        await new Promise((r) => setTimeout(r, 100));
      }
      if (loadDone) break;
      await n.signal("reload");
      reloads++;
    }
    const r = await load;
    assert(reloads >= 9, `only ${reloads} reloads during the run`);
    // A reload makes the old workers close their idle keep-alive connections; a request wrk
    // already sent on one of them meets the close (RFC 9112 section 9.3.1: a client may retry
    // it; wrk counts an error). Measured on the kernel: 187 read errors in 9 reloads with 20
    // connections, close to one per connection and reload; the budget allows two (a connection
    // made anew may still meet an old worker's close in the same reload). Connection: close
    // has no such race: zero errors, on Linux as under the shim.
    await assertClean(
      n,
      `${mode}: ${keepAlive ? "keep-alive" : "Connection: close"} during ${reloads} reloads`,
      r,
      before,
      keepAlive ? { connections: 20, perConnection: 2 * reloads + 1 } : undefined,
    );
    const downloads = await Promise.all(slow);
    assertEquals(
      downloads,
      ["ok", "ok", "ok", "ok"],
      `downloads across reloads\n${await n.evidence()}`,
    );
    assertEquals(await n.daemon.pidFromFile(), mastersBefore, "the master changed");
    const log = await n.errorLog();
    const reconfigured = (log.match(/reconfiguring/g) ?? []).length;
    assert(
      reconfigured >= reloads,
      `error.log shows ${reconfigured} reconfigurations for ${reloads} reloads`,
    );
    assert(!/\[(alert|emerg|crit)\]/.test(log), `nginx logged alerts:\n${log.slice(-3000)}`);
    // The old workers finished and exited: the master is left with its 2 current workers.
    await waitUntil(async () => (await n.workers()).length === 2, "old workers exit", 15_000);
  });
}

for (const keepAlive of [false, true]) {
  const load = keepAlive ? "keep-alive" : "Connection: close";
  const outcome = keepAlive
    ? "errs only where a keep-alive close races a request"
    : "fails no request";
  Deno.test(`nginx on the kernel (control): reload every second during 10 s of wrk (${load}) ${outcome}`, async () => {
    await reloadUnderLoad("kernel", keepAlive);
  });

  Deno.test(`nginx under the shim: reload every second during 10 s of wrk (${load}) ${outcome}; downloads on old workers finish`, async () => {
    await reloadUnderLoad("shim", keepAlive);
  });
}

/** `nginx -s quit` while four slow downloads run: each finishes byte-exact, then nginx is gone. */
async function quitWithDownloads(mode: "shim" | "kernel"): Promise<void> {
  await withNginx({ workers: 2, acceptMutex: false, reuseport: false, mode }, async (n) => {
    const slow = slowDownloads(n, 4, "2m");
    // The downloads are well under way (10 MiB at 2 MB/s: about 5 s each).
    await new Promise((r) => setTimeout(r, 1500));
    await n.daemon.track();
    await n.signal("quit");
    const downloads = await Promise.all(slow);
    assertEquals(
      downloads,
      ["ok", "ok", "ok", "ok"],
      `downloads across quit\n${await n.evidence()}`,
    );
    await waitUntil(
      () => n.daemon.alive().length === 0,
      "every nginx process exits after quit",
      15_000,
    )
      .catch(async (err) => {
        throw new Error(`${(err as Error).message}\n${await n.evidence()}`);
      });
    const log = await n.errorLog();
    assert(log.includes("gracefully shutting down"), `error.log:\n${log.slice(-3000)}`);
    assert(!/\[(alert|emerg|crit)\]/.test(log), `nginx logged alerts:\n${log.slice(-3000)}`);
  });
}

Deno.test("nginx on the kernel (control): quit lets in-flight downloads finish", async () => {
  await quitWithDownloads("kernel");
});

Deno.test("nginx under the shim: quit lets in-flight downloads finish", async () => {
  await quitWithDownloads("shim");
});

/**
 * nginx's binary upgrade under `Connection: close` load: SIGUSR2 to the master makes it
 * execute its binary again in a child, the listeners named in the NGINX variable; the new
 * master starts its workers on the inherited listeners; then SIGQUIT ends the old master and
 * its workers gracefully. No request fails, and the new master serves alone afterwards.
 */
async function binaryUpgrade(mode: "shim" | "kernel"): Promise<void> {
  await withNginx({ workers: 2, acceptMutex: false, reuseport: false, mode }, async (n) => {
    const old = await n.daemon.pidFromFile();
    if (old === null) throw new Error("no master in the pid file");
    const before = (await n.accessLog()).length;
    const load = wrk(n, "1k.bin", 10, ["-H", "Connection: close"], 20);
    let loadDone = false;
    void load.finally(() => loadDone = true);
    await new Promise((r) => setTimeout(r, 2000));
    assert(n.daemon.signal(old, "SIGUSR2"), `the master ${old} is gone`);
    // The new master writes nginx.pid (the old one's is renamed nginx.pid.oldbin) and starts
    // its two workers; every process is remembered for the end.
    let fresh: number | null = null;
    await waitUntil(
      async () => {
        const { master, all } = await n.daemon.track();
        fresh = master !== null && master !== old ? master : null;
        return fresh !== null && all.length === 3;
      },
      "the new master and its workers",
      15_000,
    ).catch(async (err) => {
      throw new Error(`${(err as Error).message}\n${await n.evidence()}`);
    });
    const oldbin = Number((await Deno.readTextFile(`${n.prefix}/nginx.pid.oldbin`)).trim());
    assertEquals(oldbin, old, "nginx.pid.oldbin names the old master");
    // Both generations serve for a second, then the old one quits gracefully.
    await new Promise((r) => setTimeout(r, 1000));
    assert(n.daemon.signal(old, "SIGQUIT"), `the old master ${old} is gone before QUIT`);
    await waitUntil(() => processStart(old) === null, "the old master exits", 15_000);
    assert(!loadDone, "the load ended before the old master was gone");
    const r = await load;
    await assertClean(n, `${mode}: Connection: close across a binary upgrade`, r, before);
    assertEquals(await n.daemon.pidFromFile(), fresh);
    assertEquals((await n.workers()).length, 2, await n.evidence());
    const log = await n.errorLog();
    assert(!/\[(alert|emerg|crit)\]/.test(log), `nginx logged alerts:\n${log.slice(-3000)}`);
    // Afterwards the new master serves alone.
    await assertFetches(n, 4, 2, "1k.bin");
  });
}

Deno.test("nginx on the kernel (control): binary upgrade (USR2, then QUIT to the old master) under load fails no request", async () => {
  await binaryUpgrade("kernel");
});

Deno.test("nginx under the shim: binary upgrade (USR2: the listeners inherited across exec in NGINX; QUIT to the old master) under load fails no request", async () => {
  await binaryUpgrade("shim");
});
