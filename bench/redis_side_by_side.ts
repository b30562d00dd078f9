/**
 * redis-server, unmodified, on PnO and on the kernel, side by side in one run with the same
 * client and the same kind of link: redis-benchmark in the client namespace against
 *   - redis-server under the shim (`pno run`): its TCP in the bridge, reached on pno0,
 *   - a plain redis-server on the host kernel, reached over the twin veth (the baseline).
 * For each: requests per second, p50/p99 latency, host CPU per request (redis-server's
 * utime + stime from /proc), and for PnO the bridge's CPU per request (the NIC cores' work).
 * `pno bench --redis` adds syscalls per request of the busy redis process (strace -f -c for a
 * few seconds of each run) and the memory an idle established connection costs: 10,000 idle
 * clients, with the region's resident pages (the memfd mapping in redis's smaps), redis's own
 * RSS and the kernel's slab. `pno demo` runs the short form.
 *
 * Run: ./pno bench --redis   (or deno run -A --unstable-ffi bench/redis_side_by_side.ts)
 *
 * @module
 */
import {
  AppProcess,
  appStats,
  type BenchRow,
  childPids,
  commandCalls,
  kernelEstablished,
  parseInfo,
  processAlive,
  redisBenchmark,
  redisCli,
  runCaptured,
  waitUntil,
} from "../cli/apps.ts";
import { BridgeProcess } from "../cli/bridge_process.ts";
import { cpuSeconds } from "../cli/processes.ts";
import { DEFAULT_WIRE, inNs, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** What to measure. */
export interface RedisBenchOptions {
  /** redis-benchmark -n: requests per test (SET, then GET). */
  requests: number;
  /** redis-benchmark -c. */
  clients: number;
  /** redis-benchmark -d: value size in bytes. */
  valueBytes: number;
  /** Seconds of strace -f -c on the busy redis-server in each run; 0: none. */
  straceSeconds: number;
  /** Idle established connections to hold for the memory measurement; 0: none. */
  idleConnections: number;
  /** Progress lines. */
  log: (line: string) => void;
}

/** One side's figures. */
export interface RedisSide {
  label: string;
  rows: Map<string, BenchRow>;
  /** Requests served (SET + GET). */
  requests: number;
  seconds: number;
  /** redis-server's CPU seconds over the benchmark. */
  hostCpu: number;
  /** The bridge's CPU seconds over the benchmark (PnO only). */
  nicCpu: number | null;
  /** Established host-kernel connections on redis's port seen while it ran. */
  kernelConnections: number;
  /** Bridge counters of the redis process after the run (PnO only). */
  app: Record<string, number> | null;
  strace: StraceSummary | null;
  idle: IdleMemory | null;
}

/** strace -c's totals over a window of a busy run. */
export interface StraceSummary {
  seconds: number;
  syscalls: number;
  /** Commands redis processed in the window (INFO stats). */
  requests: number;
  /** The most frequent syscalls: name and calls. */
  top: [string, number][];
}

/** Memory per idle established connection. */
export interface IdleMemory {
  connections: number;
  /** Resident bytes of the region's mapping (memfd:pno-region) per connection (PnO only). */
  regionPerConn: number | null;
  /** redis-server's RSS growth per connection, the region's pages (shared) left out. */
  rssPerConn: number;
  /** Kernel sockets redis-server holds per connection (the shim's placeholders under PnO). */
  kernelSocketsPerConn: number;
  /** The host kernel's slab growth per connection (both ends of the kernel's connections). */
  slabPerConn: number;
  /** The bridge's RSS growth per connection (PnO only). */
  bridgePerConn: number | null;
}

/** Both sides, PnO first. */
export interface RedisComparison {
  options: RedisBenchOptions;
  pno: RedisSide;
  kernel: RedisSide;
}

/**
 * `python3 -c IDLE_CLIENT HOST PORT N`: opens N connections (at most 256 handshakes in
 * flight), prints "open <ok> <failed>", then holds them until killed.
 */
const IDLE_CLIENT = String.raw`
import resource, selectors, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel = selectors.DefaultSelector()
held, failed, pending, started = [], 0, 0, 0
deadline = time.monotonic() + 300
while len(held) + failed < n and time.monotonic() < deadline:
    while started < n and pending < 256:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE)
        pending += 1
        started += 1
    for key, _ in sel.select(timeout=5):
        s = key.fileobj
        sel.unregister(s)
        pending -= 1
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            failed += 1
            s.close()
        else:
            held.append(s)
print("open", len(held), failed, flush=True)
while True:
    time.sleep(3600)
`;

/** Resident bytes of the mappings of `pid` whose name matches `name` (from smaps). */
export function mappingRss(pid: number, name: RegExp): number {
  let total = 0;
  let inside = false;
  for (const line of Deno.readTextFileSync(`/proc/${pid}/smaps`).split("\n")) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) inside = name.test(line);
    else if (inside && line.startsWith("Rss:")) total += Number(line.split(/\s+/)[1]) * 1024;
  }
  return total;
}

