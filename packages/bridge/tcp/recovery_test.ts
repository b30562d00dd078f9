import { assert, assertEquals } from "@std/assert";
import { dataSent, passiveOpen, peerSend, type ScriptConn } from "./_test_util.ts";
import { ESTABLISHED, OPT_NODELAY, RECOVERY_FAST } from "./socket.ts";
import type { TcpEngineOptions } from "./engine.ts";
import * as K from "./counters.ts";

/** A passive connection that has `n` full segments of data out, none acknowledged. */
function withFlight(n: number, opts: TcpEngineOptions = {}): {
  c: ScriptConn;
  segs: [number, number][];
  mss: number;
} {
  const c = passiveOpen(opts);
  const e = c.p.engine;
  e.setOption(c.s, OPT_NODELAY, 1);
  const mss = c.s.sndMss;
  const data = new Uint8Array(n * mss);
  for (let i = 0; i < data.length; i++) data[i] = i % 251;
  assertEquals(e.send(c.s, data, 0, data.length), data.length);
  e.poll(c.p.now);
  const segs = dataSent(c);
  assertEquals(segs.length, n);
  return { c, segs, mss };
}

const end = ([q, n]: [number, number]) => (q + n) >>> 0;

Deno.test("reneging: SACKed data the peer dropped is resent (RFC 2018 §8)", () => {
  const { c, segs } = withFlight(4, { minRtoMs: 200 });
  const [s0, s1, s2, s3] = segs;
  // S1 is lost; the peer SACKs S2 and S3 (three times: fast retransmit of S1).
  for (let k = 0; k < 3; k++) peerSend(c, 0, undefined, { ack: end(s0), sack: [s2[0], end(s3)] });
  assert(dataSent(c).some(([q]) => q === s1[0]), "S1 not retransmitted");
  // The peer then ACKs S1 but has dropped S2 and S3 from its out-of-order queue (as Linux
  // does when it prunes under memory pressure): no SACK blocks any more.
  peerSend(c, 0, undefined, { ack: s2[0] });
  // The engine must resend S2 and S3 (not wait on SACKed data forever).
  let resentS2 = -1;
  for (let t = 0; t < 3000 && resentS2 < 0; t++) {
    c.p.advance(1);
    for (const [q] of dataSent(c)) if (q === s2[0]) resentS2 = t;
  }
  assert(resentS2 >= 0, "reneged data never resent");
  peerSend(c, 0, undefined, { ack: end(s3) });
  assertEquals(c.s.sndUna, end(s3));
  assertEquals(c.s.state, ESTABLISHED);
});

Deno.test("PRR: DeliveredData is the change in SND.UNA plus the change in SACKed bytes (RFC 6937)", () => {
  const { c, segs, mss } = withFlight(10);
  const s = c.s;
  // S0 is lost: three duplicate ACKs SACKing S1, S1-S2, S1-S3 start fast recovery.
  for (let k = 1; k <= 3; k++) {
    peerSend(c, 0, undefined, { ack: segs[0][0], sack: [segs[1][0], end(segs[k])] });
  }
  assertEquals(s.recovery, RECOVERY_FAST);
  c.p.take();
  const before = s.prrDelivered;
  // The retransmitted S0 arrives: the cumulative ACK covers S0-S3 (4 segments, 3 of them
  // SACKed before) and the ACK SACKs S5-S6 newly. Delivered: 4 - 3 + 2 = 3 segments.
  peerSend(c, 0, undefined, { ack: segs[4][0], sack: [segs[5][0], end(segs[6])] });
  assertEquals(s.recovery, RECOVERY_FAST);
  assertEquals(s.prrDelivered - before, 3 * mss);
});

