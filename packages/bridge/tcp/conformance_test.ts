import { assert, assertEquals } from "@std/assert";
import { ScriptPeer } from "./_test_util.ts";
import { TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, tcpSetChecksum } from "../wire/tcp.ts";
import {
  CLOSE_WAIT,
  CLOSED,
  CLOSING,
  ECONNREFUSED,
  ECONNRESET,
  ESTABLISHED,
  ETIMEDOUT,
  EV_RESET,
  FIN_WAIT_1,
  FIN_WAIT_2,
  LAST_ACK,
  OPT_KEEPALIVE,
  OPT_LINGER,
  OPT_NODELAY,
  SYN_RECEIVED,
  SYN_SENT,
  type TcpSocket,
  TIME_WAIT,
} from "./socket.ts";
import type { TcpEngineOptions } from "./engine.ts";
import * as K from "./counters.ts";

const PORT = 80;
const PEER_ISN = 1000;

interface Conn {
  p: ScriptPeer;
  s: TcpSocket;
  /** Next sequence number the peer sends, and the engine's next one. */
  seq: number;
  ack: number;
  ts: number;
  ecr: number;
}

/** A passive connection from the scripted peer (timestamps, SACK, window scale 7). */
function open(opts: TcpEngineOptions = {}, withTs = true): Conn {
  const p = new ScriptPeer(opts);
  const l = p.engine.listen(PORT, 4);
  p.send(PORT, {
    flags: TCP_SYN,
    seq: PEER_ISN,
    mss: 1460,
    wscale: 7,
    sackPermitted: true,
    ts: withTs ? [100, 0] : undefined,
  });
  const [sa] = p.take();
  assertEquals(sa.flags, TCP_SYN | TCP_ACK);
  assertEquals(sa.ack, PEER_ISN + 1);
  p.send(PORT, {
    flags: TCP_ACK,
    seq: PEER_ISN + 1,
    ack: sa.seq + 1,
    ts: withTs ? [101, sa.tsVal] : undefined,
  });
  const s = p.engine.accept(l)!;
  assert(s !== null);
  assertEquals(s.state, ESTABLISHED);
  assertEquals(p.take().length, 0);
  return { p, s, seq: PEER_ISN + 1, ack: (sa.seq + 1) >>> 0, ts: 102, ecr: sa.tsVal };
}

/** Sends from the peer on an open connection (ACK set, current numbers, timestamps). */
function psend(c: Conn, flags: number, data?: Uint8Array, extra: Partial<{ seq: number }> = {}) {
  c.p.send(PORT, {
    flags: flags | TCP_ACK,
    seq: extra.seq ?? c.seq,
    ack: c.ack,
    data,
    ts: [c.ts++, c.ecr],
  });
  if (extra.seq === undefined) c.seq += (data?.length ?? 0) + (flags & (TCP_FIN | TCP_SYN) ? 1 : 0);
}

Deno.test("conformance: RST for a closed port (RFC 9293 §3.10.7.1)", () => {
  const p = new ScriptPeer();
  p.send(81, { flags: TCP_SYN, seq: 5 });
  let [r] = p.take();
  assertEquals(r.flags, TCP_RST | TCP_ACK);
  assertEquals(r.seq, 0);
  assertEquals(r.ack, 6);
  p.send(81, { flags: TCP_ACK, seq: 5, ack: 77, data: new Uint8Array(10) });
  [r] = p.take();
  assertEquals(r.flags, TCP_RST);
  assertEquals(r.seq, 77);
  p.send(81, { flags: TCP_RST, seq: 5 });
  assertEquals(p.take().length, 0, "no RST for a RST");
  assertEquals(p.engine.counters[K.C_DROP_NO_SOCKET], 3);
});

