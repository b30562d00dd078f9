import { assert, assertEquals } from "@std/assert";
import { activeOpen, dataSent, peerSend } from "./_test_util.ts";
import { TCP_ACK, TCP_FIN, TCP_SYN } from "../wire/tcp.ts";
import { CLOSED, ESTABLISHED, FIN_WAIT_2, OPT_NODELAY, TIME_WAIT } from "./socket.ts";

Deno.test("active open: SYN options, SYN-ACK, ACK; data both ways; the engine closes first", () => {
  const c = activeOpen();
  const { p, s } = c;
  assertEquals(s.state, ESTABLISHED);
  assert(s.tsOn && s.sackOn && s.wsOn);
  assertEquals(s.sndWscale, 7);
  // Peer -> engine.
  peerSend(c, 0, new Uint8Array([1, 2, 3]));
  const got = new Uint8Array(8);
  assertEquals(p.engine.recv(s, got, 0, 8), 3);
  // Engine -> peer.
  assertEquals(p.engine.send(s, new Uint8Array(100).fill(9), 0, 100), 100);
  p.engine.poll(p.now);
  const out = p.take().filter((r) => r.payloadLen > 0);
  assertEquals(out.length, 1);
  assertEquals(out[0].seq, c.ack);
  assertEquals(out[0].data[0], 9);
  c.ack = (c.ack + 100) >>> 0;
  // Engine closes: FIN, peer ACKs it, then FINs: TIME-WAIT.
  p.engine.close(s);
  p.engine.poll(p.now);
  const fin = p.take().find((r) => r.flags & TCP_FIN);
  assert(fin !== undefined);
  assertEquals(fin!.seq, c.ack);
  c.ack = (c.ack + 1) >>> 0;
  peerSend(c, 0);
  assertEquals(s.state, FIN_WAIT_2);
  peerSend(c, TCP_FIN);
  assertEquals(s.state, TIME_WAIT);
  const last = p.take();
  assertEquals(last[last.length - 1].ack, c.seq);
});

Deno.test("active open: the SYN-ACK's window is not scaled (RFC 7323 §2.2)", () => {
  // The peer offers window scale 7 but a SYN-ACK window field of 1000: that is 1000 bytes.
  const c = activeOpen({}, { window: 1000, wscale: 7 });
  assertEquals(c.s.sndWnd, 1000);
  c.p.engine.setOption(c.s, OPT_NODELAY, 1);
  c.p.engine.send(c.s, new Uint8Array(20000), 0, 20000);
  c.p.engine.poll(c.p.now);
  const sent = dataSent(c).reduce((a, [, n]) => a + n, 0);
  assert(sent <= 1000, `${sent} bytes sent into a 1000-byte window`);
  // Its ACK's window (scaled from here on) opens it: 200 << 7 = 25600.
  peerSend(c, 0, undefined, { window: 200 });
  assertEquals(c.s.sndWnd, 200 << 7);
});

Deno.test("active open: connect reads the clock at the call, not at the last poll", () => {
  const c0 = activeOpen(); // polled at t = 1000
  const p = c0.p;
  p.now = 9000; // 8 s later; no poll since
  const s = p.engine.connect(p.ip, 6666);
  const [syn] = p.take();
  assertEquals(syn.flags, TCP_SYN);
  p.now = 9010; // the SYN-ACK 10 ms later
  p.send(syn.srcPort, {
    srcPort: 6666,
    flags: TCP_SYN | TCP_ACK,
    seq: 1,
    ack: (syn.seq + 1) >>> 0,
    mss: 1460,
    sackPermitted: true,
    wscale: 7,
    ts: [1, syn.tsVal],
  });
  assertEquals(s.state, ESTABLISHED);
  assert(Math.abs(s.srtt - 10) < 1, `SYN RTT sample ${s.srtt} ms, 10 ms expected`);
  // The timestamp clock of the SYN is that of the call too: TSval advanced by ~8000.
  const c0Ts = c0.ecr;
  assert(((syn.tsVal - c0Ts) >>> 0) >= 7999, `TSval advanced ${(syn.tsVal - c0Ts) >>> 0}`);
});

Deno.test("active open: sequence numbers wrap around 2^32 in both directions", () => {
  const c = activeOpen({}, { isn: 0xffffff00 });
  const { p, s } = c;
  p.engine.setOption(s, OPT_NODELAY, 1);
  // Peer -> engine across the wrap: 4 segments of 100 bytes, the second out of order.
  const seg = (i: number) => new Uint8Array(100).fill(i + 1);
  const base = c.seq;
  peerSend(c, 0, seg(0));
  peerSend(c, 0, seg(2), { seq: (base + 200) >>> 0 });
  peerSend(c, 0, seg(1), { seq: (base + 100) >>> 0 });
  c.seq = (base + 300) >>> 0;
  peerSend(c, 0, seg(3));
  const got = new Uint8Array(400);
  assertEquals(p.engine.recv(s, got, 0, 400), 400);
  for (let i = 0; i < 400; i++) assertEquals(got[i], Math.floor(i / 100) + 1);
  assertEquals(s.rcvNxt, (base + 400) >>> 0);
  assert(s.rcvNxt < base, "the receive sequence wrapped");
  // Engine -> peer: its ISN moved near the wrap; a loss and SACK recovery across it.
  s.sndUna = s.sndNxt = s.sndWl2 = (0xffffffff - 1500) >>> 0;
  s.iss = (s.sndUna - 1) >>> 0;
  c.ack = s.sndNxt;
  const data = new Uint8Array(5000);
  for (let i = 0; i < data.length; i++) data[i] = i & 0xff;
  p.engine.send(s, data, 0, data.length);
  p.engine.poll(p.now);
  const sent = dataSent(c);
  assert(sent.length >= 4, `${sent.length} segments`);
  // The second segment is lost: the peer SACKs the rest.
  const [s0, s1] = sent;
  const end = (sent[sent.length - 1][0] + sent[sent.length - 1][1]) >>> 0;
  for (let k = 0; k < 3; k++) {
    peerSend(c, 0, undefined, {
      ack: (s0[0] + s0[1]) >>> 0,
      sack: [(s1[0] + s1[1]) >>> 0, end],
    });
  }
  const resent = dataSent(c);
  assert(resent.some(([q]) => q === s1[0]), `hole not resent: ${JSON.stringify(resent)}`);
  peerSend(c, 0, undefined, { ack: end });
  assertEquals(s.sndUna, end);
  assert(s.sndUna < 0x1000, "the send sequence wrapped");
  assertEquals(s.state, ESTABLISHED);
  assert(s.state !== CLOSED);
});
