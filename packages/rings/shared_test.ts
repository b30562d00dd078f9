/**
 * Two-process tests: the parent (this file) creates a region and plays the NIC side; a child
 * `deno run` (_test_peer.ts) maps the same memfd through /proc/<pid>/fd/<n> or the control
 * socket and plays the application. Every byte is checked against a deterministic pattern and
 * SHA-256 on both sides: zero loss, zero reorder.
 */

import { assert, assertEquals, assertMatch } from "@std/assert";
import { createHash } from "node:crypto";
import { nicGRings, nicSRings } from "./attach.ts";
import { ControlListener, serveRegion } from "./control.ts";
import {
  CMD_DATA,
  CommandChecker,
  CPL_RESULT,
  DATA_REQ,
  DESC_BODY,
  DESC_OK,
  readGen,
  readOpcode,
  readReqId,
  readSock,
  writeHeader,
} from "./descriptors.ts";
import { DESC_SIZE } from "./desc_ring.ts";
import { LAYOUT_VERSION, sockOffset } from "./layout.ts";
import { closeRegion, createRegion, type Region } from "./region.ts";
import { checkPattern, fillPattern, patternByte, Rng } from "./_test_pattern.ts";

const DENO = Deno.execPath();
const PEER = new URL("./_test_peer.ts", import.meta.url).pathname;

