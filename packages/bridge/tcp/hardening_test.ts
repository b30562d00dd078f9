import { assert, assertEquals } from "@std/assert";
import { CaptureLink, passiveOpen, peerSend, type ScriptConn, ScriptPeer } from "./_test_util.ts";
import { TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, TcpSegment, tcpSetChecksum } from "../wire/tcp.ts";
import { TcpEngine } from "./engine.ts";
import { ESTABLISHED, FIN_WAIT_1, OPT_NODELAY, SYN_RECEIVED } from "./socket.ts";
import * as K from "./counters.ts";

const acksOut = (c: ScriptConn) => c.p.take().filter((r) => r.flags === TCP_ACK).length;

Deno.test("challenge ACKs: at most one per socket per 500 ms (Linux tcp_invalid_ratelimit)", () => {
  const c = passiveOpen();
  for (let i = 0; i < 10; i++) peerSend(c, TCP_RST, undefined, { seq: (c.seq + 100) >>> 0 });
  assertEquals(acksOut(c), 1, "ten in-window RSTs in one moment: one challenge ACK");
  c.p.advance(499);
  peerSend(c, TCP_RST, undefined, { seq: (c.seq + 100) >>> 0 });
  assertEquals(acksOut(c), 0);
  c.p.advance(1);
  peerSend(c, TCP_RST, undefined, { seq: (c.seq + 100) >>> 0 });
  assertEquals(acksOut(c), 1, "500 ms later, one more");
  assertEquals(c.s.state, ESTABLISHED);
  assert(c.p.engine.counters[K.C_ACKS_RATE_LIMITED] >= 10);
});

Deno.test("out-of-window and PAWS-failed ACKs are rate-limited; out-of-window data is not", () => {
  const c = passiveOpen();
  c.p.advance(600);
  // Pure ACKs far outside the window (an ACK storm between two confused ends): one answer.
  for (let i = 0; i < 10; i++) peerSend(c, 0, undefined, { seq: (c.seq + 50_000_000) >>> 0 });
  assertEquals(acksOut(c), 1);
  c.p.advance(600);
  // PAWS failures without data (timestamps far older than TS.Recent): one answer.
  for (let i = 0; i < 10; i++) peerSend(c, 0, undefined, { ts: (c.ts - 100_000) >>> 0 });
  assertEquals(acksOut(c), 1);
  // Old data (a retransmission of what arrived already) is always answered: the peer's loss
  // recovery depends on these duplicate ACKs.
  peerSend(c, TCP_PSH, new Uint8Array(10));
  c.p.take();
  for (let i = 0; i < 5; i++) {
    peerSend(c, TCP_PSH, new Uint8Array(10), { seq: (c.seq - 10) >>> 0 });
  }
  assertEquals(acksOut(c), 5);
});

Deno.test("challenge ACKs: the global limit is drawn at random each second (CVE-2016-5696)", () => {
  const p = new ScriptPeer({ challengeAckLimit: 10 });
  const l = p.engine.listen(80, 64);
  const conns: { port: number; seq: number }[] = [];
  for (let i = 0; i < 40; i++) {
    const port = 41000 + i;
    p.send(80, { flags: TCP_SYN, seq: 1000, srcPort: port });
    const [sa] = p.take();
    p.send(80, { flags: TCP_ACK, seq: 1001, ack: (sa.seq + 1) >>> 0, srcPort: port });
    assert(p.engine.accept(l) !== null);
    conns.push({ port, seq: 1001 });
  }
  p.take();
  const perSecond: number[] = [];
  for (let sec = 0; sec < 6; sec++) {
    p.advance(1000 - (p.now % 1000)); // the start of a second
    for (const k of conns) p.send(80, { flags: TCP_RST, seq: k.seq + 100, srcPort: k.port });
    perSecond.push(p.take().filter((r) => r.flags === TCP_ACK).length);
  }
  for (const n of perSecond) assert(n >= 5 && n <= 15, `challenge ACKs per second ${perSecond}`);
  assert(new Set(perSecond).size > 1, `the same count every second: ${perSecond}`);
});

