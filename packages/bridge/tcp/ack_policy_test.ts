import { assertEquals } from "@std/assert";
import { passiveOpen, peerSend, type ScriptConn } from "./_test_util.ts";
import { TCP_ACK } from "../wire/tcp.ts";

/** The peer sends `n` full segments in one burst: the engine sees them all before a poll. */
function burst(c: ScriptConn, n: number): void {
  for (let i = 0; i < n; i++) {
    c.p.inject(c.port, {
      srcPort: c.peerPort,
      flags: TCP_ACK,
      seq: c.seq,
      ack: c.ack,
      data: new Uint8Array(1448),
      ts: [c.ts++, c.ecr],
    });
    c.seq = (c.seq + 1448) >>> 0;
  }
  c.p.engine.poll(c.p.now);
}

const acks = (c: ScriptConn) => c.p.take().filter((r) => r.flags === TCP_ACK && r.payloadLen === 0);

Deno.test("ACKs: quick ACKs at connection start, one per segment (Linux's quickack mode)", () => {
  const c = passiveOpen();
  burst(c, 4);
  const out = acks(c);
  assertEquals(out.length, 4, "the peer's slow start waits on every ACK");
  assertEquals(out[3].ack, c.seq);
});

Deno.test("ACKs: after the quick ones, one ACK per round for a burst, and one per 16 segments within it", () => {
  const c = passiveOpen();
  burst(c, 16); // the quick ACKs are used up
  c.p.take();
  burst(c, 8);
  let out = acks(c);
  assertEquals(out.length, 1, `${out.length} ACKs for 8 segments received in one round`);
  assertEquals(out[0].ack, c.seq);
  // The application reads it all (the receive ring is not what limits the next burst).
  const sink = new Uint8Array(1 << 20);
  while (c.p.engine.recv(c.s, sink, 0, sink.length) > 0);
  c.p.engine.poll(c.p.now);
  c.p.take();
  burst(c, 40);
  out = acks(c);
  assertEquals(out.map((a) => a.ack), [
    (c.seq - 24 * 1448) >>> 0,
    (c.seq - 8 * 1448) >>> 0,
    c.seq,
  ], "an ACK per 16 segments within the round, and one at its end");
});

Deno.test("ACKs: after the quick ones, a lone small segment's ACK is delayed (40 ms)", () => {
  const c = passiveOpen();
  burst(c, 16);
  c.p.take();
  peerSend(c, 0, new Uint8Array(500));
  assertEquals(c.p.take().length, 0);
  c.p.advance(40);
  assertEquals(acks(c).length, 1);
  // Data after an idle spell longer than the RTO is quick-ACKed again (the peer restarts).
  c.p.advance(5000);
  peerSend(c, 0, new Uint8Array(500));
  assertEquals(acks(c).length, 1);
});