function spawnPeer(...args: string[]): Deno.ChildProcess {
  return new Deno.Command(DENO, {
    args: ["run", "-A", "--unstable-ffi", PEER, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function peerResult(child: Deno.ChildProcess): Promise<Record<string, unknown>> {
  const o = await child.output();
  const text = new TextDecoder().decode(o.stdout).trim();
  assertEquals(o.code, 0, new TextDecoder().decode(o.stderr));
  return JSON.parse(text.split("\n").pop()!);
}

function regionPath(r: Region): string {
  return `/proc/${Deno.pid}/fd/${r.fd}`;
}

/** Polls until `done()` or a deadline, yielding to the event loop now and then. */
async function pump(step: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  let i = 0;
  while (!step()) {
    if (Date.now() > end) throw new Error("two-process exchange timed out");
    if (++i % 4096 === 0) await new Promise((r) => setTimeout(r, 0));
  }
}

Deno.test("two processes: S-rings both ways, random interleavings, wrap, full and empty", async () => {
  const region = createRegion({
    maxThreads: 1,
    maxWaiters: 1,
    maxProcs: 1,
    maxSockets: 4,
    cmdSlots: 16,
    cplSlots: 16,
    evSlots: 16,
    txBytes: 4096,
    rxBytes: 8192,
  });
  try {
    const total = 3 << 20;
    const child = spawnPeer("stream", regionPath(region), "2", String(total), "12345");
    const { tx, rx } = nicSRings(region.buffer, region.layout, 2);
    const rng = new Rng(777);
    const txHash = createHash("sha256");
    const rxHash = createHash("sha256");
    const buf = new Uint8Array(16384);
    let acked = 0;
    let sent = 0;
    let txBad = -1;
    let sawFull = 0;
    let sawEmpty = 0;
    await pump(() => {
      // TX: read a random window out of order (as retransmissions do), then release a prefix.
      const avail = tx.readable();
      if (avail === 0) sawEmpty++;
      if (avail === 4096) sawFull++;
      if (avail > 0) {
        const off = rng.below(avail);
        const len = 1 + rng.below(avail - off);
        tx.copyOut(off, buf, 3, len);
        const bad = checkPattern(buf, 3, acked + off, len);
        if (bad >= 0 && txBad < 0) txBad = acked + off + bad;
        const ack = 1 + rng.below(avail);
        tx.copyOut(0, buf, 0, ack);
        txHash.update(buf.subarray(0, ack));
        tx.release(ack);
        acked += ack;
      }
      // RX: land a segment in two parts, the later part first, then publish it.
      const room = Math.min(rx.writable(), total - sent);
      if (room > 0) {
        const len = 1 + rng.below(room);
        fillPattern(buf, 0, sent, len);
        const cut = rng.below(len);
        rx.copyIn(cut, buf, cut, len - cut);
        rx.copyIn(0, buf, 0, cut);
        rx.publish(len);
        rxHash.update(buf.subarray(0, len));
        sent += len;
      }
      return acked === total && sent === total;
    });
    const peer = await peerResult(child);
    assertEquals(txBad, -1, "TX bytes arrived in order and intact");
    assertEquals(peer.rxBad, -1, "RX bytes arrived in order and intact");
    assertEquals(peer.written, total);
    assertEquals(peer.read, total);
    assertEquals(peer.txSha, txHash.digest("hex"));
    assertEquals(peer.rxSha, rxHash.digest("hex"));
    assertEquals([peer.faults, tx.faults, rx.faults], [0, 0, 0]);
    assert(sawEmpty > 0 && sawFull > 0, `edges seen: empty ${sawEmpty}, full ${sawFull}`);
  } finally {
    closeRegion(region);
  }
});

Deno.test("two processes: G-rings both ways, random batch sizes, every descriptor checked", async () => {
  const region = createRegion({
    maxThreads: 3,
    maxWaiters: 1,
    maxProcs: 1,
    maxSockets: 8,
    cmdSlots: 32,
    cplSlots: 16,
    evSlots: 16,
    txBytes: 4096,
    rxBytes: 4096,
  });
  try {
    const count = 200_000;
    const child = spawnPeer("desc", regionPath(region), "2", String(count), "99");
    const { commands, completions } = nicGRings(region.buffer, region.layout, 2);
    const checker = new CommandChecker(8, 1);
    const rng = new Rng(4242);
    let got = 0;
    let sent = 0;
    let bad = -1;
    await pump(() => {
      const n = commands.peek(1 + rng.below(48));
      for (let i = 0; i < n; i++) {
        const at = commands.slotOffset(i);
        const seq = got + i;
        const ok = checker.check(commands.view, at) === DESC_OK &&
          readOpcode(commands.view, at) === CMD_DATA && readReqId(commands.view, at) === seq &&
          readSock(commands.view, at) === seq % 7 && readGen(commands.view, at) === seq >>> 3 &&
          commands.view.getUint32(at + DATA_REQ, true) === Math.imul(seq, 0x9e3779b1) >>> 0;
        let body = true;
        for (let b = DATA_REQ + 4; b < DESC_SIZE; b++) {
          if (commands.view.getUint8(at + b) !== patternByte(seq + b)) body = false;
        }
        if ((!ok || !body) && bad < 0) bad = seq;
      }
      if (n > 0) commands.release(n);
      got += Math.max(n, 0);
      const k = completions.reserve(Math.min(count - sent, 1 + rng.below(24)));
      for (let i = 0; i < k; i++) {
        const at = completions.slotOffset(i);
        const seq = sent + i;
        writeHeader(completions.view, at, CPL_RESULT, 0, 0, seq);
        for (let b = DESC_BODY; b < DESC_SIZE; b++) {
          completions.view.setUint8(at + b, patternByte(seq * 3 + b));
        }
      }
      if (k > 0) completions.publish(k);
      sent += Math.max(k, 0);
      return got === count && sent === count;
    });
    const peer = await peerResult(child);
    assertEquals(bad, -1);
    assertEquals(peer, { sent: count, got: count, bad: -1, faults: 0 });
    assertEquals([checker.accepted, commands.faults, completions.faults], [count, 0, 0]);
  } finally {
    closeRegion(region);
  }
});

Deno.test("two processes: control socket hands the region over with SCM_RIGHTS", async () => {
  const region = createRegion({
    maxThreads: 1,
    maxWaiters: 1,
    maxProcs: 1,
    maxSockets: 2,
    cmdSlots: 8,
    cplSlots: 8,
    evSlots: 8,
    txBytes: 4096,
    rxBytes: 4096,
  });
  const dir = await Deno.makeTempDir();
  const listener = ControlListener.listen(`${dir}/ctl.sock`);
  try {
    new DataView(region.buffer).setUint32(sockOffset(region.layout, 0), 0xc0ffee, true);
    const child = spawnPeer("control", listener.path, String(LAYOUT_VERSION));
    const conn = await listener.accept();
    assertEquals(conn.peer.pid, child.pid, "SO_PEERCRED names the child");
    assertEquals(conn.peer.uid, Deno.uid());
    assertEquals(await serveRegion(conn, region), null);
    conn.close();
    const peer = await peerResult(child);
    assertEquals(peer.ok, true, String(peer.error));
    assertEquals(peer.marker, 0xc0ffee);
    assertEquals(peer.serverPid, Deno.pid);
    assertEquals(peer.params, region.layout.params);
    assertEquals(peer.totalSize, region.size);
    const answer = new DataView(region.buffer).getUint32(sockOffset(region.layout, 1), true);
    assertEquals(answer, child.pid, "the child wrote into the same memory");

    const staleChild = spawnPeer("control", listener.path, String(LAYOUT_VERSION + 1));
    const conn2 = await listener.accept();
    const refusal = await serveRegion(conn2, region);
    conn2.close();
    const stale = `layout version ${
      LAYOUT_VERSION + 1
    } not supported: this side speaks ${LAYOUT_VERSION}`;
    assertMatch(refusal!, new RegExp(stale));
    const peer2 = await peerResult(staleChild);
    assertEquals(peer2.ok, false);
    assertMatch(String(peer2.error), new RegExp(`region refused: ${stale}`));
  } finally {
    listener.close();
    closeRegion(region);
    await Deno.remove(dir, { recursive: true });
  }
});
