import { assert, assertEquals, assertThrows } from "@std/assert";
import {
  BYTE_RING_CTRL_SIZE,
  HostRxConsumer,
  HostTxProducer,
  NicRxProducer,
  NicTxConsumer,
  RING_CONS_OFFSET,
  RING_FAULT,
  RING_PROD_OFFSET,
} from "./byte_ring.ts";

const CAP = 64;

function ring(cap = CAP) {
  const mem = new SharedArrayBuffer(BYTE_RING_CTRL_SIZE + cap);
  const idx = new Uint32Array(mem, 0, BYTE_RING_CTRL_SIZE >> 2);
  return { mem, idx, cap };
}

function pattern(start: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (start + i) * 131 + 7;
  return out;
}

Deno.test("byte ring: TX write then NIC copyOut at offsets, release, wrap-around", () => {
  const { mem } = ring();
  const host = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  const nic = new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  let sent = 0;
  let acked = 0;
  for (let round = 0; round < 50; round++) {
    const len = 1 + (round * 17) % 40;
    const n = host.write(pattern(sent, len), 0, len);
    assert(n >= 0 && n <= len);
    sent += n;
    const avail = nic.readable();
    assertEquals(avail, sent - acked);
    // Read the tail first (as a retransmission would), then the head.
    const out = new Uint8Array(avail);
    const half = avail >> 1;
    nic.copyOut(half, out, half, avail - half);
    nic.copyOut(0, out, 0, half);
    assertEquals(out, pattern(acked, avail));
    const ack = Math.min(avail, 1 + round % 30);
    nic.release(ack);
    acked += ack;
  }
  assertEquals(nic.faults + host.faults, 0);
});

Deno.test("byte ring: full and empty edges, partial writes", () => {
  const { mem } = ring();
  const host = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  const nic = new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  assertEquals(nic.readable(), 0);
  assertEquals(host.write(pattern(0, 100), 0, 100), CAP);
  assertEquals(host.write(pattern(0, 1), 0, 1), 0);
  assertEquals(host.writable(), 0);
  assertEquals(nic.readable(), CAP);
  nic.release(CAP);
  assertEquals(nic.readable(), 0);
  assertEquals(host.writable(), CAP);
});

Deno.test("byte ring: NIC RX copyIn out of order, publish prefix, host reads", () => {
  const { mem } = ring();
  const nic = new NicRxProducer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  const host = new HostRxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  let produced = 0;
  let consumed = 0;
  for (let round = 0; round < 60; round++) {
    const win = nic.writable();
    const len = Math.min(win, 1 + (round * 13) % 50);
    const data = pattern(produced, len);
    const cut = len >> 1;
    nic.copyIn(cut, data, cut, len - cut); // later segment first
    assertEquals(host.readable(), produced - consumed, "unpublished bytes are invisible");
    nic.copyIn(0, data, 0, cut);
    nic.publish(len);
    produced += len;
    const want = 1 + (round * 7) % 45;
    const dst = new Uint8Array(want + 3);
    const n = host.read(dst, 3, want);
    assertEquals(n, Math.min(want, produced - consumed));
    assertEquals(dst.subarray(3, 3 + n), pattern(consumed, n));
    consumed += n;
  }
});

Deno.test("byte ring: large copies take the set() path and wrap", () => {
  const cap = 4096;
  const { mem } = ring(cap);
  const host = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, cap);
  const nic = new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, cap);
  let total = 0;
  for (let i = 0; i < 20; i++) {
    const len = 3000;
    assertEquals(host.write(pattern(total, len), 0, len), len);
    const out = new Uint8Array(len);
    nic.copyOut(0, out, 0, len);
    assertEquals(out, pattern(total, len));
    nic.release(len);
    total += len;
  }
});

