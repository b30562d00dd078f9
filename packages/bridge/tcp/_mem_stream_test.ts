import { assert, assertEquals, assertThrows } from "@std/assert";
import { MEM_STREAM_MIN_BACKING, MemStream } from "./_mem_stream.ts";
import { checksumAddTs, checksumFinish } from "../wire/checksum.ts";

const pattern = (n: number, from = 0) => Uint8Array.from({ length: n }, (_, i) => (from + i) % 251);

Deno.test("MemStream: an untouched ring holds no memory; the backing follows the bytes", () => {
  const r = new MemStream(64 * 1024, false, 1 << 20);
  assertEquals(r.capacity, 64 * 1024);
  assertEquals(r.limit, 1 << 20);
  assertEquals(r.backingBytes(), 0, "nothing allocated before the first byte");
  assertEquals(r.writable(), 64 * 1024, "the capacity is offered all the same");
  assertEquals(r.write(pattern(100), 0, 100), 100);
  assertEquals(r.backingBytes(), MEM_STREAM_MIN_BACKING);
  assertEquals(r.write(pattern(10000, 100), 0, 10000), 10000);
  assertEquals(r.backingBytes(), 16384, "doubled to the next power of two that holds 10,100");
  const out = new Uint8Array(10100);
  assertEquals(r.read(out, 0, out.length), 10100);
  assertEquals(out, pattern(10100));
  assertEquals(r.allocations, 2);
});

Deno.test("MemStream: growing the backing keeps wrapped and out-of-order bytes in place", () => {
  const r = new MemStream(32 * 1024, false, 32 * 1024);
  // Fill 3,000 then consume 2,500 so the next bytes wrap round the 4 KiB backing.
  r.write(pattern(3000), 0, 3000);
  const sink = new Uint8Array(32 * 1024);
  r.read(sink, 0, 2500);
  r.write(pattern(3000, 3000), 0, 3000); // 3,500 held, wrapping
  assertEquals(r.backingBytes(), 4096);
  // Out-of-order bytes 2,000 past the producer index force a larger backing (engine side).
  r.copyIn(2000, pattern(1000, 8000), 0, 1000);
  assertEquals(r.backingBytes(), 8192);
  // The gap filled, everything published: the consumer sees one exact run.
  r.copyIn(0, pattern(2000, 6000), 0, 2000);
  r.publish(3000);
  const n = r.read(sink, 0, sink.length);
  assertEquals(n, 3500 + 3000);
  assertEquals(sink.subarray(0, n), pattern(n, 2500));
});

Deno.test("MemStream: capacity grows in powers of two up to the limit and never shrinks", () => {
  const r = new MemStream(16 * 1024, false, 256 * 1024);
  assertEquals(r.grow(20000), 32 * 1024);
  assertEquals(r.grow(1000), 32 * 1024, "a smaller request leaves it");
  assertEquals(r.grow(10 << 20), 256 * 1024, "capped at the limit");
  assertEquals(r.writable(), 256 * 1024);
  assertEquals(r.backingBytes(), 0, "capacity alone costs nothing");
  const fixed = new MemStream(64 * 1024);
  assertEquals(fixed.limit, 64 * 1024, "without a limit the ring is fixed");
  assertEquals(fixed.grow(1 << 20), 64 * 1024);
  fixed.preallocate();
  assertEquals(fixed.backingBytes(), 64 * 1024);
});

Deno.test("MemStream: a full ring round trip at every growth step, byte loop copies too", () => {
  for (const loop of [false, true]) {
    const r = new MemStream(4096, loop, 1 << 20);
    const sink = new Uint8Array(1 << 20);
    let w = 0, rd = 0;
    for (let round = 0; round < 40; round++) {
      if (round % 5 === 4) r.grow(r.capacity * 2);
      const want = Math.max(0, r.writable() - (round % 7));
      w += r.write(pattern(want, w), 0, want);
      const got = r.read(sink, 0, (round * 997) % (r.readable() + 1));
      assertEquals(sink.subarray(0, got), pattern(got, rd));
      rd += got;
    }
    assert(r.capacity > 4096 && r.allocations <= 9, `${r.allocations} allocations`);
  }
});

