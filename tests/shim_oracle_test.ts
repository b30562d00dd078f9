/**
 * The shim's oracle: small C programs (tests/shim_progs/, built by `make -C ffi tests`) each
 * play one POSIX socket scenario (epoll modes, poll/select, blocking calls, EINTR, recv flags,
 * shutdown, dup2, fork, names, options, sendfile) against a kernel peer in the client
 * namespace (tests/shim_progs/peer.c). Every scenario runs twice:
 *
 * - kernel: the program's TCP is the host kernel's; the peer reaches it over the twin link.
 *   Its output is the oracle, and the test checks the program's own self-consistency (both
 *   sides end with `done`, no `FAIL`, the host kernel holds the connection at the checkpoint).
 * - shim: the same program under libpno_shim.so (LD_PRELOAD, PNO_REQUIRED=1) attached to a
 *   bridge; the peer reaches the bridge's address. Both sides must print exactly what they
 *   printed in the kernel run, and at the checkpoint the host kernel holds no ESTABLISHED
 *   TCP socket on the scenario's port.
 *
 * The checkpoint: with ORACLE_CHECKPOINT set, a program stops once right after its first
 * connection is up, prints `#checkpoint` and waits for a line on stdin; the test runs
 * `ss -tanH state established` then. Ports 9100-9199 (scenario i uses 9100 + 2i, and
 * 9101 + 2i for the peer's fixed source port in the names scenarios); wires on 10.200/10.201.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { inNs, sh, testWire, type WireConfig } from "../cli/wire.ts";
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

const SUBNET = 200;
const PORT_BASE = 9100;
/** A scenario must be over well before this; then both sides are killed. */
const DEADLINE_MS = 8_000;

interface Scenario {
  /** Scenario name, passed to both the program and the peer. */
  name: string;
  /** Program in tests/shim_progs/ (without .c). */
  prog: string;
  /** The program connects out to the peer (which listens) instead of accepting. */
  out?: boolean;
  /** False when no connection is ever established (no checkpoint). */
  established?: boolean;
  /** What the shim run's stderr must hold: a promise the shim keeps where Linux does not. */
  shimStderr?: RegExp;
}

const SCENARIOS: Scenario[] = [
  { name: "epoll-lt", prog: "epoll" },
  { name: "epoll-et", prog: "epoll" },
  { name: "epoll-oneshot", prog: "epoll" },
  { name: "epoll-exclusive", prog: "epoll" },
  { name: "epoll-nested", prog: "epoll" },
  { name: "epoll-mixed", prog: "epoll" },
  { name: "epoll-maxevents", prog: "epoll" },
  {
    name: "epoll-after-poll",
    prog: "epoll",
    shimStderr: /after a spinning poll, epoll_wait missed the socket in 0 of /,
  },
  { name: "poll-mixed", prog: "multiplex" },
  { name: "select-mixed", prog: "multiplex" },
  { name: "pselect-mixed", prog: "multiplex" },
  { name: "blocking-io", prog: "blocking" },
  { name: "connect-blocking", prog: "blocking", out: true },
  { name: "connect-refused", prog: "blocking", out: true, established: false },
  { name: "eintr-epoll", prog: "blocking" },
  { name: "eintr-read", prog: "blocking" },
  { name: "msg-peek", prog: "dataflags" },
  { name: "msg-waitall", prog: "dataflags" },
  { name: "fionread", prog: "dataflags" },
  { name: "readv-writev", prog: "dataflags" },
  { name: "sendmsg-recvmsg", prog: "dataflags" },
  { name: "sendfile", prog: "dataflags" },
  { name: "raw-syscall", prog: "dataflags" },
  { name: "splice", prog: "dataflags" },
  { name: "shutdown-wr", prog: "lifecycle" },
  { name: "shutdown-rd", prog: "lifecycle" },
  { name: "dup2", prog: "lifecycle" },
  { name: "close-epoll", prog: "lifecycle" },
  { name: "close-unread", prog: "lifecycle" },
  { name: "fork-shared", prog: "lifecycle" },
  { name: "names", prog: "sockinfo" },
  { name: "names-out", prog: "sockinfo", out: true },
  { name: "sockopts", prog: "sockinfo" },
  { name: "linger-zero", prog: "sockinfo" },
];

/**
 * Runs one scenario: the program on the host (under the shim when `env` says so), the peer in
 * the namespace, each started when the other side listens.
 */
async function runScenario(
  s: Scenario,
  w: WireConfig,
  mode: "kernel" | "shim",
  env: Record<string, string>,
): Promise<Run> {
  const port = PORT_BASE + 2 * SCENARIOS.indexOf(s);
  if (!w.twin) throw new Error("the oracle's wire needs its twin link");
  const serverAddress = mode === "kernel"
    ? addressOf(w.twin.hostAddress)
    : addressOf(w.bridgeAddress);
  const peerAddress = mode === "kernel"
    ? addressOf(w.twin.clientAddress)
    : addressOf(w.clientAddress);
  const progArgv = [`${BIN}/${s.prog}`, s.name, String(port), ...(s.out ? [peerAddress] : [])];
  const peerArgv = inNs(
    w,
    `${BIN}/peer`,
    s.name,
    s.out ? peerAddress : serverAddress,
    String(port),
  );
  const progEnv = { ...env, ORACLE_CHECKPOINT: "1" };

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

  /** Reads the program's lines up to `until` (or to its end), serving the checkpoint. */
  const readProg = async (p: LineProc, until: ((l: string) => boolean) | null) => {
    for (;;) {
      const { line, done } = await p.nextLine();
      if (done) return false;
      if (line === "#checkpoint") {
        run.kernelSockets = await establishedOn(port);
        await p.stdin?.write(new TextEncoder().encode("\n")).catch(() => {});
        continue;
      }
      run.prog.push(line);
      if (until?.(line)) return true;
    }
  };
  const readPeer = async (p: LineProc, until: ((l: string) => boolean) | null) => {
    for (;;) {
      const { line, done } = await p.nextLine();
      if (done) return false;
      run.peer.push(line);
      if (until?.(line)) return true;
    }
  };
  const listening = (l: string) => l.startsWith("listen:");

  try {
    if (s.out) {
      peer = new LineProc(peerArgv);
      if (await readPeer(peer, listening)) {
        prog = new LineProc(progArgv, progEnv, true);
        await Promise.all([readProg(prog, null), readPeer(peer, null)]);
      }
    } else {
      prog = new LineProc(progArgv, progEnv, true);
      if (await readProg(prog, listening)) {
        peer = new LineProc(peerArgv);
        await Promise.all([readProg(prog, null), readPeer(peer, null)]);
      }
    }
  } finally {
    clearTimeout(timer);
    // Each side has printed everything it will; whatever still runs is ended by PID.
    if (prog) {
      run.progCode = await prog.end();
      run.stderr = await prog.stderr;
    }
    if (peer) run.peerCode = await peer.end();
  }
  return run;
}

