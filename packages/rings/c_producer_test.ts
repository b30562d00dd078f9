/**
 * A C producer (ffi/tests/ring_producer.c, built here with cc against the generated header)
 * feeding TypeScript consumers through one region: the shim's side of the protocol in C, the
 * bridge's in TypeScript. Then a hostile C producer: the TypeScript side refuses and counts what
 * it wrote and keeps serving the region's other rings.
 */

import { assert, assertEquals, assertThrows } from "@std/assert";
import { createHash } from "node:crypto";
import { nicGRings, nicSRings } from "./attach.ts";
import {
  CMD_CLOSE,
  CMD_DATA,
  CommandChecker,
  DATA_REQ,
  DESC_OK,
  readGen,
  readOpcode,
  readReqId,
  readSock,
} from "./descriptors.ts";
import {
  SOCK_DATA_ACK,
  SOCK_DATA_REQ,
  SOCK_GEN,
  sockOffset,
  THREAD_OWNER_TID,
  threadOffset,
} from "./layout.ts";
import { RING_FAULT } from "./byte_ring.ts";
import { closeRegion, createRegion, openRegionPath, type Region } from "./region.ts";
import { fillPattern } from "./_test_pattern.ts";

const ROOT = new URL("../../", import.meta.url).pathname;

async function buildProducer(): Promise<string> {
  const dir = await Deno.makeTempDir();
  const exe = `${dir}/ring_producer`;
  const cc = await new Deno.Command("cc", {
    args: [
      "-O2",
      "-std=c11",
      "-Wall",
      "-Wextra",
      "-Werror",
      `-I${ROOT}ffi/include`,
      `${ROOT}ffi/tests/ring_producer.c`,
      "-o",
      exe,
    ],
  }).output();
  assertEquals(cc.code, 0, new TextDecoder().decode(cc.stderr));
  return exe;
}

