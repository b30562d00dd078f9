import { assert, assertEquals } from "@std/assert";
import { TcpEngine, type TcpEngineOptions } from "./engine.ts";
import { MemWire } from "./mem_wire.ts";
import { CLOSED, ESTABLISHED, type TcpSocket, TIME_WAIT } from "./socket.ts";
import * as K from "./counters.ts";
import { TimeWaitRecord, TimeWaitTable } from "./timewait.ts";
import { tcpSetChecksum } from "../wire/tcp.ts";

const PORT = 7100;

/** `n` connections A -> B on an in-memory wire; B closes each first, so B holds TIME-WAIT. */
function closeFromB(n: number, opts: TcpEngineOptions = {}) {
  const wire = new MemWire({ slots: 16384, delayMs: 1 });
  const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1 });
  const b = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, mslMs: 1000, ...opts });
  wire.attach(a, b);
  const l = b.listen(PORT, 1024);
  const clients: TcpSocket[] = [];
  for (let i = 0; i < n; i++) clients.push(a.connect(wire.ipB, PORT));
  const servers: TcpSocket[] = [];
  assert(wire.runUntil(() => {
    for (let s = b.accept(l); s !== null; s = b.accept(l)) servers.push(s);
    return servers.length === n;
  }, 5000));
  for (const s of servers) b.close(s);
  // A reads end of stream and closes too: B ends in TIME-WAIT, A in CLOSED.
  assert(wire.runUntil(() => clients.every((c) => c.rcvFin), 5000));
  for (const c of clients) a.close(c);
  wire.runUntil(
    () => a.connectionCount() === 0 && servers.every((s) => s.state >= TIME_WAIT),
    5000,
  );
  return { wire, a, b, clients, servers };
}

Deno.test("TIME-WAIT: the socket leaves the table for a record; 2*MSL later both are gone", () => {
  const { wire, a, b, servers } = closeFromB(3);
  assertEquals(a.connectionCount(), 0);
  for (const s of servers) assertEquals(s.state, TIME_WAIT);
  assertEquals(b.table.count, 0, "no socket left in the connection table");
  assertEquals(b.tw.count, 3);
  assertEquals(b.connectionCount(), 3, "records count as connections");
  const rows = b.snapshot(true).perConnection!;
  assertEquals(rows.map((r) => r.state), ["TIME-WAIT", "TIME-WAIT", "TIME-WAIT"]);
  // 2*MSL = 2 s after entry the records expire and the sockets read CLOSED.
  wire.runUntil(() => false, 2100);
  assertEquals(b.tw.count, 0);
  assertEquals(b.connectionCount(), 0);
  for (const s of servers) assertEquals(s.state, CLOSED);
});

Deno.test("TIME-WAIT: a retransmitted FIN is ACKed again and restarts the wait", () => {
  const { wire, a, b, clients } = closeFromB(1);
  const c = clients[0];
  const r = b.tw.lookup(wire.ipB, PORT, wire.ipA, c.localPort)!;
  assert(r !== null);
  const born = r.expiresAt;
  wire.runUntil(() => false, 900);
  // A's FIN again, as if B's last ACK were lost: B answers with an ACK of it.
  const segsOut = b.counters[K.C_SEGS_OUT];
  const seg = new Uint8Array(32);
  const finSeq = (c.sndNxt - 1) >>> 0;
  seg.set([c.localPort >> 8, c.localPort & 255, PORT >> 8, PORT & 255]);
  new DataView(seg.buffer).setUint32(4, finSeq);
  new DataView(seg.buffer).setUint32(8, r.sndNxt);
  seg[12] = 8 << 4;
  seg[13] = 0x11; // FIN | ACK
  new DataView(seg.buffer).setUint16(14, 1000);
  // Timestamps: kind 8, newer TSval than B's TS.Recent, echoing anything.
  seg.set([1, 1, 8, 10], 20);
  new DataView(seg.buffer).setUint32(24, (r.tsRecent + 900) >>> 0);
  tcpSetChecksum(seg, 0, 32, wire.ipA, wire.ipB);
  b.input(seg, 0, 32, wire.ipA, wire.ipB, wire.now);
  b.poll(wire.now);
  assertEquals(b.counters[K.C_SEGS_OUT], segsOut + 1, "one ACK");
  assert(r.expiresAt > born + 800, "the wait restarted");
  void a;
});

Deno.test("TIME-WAIT: a new SYN on the 4-tuple takes it over (RFC 6191)", () => {
  const { wire, a, b, clients } = closeFromB(1);
  const port = clients[0].localPort;
  assertEquals(b.tw.count, 1);
  wire.runUntil(() => false, 10);
  const again = a.connect(wire.ipB, PORT, { srcPort: port });
  assert(wire.runUntil(() => again.state === ESTABLISHED, 1000));
  assertEquals(b.tw.count, 0);
  assertEquals(b.counters[K.C_TIME_WAIT_REUSE], 1);
});

Deno.test("TIME-WAIT: past maxTimeWait records a connection closes without one", () => {
  const { b, servers } = closeFromB(5, { maxTimeWait: 3 });
  assertEquals(b.tw.count, 3);
  assertEquals(b.counters[K.C_TIME_WAIT_OVERFLOW], 2);
  assertEquals(b.connectionCount(), 3);
  assert(servers.every((s) => s.state === TIME_WAIT || s.state === CLOSED));
});

