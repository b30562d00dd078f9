import { assert, assertEquals } from "@std/assert";
import { TcpEngine } from "./engine.ts";
import { MemWire } from "./mem_wire.ts";
import { startServices } from "./services.ts";
import {
  CLOSED,
  ESTABLISHED,
  EV_CONNECTED,
  EV_PEER_CLOSED,
  OPT_CONGESTION,
  type TcpSocket,
  TIME_WAIT,
} from "./socket.ts";
import { CC_NEWRENO } from "./cc.ts";
import { MemStream } from "./_mem_stream.ts";

function pair(mslMs = 30000) {
  const wire = new MemWire({ delayMs: 1 });
  const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1, mslMs });
  const b = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, mslMs });
  wire.attach(a, b);
  return { wire, a, b };
}

Deno.test("engine: simultaneous open (RFC 9293 figure 8)", () => {
  const { wire, a, b } = pair();
  let evA = 0, evB = 0;
  const sa = a.connect(wire.ipB, 6000, { srcPort: 6001, onEvent: (_s, e) => evA |= e });
  const sb = b.connect(wire.ipA, 6001, { srcPort: 6000, onEvent: (_s, e) => evB |= e });
  assert(wire.runUntil(() => sa.state === ESTABLISHED && sb.state === ESTABLISHED, 5000));
  assert(evA & EV_CONNECTED && evB & EV_CONNECTED);
  // And data flows.
  a.send(sa, new Uint8Array([1, 2, 3]), 0, 3);
  assert(wire.runUntil(() => b.recvAvailable(sb) === 3, 1000));
});

Deno.test("engine: simultaneous close ends in TIME-WAIT on both sides, then expires", () => {
  const { wire, a, b } = pair(50);
  b.listen(7000, 4);
  const sa = a.connect(wire.ipB, 7000);
  let sb: TcpSocket | null = null;
  wire.runUntil(() =>
    (sb = b.find(wire.ipB, 7000, wire.ipA, sa.localPort)) !== null &&
    sb.state === ESTABLISHED, 1000);
  a.shutdown(sa);
  b.shutdown(sb!);
  assert(wire.runUntil(() => sa.state === TIME_WAIT && sb!.state === TIME_WAIT, 1000));
  assertEquals(a.connectionCount() + b.connectionCount(), 2);
  wire.runUntil(() => false, 150);
  assertEquals(sa.state, CLOSED);
  assertEquals(a.connectionCount() + b.connectionCount(), 0);
});

Deno.test("engine: half-close keeps the other direction open", () => {
  const { wire, a, b } = pair();
  const l = b.listen(7001, 4);
  const sa = a.connect(wire.ipB, 7001);
  let sb: TcpSocket | null = null;
  wire.runUntil(() => (sb = b.accept(l)) !== null, 1000);
  a.shutdown(sa);
  let peerClosed = false;
  sb!.onEvent = (_s, e) => peerClosed ||= (e & EV_PEER_CLOSED) !== 0;
  wire.runUntil(() => peerClosed, 1000);
  const buf = new Uint8Array(100000);
  assertEquals(b.recv(sb!, buf, 0, 10), 0, "EOF on B");
  // B still sends 100 kB to A.
  let sent = 0, got = 0;
  wire.runUntil(() => got === buf.length, 5000, () => {
    if (sent < buf.length) sent += Math.max(0, b.send(sb!, buf, sent, buf.length - sent));
    const r = a.recv(sa, buf, 0, buf.length);
    if (r > 0) got += r;
  });
  assertEquals(got, buf.length);
  b.close(sb!);
  a.close(sa);
  wire.runUntil(() => a.connectionCount() === 0 && b.connectionCount() === 0, 200000);
  assertEquals(a.connectionCount() + b.connectionCount(), 0);
});

Deno.test("engine: a new SYN reuses a TIME-WAIT 4-tuple (RFC 6191)", () => {
  const { wire, a, b } = pair();
  const l = b.listen(7002, 4);
  const s1 = a.connect(wire.ipB, 7002, { srcPort: 45000 });
  let c1: TcpSocket | null = null;
  wire.runUntil(() => (c1 = b.accept(l)) !== null, 1000);
  b.close(c1!); // server closes first: it holds the TIME-WAIT
  wire.runUntil(() => s1.rcvFin, 1000);
  a.close(s1);
  wire.runUntil(() => c1!.state === TIME_WAIT && s1.state === CLOSED, 1000);
  assertEquals(c1!.state, TIME_WAIT);
  wire.runUntil(() => false, 10);
  const s2 = a.connect(wire.ipB, 7002, { srcPort: 45000 });
  assert(wire.runUntil(() => s2.state === ESTABLISHED, 1000));
  assertEquals(b.counters[39], 1, "timeWaitReuse");
  assert(wire.runUntil(() => b.accept(l) !== null, 1000));
});