Deno.test("window scaling: the offered window always fits the ring; right-edge ACKs count", () => {
  // A fixed 128 KiB receive ring: window scale 2, so windows are offered in units of 4 bytes.
  // The peer sends 999-byte segments (not a multiple of 4) and nobody reads.
  const c = open({ rcvBuf: 131072, autotune: false });
  const cap = 131072;
  let received = 0;
  let edge = 0;
  for (let i = 0; i < 200; i++) {
    const room = (edge === 0 ? cap : (edge - c.seq)) >>> 0;
    if (room === 0) break;
    const n = Math.min(999, room);
    psend(c, TCP_PSH, new Uint8Array(n).fill(i & 0xff));
    received += n;
    c.p.advance(50); // the delayed ACK
    for (const r of c.p.take()) {
      const offered = r.window << 2;
      assert(offered <= cap - received, `offered ${offered} with ${cap - received} free`);
      edge = (r.ack + offered) >>> 0;
    }
  }
  assertEquals(edge, c.seq >>> 0, "the peer filled the whole offered window");
  const outOfWindow = c.p.engine.counters[K.C_DROP_OUT_OF_WINDOW];
  psend(c, 0); // a pure ACK at exactly the right edge (window is zero now)
  assertEquals(c.p.engine.counters[K.C_DROP_OUT_OF_WINDOW], outOfWindow, "right-edge ACK taken");
  assertEquals(c.s.state, ESTABLISHED);
});

Deno.test("timers fire on time with a fractional clock (the bridge runs on performance.now())", () => {
  const c = open({ minRtoMs: 200 });
  c.p.now += 0.9; // from here on the clock has a fraction, as performance.now() does
  c.p.engine.poll(c.p.now);
  c.p.take();
  // The engine sends data; the peer never acknowledges it: the RTO must fire ~rto later.
  const data = new Uint8Array(100);
  assertEquals(c.p.engine.send(c.s, data, 0, 100), 100);
  c.p.engine.poll(c.p.now);
  const sentAt = c.p.now;
  assertEquals(c.p.take().filter((r) => r.payloadLen === 100).length, 1);
  let resentAt = -1;
  for (let t = sentAt; t < sentAt + 6000 && resentAt < 0; t += 0.5) {
    c.p.now = t;
    c.p.engine.poll(t);
    if (c.p.take().some((r) => r.payloadLen === 100)) resentAt = t;
  }
  const rto = c.s.rto / 2; // it doubled when it fired
  assert(resentAt > 0, "the retransmission timer never fired");
  assert(resentAt - sentAt < rto + 2, `retransmitted ${resentAt - sentAt} ms after, rto ${rto}`);
});

Deno.test("tail loss probe: the last segment is resent after 2 SRTT, before the RTO", () => {
  const c = open({ minRtoMs: 1000, initialRtoMs: 1000 });
  c.s.srtt = 20; // as measured on an established path
  const data = new Uint8Array(3 * 1000);
  assertEquals(c.p.engine.send(c.s, data, 0, data.length), data.length);
  c.p.engine.poll(c.p.now);
  const sent = c.p.take().filter((r) => r.payloadLen > 0);
  assert(sent.length >= 2, `segments sent: ${sent.length}`);
  const first = sent[0];
  // The peer ACKs the first segment only; the tail is lost.
  psend(c, 0, undefined);
  c.p.send(PORT, {
    flags: TCP_ACK,
    seq: c.seq,
    ack: (first.seq + first.payloadLen) >>> 0,
    ts: [c.ts++, c.ecr],
  });
  c.p.take();
  let probeAt = -1;
  for (let t = 0; t < 900 && probeAt < 0; t++) {
    c.p.advance(1);
    if (c.p.take().some((r) => r.payloadLen > 0)) probeAt = t + 1;
  }
  // 2 SRTT plus the 200 ms delayed-ACK allowance (one segment out), well before the RTO.
  assert(probeAt > 0 && probeAt < 400, `probe after ${probeAt} ms (RTO 1000 ms)`);
  assertEquals(c.p.engine.counters[K.C_TLP_PROBES], 1);
});

Deno.test("early retransmit: two segments out, the second SACKed: the first is resent at once", () => {
  const c = open();
  c.p.engine.setOption(c.s, OPT_NODELAY, 1);
  const data = new Uint8Array(2 * 1000);
  assertEquals(c.p.engine.send(c.s, data, 0, data.length), data.length);
  c.p.engine.poll(c.p.now);
  const sent = c.p.take().filter((r) => r.payloadLen > 0);
  assertEquals(sent.length, 2);
  c.p.send(PORT, {
    flags: TCP_ACK,
    seq: c.seq,
    ack: sent[0].seq,
    sack: [sent[1].seq, (sent[1].seq + sent[1].payloadLen) >>> 0],
    ts: [c.ts++, c.ecr],
  });
  const resent = c.p.take().filter((r) => r.payloadLen > 0);
  assertEquals(
    resent.length,
    1,
    `fast retransmit without three duplicate ACKs: ${
      JSON.stringify(resent.map((r) => [r.seq, r.payloadLen]))
    } sent ${JSON.stringify(sent.map((r) => [r.seq, r.payloadLen]))}`,
  );
  assertEquals(resent[0].seq, sent[0].seq);
});