/** VmRSS of a process in bytes. */
function rssBytes(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
  return m ? Number(m[1]) * 1024 : 0;
}

/** How many of a process's fds are sockets. */
function socketFds(pid: number): number {
  let n = 0;
  for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
    try {
      if (Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).startsWith("socket:")) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** The kernel's slab in bytes (/proc/meminfo Slab). */
function slabBytes(): number {
  const m = Deno.readTextFileSync("/proc/meminfo").match(/Slab:\s+(\d+) kB/);
  return m ? Number(m[1]) * 1024 : 0;
}

/** Parses strace -c's table: total calls and the most frequent syscalls. */
export function parseStraceSummary(text: string): { syscalls: number; top: [string, number][] } {
  const rows: [string, number][] = [];
  let syscalls = 0;
  for (const line of text.split("\n")) {
    const t = line.trim().split(/\s+/);
    if (t.length < 5 || !/^\d+\.\d+$/.test(t[0])) continue;
    const name = t[t.length - 1];
    const calls = Number(t[3]);
    if (name === "total") syscalls = calls;
    else rows.push([name, calls]);
  }
  rows.sort((a, b) => b[1] - a[1]);
  return { syscalls, top: rows.slice(0, 5) };
}

/** A redis-server under test: how to reach it and its PID. */
interface Target {
  label: string;
  host: string;
  port: number;
  pid: number;
  bridge: BridgeProcess | null;
}

/** strace -f -c on `pid` for `seconds` while it serves; requests counted by INFO stats. */
async function straceWindow(w: WireConfig, t: Target, seconds: number): Promise<StraceSummary> {
  const processed = async () =>
    Number(
      parseInfo(await redisCli(w, t.host, t.port, ["INFO", "stats"])).total_commands_processed,
    );
  const out = await Deno.makeTempFile({ prefix: "pno-strace-" });
  try {
    const before = await processed();
    const t0 = performance.now();
    const r = await runCaptured([
      "timeout",
      "-s",
      "INT",
      String(seconds),
      "strace",
      "-f",
      "-c",
      "-o",
      out,
      "-p",
      String(t.pid),
    ]);
    const elapsed = (performance.now() - t0) / 1000;
    const after = await processed();
    const summary = parseStraceSummary(await Deno.readTextFile(out));
    if (summary.syscalls === 0 && !/total/.test(await Deno.readTextFile(out))) {
      throw new Error(`strace gave no summary: ${r.stderr}`);
    }
    // Our own two INFO commands are not the benchmark's.
    return { seconds: elapsed, requests: Math.max(1, after - before - 1), ...summary };
  } finally {
    await Deno.remove(out).catch(() => {});
  }
}

/** redis-benchmark against one target, with CPU accounting and the host kernel watched. */
async function measure(
  w: WireConfig,
  t: Target,
  o: RedisBenchOptions,
  died: Promise<never>,
): Promise<RedisSide> {
  await redisCli(w, t.host, t.port, ["CONFIG", "RESETSTAT"]);
  const cpu0 = cpuSeconds(t.pid);
  const nic0 = t.bridge ? cpuSeconds(t.bridge.child.pid) : 0;
  const abort = new AbortController();
  const running = redisBenchmark(
    w,
    t.host,
    t.port,
    [
      "-t",
      "set,get",
      "-n",
      String(o.requests),
      "-c",
      String(o.clients),
      "-d",
      String(o.valueBytes),
    ],
    900,
    abort.signal,
  );
  let finished = false;
  void running.finally(() => finished = true);
  const sampling = (async () => {
    let seen = 0;
    while (!finished) {
      seen += (await kernelEstablished(t.port)).length;
      await new Promise((r) => setTimeout(r, 500));
    }
    return seen;
  })();
  let strace: StraceSummary | null = null;
  let run;
  try {
    if (o.straceSeconds > 0) {
      await Promise.race([new Promise((r) => setTimeout(r, 1000)), died]);
      if (!finished) strace = await Promise.race([straceWindow(w, t, o.straceSeconds), died]);
    }
    run = await Promise.race([running, died]);
  } catch (err) {
    abort.abort();
    await running.catch(() => {});
    await sampling.catch(() => {});
    throw err;
  }
  const cpu1 = cpuSeconds(t.pid);
  const nic1 = t.bridge ? cpuSeconds(t.bridge.child.pid) : 0;
  const kernelConnections = await sampling;
  if (run.code !== 0 || !run.rows.get("SET") || !run.rows.get("GET")) {
    throw new Error(
      `redis-benchmark against ${t.label} failed (exit ${run.code}): ${run.stdout}\n${
        run.stderr.slice(-2000)
      }`,
    );
  }
  const calls = commandCalls(
    parseInfo(await redisCli(w, t.host, t.port, ["INFO", "commandstats"])),
  );
  if (calls.set !== o.requests || calls.get !== o.requests) {
    throw new Error(
      `${t.label}: redis executed ${JSON.stringify(calls)}, not ${o.requests} of each`,
    );
  }
  const app = t.bridge ? appStats(await t.bridge.stats(), t.pid) : null;
  return {
    label: t.label,
    rows: run.rows,
    requests: 2 * o.requests,
    seconds: run.seconds,
    hostCpu: cpu1 - cpu0,
    nicCpu: t.bridge ? nic1 - nic0 : null,
    kernelConnections,
    app,
    strace,
    idle: null,
  };
}

/** Opens `n` idle connections to the target from the namespace and measures what they cost. */
async function idleMemory(
  w: WireConfig,
  t: Target,
  n: number,
  apps: AppProcess[],
  watch: () => void,
): Promise<IdleMemory> {
  const region = /memfd:pno-region/;
  const settle = () => new Promise((r) => setTimeout(r, 1000));
  const clientsNow = async () =>
    Number(parseInfo(await redisCli(w, t.host, t.port, ["INFO", "clients"])).connected_clients);
  await settle();
  const sample = () => ({
    region: t.bridge ? mappingRss(t.pid, region) : 0,
    rss: rssBytes(t.pid),
    slab: slabBytes(),
    bridge: t.bridge ? rssBytes(t.bridge.child.pid) : 0,
    sockets: socketFds(t.pid),
  });
  const before = sample();
  const client = AppProcess.start(
    inNs(w, "python3", "-c", IDLE_CLIENT, t.host, String(t.port), String(n)),
    { name: "idle client" },
  );
  apps.push(client);
  try {
    await waitUntil(
      () => {
        watch();
        if (!client.alive()) throw new Error(`idle client exited: ${client.output}`);
        return client.output.includes("\n");
      },
      `${n} connections opened`,
      400_000,
    );
    const [, ok, failed] = client.output.trim().split(" ").map(Number);
    if (ok !== n) {
      throw new Error(`idle client opened ${ok} of ${n} connections (${failed} failed)`);
    }
    await waitUntil(
      async () => {
        watch();
        return await clientsNow() >= n;
      },
      `redis accepts ${n} connections`,
      120_000,
    );
    await settle();
    const after = sample();
    return {
      connections: n,
      regionPerConn: t.bridge ? (after.region - before.region) / n : null,
      rssPerConn: (after.rss - after.region - (before.rss - before.region)) / n,
      kernelSocketsPerConn: (after.sockets - before.sockets) / n,
      slabPerConn: (after.slab - before.slab) / n,
      bridgePerConn: t.bridge ? (after.bridge - before.bridge) / n : null,
    };
  } finally {
    await client.stop("SIGKILL");
    apps.splice(apps.indexOf(client), 1);
    watch();
    await waitUntil(
      async () => {
        watch();
        return await clientsNow() <= 1;
      },
      "the idle connections closed",
      60_000,
    );
  }
}

/** The first TCP port from `port` up that nothing on the host listens on. */
async function freePort(port: number): Promise<number> {
  const listening = new Set(
    (await runCaptured(["ss", "-tlnH"])).stdout.split("\n").map((l) =>
      Number(l.trim().split(/\s+/)[3]?.split(":").pop())
    ),
  );
  while (listening.has(port)) port++;
  return port;
}

/** Waits until the redis-server of `pid` answers at host:port (and not some other one). */
async function redisUp(w: WireConfig, host: string, port: number, app: AppProcess, pid: number) {
  await waitUntil(async () => {
    if (!app.alive()) throw new Error(`${app.name} exited:\n${app.output.slice(-2000)}`);
    const info = await redisCli(w, host, port, ["INFO", "server"]).catch(() => "");
    const answering = Number(parseInfo(info).process_id);
    if (answering && answering !== pid) {
      throw new Error(`${host}:${port} is answered by another redis-server (pid ${answering})`);
    }
    return answering === pid;
  }, `redis-server ${pid} answers at ${host}:${port}`);
}

/** redis-server's arguments for both sides. */
function redisArgs(bind: string, port: number, dir: string): string[] {
  return [
    "redis-server",
    "--port",
    String(port),
    "--bind",
    bind,
    "--save",
    "",
    "--appendonly",
    "no",
    "--protected-mode",
    "no",
    "--maxclients",
    "20000",
    "--dir",
    dir,
    "--logfile",
    "",
  ];
}

/**
 * Runs both sides on the default wire (pno-client, 10.88.0.0/24 and the twin 10.89.0.0/24)
 * and tears everything down.
 */
export async function redisSideBySide(o: RedisBenchOptions): Promise<RedisComparison> {
  const w = DEFAULT_WIRE;
  const dir = await Deno.makeTempDir({ prefix: "pno-redis-bench-" });
  const control = `${dir}/bridge.sock`;
  const bridgeIp = w.bridgeAddress.split("/")[0];
  const kernelIp = w.twin!.hostAddress.split("/")[0];
  let bridge: BridgeProcess | null = null;
  const apps: AppProcess[] = [];
  /** Processes started by others that we end ourselves (redis-server under pno run). */
  const pids: number[] = [];
  const stop = async (app: AppProcess) => {
    const r = await app.stop("SIGTERM", 10_000);
    apps.splice(apps.indexOf(app), 1);
    return r;
  };
  let tornDown = false;
  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    // SIGTERM first: pno run passes it on to redis-server (a SIGKILL would orphan it).
    for (const app of [...apps]) await app.stop("SIGTERM", 5_000);
    for (const pid of pids.filter(processAlive)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
    if (bridge) await bridge.stop();
    await wireDown(w);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    o.log("== everything stopped, wire down");
  };
  // Interrupted (Ctrl-C, timeout): end what we started before going.
  const onSignal = (signal: Deno.Signal) => async () => {
    o.log(`== ${signal}: stopping everything`);
    await teardown();
    Deno.exit(signal === "SIGINT" ? 130 : 143);
  };
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const h = onSignal(sig);
    Deno.addSignalListener(sig, h);
    return [sig, h] as const;
  });
  try {
    o.log(
      `== wire up: ${w.ns} (${w.clientAddress}) <-> DPDK port ${w.bridge}; twin ${
        w.twin!.client
      } <-> ${w.twin!.host} (${kernelIp})`,
    );
    await wireUp(w);
    bridge = await BridgeProcess.start(w, ["--control", control]);
    let bridgeExit: Deno.CommandStatus | null = null;
    const died = bridge.child.status.then((st): never => {
      bridgeExit = st;
      throw new Error(`the bridge exited (code ${st.code}) during the PnO run`);
    });
    died.catch(() => {}); // observed where it matters
    const bridgeAlive = () => {
      if (bridgeExit) throw new Error(`the bridge exited (code ${bridgeExit.code})`);
    };
    o.log(`== bridge: pid ${bridge.ready.pid}, ${bridge.ready.address}, control socket ${control}`);

    // PnO: redis-server under the shim, started the way a user would: pno run.
    const pnoCmd = [
      "run",
      "--control",
      control,
      "--required",
      "--",
      ...redisArgs("0.0.0.0", 6379, dir),
    ];
    o.log(`== pno ${pnoCmd.map((a) => (/^[\w./:=-]+$/.test(a) ? a : `'${a}'`)).join(" ")}`);
    const pnoRun = AppProcess.start([
      Deno.execPath(),
      "run",
      "-A",
      "--unstable-ffi",
      "--quiet",
      "--config",
      `${ROOT}deno.json`,
      `${ROOT}cli/main.ts`,
      ...pnoCmd,
    ], { name: "pno run redis-server", cwd: dir });
    apps.push(pnoRun);
    let redisPid = 0;
    await waitUntil(() => {
      if (!pnoRun.alive()) throw new Error(`pno run exited:\n${pnoRun.output}`);
      redisPid = childPids(pnoRun.pid)[0] ?? 0;
      if (redisPid > 0) pids.push(redisPid);
      return redisPid > 0;
    }, "redis-server started by pno run");
    const pno: Target = { label: "PnO", host: bridgeIp, port: 6379, pid: redisPid, bridge };
    await redisUp(w, bridgeIp, 6379, pnoRun, redisPid);
    o.log(
      `== redis-benchmark -t set,get -n ${o.requests} -c ${o.clients} -d ${o.valueBytes} ` +
        `from ${w.ns} -> ${bridgeIp}:6379 (PnO, redis pid ${redisPid})`,
    );
    const pnoSide = await measure(w, pno, o, died);
    if (o.idleConnections > 0) {
      o.log(`== ${o.idleConnections} idle connections to PnO redis`);
      pnoSide.idle = await idleMemory(w, pno, o.idleConnections, apps, bridgeAlive);
    }
    await stop(pnoRun); // pno run passes SIGTERM on to redis-server and exits with it
    await waitUntil(() => !processAlive(redisPid), "redis-server under pno run exited");
    pids.splice(pids.indexOf(redisPid), 1);

    // The kernel: the same redis-server, plain, on the host's TCP over the twin link.
    const kernelPort = await freePort(16379);
    const kernelRedis = AppProcess.start(redisArgs(kernelIp, kernelPort, dir), {
      name: "redis-server (kernel)",
      cwd: dir,
    });
    apps.push(kernelRedis);
    const kernel: Target = {
      label: "kernel",
      host: kernelIp,
      port: kernelPort,
      pid: kernelRedis.pid,
      bridge: null,
    };
    await redisUp(w, kernelIp, kernelPort, kernelRedis, kernelRedis.pid);
    o.log(
      `== the same from ${w.ns} -> ${kernelIp}:${kernelPort} (host kernel, redis pid ${kernel.pid})`,
    );
    const kernelSide = await measure(w, kernel, o, new Promise<never>(() => {}));
    if (o.idleConnections > 0) {
      o.log(`== ${o.idleConnections} idle connections to kernel redis`);
      kernelSide.idle = await idleMemory(w, kernel, o.idleConnections, apps, () => {});
    }
    await stop(kernelRedis);
    return { options: o, pno: pnoSide, kernel: kernelSide };
  } finally {
    await teardown();
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  }
}