Deno.test("MemStream: the copy summed natively wraps at the backing, not the capacity", () => {
  const r = new MemStream(64 * 1024, false, 1 << 20);
  r.write(pattern(3000), 0, 3000);
  r.read(new Uint8Array(3000), 0, 2500);
  r.write(pattern(3000, 3000), 0, 3000); // wraps round the 4 KiB backing
  assertEquals(r.backingBytes(), 4096);
  const viaSum = new Uint8Array(3500), plain = new Uint8Array(3500);
  const sum = r.copyOutSum(0, viaSum, 0, 3500);
  r.copyOut(0, plain, 0, 3500);
  assertEquals(viaSum, plain);
  assertEquals(plain, pattern(3500, 2500));
  if (sum >= 0) {
    assertEquals(checksumFinish(sum), checksumFinish(checksumAddTs(0, plain, 0, 3500)));
  }
});

Deno.test("MemStream: copyInSum lands bytes unpublished, wrapped, past held ones; sums the source", () => {
  const r = new MemStream(64 * 1024, false, 1 << 20);
  r.write(pattern(3000), 0, 3000);
  r.read(new Uint8Array(3000), 0, 2500); // 500 unread bytes at 2500 of the 4 KiB backing
  const src = pattern(2600, 7000);
  // Out-of-order bytes 1200 past the producer index, then the in-order ones before them: the
  // summed copy (producer index 3000) wraps round the 4 KiB backing and stops short of them.
  r.copyIn(1200, src, 1200, 1400);
  const sum = r.copyInSum(0, src, 0, 1200);
  assert(sum >= 0, "MemStream sums natively (make -C ffi)");
  assertEquals(r.readable(), 500, "nothing published by the copy");
  assertEquals(checksumFinish(sum), checksumFinish(checksumAddTs(0, src, 0, 1200)));
  r.publish(2600);
  const back = new Uint8Array(3100);
  assertEquals(r.read(back, 0, 3100), 3100);
  assertEquals(back.subarray(0, 500), pattern(500, 2500));
  assertEquals(back.subarray(500), src);
  // A copy that needs a larger backing grows it first, keeping what is held. The 32 bytes
  // before the copied ones (a segment's header) are summed, not copied.
  r.write(pattern(3000, 1), 0, 3000);
  const big = pattern(5032, 3);
  const bigSum = r.copyInSum(0, big, 32, 5000, 32);
  assertEquals(r.backingBytes(), 8192);
  r.publish(5000);
  const all = new Uint8Array(8000);
  assertEquals(r.read(all, 0, 8000), 8000);
  assertEquals(all.subarray(0, 3000), pattern(3000, 1));
  assertEquals(all.subarray(3000), big.subarray(32));
  assertEquals(checksumFinish(bigSum), checksumFinish(checksumAddTs(0, big, 0, 5032)));
  // A byte-loop ring does not sum: it copies nothing, the caller copies.
  const loop = new MemStream(4096, true);
  assertEquals(loop.copyInSum(0, big, 0, 100), -1);
  assertEquals(loop.backingBytes(), 0);
  // Past the free space is the caller's bug, refused before the native copy.
  const full = new MemStream(4096);
  full.write(pattern(4000), 0, 4000);
  assertThrows(() => full.copyInSum(0, big, 0, 100), RangeError);
});

Deno.test("MemStream: a ring quiet between two sweeps lets its backing go, keeps its capacity", () => {
  const r = new MemStream(64 * 1024, false, 1 << 20);
  r.grow(256 * 1024);
  r.write(pattern(50_000), 0, 50_000);
  assertEquals(r.trimIfQuiet(), 0, "bytes held: nothing to free");
  r.read(new Uint8Array(50_000), 0, 50_000);
  assertEquals(r.trimIfQuiet(), 0, "empty, but bytes went through since the last sweep");
  assertEquals(r.trimIfQuiet(), 65536, "empty and quiet: the backing goes");
  assertEquals(r.backingBytes(), 0);
  assertEquals(r.capacity, 256 * 1024, "the capacity (the window promised) stays");
  // The next bytes start from 4 KiB again, exact.
  r.write(pattern(10, 7), 0, 10);
  assertEquals(r.backingBytes(), MEM_STREAM_MIN_BACKING);
  const out = new Uint8Array(10);
  r.read(out, 0, 10);
  assertEquals(out, pattern(10, 7));
  const fixed = new MemStream(8192);
  fixed.preallocate();
  fixed.trimIfQuiet();
  assertEquals(fixed.trimIfQuiet(), 0, "a preallocated ring keeps its memory");
});
