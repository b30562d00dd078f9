import { assert, assertEquals } from "@std/assert";
import { SendMap, SM_LOST, SM_RETRANS, SM_SACKED } from "./sendmap.ts";

function filled(n: number, base = 1000, len = 100): SendMap {
  const m = new SendMap();
  for (let i = 0; i < n; i++) m.push((base + i * len) >>> 0, (base + (i + 1) * len) >>> 0, i);
  return m;
}

Deno.test("send map: records in order, SACK marks, lost and retransmitted accounting", () => {
  const m = filled(5);
  assertEquals(m.count, 5);
  const delivered: number[] = [];
  assertEquals(m.sack(1200, 1400, (i) => delivered.push(m.left(i))), 200);
  assertEquals(delivered, [1200, 1300]);
  assertEquals(m.sack(1200, 1400, null), 0, "already SACKed");
  assertEquals(m.sackedBytes, 200);
  m.markLost(0);
  m.markLost(1);
  m.markLost(2); // SACKed: stays SACKed
  assertEquals(m.lostBytes, 200);
  assert(m.flags(2) & SM_SACKED);
  m.retransmitted(0, 50);
  assertEquals(m.lostBytes, 100);
  assertEquals(m.retransOut, 1);
  assertEquals(m.time(0), 50);
  assertEquals(m.flags(0) & (SM_RETRANS | SM_LOST), SM_RETRANS);
  // The cumulative ACK takes the first three records and half the fourth.
  const acked: number[] = [];
  m.ackTo(1350, (i) => acked.push(m.left(i)));
  assertEquals(acked, [1000, 1100], "SACKed records were delivered already");
  assertEquals(m.count, 2);
  assertEquals(m.left(0), 1350);
  assertEquals(m.sackedBytes, 50);
  assertEquals(m.lostBytes, 0);
  assertEquals(m.retransOut, 0);
});

Deno.test("send map: grows past its first size, across sequence wrap-around", () => {
  const m = filled(100, 0xffffff00, 10);
  assertEquals(m.count, 100);
  // Record 25 straddles the wrap: [0xfffffffa, 0x4).
  assertEquals([m.left(25), m.right(25)], [0xfffffffa, 0x4]);
  assertEquals(m.find(0x10), 27);
  m.ackTo(0x0a, null);
  assertEquals(m.count, 74);
  assertEquals(m.left(0), 0x0a);
  for (let i = 0; i < 200; i++) m.push((0x3e8 + i * 10) >>> 0, (0x3e8 + (i + 1) * 10) >>> 0, 0);
  assertEquals(m.count, 274);
  assertEquals(m.right(273), 0x3e8 + 2000);
});

Deno.test("send map: split keeps marks; a timeout marks everything lost and forgets SACKs", () => {
  const m = filled(3);
  m.retransmitted(1, 9);
  m.split(1, 1150);
  assertEquals(m.count, 4);
  assertEquals([m.left(1), m.right(1), m.left(2), m.right(2)], [1100, 1150, 1150, 1200]);
  assertEquals(m.time(2), 9);
  assertEquals(m.retransOut, 2);
  m.sack(1200, 1300, null);
  m.markAllLost();
  assertEquals(m.sackedBytes, 0);
  assertEquals(m.lostBytes, 300);
  assertEquals(m.retransOut, 0);
  for (let i = 0; i < m.count; i++) assertEquals(m.flags(i), SM_LOST);
  assert(!m.isSacked(1250));
});
