/**
 * Plumbing of the application tests (redis, lighttpd, iperf3, curl): a wire with its twin
 * link, a bridge with a control socket, a temporary directory, and every program a test starts
 * under the shim or in the namespace, all ended by PID and removed in `finally`.
 *
 * @module
 */
import { AppProcess, appStats, backtrace, descendants } from "../cli/apps.ts";
import { BridgeProcess } from "../cli/bridge_process.ts";
import { inNs, testWire, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";

/** What an application test works with. */
export interface AppWire {
  w: WireConfig;
  bridge: BridgeProcess;
  /** The bridge's control socket (PNO_CONTROL). */
  control: string;
  /** The bridge's address: where offloaded servers answer. */
  bridgeIp: string;
  /** The client namespace's address on the bridge's wire. */
  clientIp: string;
  /** A temporary directory, removed afterwards. */
  dir: string;
  /** Starts a program under the shim on the host; it is stopped at the end. */
  shimmed(argv: string[], opts?: { cwd?: string; name?: string }): AppProcess;
  /** Starts a program in the client namespace (kernel TCP); it is stopped at the end. */
  inNamespace(argv: string[], opts?: { cwd?: string; name?: string }): AppProcess;
  /**
   * Evidence for a failure report: the bridge's counters for the app, the tail of every
   * program's output and, for `hung`, the backtrace of every thread.
   */
  evidence(hung?: AppProcess): Promise<string>;
}

/** Runs `body` on a fresh wire with a bridge; everything it started is ended by PID. */
export async function withAppWire(
  tag: string,
  subnet: number,
  body: (ctx: AppWire) => Promise<void>,
): Promise<void> {
  const w = testWire(tag, subnet, true);
  const dir = await Deno.makeTempDir({ prefix: `pno-${tag}-` });
  const control = `${dir}/bridge.sock`;
  const started: AppProcess[] = [];
  let bridge: BridgeProcess | null = null;
  try {
    await wireUp(w);
    bridge = await BridgeProcess.start(w, ["--control", control]);
    const b = bridge;
    const ctx: AppWire = {
      w,
      bridge: b,
      control,
      bridgeIp: w.bridgeAddress.split("/")[0],
      clientIp: w.clientAddress.split("/")[0],
      dir,
      shimmed(argv, opts = {}) {
        const app = AppProcess.start(argv, { ...opts, control });
        started.push(app);
        return app;
      },
      inNamespace(argv, opts = {}) {
        const app = AppProcess.start(inNs(w, ...argv), { ...opts, name: opts.name ?? argv[0] });
        started.push(app);
        return app;
      },
      async evidence(hung) {
        const parts: string[] = [];
        try {
          const stats = await b.stats();
          parts.push(`bridge tcp: ${JSON.stringify((stats as unknown as { tcp: unknown }).tcp)}`);
          for (const app of started) {
            parts.push(
              `bridge app ${app.name} pid ${app.pid}: ${JSON.stringify(appStats(stats, app.pid))}`,
            );
          }
        } catch (err) {
          parts.push(`bridge stats unavailable: ${(err as Error).message}`);
        }
        if (hung?.alive()) {
          parts.push(`backtrace of ${hung.name} (${hung.pid}):\n${await backtrace(hung.pid)}`);
        }
        for (const app of started) {
          parts.push(`--- ${app.name} (pid ${app.pid}) output tail:\n${app.output.slice(-3000)}`);
        }
        return parts.join("\n");
      },
    };
    await body(ctx);
  } finally {
    // SIGTERM first: `pno run` passes it on to its program (a SIGKILL would orphan it).
    for (const app of started.reverse()) await app.stop("SIGTERM", 5_000);
    if (bridge) await bridge.stop();
    await wireDown(w);
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** What wrk reported. */
export interface WrkResult {
  /** Responses completed ("N requests in Ts"). */
  requests: number;
  seconds: number;
  /** wrk's "Socket errors: connect A, read B, write C, timeout D" line, or null without one. */
  socketErrors: string | null;
  /** The four counts of that line (all 0 without one). */
  errors: { connect: number; read: number; write: number; timeout: number };
  /** "Non-2xx or 3xx responses: N" (0 without that line). */
  non2xx: number;
  text: string;
}

/** wrk's summary: "N requests in Ts", "Socket errors: ...", "Non-2xx or 3xx responses: N". */
export function parseWrk(text: string): WrkResult {
  const m = text.match(/(\d+) requests in ([\d.]+)(ms|s|m)/);
  const unit = m?.[3] === "ms" ? 1e-3 : m?.[3] === "m" ? 60 : 1;
  const e = text.match(
    /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/,
  );
  return {
    requests: m ? Number(m[1]) : 0,
    seconds: m ? Number(m[2]) * unit : 0,
    socketErrors: text.match(/Socket errors:.*/)?.[0] ?? null,
    errors: {
      connect: Number(e?.[1] ?? 0),
      read: Number(e?.[2] ?? 0),
      write: Number(e?.[3] ?? 0),
      timeout: Number(e?.[4] ?? 0),
    },
    non2xx: Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0),
    text,
  };
}

/** A process's start time (field 22 of /proc/PID/stat), or null when it is gone or a zombie. */
export function processStart(pid: number): string | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return fields[0] === "Z" ? null : fields[19];
  } catch {
    return null;
  }
}