Deno.test("a full accept queue drops the handshake's ACK and the SYN-ACK is resent (Linux default)", () => {
  const p = new ScriptPeer({ synCookies: false });
  const l = p.engine.listen(80, 2);
  const syn = (port: number) => {
    p.send(80, { flags: TCP_SYN, seq: 1000, srcPort: port });
    return p.take().find((r) => r.flags === (TCP_SYN | TCP_ACK))!;
  };
  const ack = (port: number, sa: TcpSegment) =>
    p.send(80, { flags: TCP_ACK, seq: 1001, ack: (sa.seq + 1) >>> 0, srcPort: port });
  const sa1 = syn(50001), sa2 = syn(50002);
  ack(50001, sa1);
  const sa3 = syn(50003);
  ack(50002, sa2); // the accept queue is now full (2)
  p.take();
  ack(50003, sa3);
  const out = p.take();
  assertEquals(out.filter((r) => r.flags & TCP_RST).length, 0, "no RST for a full accept queue");
  const s3 = p.engine.find(p.engineIp, 80, p.ip, 50003)!;
  assertEquals(s3.state, SYN_RECEIVED);
  // The application accepts one; the SYN-ACK retransmission draws the peer's ACK again.
  assert(p.engine.accept(l) !== null);
  let resent: TcpSegment | undefined;
  for (let t = 0; t < 3000 && resent === undefined; t++) {
    p.advance(1);
    resent = p.take().find((r) => r.flags === (TCP_SYN | TCP_ACK));
  }
  assert(resent !== undefined, "the SYN-ACK was not resent");
  ack(50003, resent!);
  assertEquals(s3.state, ESTABLISHED);
  assert(p.engine.accept(l) !== null);
  assertEquals(p.engine.accept(l), s3);
});

Deno.test("an orphan in FIN-WAIT-1 facing a zero window gives up after tcp_orphan_retries probes", () => {
  const c = passiveOpen({ minRtoMs: 200 });
  const e = c.p.engine;
  e.setOption(c.s, OPT_NODELAY, 1);
  // The peer closes its window; the engine has data queued, and the application closes.
  peerSend(c, 0, undefined, { window: 0 });
  e.send(c.s, new Uint8Array(5000), 0, 5000);
  e.close(c.s);
  assertEquals(c.s.state, FIN_WAIT_1);
  let probes = 0;
  for (let t = 0; t < 600_000 && e.connectionCount() > 0; t += 10) {
    c.p.advance(10);
    for (const r of c.p.take()) {
      if (r.flags & TCP_RST) continue;
      probes++;
      // The peer is alive and answers every probe, still with a zero window.
      peerSend(c, 0, undefined, { window: 0 });
    }
  }
  assertEquals(e.connectionCount(), 0, `still there after ${probes} answered probes`);
  // Linux gives an answered orphan up once the backoff reaches TCP_RTO_MAX (200 ms << 10 >
  // 120 s) with at least tcp_orphan_retries (8) probes out: the tenth.
  assert(probes >= 8 && probes <= 11, `${probes} probes`);
});

Deno.test("a zero window the peer keeps answering is probed on; a peer that stops answering is given up after tcp_retries2 probes", () => {
  const c = passiveOpen({ minRtoMs: 200 });
  const e = c.p.engine;
  peerSend(c, 0, undefined, { window: 0 });
  e.send(c.s, new Uint8Array(5000), 0, 5000);
  let probes = 0;
  const run = (ms: number, answer: boolean) => {
    for (let t = 0; t < ms && e.connectionCount() > 0; t += 100) {
      c.p.advance(100);
      for (const r of c.p.take()) {
        if (r.flags & TCP_RST) continue;
        probes++;
        if (answer) peerSend(c, 0, undefined, { window: 0 });
      }
    }
  };
  // An hour of answered probes (RFC 1122 4.2.2.17: the sender stays open indefinitely).
  run(3_600_000, true);
  assertEquals(e.connectionCount(), 1, `given up after ${probes} answered probes`);
  assert(probes > 15, `${probes} probes`);
  // The peer goes silent: tcp_retries2 (15) unanswered probes, then ETIMEDOUT.
  const before = probes;
  run(3_600_000, false);
  assertEquals(e.connectionCount(), 0, "a silent peer's zero window is given up");
  assertEquals(probes - before, 15);
});

