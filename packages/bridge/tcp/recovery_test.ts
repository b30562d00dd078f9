import { assert, assertEquals } from "@std/assert";
import { dataSent, passiveOpen, peerSend, type ScriptConn } from "./_test_util.ts";
import { ESTABLISHED, OPT_NODELAY, RECOVERY_FAST } from "./socket.ts";
import type { TcpEngineOptions } from "./engine.ts";
import * as K from "./counters.ts";

/** A passive connection that has `n` full segments of data out, none acknowledged. */
function withFlight(n: number, opts: TcpEngineOptions = {}, prep?: (c: ScriptConn) => void): {
  c: ScriptConn;
  segs: [number, number][];
  mss: number;
} {
  const c = passiveOpen(opts);
  const e = c.p.engine;
  e.setOption(c.s, OPT_NODELAY, 1);
  prep?.(c);
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

/**
 * Three segments out, the first acknowledged: two in flight, so the probe timeout is 2 SRTT
 * (no delayed-ACK allowance). Returns the probe timeout and the two in flight.
 */
function tailOut(minRtoMs: number) {
  const c = passiveOpen({ minRtoMs, initialRtoMs: minRtoMs });
  const e = c.p.engine;
  c.s.srtt = 20;
  e.setOption(c.s, OPT_NODELAY, 1);
  const mss = c.s.sndMss;
  e.send(c.s, new Uint8Array(3 * mss), 0, 3 * mss);
  e.poll(c.p.now);
  const [s0, s1, s2] = dataSent(c);
  peerSend(c, 0, undefined, { ack: end(s0) });
  const pto = c.s.ptoAt - c.p.now;
  assert(pto >= 10 && pto <= 40, `probe timeout ${pto} ms`);
  return { c, e, s1, s2, pto, ackAt: c.p.now };
}

Deno.test("tail loss probe: without unread input, it goes out at 2 SRTT", () => {
  const { c, e, s2, pto } = tailOut(1000);
  let probe: [number, number][] = [], probeAt = -1;
  for (let t = 1; t <= 200 && probe.length === 0; t++) {
    c.p.advance(1);
    probe = dataSent(c);
    probeAt = t;
  }
  assert(probeAt >= pto && probeAt <= pto + 1, `probe at ${probeAt} ms, timeout ${pto}`);
  assertEquals(probe.map(([q]) => q), [s2[0]]);
  assertEquals(e.counters[K.C_TLP_PROBES], 1);
});

Deno.test("tail loss probe: waits while the port holds unread frames; the RTO does not", () => {
  for (const ackArrives of [true, false]) {
    const { c, e, s1, s2, pto, ackAt } = tailOut(300);
    // The loop read full bursts for five probe timeouts: the ACKs may be among what waits.
    e.inputPending = true;
    for (let t = 0; t < 5 * pto; t++) {
      c.p.advance(1);
      assertEquals(dataSent(c), [], `a probe at ${t} ms while input waited`);
    }
    assertEquals(e.counters[K.C_TLP_PROBES], 0);
    if (ackArrives) {
      // They were there: no probe, ever.
      peerSend(c, 0, undefined, { ack: end(s2) });
      e.inputPending = false;
      for (let t = 0; t < 1000; t++) c.p.advance(1);
      assertEquals(dataSent(c), []);
      assertEquals(e.counters[K.C_TLP_PROBES], 0);
    } else {
      // Input keeps coming but none of it for us: the RTO still fires on time.
      let rtoAt = -1;
      while (c.p.now - ackAt < 1000 && rtoAt < 0) {
        c.p.advance(1);
        if (dataSent(c).some(([q]) => q === s1[0])) rtoAt = c.p.now - ackAt;
      }
      assert(rtoAt >= 300 && rtoAt <= 310, `retransmission ${rtoAt} ms after the last ACK`);
      assertEquals(e.counters[K.C_RTO_EVENTS], 1);
      assertEquals(e.counters[K.C_TLP_PROBES], 0);
    }
  }
});

Deno.test("tail loss probe: deferred for unread input, sent as soon as the port is drained", () => {
  const { c, e, s2, pto } = tailOut(1000);
  e.inputPending = true;
  for (let t = 0; t < 3 * pto; t++) c.p.advance(1);
  assertEquals(dataSent(c), []);
  e.inputPending = false;
  c.p.advance(1);
  c.p.advance(1);
  const probe = dataSent(c);
  assertEquals(probe.length, 1, "the probe goes out within a round or two");
  assertEquals(probe[0][0], s2[0], "the tail again");
  assertEquals(e.counters[K.C_TLP_PROBES], 1);
});

Deno.test("RACK: a lost retransmission is found by time, not by the RTO (RFC 8985 §6)", () => {
  const { c, segs } = withFlight(6, { minRtoMs: 1000, initialRtoMs: 1000 });
  const e = c.p.engine;
  const [s0, s1, , , , s5] = segs;
  c.p.advance(10);
  // S1 is lost: the peer SACKs S2-S5; RACK marks S1 lost and it is resent, with new data.
  e.send(c.s, new Uint8Array(c.s.sndMss), 0, c.s.sndMss);
  peerSend(c, 0, undefined, { ack: end(s0), sack: [segs[2][0], end(s5)] });
  const first = dataSent(c);
  assert(first.some(([q]) => q === s1[0]), `S1 not resent: ${JSON.stringify(first)}`);
  const s6 = first.find(([q]) => q === end(s5));
  assert(s6 !== undefined, "no new segment after the retransmission");
  // The retransmission is lost too; the new segment arrives and is SACKed 10 ms later.
  c.p.advance(10);
  peerSend(c, 0, undefined, { ack: end(s0), sack: [segs[2][0], end(s6!)] });
  let again = -1;
  for (let t = 0; t < 100 && again < 0; t++) {
    if (dataSent(c).some(([q]) => q === s1[0])) again = t;
    else c.p.advance(1);
  }
  assert(again >= 0 && again < 50, `lost retransmission resent after ${again} ms (RTO 1000)`);
  assertEquals(e.counters[K.C_RTO_EVENTS], 0);
});

Deno.test("RACK: a quarter RTT of patience before out-of-order delivery counts as loss", () => {
  for (const late of [true, false]) {
    const { c, segs } = withFlight(4, { minRtoMs: 1000 }, (c) => {
      c.s.minRtt = 20; // a path measured before
      c.s.srtt = 20;
    });
    c.p.advance(20);
    // S1 arrives, S0 is late (reordered) or lost.
    peerSend(c, 0, undefined, { ack: segs[0][0], sack: [segs[1][0], end(segs[1])] });
    assertEquals(dataSent(c).length, 0, "resent at once: no reordering window");
    c.p.advance(2);
    if (late) {
      peerSend(c, 0, undefined, { ack: end(segs[1]) });
      c.p.advance(20);
      assertEquals(dataSent(c).length, 0, "a late segment was taken for lost");
      assert(c.s.reordSeen);
    } else {
      c.p.advance(10);
      const resent = dataSent(c);
      assertEquals(resent.map(([q]) => q), [segs[0][0]], "S0 not resent after the window");
    }
  }
});

Deno.test("RACK: once the path reordered, the window is a quarter of SRTT, not of the minimum RTT", () => {
  // A path that holds some packets back by 10 ms while others pass at once: its minimum RTT
  // is a fraction of a millisecond, SRTT about 15 ms. A window from the minimum RTT would
  // take every held-back segment for lost the moment one sent after it is SACKed.
  for (const held of [true, false]) {
    const { c, segs } = withFlight(4, { minRtoMs: 1000 }, (c) => {
      c.s.minRtt = 0.2;
      c.s.rackMinRtt = 0.2;
      c.s.srtt = 16;
      c.s.reordSeen = true;
    });
    c.p.advance(1);
    // S1 passed S0 (held back, or lost).
    peerSend(c, 0, undefined, { ack: segs[0][0], sack: [segs[1][0], end(segs[1])] });
    c.p.advance(2);
    assertEquals(dataSent(c).length, 0, "S0 taken for lost within the window (SRTT/4 = 4 ms)");
    if (held) {
      c.p.advance(1); // S0 arrives 4 ms late: within the window, nothing was resent
      peerSend(c, 0, undefined, { ack: end(segs[1]) });
      c.p.advance(20);
      assertEquals(dataSent(c).length, 0, "a held-back segment was resent");
      assertEquals(c.s.retransSegs, 0);
    } else {
      c.p.advance(5);
      assertEquals(dataSent(c).map(([q]) => q), [segs[0][0]], "S0 not resent after the window");
    }
  }
});

Deno.test("RACK: an ACK that moves SND.UNA and SACKs above a hole does not mean reordering", () => {
  const { c, segs } = withFlight(4, { minRtoMs: 1000 });
  c.p.advance(5);
  // S0 arrives, S1 is lost, S2 and S3 arrive: one ACK for S0 with S2-S3 SACKed. Its SACKed
  // segments are handled before its cumulative part, but S0 did not arrive out of order.
  peerSend(c, 0, undefined, { ack: end(segs[0]), sack: [segs[2][0], end(segs[3])] });
  assert(!c.s.reordSeen, "reordering seen where there was only a loss");
});

Deno.test("D-SACK: a duplicate segment is reported in the first SACK block (RFC 2883 §4)", () => {
  const c = passiveOpen();
  const e = c.p.engine;
  const data = new Uint8Array(100);
  peerSend(c, 0, data);
  c.p.take();
  // The same segment again (a spurious retransmission): ACK with D-SACK for it.
  peerSend(c, 0, data, { seq: (c.seq - 100) >>> 0 });
  let out = c.p.take();
  assertEquals(out.length, 1);
  assertEquals(out[0].sackCount, 1);
  assertEquals([out[0].sack[0], out[0].sack[1]], [(c.seq - 100) >>> 0, c.seq]);
  // A duplicate of data held out of order: D-SACK first, the range holding it second.
  const far = (c.seq + 1000) >>> 0;
  peerSend(c, 0, data, { seq: far });
  c.p.take();
  peerSend(c, 0, data, { seq: far });
  out = c.p.take();
  assertEquals(out[0].sackCount, 2);
  assertEquals([out[0].sack[0], out[0].sack[1]], [far, (far + 100) >>> 0]);
  assertEquals([out[0].sack[2], out[0].sack[3]], [far, (far + 100) >>> 0]);
  assertEquals(e.counters[K.C_DSACKS_OUT], 2);
  // The next ACK carries no D-SACK again.
  peerSend(c, 0, data);
  out = c.p.take();
  assert(out.every((r) => r.sackCount === 0 || r.sack[0] !== far || r.sackCount === 1));
});

Deno.test("undo: a recovery whose retransmissions are all D-SACKed gives the window back", () => {
  const { c, segs } = withFlight(6, { minRtoMs: 1000 });
  const e = c.p.engine;
  const cwnd = c.s.cwnd;
  c.p.advance(20);
  // S0 is delayed, not lost: the peer SACKs S1-S5 first; RACK takes S0 for lost.
  peerSend(c, 0, undefined, { ack: segs[0][0], sack: [segs[1][0], end(segs[5])] });
  assert(dataSent(c).some(([q]) => q === segs[0][0]), "S0 not retransmitted");
  assertEquals(c.s.recovery, RECOVERY_FAST);
  assert(c.s.cwnd < cwnd);
  // Then S0 arrives (everything ACKed), and its retransmission after it: a D-SACK.
  c.p.advance(5);
  peerSend(c, 0, undefined, { ack: end(segs[5]) });
  c.p.advance(15);
  peerSend(c, 0, undefined, { ack: end(segs[5]), sack: [segs[0][0], end(segs[0])] });
  assertEquals(e.counters[K.C_UNDO_RECOVERIES], 1);
  assert(c.s.cwnd >= cwnd, `cwnd ${c.s.cwnd}, ${cwnd} before the spurious recovery`);
  assertEquals(c.s.reoWndMult, 2, "the reordering window widened");
});
