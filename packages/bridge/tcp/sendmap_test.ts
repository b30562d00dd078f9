import { assert, assertEquals } from "@std/assert";
import {
  SEND_MAP_INITIAL,
  SEND_MAP_RECORD_BYTES,
  SendMap,
  SM_LOST,
  SM_RETRANS,
  SM_SACKED,
} from "./sendmap.ts";

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

Deno.test("send map: shrinks to its first size once the flight stayed small for a sweep", () => {
  // 3,000 records (a 4 MiB flight of 1448-byte segments) grow it to 4,096.
  const m = filled(3000, 0xfff00000, 1448);
  assertEquals(m.capacity, 4096);
  assertEquals(m.shrinkIfSmall(), 0, "full: nothing to give back");
  m.sack((0xfff00000 + 2000 * 1448) >>> 0, (0xfff00000 + 2001 * 1448) >>> 0, null);
  m.retransmitted(10, 77);
  m.ackTo((0xfff00000 + 10 * 1448) >>> 0, null);
  assertEquals(m.count, 2990);
  // The flight was 3,000 records since the last sweep: it keeps its arrays.
  assertEquals(m.shrinkIfSmall(), 0);
  // All but 20 acknowledged (across the sequence wrap): the next sweep still remembers the
  // large flight between the two, the one after halves down to twice the 20 kept, in order.
  m.ackTo((0xfff00000 + 2980 * 1448) >>> 0, null);
  assertEquals(m.count, 20);
  assertEquals(m.shrinkIfSmall(), 0, "the flight was large since the previous sweep");
  assertEquals(m.shrinkIfSmall(), (4096 - 64) * SEND_MAP_RECORD_BYTES);
  assertEquals(m.capacity, 64, "twice the records held, rounded to a power of two");
  assertEquals(m.count, 20);
  for (let i = 0; i < 20; i++) {
    assertEquals(m.left(i), (0xfff00000 + (2980 + i) * 1448) >>> 0);
    assertEquals(m.time(i), 2980 + i);
  }
  assertEquals(m.flags(0), 0);
  assert(m.isSacked((0xfff00000 + 2000 * 1448) >>> 0) === false, "acknowledged, gone");
  // Once the map is empty it goes back to its first size, and is filled again past it.
  m.ackTo((0xfff00000 + 3000 * 1448) >>> 0, null);
  assertEquals(m.count, 0);
  assertEquals(m.shrinkIfSmall(), 0, "20 records were held since the previous sweep");
  assertEquals(m.shrinkIfSmall(), (64 - SEND_MAP_INITIAL) * SEND_MAP_RECORD_BYTES);
  assertEquals(m.capacity, SEND_MAP_INITIAL);
  assertEquals(m.shrinkIfSmall(), 0, "already at its first size");
  for (let i = 0; i < 40; i++) m.push(100 + i * 10, 110 + i * 10, i);
  assertEquals(m.capacity, 64);
  assertEquals([m.left(39), m.right(39), m.time(39)], [490, 500, 39]);
});

Deno.test("send map: a map with records in flight is never shrunk below its count", () => {
  const m = filled(1000);
  assertEquals(m.capacity, 1024);
  // The head moves near the arrays' end and new records wrap past it to slot 0.
  m.ackTo(1000 + 900 * 100, null);
  for (let i = 1000; i < 1200; i++) m.push(1000 + i * 100, 1100 + i * 100, i);
  assertEquals(m.count, 300);
  m.sack(1000 + 1100 * 100, 1000 + 1102 * 100, null);
  m.markLost(150);
  m.retransmitted(160, 5000);
  const sacked = m.sackedBytes, lost = m.lostBytes, retrans = m.retransOut;
  assertEquals(m.shrinkIfSmall(), 0, "1,000 records were held since the last sweep");
  // Every sweep from a count of 300 down to 0, acknowledging a little between sweeps.
  for (let acked = 900; m.count > 0;) {
    m.shrinkIfSmall();
    assert(m.capacity >= m.count, `capacity ${m.capacity} below count ${m.count}`);
    for (let i = 0; i < m.count; i++) {
      assertEquals([m.left(i), m.time(i)], [
        1000 + (acked + i) * 100,
        acked + i === 1060 ? 5000 : acked + i,
      ]);
    }
    if (acked === 900) {
      assertEquals(m.capacity, 1024, "300 records held: a quarter of 1,024 is too few");
      assertEquals([m.sackedBytes, m.lostBytes, m.retransOut], [sacked, lost, retrans]);
      assertEquals(m.flags(150), SM_LOST);
      assertEquals(m.flags(160), SM_RETRANS);
      assertEquals(m.flags(200), SM_SACKED);
    }
    acked += 50;
    m.ackTo(1000 + acked * 100, null);
  }
  assertEquals([m.sackedBytes, m.lostBytes, m.retransOut], [0, 0, 0]);
  m.shrinkIfSmall();
  m.shrinkIfSmall();
  assertEquals(m.capacity, SEND_MAP_INITIAL, "two sweeps with nothing in flight");
});
