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
import { inNs, type WireConfig } from "../cli/wire.ts";
import { SHIM_LIBRARY, shimEnv } from "../packages/shim/launcher.ts";
import { addressOf } from "./_harness.ts";
import {
  buildShimPrograms,
  describe,
  establishedOn,
  LineProc,
  PROGS as BIN,
  type Run,
  withTwinWire,
} from "./_oracle_runner.ts";
const SUBNET = 232;
/** The kernel does a scenario in about 3 s; the bridge is given 30 times that. */
const DEADLINE_MS = 90_000;

const SCENARIOS = [
  { name: "shared-epoll", port: 22900 },
  { name: "close-race", port: 22902 },
];

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

function assertClean(label: string, r: Run): void {
  const text = describe(label, r);
  assert(!r.timedOut, `timed out\n${text}`);
  assertEquals(r.progCode, 0, text);
  assertEquals(r.peerCode, 0, text);
  assertEquals(r.prog.at(-1), "done", text);
  assertEquals(r.peer.at(-1), "done", text);
  assert(![...r.prog, ...r.peer].some((l) => l.startsWith("FAIL")), text);
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
    await buildShimPrograms();
    await withTwinWire(`tmpthk${i}`, SUBNET, null, async (w) => {
      kernelRuns.delete(name);
      await kernelRun(name, port, w);
    });
  });

  Deno.test(`threads shim: ${name}`, async () => {
    await buildShimPrograms();
    const control = `/tmp/pno-threads-${Deno.pid}-${i}.sock`;
    await withTwinWire(`tmpths${i}`, SUBNET, control, async (w) => {
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
