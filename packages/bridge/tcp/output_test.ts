import { assertEquals } from "@std/assert";
import { dataSent, passiveOpen, peerSend } from "./_test_util.ts";

Deno.test("Nagle, Minshall's variant: a small tail goes out while only full segments are unACKed", () => {
  const c = passiveOpen();
  const e = c.p.engine;
  const mss = c.s.sndMss;
  e.send(c.s, new Uint8Array(mss + 100), 0, mss + 100);
  e.poll(c.p.now);
  // Classic Nagle would hold the 100-byte tail until the full segment is ACKed.
  assertEquals(dataSent(c).map(([, n]) => n), [mss, 100]);
  // A second small write waits: a small segment is unACKed (Linux's tcp_minshall_check).
  e.send(c.s, new Uint8Array(50), 0, 50);
  e.poll(c.p.now);
  assertEquals(dataSent(c).length, 0);
  peerSend(c, 0, undefined, { ack: (c.ack + mss + 100) >>> 0 });
  assertEquals(dataSent(c).map(([, n]) => n), [50]);
});

Deno.test("cwnd restart after idle: a window unused for an RTO shrinks toward the initial one (RFC 5681 §4.1)", () => {
  const c = passiveOpen({ rcvBuf: 1 << 20, sndBuf: 1 << 20 });
  const e = c.p.engine;
  const mss = c.s.sndMss;
  c.s.cwnd = 100 * mss; // grown by an earlier transfer
  c.s.srtt = 20;
  c.s.rto = 220;
  c.p.advance(10_000); // idle for far longer than the RTO
  e.send(c.s, new Uint8Array(60 * mss), 0, 60 * mss);
  e.poll(c.p.now);
  const sent = dataSent(c).length;
  assertEquals(sent, 10, `${sent} segments in the first burst after idle`);
});