Deno.test("tail loss probe: armed when data is sent after idle, not only on an ACK (RFC 8985 §7.2)", () => {
  const c = passiveOpen({ minRtoMs: 1000, initialRtoMs: 1000 });
  const e = c.p.engine;
  c.s.srtt = 50; // as measured on an established, now idle path
  c.s.rto = 1000;
  e.setOption(c.s, OPT_NODELAY, 1);
  c.p.advance(5000); // idle
  // A request answered after idle: two segments, both lost.
  const mss = c.s.sndMss;
  e.send(c.s, new Uint8Array(2 * mss), 0, 2 * mss);
  e.poll(c.p.now);
  const sent = dataSent(c);
  assertEquals(sent.length, 2);
  let probeAt = -1;
  for (let t = 1; t < 1500 && probeAt < 0; t++) {
    c.p.advance(1);
    if (dataSent(c).length > 0) probeAt = t;
  }
  assert(probeAt > 0 && probeAt <= 2 * 50 + 10, `first retransmission after ${probeAt} ms`);
  assertEquals(e.counters[K.C_TLP_PROBES], 1);
});

Deno.test("tail loss probe: sends new data when there is some (RFC 8985 §7.3)", () => {
  const c = passiveOpen({ minRtoMs: 1000, initialRtoMs: 1000 });
  const e = c.p.engine;
  c.s.srtt = 20;
  e.setOption(c.s, OPT_NODELAY, 1);
  const mss = c.s.sndMss;
  c.s.cwnd = 2 * mss; // cwnd allows two segments; five are queued
  e.send(c.s, new Uint8Array(5 * mss), 0, 5 * mss);
  e.poll(c.p.now);
  const sent = dataSent(c);
  assertEquals(sent.length, 2);
  let probe: [number, number][] = [];
  for (let t = 1; t < 900 && probe.length === 0; t++) {
    c.p.advance(1);
    probe = dataSent(c);
  }
  assertEquals(probe.length, 1);
  assertEquals(probe[0][0], end(sent[1]), "the probe is the next new segment");
});

Deno.test("tail loss probe: a loss the probe repaired reduces cwnd; a D-SACKed probe does not (RFC 8985 §7.4)", () => {
  for (const dsack of [false, true]) {
    const c = passiveOpen({ minRtoMs: 1000, initialRtoMs: 1000 });
    const e = c.p.engine;
    c.s.srtt = 20;
    e.setOption(c.s, OPT_NODELAY, 1);
    const mss = c.s.sndMss;
    e.send(c.s, new Uint8Array(2 * mss), 0, 2 * mss);
    e.poll(c.p.now);
    const [s0, s1] = dataSent(c);
    // S0 is acknowledged; S1 (the tail) is lost, or only its ACK is.
    peerSend(c, 0, undefined, { ack: end(s0) });
    const cwnd = c.s.cwnd;
    let probe: [number, number][] = [];
    for (let t = 1; t < 900 && probe.length === 0; t++) {
      c.p.advance(1);
      probe = dataSent(c);
    }
    assertEquals(probe.length, 1);
    assertEquals(probe[0][0], s1[0], "the probe retransmits the tail");
    // S1 had arrived after all: the probe is reported as a duplicate (D-SACK, RFC 2883).
    // Or it had not: a plain ACK.
    peerSend(c, 0, undefined, { ack: end(s1), sack: dsack ? [s1[0], end(s1)] : undefined });
    // The verdict comes with an ACK above the probe (RFC 8985 §7.4.2): more data, ACKed.
    e.send(c.s, new Uint8Array(mss), 0, mss);
    e.poll(c.p.now);
    const [s2] = dataSent(c);
    peerSend(c, 0, undefined, { ack: end(s2) });
    if (dsack) {
      assert(c.s.cwnd >= cwnd, `cwnd ${cwnd} -> ${c.s.cwnd} though nothing was lost`);
      assertEquals(e.counters[K.C_TLP_RECOVERIES], 0);
    } else {
      assert(c.s.cwnd < cwnd, `cwnd ${cwnd} -> ${c.s.cwnd} after a loss the probe repaired`);
      assertEquals(e.counters[K.C_TLP_RECOVERIES], 1);
    }
  }
});