const us = (seconds: number, requests: number) => (seconds * 1e6 / requests).toFixed(2);
const pad = (s: string, n: number) => s.padStart(n);

/** The table both `pno demo` and `pno bench --redis` print. */
export function formatRedisTable(c: RedisComparison): string {
  const o = c.options;
  const lines = [
    `redis-benchmark -t set,get -n ${o.requests} -c ${o.clients} -d ${o.valueBytes}, kernel client in ${DEFAULT_WIRE.ns}`,
    "          |  SET req/s |  GET req/s | SET p50/p99 ms | GET p50/p99 ms | host CPU us/req | NIC CPU us/req",
  ];
  for (const s of [c.pno, c.kernel]) {
    const set = s.rows.get("SET")!, get = s.rows.get("GET")!;
    lines.push(
      `${s.label.padEnd(9)} | ${pad(set.rps.toFixed(0), 10)} | ${pad(get.rps.toFixed(0), 10)} | ` +
        `${pad(`${set.p50Ms.toFixed(3)}/${set.p99Ms.toFixed(3)}`, 14)} | ` +
        `${pad(`${get.p50Ms.toFixed(3)}/${get.p99Ms.toFixed(3)}`, 14)} | ` +
        `${pad(us(s.hostCpu, s.requests), 15)} | ` +
        `${pad(s.nicCpu === null ? "-" : us(s.nicCpu, s.requests), 14)}`,
    );
  }
  const p = c.pno, k = c.kernel;
  const ratio = (a: number, b: number) => (b === 0 ? "n/a" : (a / b).toFixed(2));
  lines.push(
    `PnO/kernel | SET ${ratio(p.rows.get("SET")!.rps, k.rows.get("SET")!.rps)}x req/s, GET ${
      ratio(p.rows.get("GET")!.rps, k.rows.get("GET")!.rps)
    }x req/s, host CPU per request ${ratio(p.hostCpu, k.hostCpu)}x`,
    "host CPU: redis-server's utime+stime (/proc/PID/stat) over the run / requests; NIC CPU: the",
    "bridge process's (the DPU cores' stand-in). The kernel's own network work in softirq context",
    "is charged to whichever task it interrupts, so the kernel row's host CPU is a lower bound.",
  );
  if (p.app) {
    lines.push(
      `bridge counted for redis (pid ${p.app.pid}): ${p.app.commands} commands, ${p.app.events} events, ` +
        `${p.app.kicks} wakeups; host-kernel ESTABLISHED sockets on 6379 seen during the run: ${p.kernelConnections}`,
    );
  }
  if (p.strace && k.strace) {
    lines.push("syscalls of the busy redis-server (strace -f -c during the run):");
    for (const s of [p.strace, k.strace]) {
      const label = s === p.strace ? "PnO" : "kernel";
      lines.push(
        `  ${label.padEnd(7)} ${s.syscalls} syscalls / ${s.requests} requests in ${
          s.seconds.toFixed(1)
        } s = ` +
          `${(s.syscalls / s.requests).toFixed(3)} per request; top: ${
            s.top.map(([n, k]) => `${n} ${k}`).join(", ")
          }`,
      );
    }
    lines.push(
      `  PnO/kernel syscalls per request: ${
        ratio(p.strace.syscalls / p.strace.requests, k.strace.syscalls / k.strace.requests)
      }x (strace slows the traced process: compare per request, not rates)`,
    );
  }
  if (p.idle && k.idle) {
    const kb = (b: number | null) => (b === null ? "-" : (b / 1024).toFixed(2));
    lines.push(
      `memory per idle established connection (${p.idle.connections} connections), KiB:`,
      "          | region (memfd Rss) | redis RSS w/o region | bridge RSS | host kernel slab | redis kernel sockets",
    );
    for (const [label, m] of [["PnO", p.idle], ["kernel", k.idle]] as const) {
      lines.push(
        `${label.padEnd(9)} | ${pad(kb(m.regionPerConn), 18)} | ${pad(kb(m.rssPerConn), 20)} | ` +
          `${pad(kb(m.bridgePerConn), 10)} | ${pad(kb(m.slabPerConn), 16)} | ` +
          `${pad(m.kernelSocketsPerConn.toFixed(2), 20)}`,
      );
    }
    lines.push(
      "region: resident pages of the memfd:pno-region mapping in redis-server (/proc/PID/smaps);",
      "slab (/proc/meminfo, whole host, so other activity shows) counts every kernel socket: the",
      "clients' in the namespace on both rows, and redis's: its connections on the kernel row,",
      "the shim's placeholder sockets (one per offloaded fd) on the PnO row.",
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const c = await redisSideBySide({
    requests: 300_000,
    clients: 50,
    valueBytes: 64,
    straceSeconds: 4,
    idleConnections: 10_000,
    log: (l) => console.log(l),
  });
  console.log(formatRedisTable(c));
}
