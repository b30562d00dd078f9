/**
 * Plumbing of the kernel-as-oracle tests of multi-process and multi-threaded programs
 * (shim_threads_test.ts, shim_exec_test.ts): programs from tests/shim_progs/ (built by
 * `make -C ffi tests`) read line by line and ended by PID, a wire with its twin link and, for
 * shim runs, a bridge; everything removed in `finally`.
 *
 * @module
 */
import { descendants } from "../cli/apps.ts";
import { sh, testWire, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";
import { BridgeProcess } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Where `make -C ffi tests` puts the programs of tests/shim_progs/. */
export const PROGS = `${ROOT}ffi/build/tests`;

/** A child whose stdout is read line by line; ended by PID. */
export class LineProc {
  readonly child: Deno.ChildProcess;
  private readonly reader: ReadableStreamDefaultReader<string>;
  private buffered = "";
  readonly stderr: Promise<string>;
  readonly stdin: WritableStreamDefaultWriter<Uint8Array> | null;

  constructor(argv: string[], env: Record<string, string> = {}, stdin = false) {
    this.child = new Deno.Command(argv[0], {
      args: argv.slice(1),
      env,
      stdin: stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.reader = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.stderr = new Response(this.child.stderr).text().catch(() => "");
    this.stdin = stdin ? this.child.stdin.getWriter() : null;
  }

  /** The next line ("" and done once stdout is closed). */
  async nextLine(): Promise<{ line: string; done: boolean }> {
    while (!this.buffered.includes("\n")) {
      const { value, done } = await this.reader.read().catch(() => ({ value: "", done: true }));
      if (done) {
        const line = this.buffered;
        this.buffered = "";
        return { line, done: line === "" };
      }
      this.buffered += value;
    }
    const i = this.buffered.indexOf("\n");
    const line = this.buffered.slice(0, i);
    this.buffered = this.buffered.slice(i + 1);
    return { line, done: false };
  }

  /**
   * SIGKILL by PID (when still running), and every process below it first: a child it forked
   * (a new binary, a worker) keeps its stdout open and would hold the reader forever.
   */
  kill(): void {
    for (const pid of descendants(this.child.pid).reverse()) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch {
        // gone meanwhile
      }
    }
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  /** Kills it, waits for it and returns its exit code. */
  async end(): Promise<number> {
    this.kill();
    await this.stdin?.close().catch(() => {});
    await this.reader.cancel().catch(() => {});
    return (await this.child.status).code;
  }
}

/** The `ss` lines of ESTABLISHED host-kernel TCP sockets with `port` at either end. */
export async function establishedOn(port: number): Promise<string[]> {
  const out = await sh(["ss", "-tanH", "state", "established"]);
  const re = new RegExp(`:${port}(\\s|$)`);
  return out.split("\n").filter((l) => re.test(l));
}

let built: Promise<string> | null = null;

/** `make -C ffi tests` once per test run. */
export function buildShimPrograms(): Promise<string> {
  built ??= sh(["make", "-s", "-C", `${ROOT}ffi`, "tests"]);
  return built;
}

/** A wire with its twin link on `subnet` (and a bridge attached when `control` is given). */
export async function withTwinWire(
  tag: string,
  subnet: number,
  control: string | null,
  body: (w: WireConfig) => Promise<void>,
): Promise<void> {
  const w = testWire(tag, subnet, true);
  let bridge: BridgeProcess | null = null;
  try {
    await wireUp(w);
    if (control) bridge = await BridgeProcess.start(w, ["--control", control]);
    await body(w);
  } finally {
    if (bridge) await bridge.stop();
    await wireDown(w);
    if (control) await Deno.remove(control).catch(() => {});
  }
}

/** One run of a program and its peer. */
export interface Run {
  /** The program's stdout lines, `#checkpoint` left out. */
  prog: string[];
  /** The peer's stdout lines. */
  peer: string[];
  progCode: number;
  peerCode: number;
  /** `ss` lines on the scenario's port at the checkpoint; null: no checkpoint was reached. */
  kernelSockets: string[] | null;
  /** The program's stderr (the shim's complaints, if any). */
  stderr: string;
  timedOut: boolean;
}

/** The run, readable in an assertion message (the last 4,000 characters of stderr). */
export function describe(label: string, r: Run): string {
  return [
    `--- ${label}: program exit ${r.progCode}${r.timedOut ? " (timed out)" : ""}`,
    ...r.prog,
    `--- peer exit ${r.peerCode}`,
    ...r.peer,
    `--- host kernel's ESTABLISHED sockets on the port at the checkpoint: ${
      r.kernelSockets === null ? "no checkpoint" : JSON.stringify(r.kernelSockets)
    }`,
    ...(r.stderr ? ["--- program stderr", r.stderr.trimEnd().slice(-4000)] : []),
  ].join("\n");
}