Deno.test("engine: services echo, discard and source", () => {
  const { wire, a, b } = pair();
  startServices(b);
  // Echo 1 MB.
  const e = a.connect(wire.ipB, 7);
  const n = 1 << 20;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 13) & 255;
  const back = new Uint8Array(n);
  let sent = 0, got = 0;
  wire.runUntil(() => got === n, 60000, () => {
    if (e.state === ESTABLISHED && sent < n) sent += Math.max(0, a.send(e, out, sent, n - sent));
    const r = a.recv(e, back, got, n - got);
    if (r > 0) got += r;
  });
  assertEquals(got, n);
  assertEquals(back, out);
  a.close(e);
  // Discard swallows 256 kB.
  const d = a.connect(wire.ipB, 9);
  let dsent = 0;
  wire.runUntil(() => dsent === 262144 && d.sndUna === d.sndNxt, 10000, () => {
    if (d.state === ESTABLISHED && dsent < 262144) {
      dsent += Math.max(0, a.send(d, out, 0, Math.min(65536, 262144 - dsent)));
    }
  });
  assertEquals(d.sndUna, d.sndNxt);
  a.close(d);
  // Source: 2 MB of i mod 251.
  const s = a.connect(wire.ipB, 19);
  let pos = 0, bad = 0;
  const buf = new Uint8Array(65536);
  wire.runUntil(() => pos >= 2 << 20, 60000, () => {
    for (;;) {
      const r = a.recv(s, buf, 0, buf.length);
      if (r <= 0) break;
      for (let i = 0; i < r; i++) if (buf[i] !== (pos + i) % 251) bad++;
      pos += r;
    }
  });
  assert(pos >= 2 << 20);
  assertEquals(bad, 0);
  a.abort(s);
  wire.runUntil(() => false, 100);
  assertEquals(b.find(wire.ipB, 19, wire.ipA, s.localPort), null, "source reset by abort");
});

Deno.test("engine: many connections, ephemeral ports, table growth and removal", () => {
  const { wire, a, b } = pair(20);
  const l = b.listen(8000, 4096);
  const socks: TcpSocket[] = [];
  for (let i = 0; i < 3000; i++) socks.push(a.connect(wire.ipB, 8000));
  const ports = new Set(socks.map((s) => s.localPort));
  assertEquals(ports.size, 3000);
  let accepted = 0;
  assert(wire.runUntil(() => {
    while (b.accept(l) !== null) accepted++;
    return accepted === 3000;
  }, 5000));
  assert(socks.every((s) => s.state === ESTABLISHED));
  assertEquals(b.connectionCount(), 3000);
  // Clients close; servers see EOF and close too; the clients end in TIME-WAIT (40 ms here).
  for (const s of socks) a.close(s);
  const buf = new Uint8Array(16);
  wire.runUntil(() => false, 50);
  for (let i = 0; i < 3000; i++) {
    const s = b.find(wire.ipB, 8000, wire.ipA, socks[i].localPort);
    if (s !== null && b.recv(s, buf, 0, 16) === 0) b.close(s);
  }
  wire.runUntil(() => a.connectionCount() === 0 && b.connectionCount() === 0, 130000);
  assertEquals(a.connectionCount() + b.connectionCount(), 0);
  const snap = a.snapshot(false);
  assertEquals(snap.counters.activeOpens, 3000);
});

Deno.test("engine: per-socket congestion control choice; snapshot", () => {
  const { wire, a, b } = pair();
  b.listen(9000, 4);
  const s = a.connect(wire.ipB, 9000, { congestion: CC_NEWRENO });
  wire.runUntil(() => s.state === ESTABLISHED, 1000);
  assertEquals(s.cc.name, "newreno");
  a.setOption(s, OPT_CONGESTION, 1);
  assertEquals(s.cc.name, "cubic");
  const snap = a.snapshot(true);
  assertEquals(snap.connections, 1);
  assertEquals(snap.perConnection![0].state, "ESTABLISHED");
  assertEquals(snap.perConnection![0].cc, "cubic");
});

Deno.test("mem stream: wraps, copies at offsets, publishes in order", () => {
  const r = new MemStream(1024);
  const src = new Uint8Array(700).map((_, i) => i & 255);
  assertEquals(r.write(src, 0, 700), 700);
  const dst = new Uint8Array(700);
  assertEquals(r.read(dst, 0, 600), 600);
  // Out-of-order copy past the producer index, across the wrap, then publish.
  r.copyIn(300, src, 300, 400);
  r.copyIn(0, src, 0, 300);
  r.publish(700);
  assertEquals(r.readable(), 800);
  const all = new Uint8Array(800);
  r.copyOut(0, all, 0, 800);
  assertEquals(all.subarray(0, 100), src.subarray(600, 700));
  assertEquals(all.subarray(100), src);
  r.release(800);
  assertEquals(r.writable(), 1024);
});