/**
 * A daemon that detached from its launcher (nginx, haproxy -D, redis --daemonize yes): found
 * by the PID in its pid file, its processes (the master and, from /proc, everything below it)
 * remembered with their start times whenever `track()` runs, and all of them ended by PID in
 * `stop()` -- never a PID that has since been reused by another program.
 */
export class DetachedDaemon {
  /** Every process of the daemon ever seen: PID to start time. */
  readonly seen = new Map<number, string>();

  constructor(readonly name: string, readonly pidFile: string) {}

  /** The PID in the pid file, or null (no file yet, or not a number). */
  async pidFromFile(): Promise<number | null> {
    const text = await Deno.readTextFile(this.pidFile).catch(() => "");
    const pid = Number(text.trim());
    return text.trim() !== "" && Number.isInteger(pid) && pid > 0 ? pid : null;
  }

  /** The master (from the pid file) and its descendants now alive; remembered for stop(). */
  async track(): Promise<{ master: number | null; all: number[] }> {
    const master = await this.pidFromFile();
    const all: number[] = [];
    if (master !== null && processStart(master) !== null) {
      for (const pid of [master, ...descendants(master)]) {
        const start = processStart(pid);
        if (start === null) continue;
        this.seen.set(pid, start);
        all.push(pid);
      }
    }
    return { master, all };
  }

  /** The remembered processes that still run (same PID, same start time). */
  alive(): number[] {
    return [...this.seen].filter(([pid, start]) => processStart(pid) === start).map(([p]) => p);
  }

  /** Sends `signal` to one remembered process (false when it is gone or was never seen). */
  signal(pid: number, signal: Deno.Signal): boolean {
    const start = this.seen.get(pid);
    if (start === undefined || processStart(pid) !== start) return false;
    try {
      Deno.kill(pid, signal);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Ends every process of the daemon: `signal` to the master, then SIGKILL after `graceMs` to
   * whatever of it is left (workers included). Resolves with the PIDs that had to be killed.
   */
  async stop(signal: Deno.Signal = "SIGTERM", graceMs = 5_000): Promise<number[]> {
    const { master } = await this.track().catch(() => ({ master: null }));
    if (master !== null) this.signal(master, signal);
    const deadline = Date.now() + graceMs;
    while (this.alive().length > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const killed = this.alive();
    for (const pid of killed) this.signal(pid, "SIGKILL");
    const reaped = Date.now() + 2_000;
    while (this.alive().length > 0 && Date.now() < reaped) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return killed;
  }
}