Deno.test("a malformed option is ignored, not the segment (as Linux's tcp_parse_options)", () => {
  const c = passiveOpen({}, { ts: null });
  const seg = new TcpSegment();
  seg.srcPort = c.peerPort;
  seg.dstPort = c.port;
  seg.seq = c.seq;
  seg.ack = c.ack;
  seg.flags = TCP_ACK | TCP_PSH;
  seg.window = 65535;
  const buf = new Uint8Array(24 + 5);
  seg.emit(buf, 0);
  buf[12] = 6 << 4; // 24-byte header: one option word
  buf.set([2, 3, 1, 1], 20); // an MSS option of length 3: malformed
  buf.set([1, 2, 3, 4, 5], 24);
  c.p.sendRaw(buf);
  const got = new Uint8Array(8);
  assertEquals(c.p.engine.recv(c.s, got, 0, 8), 5, "the payload was dropped with the option");
  assertEquals(c.p.engine.counters[K.C_BAD_OPTIONS], 1);
});

Deno.test("PAWS holds when TS.Recent is 0 (a valid timestamp value)", () => {
  // The peer's timestamp clock is just below the wrap, and crosses it.
  const c = passiveOpen({}, { ts: 0xfffffff0 });
  peerSend(c, TCP_PSH, new Uint8Array(10), { ts: 0 });
  assertEquals(c.s.tsRecent, 0);
  const drops = c.p.engine.counters[K.C_DROP_PAWS];
  // A segment stamped before the wrap (older than TS.Recent) is an old duplicate.
  peerSend(c, TCP_PSH, new Uint8Array(10), { ts: 0xffffff00 });
  assertEquals(c.p.engine.counters[K.C_DROP_PAWS], drops + 1);
  assertEquals(c.p.engine.recvAvailable(c.s), 10);
});

Deno.test("SYN cookies made by one queue's engine are honoured by another's (shared keys)", () => {
  const keys = new Uint32Array(12).map((_, i) => 0x9e3779b9 * (i + 1));
  const la = new CaptureLink(), lb = new CaptureLink();
  const a = new TcpEngine(la, { localIp: 0x0a000001, keys, multiQueue: true, clock: () => 1000 });
  const b = new TcpEngine(lb, { localIp: 0x0a000001, keys, multiQueue: true, clock: () => 1000 });
  a.listen(80, 1);
  const lisB = b.listen(80, 1);
  const peer = 0x0a000063;
  const seg = new TcpSegment();
  const tx = new Uint8Array(100);
  const send = (e: TcpEngine, f: (s: TcpSegment) => void) => {
    seg.srcPort = 40000;
    seg.dstPort = 80;
    seg.window = 65535;
    seg.mss = -1;
    seg.wscale = -1;
    seg.sackPermitted = false;
    seg.hasTimestamp = false;
    f(seg);
    const n = seg.emit(tx, 0);
    tcpSetChecksum(tx, 0, n, peer, 0x0a000001);
    e.input(tx, 0, n, peer, 0x0a000001, 1000);
    e.poll(1000);
  };
  // Fill A's SYN queue, then a SYN that A answers with a cookie.
  send(a, (s) => {
    s.flags = TCP_SYN;
    s.seq = 1;
    s.srcPort = 39999;
  });
  send(a, (s) => {
    s.flags = TCP_SYN;
    s.seq = 5000;
    s.mss = 1460;
    s.wscale = 7;
    s.sackPermitted = true;
    s.hasTimestamp = true;
    s.tsVal = 777;
    s.tsEcr = 0;
  });
  assertEquals(a.counters[K.C_SYN_COOKIES_SENT], 1);
  const out = new TcpSegment();
  const last = la.out[la.out.length - 1];
  assertEquals(out.parse(last.bytes, 0, last.bytes.length), 0);
  // The peer's ACK lands on B's queue (the NIC moved the flow).
  send(b, (s) => {
    s.flags = TCP_ACK;
    s.seq = 5001;
    s.ack = (out.seq + 1) >>> 0;
    s.hasTimestamp = true;
    s.tsVal = 778;
    s.tsEcr = out.tsVal;
  });
  assertEquals(b.counters[K.C_SYN_COOKIES_OK], 1, "B refused A's cookie");
  const s = b.accept(lisB)!;
  assertEquals(s.state, ESTABLISHED);
  assertEquals(s.sndWscale, 7);
  // B's timestamps continue A's clock: the peer's PAWS would drop them otherwise.
  b.send(s, new Uint8Array(10), 0, 10);
  b.poll(1000);
  const data = new TcpSegment();
  const d = lb.out[lb.out.length - 1];
  data.parse(d.bytes, 0, d.bytes.length);
  assert(((data.tsVal - out.tsVal) | 0) >= 0, `TSval went back: ${out.tsVal} -> ${data.tsVal}`);
});

