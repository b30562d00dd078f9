/**
 * Real applications around PnO, as the demo, the benchmarks and the application tests run
 * them: a program started under the shim (or on the kernel) with its output kept for the
 * record and ended by PID; redis-benchmark run from the client namespace with its CSV parsed;
 * the bridge's counters for one application; readiness polls.
 *
 * @module
 */
import { shimEnv } from "../packages/shim/launcher.ts";
import { inNs, sh, type WireConfig } from "./wire.ts";
import type { BridgeStatsJson } from "./bridge_process.ts";

/** How much of a program's output is kept (the tail): enough for a report, bounded. */
const KEEP_OUTPUT = 64 * 1024;

/** A program started by the demo, a benchmark or a test; its stdout and stderr are kept. */
export class AppProcess {
  private text = "";
  private readonly drained: Promise<void>;
  private readonly readers: ReadableStreamDefaultReader<string>[] = [];

  private constructor(readonly name: string, readonly child: Deno.ChildProcess) {
    const keep = async (stream: ReadableStream<Uint8Array>) => {
      const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
      this.readers.push(reader);
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          this.text = (this.text + value).slice(-KEEP_OUTPUT);
        }
      } catch {
        // cancelled
      }
    };
    this.drained = Promise.all([keep(child.stdout), keep(child.stderr)]).then(() => {});
  }

  /**
   * The rest of its output once it has exited; a child of it that inherited the pipes (a
   * program under `pno run`) may keep them open, so this waits at most a second.
   */
  private async drain(): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<void>((r) => timer = setTimeout(r, 1000));
    await Promise.race([this.drained, late]);
    clearTimeout(timer);
    for (const reader of this.readers) await reader.cancel().catch(() => {});
  }

  /**
   * Starts `argv`; with `control`, under the shim attached to the bridge there (attaching is
   * required: a program that cannot attach fails instead of running on the kernel).
   */
  static start(
    argv: string[],
    opts: { control?: string; env?: Record<string, string>; cwd?: string; name?: string } = {},
  ): AppProcess {
    const env = {
      ...opts.env,
      ...(opts.control ? shimEnv({ control: opts.control, required: true }) : {}),
    };
    const child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env,
      cwd: opts.cwd,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new AppProcess(opts.name ?? argv[0], child);
  }

  get pid(): number {
    return this.child.pid;
  }

  /** What it printed so far (the last 64 KiB of stdout and stderr, interleaved). */
  get output(): string {
    return this.text;
  }

  /** Whether it is still running (not yet reaped, not a zombie). */
  alive(): boolean {
    return processAlive(this.pid);
  }

  /**
   * Ends it by PID: `signal` (SIGTERM unless told), SIGKILL after `graceMs`; resolves with
   * its exit status and what it printed.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    graceMs = 10_000,
  ): Promise<{ code: number; signal: Deno.Signal | null; output: string }> {
    // Its own children (a program under `pno run`, redis's BGSAVE child) go too: whatever of
    // them outlives it is killed afterwards.
    const kids = descendants(this.pid);
    try {
      this.child.kill(signal);
    } catch {
      // already gone
    }
    const killer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, graceMs);
    const status = await this.child.status;
    clearTimeout(killer);
    for (const pid of kids) {
      if (!processAlive(pid)) continue;
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    await this.drain();
    return { code: status.code, signal: status.signal, output: this.text };
  }

  /** Waits for it to exit by itself (SIGKILL after `timeoutMs`). */
  async wait(timeoutMs: number): Promise<{ code: number; timedOut: boolean; output: string }> {
    let timedOut = false;
    const killer = setTimeout(() => {
      timedOut = true;
      try {
        this.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, timeoutMs);
    const status = await this.child.status;
    clearTimeout(killer);
    await this.drain();
    return { code: status.code, timedOut, output: this.text };
  }
}

/** Polls `probe` every 100 ms until it returns true; throws `what` after `timeoutMs`. */
export async function waitUntil(
  probe: () => Promise<boolean> | boolean,
  what: string,
  timeoutMs = 15_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Whether a TCP connection to host:port from the wire's namespace succeeds (nc -z). */
export async function tcpOpen(w: WireConfig, host: string, port: number): Promise<boolean> {
  const out = await new Deno.Command("ip", {
    args: inNs(w, "nc", "-z", "-w", "2", host, String(port)).slice(1),
    stdout: "null",
    stderr: "null",
  }).output();
  return out.success;
}

/** A command run to completion with its output, killed (by `timeout`) after `seconds`. */
export interface Finished {
  code: number;
  stdout: string;
  stderr: string;
  /** timeout(1) ended it. */
  timedOut: boolean;
}

/**
 * Runs argv in the wire's namespace under timeout(1), output captured (never printed);
 * `signal` ends it early (timeout(1) passes the SIGTERM on).
 */
export async function runInNs(
  w: WireConfig,
  argv: string[],
  seconds: number,
  signal?: AbortSignal,
): Promise<Finished> {
  return await runCaptured(inNs(w, "timeout", "-s", "KILL", String(seconds), ...argv), { signal });
}

/** Runs argv to completion, output captured. */
export async function runCaptured(
  argv: string[],
  opts: { env?: Record<string, string>; stdin?: Uint8Array; signal?: AbortSignal } = {},
): Promise<Finished> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    env: opts.env,
    signal: opts.signal,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin) {
    const writer = child.stdin.getWriter();
    await writer.write(opts.stdin);
    await writer.close();
  }
  const out = await child.output();
  const d = new TextDecoder();
  return {
    code: out.code,
    stdout: d.decode(out.stdout),
    stderr: d.decode(out.stderr),
    timedOut: out.code === 137 || out.code === 124,
  };
}

