/**
 * A bridge in a child process, as the demo and the integration tests run it: started on a
 * wire's bridge end, followed through its JSON ready line, stopped by PID.
 *
 * @module
 */
import type { WireConfig } from "./wire.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** The ready line the bridge prints. */
export interface BridgeReady {
  pid: number;
  /** The DPDK driver that took the interface (af_xdp, af_packet). */
  driver: string;
  mac: string;
  address: string;
  stats: string;
}

/** A bridge process started by a test. */
export class BridgeProcess {
  private constructor(
    readonly child: Deno.ChildProcess,
    readonly ready: BridgeReady,
    private readonly output: Promise<string>,
  ) {}

  /**
   * Starts `packages/bridge/main.ts` on the wire's bridge end and waits for its ready line.
   * `runtime` adds V8 flags (`--perf-basic-prof` for perf's symbols) and deno flags
   * (`--cpu-prof`); so does PNO_BRIDGE_DENO_FLAGS (space-separated deno flags).
   */
  static async start(
    w: WireConfig,
    extra: string[] = [],
    runtime: { v8Flags?: string[]; denoFlags?: string[] } = {},
  ): Promise<BridgeProcess> {
    const envFlags = (Deno.env.get("PNO_BRIDGE_DENO_FLAGS") ?? "").split(" ").filter((f) => f);
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-ffi",
        `--v8-flags=${["--expose-gc", ...(runtime.v8Flags ?? [])].join(",")}`,
        ...(runtime.denoFlags ?? []),
        ...envFlags,
        `${ROOT}packages/bridge/main.ts`,
        "--iface",
        w.bridge,
        "--address",
        w.bridgeAddress,
        "--stats-port",
        "0",
        "--file-prefix",
        `pno-test-${w.bridge}`,
        ...extra,
      ],
      stdout: "piped",
      stderr: "inherit",
      stdin: "null",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    const deadline = setTimeout(() => child.kill("SIGKILL"), 20_000);
    try {
      while (!buffered.includes("\n")) {
        const { value, done } = await lines.read();
        if (done) throw new Error(`bridge exited before it was ready: ${buffered}`);
        buffered += value;
      }
    } finally {
      clearTimeout(deadline);
    }
    const [first, ...rest] = buffered.split("\n");
    const ready = JSON.parse(first) as BridgeReady;
    const output = (async () => {
      let text = rest.join("\n");
      for (;;) {
        const { value, done } = await lines.read();
        if (done) return text;
        text += value;
      }
    })();
    return new BridgeProcess(child, ready, output);
  }

  /** The bridge's counters from GET /stats. */
  async stats(): Promise<BridgeStatsJson> {
    const res = await fetch(this.ready.stats);
    return await res.json();
  }

  /** Stops the bridge with SIGTERM (SIGKILL after 10 s); returns its exit code and output. */
  async stop(): Promise<{ code: number; output: string }> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // already gone
    }
    const killer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // already gone
      }
    }, 10_000);
    const status = await this.child.status;
    clearTimeout(killer);
    return { code: status.code, output: await this.output };
  }
}

/** The parts of /stats the tests read. */
export interface BridgeStatsJson {
  mac: string;
  port: Record<string, number>;
  iface: Record<string, number> & { dropIpv4: Record<string, number> };
  loop: Record<string, number>;
}