Deno.test("multi-queue engine: unknown-connection ACK segments are dropped, SYNs answered", () => {
  // With several queues, a connection may live in another queue's engine: no RST for it.
  const p = new ScriptPeer({ multiQueue: true });
  p.engine.listen(PORT, 4);
  p.send(PORT, { flags: TCP_ACK, seq: 5, ack: 77, data: new Uint8Array(10) });
  p.send(81, { flags: TCP_ACK | TCP_FIN, seq: 5, ack: 77 });
  assertEquals(p.take().length, 0, "no RST for segments of connections held elsewhere");
  assertEquals(p.engine.counters[K.C_DROP_NO_SOCKET], 2);
  p.send(81, { flags: TCP_SYN, seq: 5 });
  const [r] = p.take();
  assertEquals(r.flags, TCP_RST | TCP_ACK, "a SYN to a closed port is still refused");
});

Deno.test("conformance: SYN-ACK carries MSS, SACK-permitted, timestamps, window scale", () => {
  const p = new ScriptPeer();
  p.engine.listen(PORT, 4);
  p.send(PORT, { flags: TCP_SYN, seq: 9, mss: 1460, wscale: 7, sackPermitted: true, ts: [77, 0] });
  const [sa] = p.take();
  assertEquals(sa.flags, TCP_SYN | TCP_ACK);
  assertEquals(sa.mss, 1460);
  assert(sa.sackPermitted);
  assert(sa.hasTimestamp);
  assertEquals(sa.tsEcr, 77);
  assertEquals(sa.wscale, 7); // for the 4 MiB a receive ring may grow to (autotune.ts)
  assertEquals(sa.ack, 10);
  // Without options in the SYN, none in the SYN-ACK but MSS.
  p.send(PORT, { flags: TCP_SYN, seq: 9, srcPort: 40001 });
  const [sb] = p.take();
  assertEquals(sb.mss, 1460);
  assert(!sb.sackPermitted && !sb.hasTimestamp);
  assertEquals(sb.wscale, -1);
});

Deno.test("conformance: in-window RST and SYN get a challenge ACK (RFC 5961)", () => {
  const c = open();
  psend(c, TCP_RST, undefined, { seq: c.seq + 100 });
  let out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].flags, TCP_ACK);
  assertEquals(out[0].ack, c.seq);
  assertEquals(c.s.state, ESTABLISHED);
  c.p.advance(500); // one challenge ACK per 500 ms per socket (Linux tcp_invalid_ratelimit)
  c.p.send(PORT, { flags: TCP_SYN, seq: c.seq + 5, ts: [c.ts++, 0] });
  out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].flags, TCP_ACK);
  assertEquals(out[0].ack, c.seq);
  assertEquals(c.s.state, ESTABLISHED);
  assertEquals(c.p.engine.counters[K.C_CHALLENGE_ACKS], 2);
  // Out-of-window RST: silently dropped.
  psend(c, TCP_RST, undefined, { seq: c.seq + 50_000_000 });
  assertEquals(c.p.take().length, 0);
  // ACK for data never sent: challenge ACK, dropped.
  c.p.advance(500);
  c.p.send(PORT, { flags: TCP_ACK, seq: c.seq, ack: c.ack + 1000, ts: [c.ts++, c.ecr] });
  assertEquals(c.p.take()[0].flags, TCP_ACK);
  // Exact RST: reset.
  let events = 0;
  c.s.onEvent = (_s, ev) => events |= ev;
  psend(c, TCP_RST);
  c.p.advance(1);
  assertEquals(c.s.state, CLOSED);
  assertEquals(c.s.error, ECONNRESET);
  assert(events & EV_RESET);
  assertEquals(c.p.engine.connectionCount(), 0);
});