/** One line of redis-benchmark --csv. */
export interface BenchRow {
  rps: number;
  avgMs: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** redis-benchmark's CSV: test name to figures (redis 7: rps, latencies in ms). */
export function parseBenchmarkCsv(csv: string): Map<string, BenchRow> {
  const rows = new Map<string, BenchRow>();
  for (const line of csv.split("\n")) {
    const cells = [...line.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
    if (cells.length < 8 || cells[0] === "test") continue;
    const n = cells.slice(1).map(Number);
    rows.set(cells[0], {
      rps: n[0],
      avgMs: n[1],
      p50Ms: n[3],
      p95Ms: n[4],
      p99Ms: n[5],
      maxMs: n[6],
    });
  }
  return rows;
}

/** The outcome of one redis-benchmark run. */
export interface BenchmarkRun extends Finished {
  rows: Map<string, BenchRow>;
  seconds: number;
}

/**
 * redis-benchmark from the wire's namespace against host:port with `args` (-t, -n, -c, -P
 * ...), --csv; its output is parsed, never printed (the progress lines flood a terminal).
 * The file-descriptor limit is raised first for runs with many clients.
 */
export async function redisBenchmark(
  w: WireConfig,
  host: string,
  port: number,
  args: string[],
  timeoutSeconds = 300,
  signal?: AbortSignal,
): Promise<BenchmarkRun> {
  const t0 = performance.now();
  const script = `ulimit -n "$(ulimit -Hn)"; exec redis-benchmark "$@"`;
  const r = await runInNs(
    w,
    [
      "sh",
      "-c",
      script,
      "sh",
      "-h",
      host,
      "-p",
      String(port),
      "--csv",
      ...args,
    ],
    timeoutSeconds,
    signal,
  );
  return { ...r, rows: parseBenchmarkCsv(r.stdout), seconds: (performance.now() - t0) / 1000 };
}

/** redis-cli from the wire's namespace; resolves with its stdout (throws when it fails). */
export async function redisCli(
  w: WireConfig,
  host: string,
  port: number,
  args: string[],
  stdin?: Uint8Array,
): Promise<string> {
  const r = await runCaptured(
    inNs(w, "timeout", "-s", "KILL", "60", "redis-cli", "-h", host, "-p", String(port), ...args),
    { stdin },
  );
  if (r.code !== 0) throw new Error(`redis-cli ${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
  return r.stdout;
}

/** `INFO section` as key/value pairs. */
export function parseInfo(text: string): Record<string, string> {
  const info: Record<string, string> = {};
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) info[line.slice(0, i)] = line.slice(i + 1);
  }
  return info;
}

/** Calls per command from `INFO commandstats` ("cmdstat_set:calls=3,..."): set -> 3. */
export function commandCalls(info: Record<string, string>): Record<string, number> {
  const calls: Record<string, number> = {};
  for (const [k, v] of Object.entries(info)) {
    const m = v.match(/calls=(\d+)/);
    if (k.startsWith("cmdstat_") && m) calls[k.slice(8)] = Number(m[1]);
  }
  return calls;
}

/** The bridge's counters of one attached application process. */
export interface AppStats {
  pid: number;
  commands: number;
  completions: number;
  events: number;
  kicks: number;
  socketsOpen: number;
  rejected: number;
  ringFaults: number;
  [counter: string]: number;
}

/** The application attached from `pid` (summed over the bridge's queues), or null. */
export function appStats(stats: BridgeStatsJson, pid: number): AppStats | null {
  const queues = (stats as unknown as { queues?: { apps?: AppStats[] }[] }).queues ?? [];
  let found: AppStats | null = null;
  for (const q of queues) {
    for (const app of q.apps ?? []) {
      if (app.pid !== pid) continue;
      if (!found) {
        found = { ...app };
        continue;
      }
      for (const [k, v] of Object.entries(app)) {
        if (typeof v === "number" && k !== "pid" && k !== "app") found[k] = (found[k] ?? 0) + v;
      }
    }
  }
  return found;
}

/** The host kernel's established TCP connections with `port` at either end (`ss -tanH`). */
export async function kernelEstablished(port: number): Promise<string[]> {
  const out = await sh(["ss", "-tanH", "state", "established"]);
  return out.split("\n").filter((line) => {
    const cols = line.trim().split(/\s+/);
    return cols.length >= 4 && cols.slice(2, 4).some((a) => a.endsWith(`:${port}`));
  });
}

/** SHA-256 of bytes, hex. */
export async function sha256(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 of a file, hex (sha256sum). */
export async function sha256File(path: string): Promise<string> {
  return (await sh(["sha256sum", path])).split(" ")[0];
}

/** Whether a process exists and is not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

/** Every process below `pid` (children, their children, ...), from /proc. */
export function descendants(pid: number): number[] {
  const all: number[] = [];
  for (let frontier = [pid]; frontier.length > 0;) {
    const next = frontier.flatMap(childPids);
    all.push(...next);
    frontier = next;
  }
  return all;
}

/** PIDs whose parent is `pid` (from /proc). */
export function childPids(pid: number): number[] {
  const kids: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[1]) === pid) kids.push(Number(e.name));
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

/** Every thread's backtrace of a (hung) process, by gdb in batch mode: evidence for a report. */
export async function backtrace(pid: number): Promise<string> {
  const r = await runCaptured([
    "timeout",
    "-s",
    "KILL",
    "60",
    "gdb",
    "-p",
    String(pid),
    "-batch",
    "-ex",
    "thread apply all bt",
  ]);
  return r.stdout.split("\n").filter((l) => /^(Thread|#)/.test(l)).join("\n");
}
