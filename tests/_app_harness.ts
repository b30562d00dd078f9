/**
 * Plumbing of the application tests (redis, lighttpd, iperf3, curl): a wire with its twin
 * link, a bridge with a control socket, a temporary directory, and every program a test starts
 * under the shim or in the namespace, all ended by PID and removed in `finally`.
 *
 * @module
 */
import { AppProcess, appStats, backtrace } from "../cli/apps.ts";
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