Deno.test("conformance: out-of-window data is dropped with an ACK", () => {
  const c = open();
  psend(c, TCP_PSH, new Uint8Array(100).fill(1), { seq: c.seq + 10_000_000 });
  let out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].ack, c.seq);
  assertEquals(c.p.engine.recvAvailable(c.s), 0);
  // An old duplicate (already received) is acknowledged too.
  psend(c, TCP_PSH, new Uint8Array(10).fill(2));
  c.p.advance(50);
  c.p.take();
  psend(c, TCP_PSH, new Uint8Array(10).fill(2), { seq: c.seq - 10 });
  out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].ack, c.seq);
  assertEquals(c.p.engine.recvAvailable(c.s), 10);
  assert(c.p.engine.counters[K.C_DROP_OUT_OF_WINDOW] >= 2);
});

Deno.test("conformance: PAWS rejects an old timestamp (RFC 7323 §5)", () => {
  const c = open();
  c.p.send(PORT, {
    flags: TCP_ACK | TCP_PSH,
    seq: c.seq,
    ack: c.ack,
    data: new Uint8Array(20),
    ts: [50, c.ecr],
  });
  const out = c.p.take();
  assertEquals(out.length, 1, "ACK for the rejected segment");
  assertEquals(out[0].ack, c.seq);
  assertEquals(c.p.engine.counters[K.C_DROP_PAWS], 1);
  assertEquals(c.p.engine.recvAvailable(c.s), 0);
  psend(c, TCP_PSH, new Uint8Array(20));
  assertEquals(c.p.engine.recvAvailable(c.s), 20);
});

Deno.test("conformance: zero window, persist probes, then window update", () => {
  const c = open();
  c.p.send(PORT, { flags: TCP_ACK, seq: c.seq, ack: c.ack, window: 0, ts: [c.ts++, c.ecr] });
  const e = c.p.engine;
  assertEquals(e.send(c.s, new Uint8Array(1000).fill(7), 0, 1000), 1000);
  c.p.advance(1);
  assertEquals(c.p.take().filter((x) => x.payloadLen > 0).length, 0, "nothing into a zero window");
  c.p.advance(250);
  let out = c.p.take();
  assertEquals(out.length, 1, "one probe after an RTO");
  assertEquals(out[0].seq, (c.ack - 1) >>> 0);
  assertEquals(out[0].payloadLen, 0);
  c.p.advance(450);
  out = c.p.take();
  assertEquals(out.length, 1, "second probe, backed off");
  assertEquals(e.counters[K.C_WINDOW_PROBES], 2);
  // Window opens (100 << 7 bytes).
  c.p.send(PORT, { flags: TCP_ACK, seq: c.seq, ack: c.ack, window: 100, ts: [c.ts++, c.ecr] });
  out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].payloadLen, 1000);
  assertEquals(out[0].seq, c.ack);
  assertEquals(out[0].data[999], 7);
});

Deno.test("conformance: FIN in ESTABLISHED, then close: CLOSE-WAIT, LAST-ACK, CLOSED", () => {
  const c = open();
  psend(c, TCP_FIN);
  assertEquals(c.s.state, CLOSE_WAIT);
  const [a] = c.p.take();
  assertEquals(a.ack, c.seq);
  const buf = new Uint8Array(10);
  assertEquals(c.p.engine.recv(c.s, buf, 0, 10), 0, "end of stream");
  c.p.engine.close(c.s);
  assertEquals(c.s.state, LAST_ACK);
  c.p.advance(1);
  const [f] = c.p.take();
  assertEquals(f.flags & TCP_FIN, TCP_FIN);
  c.ack = (f.seq + 1) >>> 0;
  psend(c, 0);
  assertEquals(c.s.state, CLOSED);
  assertEquals(c.p.engine.connectionCount(), 0);
});

Deno.test("conformance: close with queued data sends it before FIN", () => {
  const c = open();
  const e = c.p.engine;
  e.send(c.s, new Uint8Array(3000).fill(9), 0, 3000);
  e.close(c.s);
  assertEquals(c.s.state, FIN_WAIT_1);
  c.p.advance(1);
  const out = c.p.take();
  const bytes = out.reduce((n, x) => n + x.payloadLen, 0);
  assertEquals(bytes, 3000);
  assertEquals(out[out.length - 1].flags & TCP_FIN, TCP_FIN);
  for (let i = 0; i + 1 < out.length; i++) assertEquals(out[i].flags & TCP_FIN, 0);
});

