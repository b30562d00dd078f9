/**
 * The receive fast path (input.ts `predicted`, `copyVerified`): the next in-order data of an
 * established connection is copied into the receive ring and summed in one pass, and only a
 * segment whose checksum then verifies changes anything. Every other segment is verified first.
 */
import { assert, assertEquals } from "@std/assert";
import { passiveOpen, peerSend as sendFromPeer, type ScriptConn, transfer } from "./_test_util.ts";
import * as K from "./counters.ts";
import { CLOSE_WAIT, ESTABLISHED } from "./socket.ts";
import { TCP_FIN, TCP_PSH } from "../wire/tcp.ts";
import { MemStream } from "./_mem_stream.ts";
import { DmaLink } from "../dma.ts";
import { DmaRxStream } from "../dma_streams.ts";

/** Header length of the scripted peer's segments: 20 bytes and the timestamp option's 12. */
const HDR = 32;

const bytes = (n: number, from: number) =>
  Uint8Array.from({ length: n }, (_, i) => ((from + i) * 7 + 3) & 255);

/** Everything a dropped segment must leave as it was. */
function snapshot(c: ScriptConn) {
  const s = c.s;
  return {
    state: s.state,
    rcvNxt: s.rcvNxt,
    rcvAdvEdge: s.rcvAdvEdge,
    sndUna: s.sndUna,
    sndWnd: s.sndWnd,
    sndWl1: s.sndWl1,
    tsRecent: s.tsRecent,
    readable: c.p.engine.recvAvailable(s),
    ofoRanges: s.ofo.count,
    dupAcks: s.dupAcks,
  };
}

/** An open connection with 1000 bytes of the engine's in flight (an ACK can advance). */
function openWithFlight(opts = {}): ScriptConn {
  const c = passiveOpen({ autotune: false, rcvBuf: 16384, ...opts });
  assertEquals(c.p.engine.send(c.s, bytes(1000, 99), 0, 1000), 1000);
  c.p.engine.poll(c.p.now);
  const out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].payloadLen, 1000);
  return c;
}

function read(c: ScriptConn): Uint8Array {
  const buf = new Uint8Array(65536);
  const n = c.p.engine.recv(c.s, buf, 0, buf.length);
  return buf.slice(0, Math.max(0, n));
}

Deno.test("fast path: a corrupted in-order data segment changes nothing and is counted", () => {
  const c = openWithFlight();
  const e = c.p.engine;
  const seq = c.seq;
  // Payload bytes (first, an odd one, the last), the ACK field, the timestamp option, the
  // window field: each a fast-path candidate whose sum fails. 1461 bytes: an odd length.
  for (const at of [HDR, HDR + 731, HDR + 1460, 8, 11, 24, 14]) {
    const before = snapshot(c);
    const drops = e.counters[K.C_DROP_CHECKSUM];
    const fast = e.counters[K.C_RCV_FAST_PATH];
    c.seq = seq;
    peerSend(c, bytes(1461, 0), { ack: (c.ack + 1000) >>> 0, window: 1000, corrupt: at });
    assertEquals(snapshot(c), before, `corrupt byte ${at}`);
    assertEquals(e.counters[K.C_DROP_CHECKSUM], drops + 1, `corrupt byte ${at}`);
    assertEquals(e.counters[K.C_RCV_FAST_PATH], fast);
    assertEquals(c.p.take().length, 0, "no ACK answers a corrupted segment");
  }
  assertEquals(read(c).length, 0);
  // The same segment, intact: taken by the fast path, delivered byte-exact, its ACK processed.
  c.seq = seq;
  peerSend(c, bytes(1461, 0), { ack: (c.ack + 1000) >>> 0, window: 1000 });
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 1);
  assertEquals(c.s.rcvNxt, (seq + 1461) >>> 0);
  assertEquals(c.s.sndUna, (c.ack + 1000) >>> 0);
  assertEquals(c.s.sndWnd, 1000 << c.s.sndWscale);
  assertEquals(read(c), bytes(1461, 0));
  // Again (a retransmission): not delivered twice.
  peerSend(c, bytes(1461, 0), { seq, ack: (c.ack + 1000) >>> 0, window: 1000 });
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 1);
  assertEquals(c.s.rcvNxt, (seq + 1461) >>> 0);
  assertEquals(e.recvAvailable(c.s), 0);
});

