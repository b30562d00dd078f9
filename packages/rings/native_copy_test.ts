import { assert, assertEquals } from "@std/assert";
import { hostSRings, nicSRings } from "./attach.ts";
import { closeRegion, createRegion } from "./region.ts";
import { nativeCopy, registerNativeMemory } from "./_native.ts";
import { Waker } from "./waker.ts";

const PARAMS = {
  maxThreads: 1,
  maxWaiters: 1,
  maxProcs: 1,
  maxSockets: 2,
  cmdSlots: 64,
  cplSlots: 64,
  evSlots: 64,
  txBytes: 4096,
  rxBytes: 4096,
};

Deno.test("native copies: region <-> native pool through libpno_copy, wrapping, byte-exact", () => {
  assert(nativeCopy() !== null, "libpno_copy loads (make -C ffi)");
  const region = createRegion(PARAMS);
  const poolRegion = createRegion({ ...PARAMS, txBytes: 65536 });
  try {
    const pool = new Uint8Array(poolRegion.buffer);
    registerNativeMemory(pool.buffer, poolRegion.ptr);
    const host = hostSRings(region.buffer, region.layout, 1);
    const nic = nicSRings(region.buffer, region.layout, 1);
    const pattern = new Uint8Array(3000);
    for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 31 + 7) & 0xff;
    // Move the indices so the next copies cross the end of the 4096-byte data area.
    assertEquals(host.tx.write(pattern, 0, 3000), 3000);
    assertEquals(nic.tx.readable(), 3000);
    nic.tx.release(3000);
    assertEquals(host.tx.write(pattern, 0, 3000), 3000);
    assertEquals(nic.tx.readable(), 3000);
    // copyOut (TX ring -> pool frame) at an offset, across the wrap.
    nic.tx.copyOut(100, pool, 777, 2500);
    assertEquals(pool.subarray(777, 777 + 2500), pattern.subarray(100, 2600));
    // copyOutSum: the same copy with the Internet checksum of the bytes in the same pass.
    pool.fill(0, 777, 777 + 2500);
    const sum = nic.tx.copyOutSum(100, pool, 777, 2500);
    assertEquals(pool.subarray(777, 777 + 2500), pattern.subarray(100, 2600));
    assertEquals(sum, nativeCopy()!.pno_csum(0, pattern, 100, 2500));
    const unsummed = new Uint8Array(2500);
    assertEquals(nic.tx.copyOutSum(100, unsummed, 0, 2500), -1, "a plain buffer: copy only");
    assertEquals(unsummed, pattern.subarray(100, 2600));
    // copyIn (pool frame -> RX ring), across the wrap, then the host reads it back.
    const rxStart = new Uint8Array(3000);
    nic.rx.copyIn(0, pool, 777, 2500);
    nic.rx.publish(2500);
    assertEquals(host.rx.read(rxStart, 0, 2500), 2500);
    nic.rx.copyIn(0, pool, 777, 2500); // this one wraps (prod at 2500 of 4096)
    nic.rx.publish(2500);
    const back = new Uint8Array(2500);
    assertEquals(host.rx.read(back, 0, 2500), 2500);
    assertEquals(back, pattern.subarray(100, 2600));
    // copyInSum: a pool frame's payload into the RX ring's free space, the frame's 32 header
    // bytes and its payload summed in the same pass, across the wrap (prod at 5000: 904 of
    // 4096), unpublished until publish.
    pool.set(pattern.subarray(0, 1000), 777 + 2500);
    const rxSum = nic.rx.copyInSum(0, pool, 777 + 32, 3468, 32);
    assertEquals(rxSum, nativeCopy()!.pno_csum(0, pool, 777, 3500));
    assertEquals(host.rx.read(back, 0, 2500), 0, "unpublished");
    nic.rx.publish(3468);
    const wide = new Uint8Array(3468);
    assertEquals(host.rx.read(wide, 0, 3468), 3468);
    assertEquals(wide, pool.subarray(777 + 32, 777 + 3500));
    // A plain buffer cannot be reached natively: nothing is copied, the caller copies.
    assertEquals(nic.rx.copyInSum(0, unsummed, 0, 100), -1);
    // A plain (non-native) buffer still goes through the TypeScript path.
    const plain = new Uint8Array(2500);
    nic.tx.copyOut(100, plain, 0, 2500);
    assertEquals(plain, pattern.subarray(100, 2600));
  } finally {
    closeRegion(region);
    closeRegion(poolRegion);
  }
});

Deno.test("waker: a kick ends a wait early; a wait without one times out", async () => {
  const w = Waker.create();
  try {
    const t0 = performance.now();
    assertEquals(await w.wait(5), false);
    assert(performance.now() - t0 >= 4);
    setTimeout(() => w.kick(), 10);
    const t1 = performance.now();
    assertEquals(await w.wait(5000), true);
    assert(performance.now() - t1 < 1000);
    w.kick(); // a kick before the wait is not lost
    assertEquals(await w.wait(5000), true);
  } finally {
    w.close();
  }
});