Deno.test("conformance: simultaneous close via FIN-WAIT-1 and CLOSING to TIME-WAIT", () => {
  const c = open({ mslMs: 100 });
  c.p.engine.shutdown(c.s);
  c.p.advance(1);
  const [f] = c.p.take();
  assertEquals(f.flags & TCP_FIN, TCP_FIN);
  assertEquals(c.s.state, FIN_WAIT_1);
  psend(c, TCP_FIN); // our FIN crosses theirs, not acknowledging it
  assertEquals(c.s.state, CLOSING);
  c.ack = (f.seq + 1) >>> 0;
  psend(c, 0);
  assertEquals(c.s.state, TIME_WAIT);
  // A retransmitted FIN in TIME-WAIT is acknowledged.
  c.p.take();
  psend(c, TCP_FIN, undefined, { seq: c.seq - 1 });
  assertEquals(c.p.take()[0].ack, c.seq);
  // 2 MSL later the connection is gone.
  c.p.advance(150);
  assertEquals(c.s.state, TIME_WAIT);
  c.p.advance(60);
  assertEquals(c.s.state, CLOSED);
  assertEquals(c.p.engine.connectionCount(), 0);
});

Deno.test("conformance: FIN-WAIT-1 → FIN-WAIT-2 → TIME-WAIT, and FIN+ACK at once", () => {
  let c = open();
  c.p.engine.shutdown(c.s);
  c.p.advance(1);
  let [f] = c.p.take();
  c.ack = (f.seq + 1) >>> 0;
  psend(c, 0);
  assertEquals(c.s.state, FIN_WAIT_2);
  psend(c, TCP_FIN);
  assertEquals(c.s.state, TIME_WAIT);
  assertEquals(c.p.take()[0].ack, c.seq);

  c = open();
  c.p.engine.shutdown(c.s);
  c.p.advance(1);
  [f] = c.p.take();
  c.ack = (f.seq + 1) >>> 0;
  psend(c, TCP_FIN);
  assertEquals(c.s.state, TIME_WAIT);
});

Deno.test("conformance: RST in each synchronized state", () => {
  const cases: [string, (c: Conn) => void, number][] = [
    ["ESTABLISHED", () => {}, ECONNRESET],
    ["CLOSE-WAIT", (c) => psend(c, TCP_FIN), ECONNRESET],
    ["FIN-WAIT-1", (c) => {
      c.p.engine.shutdown(c.s);
      c.p.advance(1);
    }, ECONNRESET],
    ["FIN-WAIT-2", (c) => {
      c.p.engine.shutdown(c.s);
      c.p.advance(1);
      const [f] = c.p.take();
      c.ack = (f.seq + 1) >>> 0;
      psend(c, 0);
      assertEquals(c.s.state, FIN_WAIT_2);
    }, ECONNRESET],
    ["LAST-ACK", (c) => {
      psend(c, TCP_FIN);
      c.p.engine.shutdown(c.s);
      c.p.advance(1);
      assertEquals(c.s.state, LAST_ACK);
    }, 0],
    ["CLOSING", (c) => {
      c.p.engine.shutdown(c.s);
      c.p.advance(1);
      psend(c, TCP_FIN);
      assertEquals(c.s.state, CLOSING);
    }, 0],
    ["TIME-WAIT", (c) => {
      c.p.engine.shutdown(c.s);
      c.p.advance(1);
      const [f] = c.p.take();
      c.ack = (f.seq + 1) >>> 0;
      psend(c, TCP_FIN);
      assertEquals(c.s.state, TIME_WAIT);
    }, 0],
  ];
  for (const [name, setup, err] of cases) {
    const c = open();
    setup(c);
    c.p.take();
    psend(c, TCP_RST);
    assertEquals(c.s.state, CLOSED, name);
    assertEquals(c.s.error, err, name);
    assertEquals(c.p.engine.connectionCount(), 0, name);
    assertEquals(c.p.take().length, 0, `${name}: no reply to an accepted RST`);
  }
});

