import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  BYTE_RING_CTRL_SIZE,
  RING_CONS_OFFSET,
  RING_FAULT,
  RING_PROD_OFFSET,
} from "./byte_ring.ts";
import { DESC_SIZE, DescRingConsumer, DescRingProducer } from "./desc_ring.ts";

const SLOTS = 16;

function ring() {
  const mem = new SharedArrayBuffer(BYTE_RING_CTRL_SIZE + SLOTS * DESC_SIZE);
  return {
    idx: new Uint32Array(mem, 0, 32),
    tx: new DescRingProducer(mem, 0, BYTE_RING_CTRL_SIZE, SLOTS),
    rx: new DescRingConsumer(mem, 0, BYTE_RING_CTRL_SIZE, SLOTS),
  };
}

Deno.test("desc ring: batches keep order across wrap-around, full and empty edges", () => {
  const { tx, rx } = ring();
  let next = 0;
  let expect = 0;
  for (let round = 0; round < 200; round++) {
    const k = tx.reserve(1 + (round * 5) % 20);
    assert(k >= 0);
    for (let i = 0; i < k; i++) {
      const at = tx.slotOffset(i);
      tx.view.setUint32(at, next, true);
      tx.view.setUint32(at + DESC_SIZE - 4, ~next, true);
      next++;
    }
    tx.publish(k);
    const n = rx.peek(1 + (round * 3) % 11);
    for (let i = 0; i < n; i++) {
      const at = rx.slotOffset(i);
      assertEquals(rx.view.getUint32(at, true), expect);
      assertEquals(rx.view.getUint32(at + DESC_SIZE - 4, true), (~expect) >>> 0);
      expect++;
    }
    rx.release(n);
  }
  assertEquals(rx.peek(100), next - expect);
  assertEquals(tx.reserve(100), SLOTS - (next - expect));
});

Deno.test("desc ring: full ring reserves 0, empty ring peeks 0", () => {
  const { tx, rx } = ring();
  assertEquals(rx.peek(4), 0);
  assertEquals(tx.reserve(100), SLOTS);
  tx.publish(SLOTS);
  assertEquals(tx.reserve(1), 0);
  assertEquals(rx.peek(100), SLOTS);
  rx.release(SLOTS);
  assertEquals(tx.reserve(1), 1);
});

Deno.test("desc ring: hostile indices are refused, counted, and the ring stays usable", () => {
  const { tx, rx, idx } = ring();
  tx.publish(tx.reserve(3));
  assertEquals(rx.peek(8), 3);
  Atomics.store(idx, RING_PROD_OFFSET >> 2, 1 << 20);
  assertEquals(rx.peek(8), RING_FAULT);
  assertEquals(rx.faults, 1);
  rx.release(3); // the batch validated earlier is still ours to release
  assertThrows(() => rx.release(1), RangeError);
  Atomics.store(idx, RING_PROD_OFFSET >> 2, 4);
  assertEquals(rx.peek(8), 1);
  assert(!rx.faulted);

  const other = ring();
  other.tx.publish(other.tx.reserve(SLOTS));
  Atomics.store(other.idx, RING_CONS_OFFSET >> 2, SLOTS + 1); // consumer past producer
  assertEquals(other.tx.reserve(1), RING_FAULT);
  assertEquals(other.tx.faults, 1);
  assertThrows(() => other.tx.publish(1), RangeError);
});