Deno.test("fast path: a stream of segments of odd lengths crosses the ring's wrap byte-exact", () => {
  // 4 KiB ring read after every segment: the producer index wraps at odd offsets, where the
  // second part of a summed copy starts on an odd byte.
  const c = passiveOpen({ autotune: false, rcvBuf: 4096 });
  const e = c.p.engine;
  let sent = 0, got = 0, bad = 0;
  for (let i = 0; i < 200; i++) {
    const len = 1 + ((i * 389) % 1460);
    peerSend(c, bytes(len, sent), {});
    sent += len;
    const r = read(c);
    for (let k = 0; k < r.length; k++) if (r[k] !== bytes(1, got + k)[0]) bad++;
    got += r.length;
    c.p.advance(1); // the reopened window goes out
    c.p.take();
  }
  assertEquals(got, sent);
  assertEquals(bad, 0);
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 200);
  assertEquals(e.counters[K.C_DROP_CHECKSUM], 0);
});

Deno.test("out of order: held bytes are not overwritten by a corrupted segment that overlaps them", () => {
  const c = openWithFlight();
  const e = c.p.engine;
  const seq = c.seq;
  const data = bytes(3000, 0);
  // 1000..2000 arrives first and is held past the producer index.
  peerSend(c, data.subarray(1000, 2000), { seq: (seq + 1000) >>> 0 });
  assertEquals(c.s.ofo.count, 1);
  c.p.take();
  // 0..1460, its bit flipped at 1200 (inside the held range): dropped, verified first.
  const before = snapshot(c);
  peerSend(c, data.subarray(0, 1460), { seq, ack: (c.ack + 1000) >>> 0, corrupt: HDR + 1200 });
  assertEquals(snapshot(c), before);
  assertEquals(e.counters[K.C_DROP_CHECKSUM], 1);
  // 0..1000 fills the hole: slow path (bytes held), 2000 bytes published, the held ones intact.
  peerSend(c, data.subarray(0, 1000), { seq, ack: (c.ack + 1000) >>> 0 });
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 0);
  assertEquals(c.s.rcvNxt, (seq + 2000) >>> 0);
  assertEquals(c.s.sndUna, (c.ack + 1000) >>> 0);
  assertEquals(read(c), data.subarray(0, 2000));
  // In order again with nothing held: the fast path.
  peerSend(c, data.subarray(2000, 3000), { seq: (seq + 2000) >>> 0 });
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 1);
  assertEquals(read(c), data.subarray(2000, 3000));
});

Deno.test("FIN with data: verified first; corrupted it changes nothing, intact it closes", () => {
  const c = openWithFlight();
  const e = c.p.engine;
  const seq = c.seq;
  const before = snapshot(c);
  peerSend(c, bytes(700, 5), { ack: (c.ack + 1000) >>> 0, corrupt: HDR + 3 }, TCP_FIN);
  assertEquals(snapshot(c), before);
  assertEquals(c.s.state, ESTABLISHED);
  assertEquals(e.counters[K.C_DROP_CHECKSUM], 1);
  c.seq = seq;
  peerSend(c, bytes(700, 5), { ack: (c.ack + 1000) >>> 0 }, TCP_FIN);
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 0);
  assertEquals(c.s.state, CLOSE_WAIT);
  assertEquals(c.s.rcvNxt, (seq + 701) >>> 0);
  assertEquals(read(c), bytes(700, 5));
});

Deno.test("a segment dropped after its fast-path copy (PAWS) leaves nothing for the next one", () => {
  const c = openWithFlight();
  const e = c.p.engine;
  const seq = c.seq;
  // An old timestamp: copied and verified, then dropped by PAWS; nothing published.
  peerSend(c, bytes(800, 1000), { seq, ts: (c.ts - 50) >>> 0 });
  assertEquals(e.counters[K.C_DROP_PAWS], 1);
  assertEquals(c.s.rcvNxt, seq);
  assertEquals(e.recvAvailable(c.s), 0);
  // The same sequence space, other bytes, by the slow path (FIN): its own bytes are published.
  peerSend(c, bytes(800, 0), { seq }, TCP_FIN | TCP_PSH);
  assertEquals(c.s.rcvNxt, (seq + 801) >>> 0);
  assertEquals(read(c), bytes(800, 0));
});