Deno.test("conformance: RST in SYN-RECEIVED returns to LISTEN", () => {
  const p = new ScriptPeer();
  const l = p.engine.listen(PORT, 4);
  p.send(PORT, { flags: TCP_SYN, seq: 500 });
  assertEquals(p.take()[0].flags, TCP_SYN | TCP_ACK);
  assertEquals(p.engine.connectionCount(), 1);
  assertEquals(l.synQueueLen, 1);
  p.send(PORT, { flags: TCP_RST, seq: 501 });
  assertEquals(p.engine.connectionCount(), 0);
  assertEquals(l.synQueueLen, 0);
  // A bad ACK in SYN-RECEIVED gets a RST.
  p.send(PORT, { flags: TCP_SYN, seq: 700 });
  const [sb] = p.take();
  p.send(PORT, { flags: TCP_ACK, seq: 701, ack: sb.seq + 5 });
  const [r] = p.take();
  assertEquals(r.flags, TCP_RST);
  assertEquals(r.seq, sb.seq + 5);
  // A retransmitted SYN gets the SYN-ACK again.
  p.send(PORT, { flags: TCP_SYN, seq: 700 });
  const [sc] = p.take();
  assertEquals(sc.flags, TCP_SYN | TCP_ACK);
  assertEquals(sc.seq, sb.seq);
});

Deno.test("conformance: SYN-SENT: refused, ignored RST, bad ACK, SYN retransmission, timeout", () => {
  const p = new ScriptPeer({ synRetries: 2 });
  const e = p.engine;
  let s = e.connect(p.ip, 5555);
  let [syn] = p.take();
  assertEquals(syn.flags, TCP_SYN);
  assertEquals(s.state, SYN_SENT);
  const port = syn.srcPort;
  // Bad ACK: RST with seq = SEG.ACK.
  p.send(port, { flags: TCP_ACK, seq: 1, ack: syn.seq + 1000, srcPort: 5555 });
  const [r] = p.take();
  assertEquals(r.flags, TCP_RST);
  assertEquals(r.seq, syn.seq + 1000);
  // RST without ACK: ignored.
  p.send(port, { flags: TCP_RST, seq: 1, srcPort: 5555 });
  assertEquals(s.state, SYN_SENT);
  // RST with an acceptable ACK: refused.
  p.send(port, { flags: TCP_RST | TCP_ACK, seq: 0, ack: syn.seq + 1, srcPort: 5555 });
  assertEquals(s.state, CLOSED);
  assertEquals(s.error, ECONNREFUSED);
  // No answer at all: SYN retransmitted at 1 s, then 2 s later, then the connect fails.
  s = e.connect(p.ip, 5555);
  [syn] = p.take();
  p.advance(999);
  assertEquals(p.take().length, 0);
  p.advance(1);
  assertEquals(p.take()[0].flags, TCP_SYN);
  p.advance(2000);
  assertEquals(p.take()[0].seq, syn.seq);
  p.advance(4000);
  assertEquals(s.state, CLOSED);
  assertEquals(s.error, ETIMEDOUT);
});

Deno.test("conformance: SYN cookies when the SYN queue is full", () => {
  const p = new ScriptPeer();
  const e = p.engine;
  const l = e.listen(PORT, 1);
  p.send(PORT, { flags: TCP_SYN, seq: 100, srcPort: 40000, mss: 1460, ts: [5, 0], wscale: 2 });
  p.take();
  assertEquals(l.synQueueLen, 1);
  p.send(PORT, {
    flags: TCP_SYN,
    seq: 200,
    srcPort: 40001,
    mss: 1460,
    ts: [6, 0],
    wscale: 5,
    sackPermitted: true,
  });
  const [ck] = p.take();
  assertEquals(ck.flags, TCP_SYN | TCP_ACK);
  assertEquals(e.counters[K.C_SYN_COOKIES_SENT], 1);
  assertEquals(e.connectionCount(), 1, "no state for the cookie");
  // A forged cookie is refused.
  p.send(PORT, { flags: TCP_ACK, seq: 201, ack: ck.seq + 2, srcPort: 40001, ts: [7, ck.tsVal] });
  assertEquals(p.take()[0].flags, TCP_RST);
  assertEquals(e.counters[K.C_SYN_COOKIES_BAD], 1);
  // The right ACK creates the connection, with the options the cookie remembered.
  p.send(PORT, {
    flags: TCP_ACK | TCP_PSH,
    seq: 201,
    ack: ck.seq + 1,
    srcPort: 40001,
    ts: [8, ck.tsVal],
    data: new Uint8Array([1, 2, 3]),
  });
  assertEquals(e.counters[K.C_SYN_COOKIES_OK], 1);
  const s = e.accept(l)!;
  assert(s !== null);
  assertEquals(s.remotePort, 40001);
  assertEquals(s.state, ESTABLISHED);
  assertEquals(s.sndWscale, 5);
  assert(s.sackOn && s.tsOn);
  assertEquals(s.sndMss, 1460 - 12);
  assertEquals(e.recvAvailable(s), 3);
});