Deno.test("orphans: past maxOrphans close() resets instead of finishing in the background", () => {
  const wire = new MemWire({ delayMs: 1 });
  const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1 });
  const b = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, maxOrphans: 2 });
  wire.attach(a, b);
  const l = b.listen(PORT, 16);
  const clients = [0, 1, 2, 3].map(() => a.connect(wire.ipB, PORT));
  const servers: TcpSocket[] = [];
  wire.runUntil(() => {
    for (let s = b.accept(l); s !== null; s = b.accept(l)) servers.push(s);
    return servers.length === 4;
  }, 1000);
  // A does not read yet: B's data fills A's window and the rest waits in B's send ring, so
  // each close leaves an orphan in FIN-WAIT-1 with its FIN behind the data.
  const big = new Uint8Array(1 << 20);
  for (const s of servers) while (b.send(s, big, 0, big.length) > 0) { /* fill */ }
  wire.runUntil(() => false, 200);
  for (const s of servers) b.close(s);
  assertEquals(b.orphans, 2);
  assertEquals(b.counters[K.C_ORPHAN_OVERFLOW], 2);
  assertEquals(servers.filter((s) => s.state === CLOSED).length, 2, "two reset at once");
  assertEquals(clients.filter((c) => c.error !== 0).length, 0, "the resets are still in flight");
  wire.runUntil(() => false, 50);
  assertEquals(clients.filter((c) => c.error !== 0).length, 2, "two clients were reset");
  // An orphan that finishes frees its place: once A reads (and closes at end of stream), the
  // FINs go out and B's connections reach TIME-WAIT.
  const sink = new Uint8Array(1 << 16);
  wire.runUntil(() => b.orphans === 0, 60_000, () => {
    for (const c of clients) {
      if (c.error !== 0 || c.state === CLOSED) continue;
      while (a.recv(c, sink, 0, sink.length) > 0) { /* drain */ }
      if (c.rcvFin) a.close(c);
    }
  });
  assertEquals(b.orphans, 0);
});

Deno.test("TimeWaitTable: records expire in order; a restart moves one to the back", () => {
  const t = new TimeWaitTable(1, 2);
  const recs = [0, 1, 2].map((i) => {
    const r = new TimeWaitRecord();
    r.localIp = 1;
    r.localPort = 80;
    r.remoteIp = 2;
    r.remotePort = 1000 + i;
    t.add(r, 100 + i);
    return r;
  });
  assertEquals(t.lookup(1, 80, 2, 1001), recs[1]);
  t.restart(recs[0], 500);
  assertEquals(t.nextExpiry(), 101);
  assertEquals(t.takeExpired(101), recs[1]);
  assertEquals(t.takeExpired(101), null);
  assertEquals(t.takeExpired(499), recs[2]);
  assertEquals(t.takeExpired(499), null);
  assertEquals(t.takeExpired(500), recs[0]);
  assertEquals(t.count, 0);
  assertEquals(t.nextExpiry(), Infinity);
});

/** Heap + external bytes in a child (--expose-gc) with `n` connections B holds in TIME-WAIT. */
async function timeWaitHeap(n: number, maxTimeWait: number) {
  const script = `
    import { TcpEngine } from "${new URL("./engine.ts", import.meta.url).href}";
    import { MemWire } from "${new URL("./mem_wire.ts", import.meta.url).href}";
    const wire = new MemWire({ slots: 16384, delayMs: 1 });
    const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1 });
    const b = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, maxTimeWait: ${maxTimeWait} });
    wire.attach(a, b);
    const l = b.listen(7, 4096);
    const clients = [];
    for (let i = 0; i < ${n}; i++) clients.push(a.connect(wire.ipB, 7));
    let servers = [];
    wire.runUntil(() => {
      for (let s = b.accept(l); s; s = b.accept(l)) servers.push(s);
      return servers.length === ${n};
    }, 5000);
    for (const s of servers) b.close(s);
    wire.runUntil(() => clients.every((c) => c.rcvFin), 5000);
    for (const c of clients) a.close(c);
    wire.runUntil(() => a.connectionCount() === 0, 5000);
    servers = null; // B's application lets go; A's sockets stay referenced, as they were
    // A WeakRef holds its target until the current job ends (as each bridge loop turn does).
    await new Promise((r) => setTimeout(r, 0));
    gc();
    gc();
    const m = Deno.memoryUsage();
    console.log(JSON.stringify({ held: b.tw.count, table: b.table.count,
      bytes: m.heapUsed + m.external, clients: clients.length }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--v8-flags=--expose-gc", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
}

Deno.test("TIME-WAIT: a record costs a few hundred bytes where the socket cost kilobytes", async () => {
  const n = 2000;
  // The same 2,000 connections closed by B, once held as records and once not held at all
  // (maxTimeWait 0): the difference is what the records cost.
  const held = await timeWaitHeap(n, 65536);
  const none = await timeWaitHeap(n, 0);
  assertEquals([held.held, held.table, none.held, none.table], [n, 0, 0, 0]);
  const perRecord = (held.bytes - none.bytes) / n;
  console.log(`a TIME-WAIT record: ${perRecord.toFixed(0)} B (heap and external)`);
  assert(perRecord < 512, `a TIME-WAIT record costs ${perRecord.toFixed(0)} B`);
});