/** Both sides ran to `done`, with no FAIL and exit 0. */
function assertClean(label: string, r: Run): void {
  const text = describe(label, r);
  assert(!r.timedOut, `timed out\n${text}`);
  assertEquals(r.progCode, 0, text);
  assertEquals(r.peerCode, 0, text);
  assertEquals(r.prog.at(-1), "done", text);
  assertEquals(r.peer.at(-1), "done", text);
  assert(![...r.prog, ...r.peer].some((l) => l.startsWith("FAIL")), text);
}

/** wireUp made the twin: its host end carries its address, its namespace end too. */
async function assertTwin(w: WireConfig): Promise<void> {
  if (!w.twin) throw new Error("testWire(tag, subnet, true) returned no twin");
  const host = await sh(["ip", "-o", "-4", "addr", "show", "dev", w.twin.host]);
  assert(host.includes(` ${w.twin.hostAddress} `), `twin host end: ${host}`);
  const ns = await sh(inNs(w, "ip", "-o", "-4", "addr", "show", "dev", w.twin.client));
  assert(ns.includes(` ${w.twin.clientAddress} `), `twin namespace end: ${ns}`);
}

/** A wire with its twin link (checked), and a bridge attached when `control` is given. */
function withOracleWire(
  tag: string,
  control: string | null,
  body: (w: WireConfig) => Promise<void>,
): Promise<void> {
  return withTwinWire(tag, SUBNET, control, async (w) => {
    await assertTwin(w);
    await body(w);
  });
}

/** Kernel results, computed once per scenario (by its kernel test, or by its shim test). */
const kernelRuns = new Map<string, Run>();

async function kernelRun(s: Scenario, w: WireConfig): Promise<Run> {
  const cached = kernelRuns.get(s.name);
  if (cached) return cached;
  const r = await runScenario(s, w, "kernel", {});
  assertClean(`kernel ${s.name}`, r);
  // The positive control of the shim's check: here the kernel does hold the connection.
  if (s.established === false) {
    assertEquals(r.kernelSockets, null, describe("kernel", r));
  } else {
    if (r.kernelSockets === null) throw new Error(`no checkpoint\n${describe("kernel", r)}`);
    assert(r.kernelSockets.length > 0, "the kernel holds no connection at the checkpoint");
  }
  kernelRuns.set(s.name, r);
  return r;
}

/** Lines as one text, so that a difference shows as a readable diff. */
const joined = (lines: string[]) => lines.join("\n");

Deno.test("oracle kernel: the wire helper makes the twin link when asked", async () => {
  assertEquals(testWire("orct", SUBNET).twin, null);
  await withOracleWire("orct", null, async (w) => {
    // assertTwin ran; the namespace reaches the host over the twin.
    const out = await sh(
      inNs(w, "ping", "-c", "1", "-W", "2", addressOf(w.twin!.hostAddress)),
      true,
    );
    assert(out.includes("1 received"), out);
  });
});

SCENARIOS.forEach((s, i) => {
  Deno.test(`oracle kernel: ${s.name}`, async () => {
    await buildShimPrograms();
    await withOracleWire(`orck${i}`, null, async (w) => {
      kernelRuns.delete(s.name);
      await kernelRun(s, w);
    });
  });

  Deno.test(`oracle shim: ${s.name}`, async () => {
    await buildShimPrograms();
    const control = `/tmp/pno-oracle-${Deno.pid}-${i}.sock`;
    await withOracleWire(`orcs${i}`, control, async (w) => {
      const kernel = await kernelRun(s, w);
      try {
        await Deno.stat(SHIM_LIBRARY);
      } catch {
        throw new Error(`${SHIM_LIBRARY} is not built (make -C ffi): nothing to compare`);
      }
      const shim = await runScenario(s, w, "shim", shimEnv({ control, required: true }));
      const text = `${describe("kernel", kernel)}\n${describe("shim", shim)}`;
      assertEquals(joined(shim.prog), joined(kernel.prog), `program output differs\n${text}`);
      assertEquals(joined(shim.peer), joined(kernel.peer), `peer output differs\n${text}`);
      assertClean(`shim ${s.name}`, shim);
      if (s.shimStderr) assertMatch(shim.stderr, s.shimStderr, text);
      if (s.established !== false) {
        assert(shim.kernelSockets !== null, `no checkpoint\n${text}`);
        assertEquals(
          shim.kernelSockets,
          [],
          `the host kernel holds a connection on the scenario's port\n${text}`,
        );
      }
    });
  });
});