Deno.test("conformance: close with unread data sends RST; SO_LINGER 0 aborts with RST", () => {
  let c = open();
  psend(c, TCP_PSH, new Uint8Array(10));
  c.p.take();
  c.p.engine.close(c.s);
  let out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].flags & TCP_RST, TCP_RST);
  assertEquals(out[0].seq, c.ack);
  assertEquals(c.s.state, CLOSED);

  c = open();
  c.p.engine.setOption(c.s, OPT_LINGER, 0);
  c.p.engine.send(c.s, new Uint8Array(100), 0, 100);
  c.p.engine.close(c.s);
  out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].flags & TCP_RST, TCP_RST);
  assertEquals(c.s.state, CLOSED);
  assertEquals(c.p.engine.counters[K.C_RST_OUT], 1);
});

Deno.test("conformance: data arriving after close() resets", () => {
  const c = open();
  c.p.engine.close(c.s);
  c.p.advance(1);
  const [f] = c.p.take();
  assertEquals(f.flags & TCP_FIN, TCP_FIN);
  psend(c, TCP_PSH, new Uint8Array(5));
  const out = c.p.take();
  assertEquals(out[out.length - 1].flags & TCP_RST, TCP_RST);
  assertEquals(c.s.state, CLOSED);
});

Deno.test("conformance: out-of-order data is SACKed and reassembled in place", () => {
  const c = open();
  const e = c.p.engine;
  const a = new Uint8Array(1000).fill(1);
  const b = new Uint8Array(1000).fill(2);
  const d = new Uint8Array(1000).fill(3);
  psend(c, 0, b, { seq: c.seq + 1000 });
  let [ack] = c.p.take();
  assertEquals(ack.ack, c.seq, "duplicate ACK");
  assertEquals(ack.sackCount, 1);
  assertEquals([ack.sack[0], ack.sack[1]], [c.seq + 1000, c.seq + 2000]);
  psend(c, 0, d, { seq: c.seq + 3000 }); // a second hole
  [ack] = c.p.take();
  assertEquals(ack.sackCount, 2);
  assertEquals(ack.sack[0], c.seq + 3000, "most recent block first");
  psend(c, 0, a, { seq: c.seq });
  [ack] = c.p.take();
  assertEquals(ack.ack, c.seq + 2000);
  assertEquals(ack.sackCount, 1);
  assertEquals(e.recvAvailable(c.s), 2000);
  const buf = new Uint8Array(3000);
  assertEquals(e.recv(c.s, buf, 0, 3000), 2000);
  assertEquals(buf[999], 1);
  assertEquals(buf[1000], 2);
  assert(c.s.ofoBytes >= 2000);
});

Deno.test("conformance: delayed ACK (40 ms) and an ACK every second full segment", () => {
  const c = open();
  // The first segments of a connection are ACKed at once (quick ACKs, see ack_policy_test).
  for (let i = 0; i < 16; i++) psend(c, 0, new Uint8Array(100));
  assertEquals(c.p.take().length, 16);
  psend(c, 0, new Uint8Array(500));
  assertEquals(c.p.take().length, 0, "first small segment: ACK delayed");
  c.p.advance(39);
  assertEquals(c.p.take().length, 0);
  c.p.advance(1);
  assertEquals(c.p.take().length, 1);
  psend(c, 0, new Uint8Array(1448));
  assertEquals(c.p.take().length, 0);
  psend(c, 0, new Uint8Array(1448));
  const out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].ack, c.seq);
});

Deno.test("conformance: Nagle holds small segments; TCP_NODELAY sends them", () => {
  const c = open();
  const e = c.p.engine;
  e.send(c.s, new Uint8Array(10), 0, 10);
  c.p.advance(1);
  e.send(c.s, new Uint8Array(10), 0, 10);
  c.p.advance(1);
  let out = c.p.take();
  assertEquals(out.length, 1, "second small write waits for the ACK");
  c.ack += 10;
  psend(c, 0);
  out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].payloadLen, 10);
  c.ack += 10;
  psend(c, 0);
  e.setOption(c.s, OPT_NODELAY, 1);
  e.send(c.s, new Uint8Array(10), 0, 10);
  c.p.advance(1);
  e.send(c.s, new Uint8Array(10), 0, 10);
  c.p.advance(1);
  assertEquals(c.p.take().length, 2);
});

