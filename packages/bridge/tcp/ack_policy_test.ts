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

Deno.test("ACKs: never more than two full segments per ACK, even within one burst", () => {
  const c = passiveOpen();
  burst(c, 16); // the quick ACKs are used up
  c.p.take();
  burst(c, 8);
  const out = acks(c);
  assertEquals(out.length, 4, `${out.length} ACKs for 8 segments received in one burst`);
  for (let i = 0; i < 4; i++) {
    assertEquals(out[i].ack, (c.seq - (3 - i) * 2 * 1448) >>> 0);
  }
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