Deno.test("byte ring: hostile producer index is refused and counted, never read out of range", () => {
  const { mem, idx } = ring();
  const host = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  const nic = new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  host.write(pattern(0, 10), 0, 10);
  assertEquals(nic.readable(), 10);
  Atomics.store(idx, RING_PROD_OFFSET >> 2, 0x7fffffff); // prod - cons > capacity
  assertEquals(nic.readable(), 10, "keeps the last validated count");
  assert(nic.faulted);
  assertEquals(nic.faults, 1);
  assertThrows(() => nic.copyOut(0, new Uint8Array(11), 0, 11), RangeError);
  assertEquals(nic.faults, 2, "the refresh inside copyOut refused the index too");
  Atomics.store(idx, RING_PROD_OFFSET >> 2, 5); // producer went backwards
  assertEquals(nic.readable(), 10);
  assertEquals(nic.faults, 3);
  Atomics.store(idx, RING_PROD_OFFSET >> 2, 12); // sane again
  assertEquals(nic.readable(), 12);
  assert(!nic.faulted);
});

Deno.test("byte ring: hostile consumer index is refused by both producers", () => {
  const { mem, idx } = ring();
  const nic = new NicRxProducer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  nic.copyIn(0, pattern(0, 20), 0, 20);
  nic.publish(20);
  Atomics.store(idx, RING_CONS_OFFSET >> 2, 30); // consumer past producer
  assertEquals(nic.writable(), CAP - 20);
  assertEquals(nic.faults, 1);
  Atomics.store(idx, RING_CONS_OFFSET >> 2, 0xfffffff0); // consumer behind its last value
  assertEquals(nic.writable(), CAP - 20);
  assertEquals(nic.faults, 2);
  assertThrows(() => nic.copyIn(0, new Uint8Array(CAP), 0, CAP), RangeError);

  const other = ring();
  const host = new HostTxProducer(other.mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  host.write(pattern(0, CAP), 0, CAP);
  Atomics.store(other.idx, RING_CONS_OFFSET >> 2, 1000);
  assertEquals(host.write(pattern(0, 1), 0, 1), RING_FAULT);
  assertEquals(host.faults, 1);
});

Deno.test("byte ring: hostile producer on the host RX side returns RING_FAULT", () => {
  const { mem, idx } = ring();
  const host = new HostRxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  Atomics.store(idx, RING_PROD_OFFSET >> 2, CAP + 1);
  assertEquals(host.read(new Uint8Array(8), 0, 8), RING_FAULT);
  assertEquals(host.readable(), RING_FAULT);
  assertEquals(host.faults, 2);
});

Deno.test("byte ring: local misuse and bad placement throw", () => {
  const { mem } = ring();
  assertThrows(() => new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, 48), RangeError);
  assertThrows(() => new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, 128), RangeError);
  assertThrows(() => new NicTxConsumer(mem, 8, BYTE_RING_CTRL_SIZE, CAP), RangeError);
  const nic = new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  assertThrows(() => nic.release(1), RangeError);
  assertThrows(() => nic.copyOut(0, new Uint8Array(4), 2, 4), RangeError);
});

Deno.test("byte ring: word-loop copies keep NaN bit patterns exactly", () => {
  const cap = 256;
  const { mem } = ring(cap);
  const host = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, cap);
  const rx = new HostRxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, cap);
  const src = new Uint8Array(200);
  const dv = new DataView(src.buffer);
  const nans = [0x7ff0000000000001n, 0xfff7fffffff7ffffn, 0x7ff4000000000000n, 0xfff0000000000001n];
  for (let i = 0; i < 25; i++) dv.setBigUint64(i * 8, nans[i % nans.length], true);
  const dst = new Uint8Array(200);
  for (let round = 0; round < 20000; round++) { // long enough to be optimized
    dst.fill(0);
    assertEquals(host.write(src, 0, 200), 200);
    assertEquals(rx.read(dst, 0, 200), 200);
    if (round % 1000 === 0 || round === 19999) assertEquals(dst, src);
  }
});

Deno.test("byte ring: a producer side made while the consumer lags (bytes not yet acknowledged) finds the room left, not a fault", () => {
  const { mem } = ring();
  const first = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  assertEquals(first.write(pattern(0, 40), 0, 40), 40);
  // Each send() of the shim looks at the ring afresh: 40 bytes are still unacknowledged.
  const second = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, CAP);
  assertEquals(second.writable(), CAP - 40);
  assertEquals(second.write(pattern(40, 10), 0, 10), 10);
  assertEquals(second.faults, 0);
});