Deno.test("conformance: retransmission timeout backs off and finally gives up", () => {
  const c = open({ maxRetries: 3 });
  const e = c.p.engine;
  e.send(c.s, new Uint8Array(100), 0, 100);
  c.p.advance(1);
  const first = c.p.take();
  assertEquals(first.length, 1);
  const times: number[] = [];
  for (let i = 0; i < 3000 && c.s.state !== CLOSED; i++) {
    c.p.advance(1);
    for (const x of c.p.take()) {
      assertEquals(x.seq, first[0].seq);
      times.push(c.p.now);
    }
  }
  assertEquals(times.length, 3);
  const d1 = times[1] - times[0], d2 = times[2] - times[1];
  assert(d2 >= 2 * d1 - 2 && d2 <= 2 * d1 + 2, `backoff ${d1} ${d2}`);
  assertEquals(c.s.state, CLOSED);
  assertEquals(c.s.error, ETIMEDOUT);
  assertEquals(e.counters[K.C_RTO_EVENTS], 3);
});

Deno.test("conformance: keepalive probes an idle peer and drops it", () => {
  const c = open();
  const e = c.p.engine;
  e.setOption(c.s, 3, 1000); // OPT_KEEPIDLE
  e.setOption(c.s, 4, 100); // OPT_KEEPINTVL
  e.setOption(c.s, 5, 3); // OPT_KEEPCNT
  e.setOption(c.s, OPT_KEEPALIVE, 1);
  c.p.advance(999);
  assertEquals(c.p.take().length, 0);
  c.p.advance(2);
  let [k] = c.p.take();
  assertEquals(k.seq, (c.ack - 1) >>> 0, "probe with an old sequence number");
  // Answered: the connection lives on.
  psend(c, 0);
  c.p.advance(1200);
  [k] = c.p.take();
  assert(k !== undefined);
  c.p.advance(400);
  assertEquals(c.s.state, CLOSED);
  assertEquals(c.s.error, ETIMEDOUT);
  assertEquals(e.counters[K.C_KEEPALIVE_PROBES], 4);
});

Deno.test("conformance: hostile segments never throw", () => {
  const c = open();
  const e = c.p.engine;
  let x = 99;
  const rnd = () => (x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8;
  const buf = new Uint8Array(200);
  for (let k = 0; k < 20000; k++) {
    const len = 20 + (rnd() % 150);
    for (let i = 0; i < len; i++) buf[i] = rnd();
    buf[0] = c.p.port >> 8;
    buf[1] = c.p.port & 255;
    buf[2] = 0;
    buf[3] = k & 1 ? PORT : 81;
    if (k % 3 === 0) {
      const seq = (c.seq + (rnd() % 70000) - 1000) >>> 0;
      buf[4] = seq >>> 24;
      buf[5] = seq >>> 16;
      buf[6] = seq >>> 8;
      buf[7] = seq;
      buf[12] = (5 + (k % 10)) << 4;
    }
    if (k % 7 !== 0) tcpSetChecksum(buf, 0, len, c.p.ip, c.p.engineIp);
    e.input(buf, 0, len, c.p.ip, c.p.engineIp, c.p.now);
    if (k % 50 === 0) c.p.advance(1);
    c.p.take();
  }
  e.input(buf, 190, 20, 1, 2, 0); // runs past the buffer
  assert(e.counters[K.C_DROP_CHECKSUM] > 0);
});

Deno.test("conformance: SYN-RECEIVED child counts against the backlog; accept queue bound", () => {
  const p = new ScriptPeer({ synCookies: false });
  const l = p.engine.listen(PORT, 1);
  p.send(PORT, { flags: TCP_SYN, seq: 1, srcPort: 50000 });
  p.send(PORT, { flags: TCP_SYN, seq: 1, srcPort: 50001 });
  assertEquals(p.take().length, 1);
  assertEquals(p.engine.counters[K.C_DROP_BACKLOG], 1);
  const s = p.engine.find(p.engineIp, PORT, p.ip, 50000)!;
  assertEquals(s.state, SYN_RECEIVED);
  assertEquals(l.synQueueLen, 1);
});
