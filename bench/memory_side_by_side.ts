/**
 * `pno bench --memory`: what an idle connection costs, and whether buffers that follow the flow
 * cost a bulk flow anything. In one run, against the same Linux client (python3 in the bench's
 * namespace):
 *   - PnO with fixed buffers (`pno bridge --fixed-buffers`: 256 KiB send and receive rings
 *     allocated at open, the engine before autotuning),
 *   - PnO with autotuned buffers (the default: autotune.ts),
 *   - Linux: an echo server in python3 on the host kernel over the twin link.
 * Each: N idle connections to the echo service (nothing sent), the server's memory growth per
 * connection (the bridge's RSS; for Linux the kernel's slab, less what the client's own sockets
 * cost, measured in the PnO runs, plus the server process's RSS), then a bulk echo of M MiB on
 * one of those connections with every byte checked: goodput each way, and for PnO the rings
 * that connection ended with (/connections).
 *
 * The slab is the whole host's (/proc/meminfo), so other activity on the machine shows in the
 * Linux figure; the bridge's RSS is its own.
 *
 * Run: ./pno bench --memory [--memory-idle N] [--memory-mib N]
 *
 * @module
 */
import { BridgeProcess } from "../cli/bridge_process.ts";
import { inNs, testWire, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";
import { bridgeConnections, IDLE_CLIENT, rssKiB } from "./idle_client.ts";

/** The bench's own wire: namespace pno-tmembench, 10.96.0.0/24 and the twin on 10.97.0.0/24. */
const WIRE = testWire("tmembench", 96, true);
const KERNEL_PORT = 17007;

/** An echo server on the host kernel for many connections at once (one selector thread). */
const KERNEL_ECHO = String.raw`
import selectors, socket, sys, resource
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel = selectors.DefaultSelector()
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind((sys.argv[1], int(sys.argv[2])))
l.listen(1024)
l.setblocking(False)
sel.register(l, selectors.EVENT_READ, None)
pending = {}
print("ready", flush=True)
while True:
    for key, ev in sel.select():
        s = key.fileobj
        if s is l:
            try:
                c, _ = l.accept()
            except BlockingIOError:
                continue
            c.setblocking(False)
            pending[c] = bytearray()
            sel.register(c, selectors.EVENT_READ, None)
            continue
        if ev & selectors.EVENT_READ and len(pending[s]) < (256 << 10):
            try:
                b = s.recv(1 << 16)
            except BlockingIOError:
                b = None
            except ConnectionError:
                b = b""
            if b == b"":
                sel.unregister(s)
                del pending[s]
                s.close()
                continue
            if b:
                pending[s] += b
        if pending[s]:
            try:
                del pending[s][:s.send(pending[s])]
            except BlockingIOError:
                pass
        want = (selectors.EVENT_READ if len(pending[s]) < (256 << 10) else 0) | \
            (selectors.EVENT_WRITE if pending[s] else 0)
        if want != key.events:
            sel.modify(s, want, None)
`;

/** Options of the memory benchmark. */
export interface MemoryBenchOptions {
  /** Idle connections per stack. */
  idle: number;
  /** MiB of the bulk echo on one of them afterwards. */
  mib: number;
  log: (line: string) => void;
}

/** What one stack showed. */
export interface MemoryRun {
  stack: string;
  /** Server-side memory growth per idle connection, bytes. */
  perConn: number;
  /** The kernel's slab growth per connection in this run (client sockets, and server's too for Linux). */
  slabPerConn: number;
  /** Bulk echo goodput, MB/s each way. */
  echoMBps: number;
  /** PnO: the bulk connection's rings afterwards (capacity / bytes behind). */
  rings?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The kernel's slab in bytes (/proc/meminfo Slab). */
function slabBytes(): number {
  const m = Deno.readTextFileSync("/proc/meminfo").match(/Slab:\s+(\d+) kB/);
  return m ? Number(m[1]) * 1024 : 0;
}

/** Lines of a marker file the client appends JSON to. */
async function markerLines(path: string): Promise<Record<string, unknown>[]> {
  const text = await Deno.readTextFile(path);
  return text.trim().split("\n").filter((l) => l).map((l) => JSON.parse(l));
}

async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!(await cond())) {
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

/**
 * One stack: the client opens `idle` connections to host:port, the server's memory is read
 * (`serverKiB`), then the bulk echo runs on the first one.
 */
async function runStack(
  w: WireConfig,
  stack: string,
  host: string,
  port: number,
  o: MemoryBenchOptions,
  serverKiB: () => number,
  afterBulk: (clientPort: number) => Promise<string | undefined>,
): Promise<MemoryRun> {
  const marker = await Deno.makeTempFile({ prefix: "pno-membench-" });
  const run = (n: number, mib: number, signals: boolean) =>
    new Deno.Command("ip", {
      args: inNs(
        w,
        "python3",
        "-c",
        IDLE_CLIENT,
        host,
        String(port),
        String(n),
        marker,
        String(mib * (1 << 20)),
        signals ? "1" : "0",
      ).slice(1),
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  try {
    // Warm-up: one connection and 4 MiB echoed, so JIT code and pools are in the baseline.
    const warm = await run(1, 4, false).output();
    if (!warm.success) {
      throw new Error(`${stack} warm-up: ${new TextDecoder().decode(warm.stderr)}`);
    }
    await Deno.writeTextFile(marker, "");
    await sleep(2000);
    const base = serverKiB(), slab0 = slabBytes();
    const child = run(o.idle, o.mib, true);
    try {
      await until(
        async () => (await markerLines(marker)).some((l) => "opened" in l),
        180_000,
        `${stack}: ${o.idle} connections`,
      );
      const opened = (await markerLines(marker)).find((l) => "opened" in l)!;
      if ((opened.errors as string[]).length > 0) {
        throw new Error(`${stack}: ${JSON.stringify(opened.errors)}`);
      }
      await sleep(3000);
      const grown = serverKiB() - base, slab = slabBytes() - slab0;
      o.log(
        `${stack}: ${o.idle} idle connections in ${(opened.seconds as number).toFixed(1)} s, ` +
          `server +${(grown / 1024).toFixed(1)} MiB, slab +${(slab / (1 << 20)).toFixed(1)} MiB`,
      );
      child.kill("SIGUSR1");
      await until(
        async () => (await markerLines(marker)).some((l) => "bulk" in l),
        600_000,
        `${stack}: the bulk echo`,
      );
      const bulk = (await markerLines(marker)).find((l) => "bulk" in l)!.bulk as {
        ok: boolean;
        received: number;
        seconds: number;
        port: number;
      };
      if (!bulk.ok) throw new Error(`${stack}: bulk echo failed: ${JSON.stringify(bulk)}`);
      const rings = await afterBulk(bulk.port);
      child.kill("SIGUSR2");
      const out = await child.output();
      if (!out.success) throw new Error(`${stack}: ${new TextDecoder().decode(out.stderr)}`);
      return {
        stack,
        perConn: grown * 1024 / o.idle,
        slabPerConn: slab / o.idle,
        echoMBps: bulk.received / bulk.seconds / 1e6,
        rings,
      };
    } finally {
      try {
        child.kill("SIGKILL");
      } catch {
        // already gone
      }
      await child.status;
    }
  } finally {
    await Deno.remove(marker).catch(() => {});
  }
}

/** Runs the benchmark; returns the report's lines. */
export async function memorySideBySide(o: MemoryBenchOptions): Promise<string[]> {
  const w = WIRE;
  const runs: MemoryRun[] = [];
  await wireUp(w);
  try {
    for (const fixed of [true, false]) {
      const stack = fixed ? "PnO fixed 256 KiB rings" : "PnO autotuned rings";
      const bridge = await BridgeProcess.start(
        w,
        ["--control", "none", ...(fixed ? ["--fixed-buffers"] : [])],
      );
      try {
        const pid = bridge.ready.pid;
        runs.push(
          await runStack(
            w,
            stack,
            w.bridgeAddress.split("/")[0],
            7,
            o,
            () => rssKiB(pid),
            async (p) => {
              const row = (await bridgeConnections(bridge.ready.stats)).find((c) =>
                String(c.remote).endsWith(`:${p}`)
              );
              return row &&
                `rcv ${kib(row.rcvBuf)} (${kib(row.rcvBufBytes)} allocated), snd ${
                  kib(row.sndBuf)
                } (${kib(row.sndBufBytes)} allocated)`;
            },
          ),
        );
      } finally {
        await bridge.stop();
      }
      // The bridge's memory is gone with it; let the kernel settle its closed sockets.
      await sleep(3000);
    }
    const host = w.twin!.hostAddress.split("/")[0];
    const kernel = new Deno.Command("python3", {
      args: ["-c", KERNEL_ECHO, host, String(KERNEL_PORT)],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const reader = kernel.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await reader.read();
      if (!first.value?.includes("ready")) throw new Error("the kernel echo server did not start");
      const clientSlab = runs[1].slabPerConn;
      const linux = await runStack(
        w,
        "Linux",
        host,
        KERNEL_PORT,
        o,
        () => rssKiB(kernel.pid) + slabBytes() / 1024,
        () => Promise.resolve(undefined),
      );
      // The slab counted both ends here; the PnO runs showed what the client's end costs alone.
      linux.perConn -= clientSlab;
      runs.push(linux);
      await reader.cancel().catch(() => {});
    } finally {
      try {
        kernel.kill("SIGKILL");
      } catch {
        // already gone
      }
      await kernel.status;
    }
  } finally {
    await wireDown(w);
  }
  return report(runs, o);
}

const kib = (v: unknown) => `${Math.round(Number(v) / 1024)} KiB`;

function report(runs: MemoryRun[], o: MemoryBenchOptions): string[] {
  const [fixed, auto, linux] = runs;
  const pad = (s: string, n: number) => s.padEnd(n);
  const lines = [
    `Memory per idle connection (${o.idle} idle echo connections from a Linux client) and a ` +
    `${o.mib} MiB echo on one of them afterwards`,
    `${pad("server", 26)} | ${pad("per idle connection", 20)} | ${pad("bulk echo MB/s", 14)} | ` +
    `bulk connection's rings afterwards`,
  ];
  for (const r of runs) {
    lines.push(
      `${pad(r.stack, 26)} | ${pad(`${(r.perConn / 1024).toFixed(1)} KiB`, 20)} | ` +
        `${pad(r.echoMBps.toFixed(1), 14)} | ${r.rings ?? "-"}`,
    );
  }
  lines.push(
    `autotuned / fixed: memory per idle connection ${(auto.perConn / fixed.perConn).toFixed(3)}, ` +
      `bulk echo goodput ${(auto.echoMBps / fixed.echoMBps).toFixed(2)}`,
    `PnO autotuned / Linux: memory per idle connection ${
      (auto.perConn / linux.perConn).toFixed(2)
    }, bulk echo goodput ${(auto.echoMBps / linux.echoMBps).toFixed(2)}`,
    "PnO: the bridge's RSS growth. Linux: the host's slab growth less the client sockets' share " +
      "(the PnO runs' slab growth), plus the echo server's RSS; the slab is the whole host's.",
  );
  return lines;
}
