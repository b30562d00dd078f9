/**
 * Threads under the shim, the kernel as the oracle: tests/shim_progs/threads_shared_epoll.c
 * (8 threads sharing one epoll set and one listener; 1,000 connections, every byte checked;
 * accept on one thread, I/O on others; closes racing epoll_wait) against its multi-threaded
 * peer tests/shim_progs/threads_peer.c in the client namespace. Each scenario runs on the
 * kernel (over the twin link) and under the shim (attached to a bridge); both sides must
 * print exactly what they printed on the kernel, and at the checkpoint (the first connection
 * accepted) the host kernel holds no ESTABLISHED socket on the scenario's port.
 *
 * Built by `make -C ffi tests` like the oracle's programs (-Wall -Wextra -Werror -pthread).
 * Wires on 10.232/10.233; ports 22900 and 22902.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { inNs, sh, testWire, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";
import { SHIM_LIBRARY, shimEnv } from "../packages/shim/launcher.ts";
import { addressOf, BridgeProcess } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const BIN = `${ROOT}ffi/build/tests`;
const SUBNET = 232;
/** The kernel does a scenario in about 3 s; the bridge is given 30 times that. */
const DEADLINE_MS = 90_000;

const SCENARIOS = [
  { name: "shared-epoll", port: 22900 },
  { name: "close-race", port: 22902 },
];

/** One run: each side's lines (`#checkpoint` left out), exit codes, the checkpoint's `ss`. */
interface Run {
  prog: string[];
  peer: string[];
  progCode: number;
  peerCode: number;
  kernelSockets: string[] | null;
  stderr: string;
  timedOut: boolean;
}

/** A child whose stdout is read line by line; ended by PID. */
class LineProc {
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

  kill(): void {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }

  async end(): Promise<number> {
    this.kill();
    await this.stdin?.close().catch(() => {});
    await this.reader.cancel().catch(() => {});
    return (await this.child.status).code;
  }
}

async function establishedOn(port: number): Promise<string[]> {
  const out = await sh(["ss", "-tanH", "state", "established"]);
  const re = new RegExp(`:${port}(\\s|$)`);
  return out.split("\n").filter((l) => re.test(l));
}

let built: Promise<string> | null = null;

function buildPrograms(): Promise<string> {
  built ??= sh(["make", "-s", "-C", `${ROOT}ffi`, "tests"]);
  return built;
}

/** The program on the host (under the shim when `env` says so), the peer in the namespace. */
async function runScenario(
  name: string,
  port: number,
  w: WireConfig,
  mode: "kernel" | "shim",
  env: Record<string, string>,
): Promise<Run> {
  const server = mode === "kernel" ? addressOf(w.twin!.hostAddress) : addressOf(w.bridgeAddress);
  const run: Run = {
    prog: [],
    peer: [],
    progCode: -1,
    peerCode: -1,
    kernelSockets: null,
    stderr: "",
    timedOut: false,
  };
  let prog: LineProc | null = null;
  let peer: LineProc | null = null;
  const timer = setTimeout(() => {
    run.timedOut = true;
    prog?.kill();
    peer?.kill();
  }, DEADLINE_MS);
  const readProg = async (p: LineProc, untilListening: boolean) => {
    for (;;) {
      const { line, done } = await p.nextLine();
      if (done) return false;
      if (line === "#checkpoint") {
        run.kernelSockets = await establishedOn(port);
        await p.stdin?.write(new TextEncoder().encode("\n")).catch(() => {});
        continue;
      }
      run.prog.push(line);
      if (untilListening && line.startsWith("listen:")) return true;
    }
  };
  const readPeer = async (p: LineProc) => {
    for (;;) {
      const { line, done } = await p.nextLine();
      if (done) return;
      run.peer.push(line);
    }
  };
  try {
    prog = new LineProc(
      [`${BIN}/threads_shared_epoll`, name, String(port)],
      { ...env, ORACLE_CHECKPOINT: "1" },
      true,
    );
    if (await readProg(prog, true)) {
      peer = new LineProc(inNs(w, `${BIN}/threads_peer`, name, server, String(port)));
      await Promise.all([readProg(prog, false), readPeer(peer)]);
    }
  } finally {
    clearTimeout(timer);
    if (prog) {
      run.progCode = await prog.end();
      run.stderr = await prog.stderr;
    }
    if (peer) run.peerCode = await peer.end();
  }
  return run;
}

function describe(label: string, r: Run): string {
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

function assertClean(label: string, r: Run): void {
  const text = describe(label, r);
  assert(!r.timedOut, `timed out\n${text}`);
  assertEquals(r.progCode, 0, text);
  assertEquals(r.peerCode, 0, text);
  assertEquals(r.prog.at(-1), "done", text);
  assertEquals(r.peer.at(-1), "done", text);
  assert(![...r.prog, ...r.peer].some((l) => l.startsWith("FAIL")), text);
}

async function withWire(
  tag: string,
  control: string | null,
  body: (w: WireConfig) => Promise<void>,
): Promise<void> {
  const w = testWire(tag, SUBNET, true);
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

const kernelRuns = new Map<string, Run>();

async function kernelRun(name: string, port: number, w: WireConfig): Promise<Run> {
  const cached = kernelRuns.get(name);
  if (cached) return cached;
  const r = await runScenario(name, port, w, "kernel", {});
  assertClean(`kernel ${name}`, r);
  // The program's own facts hold on Linux (what the shim is compared with is right).
  const text = describe("kernel", r);
  for (const line of r.prog.concat(r.peer)) {
    if (/^errors: /.test(line)) assertEquals(line, "errors: 0", text);
    if (/off the pattern|got wrong|bad response headers|for closed connections/.test(line)) {
      assert(line.endsWith(": 0"), text);
    }
  }
  if (name === "shared-epoll") {
    assert(r.prog.includes("served on a thread other than the accepting one: yes"), text);
    assert(r.prog.includes("connections closed: 1000"), text);
  }
  assert(r.kernelSockets !== null && r.kernelSockets.length > 0, `checkpoint: ${text}`);
  kernelRuns.set(name, r);
  return r;
}

SCENARIOS.forEach(({ name, port }, i) => {
  Deno.test(`threads kernel: ${name}`, async () => {
    await buildPrograms();
    await withWire(`tmpthk${i}`, null, async (w) => {
      kernelRuns.delete(name);
      await kernelRun(name, port, w);
    });
  });

  Deno.test(`threads shim: ${name}`, async () => {
    await buildPrograms();
    const control = `/tmp/pno-threads-${Deno.pid}-${i}.sock`;
    await withWire(`tmpths${i}`, control, async (w) => {
      const kernel = await kernelRun(name, port, w);
      await Deno.stat(SHIM_LIBRARY);
      const shim = await runScenario(name, port, w, "shim", shimEnv({ control, required: true }));
      const text = `${describe("kernel", kernel)}\n${describe("shim", shim)}`;
      assertEquals(shim.prog.join("\n"), kernel.prog.join("\n"), `program output differs\n${text}`);
      assertEquals(shim.peer.join("\n"), kernel.peer.join("\n"), `peer output differs\n${text}`);
      assertClean(`shim ${name}`, shim);
      assert(shim.kernelSockets !== null, `no checkpoint\n${text}`);
      assertEquals(shim.kernelSockets, [], `the host kernel holds a connection\n${text}`);
    });
  });
});