Deno.test("ICMP fragmentation needed lowers the MSS and resends smaller (RFC 1191, RFC 5927)", () => {
  const c = passiveOpen({}, { mss: 1460 });
  const e = c.p.engine;
  e.setOption(c.s, OPT_NODELAY, 1);
  assertEquals(c.s.sndMss, 1448);
  e.send(c.s, new Uint8Array(4 * 1448), 0, 4 * 1448);
  e.poll(c.p.now);
  const sent = c.p.take().filter((r) => r.payloadLen > 0);
  assertEquals(sent.length, 4);
  // A stale or forged message (sequence number outside the flight) is ignored.
  e.icmpFragNeeded(c.p.engineIp, c.port, c.p.ip, c.peerPort, (sent[0].seq - 5000) >>> 0, 1000);
  assertEquals(c.s.sndMss, 1448);
  // A router on the path takes 1000-byte packets only (DF set: the segments were dropped).
  e.icmpFragNeeded(c.p.engineIp, c.port, c.p.ip, c.peerPort, sent[0].seq, 1000);
  assertEquals(c.s.sndMss, 1000 - 40 - 12);
  assertEquals(e.counters[K.C_PMTU_UPDATES], 1);
  e.poll(c.p.now);
  const resent = c.p.take().filter((r) => r.payloadLen > 0);
  assert(resent.length > 0, "nothing resent after the path MTU fell");
  assertEquals(resent[0].seq, sent[0].seq);
  for (const r of resent) assert(r.payloadLen <= 948, `${r.payloadLen}-byte segment`);
  // A claimed MTU below the minimum is clamped (an attacker cannot shrink segments to nothing).
  e.icmpFragNeeded(c.p.engineIp, c.port, c.p.ip, c.peerPort, sent[0].seq, 68);
  assert(c.s.sndMss >= 552 - 40 - 12, `MSS ${c.s.sndMss}`);
});

Deno.test("PAWS lets a timestamp one tick older than TS.Recent pass, and drops two (Linux's TCP_PAWS_WINDOW)", () => {
  const c = passiveOpen({}, { ts: 1000 });
  peerSend(c, TCP_PSH, new Uint8Array(10));
  const recent = c.s.tsRecent;
  const drops = c.p.engine.counters[K.C_DROP_PAWS];
  peerSend(c, TCP_PSH, new Uint8Array(10), { ts: recent - 1 });
  assertEquals(c.p.engine.counters[K.C_DROP_PAWS], drops, "one tick older: accepted");
  assertEquals(c.p.engine.recvAvailable(c.s), 20);
  assertEquals(c.s.tsRecent, recent, "TS.Recent never moves back");
  peerSend(c, TCP_PSH, new Uint8Array(10), { ts: recent - 2 });
  assertEquals(c.p.engine.counters[K.C_DROP_PAWS], drops + 1, "two ticks older: dropped");
  assertEquals(c.p.engine.recvAvailable(c.s), 20);
});