Deno.test("window edges: the fast path takes what fits; the rest and a zero window go the old way", () => {
  const c = openWithFlight({ rcvBuf: 4096 });
  const e = c.p.engine;
  const wnd = () => (c.s.rcvAdvEdge - c.s.rcvNxt) | 0;
  const data = bytes(16384, 0);
  let at = 0;
  const fill = (n: number) => {
    peerSend(c, data.subarray(at, at + n), {});
    at += n;
  };
  // Exactly to the right edge: every segment fits, the fast path takes them all.
  assertEquals(wnd(), 4096);
  fill(1460);
  fill(1460);
  fill(1176);
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 3);
  assertEquals(wnd(), 0);
  assertEquals(c.s.rx.writable(), 0);
  // A zero window: a segment at RCV.NXT is taken for its ACK, its data dropped (old path);
  // corrupted, it is not taken at all.
  const before = snapshot(c);
  const seq = c.seq;
  peerSend(c, data.subarray(at, at + 500), { seq, ack: (c.ack + 1000) >>> 0, corrupt: HDR + 9 });
  assertEquals(snapshot(c), before);
  assertEquals(e.counters[K.C_DROP_CHECKSUM], 1);
  peerSend(c, data.subarray(at, at + 500), { seq, ack: (c.ack + 1000) >>> 0 });
  assertEquals(c.s.sndUna, (c.ack + 1000) >>> 0);
  assertEquals(c.s.rcvNxt, seq);
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 3);
  assertEquals(read(c), data.subarray(0, at));
  // Read, with the larger window not yet advertised: in order, but past the window we offered,
  // so the old path decides what to take.
  peerSend(c, data.subarray(at, at + 500), {});
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 3);
  const took = (c.s.rcvNxt - seq) | 0;
  c.seq = c.s.rcvNxt;
  assertEquals(read(c), data.subarray(at, at + took));
  at += took;
  // The window reopens; a segment longer than it goes the old way, trimmed to the free space.
  c.p.advance(1);
  assert(wnd() > 2 * 1460, `window ${wnd()}`);
  fill(1460);
  fill(1460);
  const room = wnd(), free = c.s.rx.writable(), from = c.seq;
  peerSend(c, data.subarray(at, at + room + 200), {});
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 5);
  const taken = Math.min(room + 200, free);
  assertEquals(c.s.rcvNxt, (from + taken) >>> 0, "trimmed to the ring's free space");
  c.seq = c.s.rcvNxt;
  at += taken;
  assertEquals(read(c), data.subarray(4096 + took, at), "each byte once, in order");
});

Deno.test("the fast path moves each payload into the ring once (counted by the DMA link)", () => {
  const link = new DmaLink();
  const rx = new MemStream(65536);
  const c = passiveOpen({ autotune: false }, {}, 80, {
    streams: () => ({ tx: new MemStream(65536), rx: new DmaRxStream(rx, link) }),
  });
  const e = c.p.engine;
  let sent = 0;
  for (const len of [1460, 1, 999, 1460]) {
    peerSend(c, bytes(len, sent), {});
    sent += len;
  }
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 4);
  assertEquals(link.counters.transfers, 4, "one transfer per segment");
  assertEquals(link.counters.bytesWritten, sent);
  // A corrupted one was moved too (its sum is known only then), and is not published.
  peerSend(c, bytes(700, sent), { seq: c.seq, corrupt: HDR + 5 });
  assertEquals(link.counters.bytesWritten, sent + 700);
  assertEquals(rx.readable(), sent);
  const got = new Uint8Array(sent);
  assertEquals(rx.read(got, 0, sent), sent);
  assertEquals(got, bytes(sent, 0));
});

Deno.test("a ring that cannot sum as it copies: verified first, copied once, as before", () => {
  const c = passiveOpen({ autotune: false }, {}, 80, {
    streams: () => ({ tx: new MemStream(65536, true), rx: new MemStream(65536, true) }),
  });
  const e = c.p.engine;
  const seq = c.seq;
  const before = snapshot(c);
  peerSend(c, bytes(1000, 0), { corrupt: HDR + 10 });
  assertEquals(snapshot(c), before);
  assertEquals(e.counters[K.C_DROP_CHECKSUM], 1);
  c.seq = seq;
  peerSend(c, bytes(1000, 0), {});
  assertEquals(e.counters[K.C_RCV_FAST_PATH], 0);
  assertEquals(read(c), bytes(1000, 0));
});

Deno.test("transfer with corruption both ways stays byte-exact through the fast path", () => {
  const faults = { corrupt: 0.03, jitterMs: 1 };
  const r = transfer(2 << 20, 1 << 20, {
    faultsAB: { ...faults, seed: 31 },
    faultsBA: { ...faults, seed: 32 },
  });
  assertEquals(r.gotAB, 2 << 20);
  assertEquals(r.gotBA, 1 << 20);
  assertEquals(r.badAB + r.badBA, 0);
  for (const e of [r.a, r.b]) {
    assert(e.counters[K.C_DROP_CHECKSUM] > 0, "corrupted segments dropped");
    assert(e.counters[K.C_RCV_FAST_PATH] > 100, "in-order data by the fast path");
  }
});

/** peerSend with the payload and flags in the order these tests read best. */
function peerSend(
  c: ScriptConn,
  data: Uint8Array,
  extra: { seq?: number; ack?: number; window?: number; ts?: number; corrupt?: number },
  flags = TCP_PSH,
): void {
  sendFromPeer(c, flags, data, extra);
}