function run(exe: string, region: Region, ...args: string[]): Deno.ChildProcess {
  return new Deno.Command(exe, {
    args: [`/proc/${Deno.pid}/fd/${region.fd}`, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function outputOf(child: Deno.ChildProcess): Promise<{ code: number; line: string }> {
  const o = await child.output();
  return { code: o.code, line: new TextDecoder().decode(o.stdout).trim() };
}

const PARAMS = {
  maxThreads: 2,
  maxWaiters: 1,
  maxProcs: 1,
  maxSockets: 4,
  cmdSlots: 32,
  cplSlots: 32,
  evSlots: 8,
  txBytes: 8192,
  rxBytes: 4096,
};

/**
 * Plays the NIC for a C producer: consumes its stream and serves its data doorbells (each must
 * name the socket and its generation and carry the host line's next data_req; serving one is
 * storing it as data_ack). Returns what it checked.
 */
async function consumeGood(
  region: Region,
  child: Deno.ChildProcess,
  sock: number,
  thread: number,
  total: number,
) {
  const { tx } = nicSRings(region.buffer, region.layout, sock);
  const { commands } = nicGRings(region.buffer, region.layout, thread);
  const p = region.layout.params;
  const checker = new CommandChecker(p.maxSockets, p.maxWaiters);
  const words = new Int32Array(region.buffer);
  const line = sockOffset(region.layout, sock) >> 2;
  const gen = Atomics.load(words, line + (SOCK_GEN >> 2));
  let served = Atomics.load(words, line + (SOCK_DATA_ACK >> 2));
  const got = createHash("sha256");
  const buf = new Uint8Array(8192);
  let acked = 0;
  let doorbells = 0;
  let problems = 0;
  const deadline = Date.now() + 60_000;
  for (let spin = 0; acked < total || doorbells === 0; spin++) {
    const n = commands.peek(32);
    for (let i = 0; i < n; i++) {
      const at = commands.slotOffset(i);
      const req = commands.view.getUint32(at + DATA_REQ, true);
      if (
        checker.check(commands.view, at) !== DESC_OK ||
        readOpcode(commands.view, at) !== CMD_DATA || readSock(commands.view, at) !== sock ||
        readGen(commands.view, at) !== gen || readReqId(commands.view, at) < doorbells ||
        req !== ((served + 1) >>> 0) ||
        req !== Atomics.load(words, line + (SOCK_DATA_REQ >> 2)) >>> 0
      ) problems++;
      // Served: the producer may ring again (at most one doorbell in flight per socket).
      served = req;
      Atomics.store(words, line + (SOCK_DATA_ACK >> 2), req | 0);
      doorbells++;
    }
    if (n > 0) commands.release(n);
    const avail = tx.readable();
    if (avail > 0) {
      tx.copyOut(0, buf, 0, avail);
      got.update(buf.subarray(0, avail));
      tx.release(avail);
      acked += avail;
    }
    if (Date.now() > deadline) throw new Error("C producer timed out");
    if (spin % 4096 === 0) await new Promise((r) => setTimeout(r, 0));
  }
  const out = await outputOf(child);
  // Serve doorbells published after the last bytes.
  for (let n = commands.peek(64); n > 0; n = commands.peek(64)) {
    doorbells += n;
    commands.release(n);
  }
  const owner = Atomics.load(words, (threadOffset(region.layout, thread) + THREAD_OWNER_TID) >> 2);
  if (owner !== 0) problems++; // the C thread released its entry when it was done
  const want = createHash("sha256");
  const pat = new Uint8Array(total);
  fillPattern(pat, 0, 0, total);
  want.update(pat);
  return { out, acked, doorbells, problems, match: got.digest("hex") === want.digest("hex"), tx };
}

Deno.test("C producer -> TypeScript consumer: every byte and every doorbell, in order", async () => {
  const exe = await buildProducer();
  const region = createRegion(PARAMS);
  try {
    // A socket the NIC handed out: a generation in its line.
    new Int32Array(region.buffer)[(sockOffset(region.layout, 1) + SOCK_GEN) >> 2] = 77;
    const total = 4 << 20;
    const child = run(exe, region, "good", "1", String(total), "1");
    const r = await consumeGood(region, child, 1, 1, total);
    assertEquals(r.out.code, 0, r.out.line);
    assertEquals(r.out.line, `ok ${r.doorbells}`);
    assertEquals(r.acked, total);
    assertEquals(r.problems, 0);
    assert(r.doorbells > 0);
    assert(r.match, "SHA-256 of the stream matches the pattern");
    assertEquals(r.tx.faults, 0);
  } finally {
    closeRegion(region);
    await Deno.remove(exe.slice(0, exe.lastIndexOf("/")), { recursive: true });
  }
});

Deno.test("hostile C producer: bad indices, opcodes, sockets and header are refused and counted", async () => {
  const exe = await buildProducer();
  const region = createRegion(PARAMS);
  try {
    const victim = nicSRings(region.buffer, region.layout, 3);
    const g = nicGRings(region.buffer, region.layout, 0);
    const hostile = await outputOf(run(exe, region, "hostile", "3", "0", "0"));
    assertEquals(hostile, { code: 0, line: "ok 5" });

    // TX producer index past the ring: refused, counted, never read beyond the ring.
    assertEquals(victim.tx.readable(), 0);
    assert(victim.tx.faulted);
    assertEquals(victim.tx.faults, 1);
    assertThrows(() => victim.tx.copyOut(0, new Uint8Array(200), 0, 200), RangeError);

    // Five commands: four rejected by kind, one accepted.
    const checker = new CommandChecker(region.layout.params.maxSockets, 1);
    const n = g.commands.peek(16);
    assertEquals(n, 5);
    const verdicts = [];
    for (let i = 0; i < n; i++) {
      verdicts.push(checker.check(g.commands.view, g.commands.slotOffset(i)));
    }
    g.commands.release(n);
    assertEquals(verdicts, [1, 1, 2, 3, 0]);
    assertEquals([checker.badOpcode, checker.badSock, checker.badField, checker.accepted], [
      2,
      1,
      1,
      1,
    ]);
    assertEquals(readOpcode(g.commands.view, g.commands.slotOffset(-1)), CMD_CLOSE);

    // Completion ring consumer index past the producer: a fresh producer side looks at the
    // consumer index first (it may lag by up to a whole ring) and refuses to produce into it.
    assertEquals(g.completions.reserve(32), RING_FAULT);
    assertEquals(g.completions.faults, 1);

    // The NIC side stays up: another socket and thread of the same region still work.
    const total = 1 << 20;
    const r = await consumeGood(
      region,
      run(exe, region, "good", "2", String(total), "1"),
      2,
      1,
      total,
    );
    assertEquals(r.out.line, `ok ${r.doorbells}`);
    assert(r.match);
    assertEquals(r.problems, 0);

    // A torn header: both the TypeScript and the C side refuse the region.
    assertEquals(await outputOf(run(exe, region, "torn", "0", "0", "0")), {
      code: 0,
      line: "ok 0",
    });
    assertThrows(
      () => openRegionPath(`/proc/self/fd/${region.fd}`),
      Error,
      "torn header: total_size",
    );
    const refused = await outputOf(run(exe, region, "good", "0", "10", "0"));
    assertEquals(refused, { code: 3, line: "error region 3" });
  } finally {
    closeRegion(region);
    await Deno.remove(exe.slice(0, exe.lastIndexOf("/")), { recursive: true });
  }
});
