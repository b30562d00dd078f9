import { assert, assertEquals, assertThrows } from "@std/assert";
import { FaultInjector, type FaultSettings } from "./fault_injector.ts";
import { MemoryDevice } from "./mem_device.ts";

/** A frame whose first two bytes carry its number and whose length varies with it. */
function frame(i: number): Uint8Array {
  const f = new Uint8Array(60 + (i % 97));
  f[0] = i >> 8;
  f[1] = i & 255;
  for (let j = 2; j < f.length; j++) f[j] = (i + j) & 255;
  return f;
}

function idOf(f: Uint8Array): number {
  return (f[0] << 8) | f[1];
}

/** A fault injector over a memory device, on a clock the test moves. */
function rig(settings: FaultSettings, slots = 256) {
  const mem = new MemoryDevice(slots);
  const clock = { t: 1000 };
  const dev = new FaultInjector(mem, settings, () => clock.t);
  /** Every frame the stack would see now: a receive() burst, copied out. */
  const receive = (): Uint8Array[] => {
    const n = dev.receive();
    const out: Uint8Array[] = [];
    for (let i = 0; i < n; i++) {
      out.push(dev.rxBuf.slice(dev.rxOffset(i), dev.rxOffset(i) + dev.rxLength(i)));
    }
    return out;
  };
  /** Bursts until one comes back empty. */
  const receiveAll = (): Uint8Array[] => {
    const out: Uint8Array[] = [];
    for (;;) {
      const got = receive();
      if (got.length === 0) return out;
      out.push(...got);
    }
  };
  const send = (f: Uint8Array): void => {
    const at = dev.reserve();
    assert(at >= 0);
    dev.txBuf.set(f, at);
    dev.commit(f.length);
  };
  return { mem, clock, dev, receive, receiveAll, send };
}

Deno.test("fault injector without faults lends every frame in place, both ways", () => {
  const { mem, dev, receive, send } = rig({});
  for (let i = 0; i < 10; i++) mem.inject(frame(i));
  const n = dev.receive();
  assertEquals(n, 10);
  assert(dev.rxBuf === mem.rxBuf, "frames passing straight through are not copied");
  for (let i = 0; i < 10; i++) assertEquals(idOf(dev.rxBuf.subarray(dev.rxOffset(i))), i);
  assertEquals(receive().length, 0);
  for (let i = 0; i < 10; i++) send(frame(i));
  dev.flush();
  assertEquals(mem.takeSent(), Array.from({ length: 10 }, (_, i) => frame(i)));
  assertEquals(dev.counters.snapshot(), {
    dropped: 0,
    duplicated: 0,
    delayed: 0,
    reordered: 0,
    poolFull: 0,
  });
  assertEquals(dev.nextDue(), Infinity);
});

Deno.test("fault injector drops its share of frames in each direction, by seed", () => {
  const run = (seed: number) => {
    const { mem, dev, receiveAll, send } = rig({ lossPercent: 30, seed });
    const rx: number[] = [], tx: number[] = [];
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 50; i++) mem.inject(frame(round * 50 + i));
      rx.push(...receiveAll().map(idOf));
      for (let i = 0; i < 50; i++) send(frame(round * 50 + i));
      dev.flush();
      tx.push(...mem.takeSent().map(idOf));
    }
    return { rx, tx, dropped: dev.counters.dropped };
  };
  const a = run(7), b = run(7), c = run(8);
  assertEquals(a, b, "the same seed gives the same losses");
  assert(JSON.stringify(a.rx) !== JSON.stringify(c.rx), "another seed gives other losses");
  assertEquals(a.dropped, 2000 - a.rx.length + 2000 - a.tx.length);
  for (const kept of [a.rx.length, a.tx.length]) {
    assert(kept > 2000 * 0.65 && kept < 2000 * 0.75, `kept ${kept} of 2000 at 30% loss`);
  }
  // What passes keeps its order.
  assertEquals(a.rx, [...a.rx].sort((x, y) => x - y));
});

Deno.test("fault injector delays received and transmitted frames until they are due", () => {
  const { mem, clock, dev, receive, send } = rig({ delayMs: 10 });
  mem.inject(frame(1));
  mem.inject(frame(2));
  assertEquals(receive().length, 0);
  assertEquals(dev.nextDue(), 1010);
  clock.t = 1005;
  mem.inject(frame(3));
  assertEquals(receive().length, 0);
  send(frame(4));
  dev.flush();
  assertEquals(mem.takeSent().length, 0);
  assertEquals(dev.held, 4);
  clock.t = 1009.9;
  assertEquals(receive().length, 0);
  clock.t = 1010;
  const got = receive();
  assertEquals(got, [frame(1), frame(2)]);
  assertEquals(receive().length, 0);
  clock.t = 1015;
  assertEquals(receive(), [frame(3)]);
  assertEquals(dev.flush(), 1);
  assertEquals(mem.takeSent(), [frame(4)]);
  assertEquals(dev.counters.delayed, 4);
  assertEquals(dev.nextDue(), Infinity);
  receive();
  assertEquals(dev.held, 0);
});

Deno.test("fault injector reorders: a share of frames skips the delay and overtakes", () => {
  const { mem, clock, dev, receiveAll, send } = rig({ delayMs: 10, reorderPercent: 25, seed: 3 });
  for (let i = 0; i < 200; i++) mem.inject(frame(i));
  for (let i = 0; i < 200; i++) send(frame(i));
  dev.flush();
  const earlyRx = receiveAll().map(idOf);
  const earlyTx = mem.takeSent().map(idOf);
  clock.t += 10;
  const lateRx = receiveAll().map(idOf);
  dev.flush();
  const lateTx = mem.takeSent().map(idOf);
  for (const [early, late] of [[earlyRx, lateRx], [earlyTx, lateTx]]) {
    assertEquals(early.length + late.length, 200);
    assert(early.length > 30 && early.length < 75, `${early.length} of 200 skipped the delay`);
    assertEquals(
      [...early, ...late].sort((x, y) => x - y),
      Array.from({ length: 200 }, (_, i) => i),
    );
    assert(early[0] > 0 || late[0] === 0);
  }
  assertEquals(dev.counters.reordered, earlyRx.length + earlyTx.length);
  assertEquals(dev.counters.delayed, lateRx.length + lateTx.length);
});

Deno.test("fault injector duplicates frames in both directions", () => {
  const { mem, dev, receiveAll, send } = rig({ duplicatePercent: 100 });
  for (let i = 0; i < 5; i++) mem.inject(frame(i));
  assertEquals(receiveAll().map(idOf), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
  for (let i = 0; i < 5; i++) send(frame(i));
  dev.flush();
  const sent = mem.takeSent();
  assertEquals(sent.map(idOf).sort((x, y) => x - y), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
  for (const f of sent) assertEquals(f, frame(idOf(f)));
  assertEquals(dev.counters.duplicated, 10);
  assertEquals(dev.held, 0);
});

Deno.test("fault injector jitter spreads the delay and releases frames in due order", () => {
  const { mem, clock, receive } = rig({ delayMs: 20, jitterMs: 5, seed: 11 });
  for (let i = 0; i < 100; i++) mem.inject(frame(i));
  assertEquals(receive().length, 0);
  const start = clock.t;
  const seen: number[] = [];
  let first = Infinity, last = 0;
  for (let t = start; t <= start + 30; t += 0.25) {
    clock.t = t;
    const got = receive();
    if (got.length > 0) {
      first = Math.min(first, t - start);
      last = Math.max(last, t - start);
    }
    seen.push(...got.map(idOf));
  }
  assertEquals(seen.length, 100);
  assert(first >= 15 && last <= 25.25, `released from ${first} to ${last} ms`);
  assert(seen.some((id, i) => i > 0 && id < seen[i - 1]), "jitter reorders held frames");
});

Deno.test("fault injector drops and counts what the full pool cannot hold", () => {
  const { mem, clock, dev, receive, send } = rig({ delayMs: 5, slots: 4 }, 64);
  for (let i = 0; i < 6; i++) mem.inject(frame(i));
  assertEquals(receive().length, 0);
  send(frame(9));
  dev.flush();
  assertEquals(dev.counters.delayed, 4);
  assertEquals(dev.counters.poolFull, 3);
  clock.t += 5;
  assertEquals(receive().map(idOf), [0, 1, 2, 3]);
  send(frame(10)); // slots of the burst being read are not reused until the next receive()
  assertEquals(dev.counters.poolFull, 4);
  assertEquals(receive().length, 0);
  send(frame(11));
  assertEquals(dev.counters.delayed, 5);
  clock.t += 5;
  dev.flush();
  assertEquals(mem.takeSent(), [frame(11)]);
});

Deno.test("fault injector alternates bursts between the wire and due frames", () => {
  const { mem, clock, receive } = rig({ delayMs: 10, reorderPercent: 50, seed: 5 });
  for (let i = 0; i < 40; i++) mem.inject(frame(i));
  const early = receive().map(idOf);
  while (receive().length > 0);
  clock.t += 10;
  for (let i = 100; i < 110; i++) mem.inject(frame(i));
  const a = receive(), b = receive(), c = receive();
  const fromPool = (got: Uint8Array[]) => got.every((f) => idOf(f) < 40);
  assert(fromPool(a) && a.length === 40 - early.length, "due frames come first");
  assert(b.length > 0 && b.every((f) => idOf(f) >= 100), "then the wire's burst");
  assertEquals(c.length, 0);
});

Deno.test("fault injector rejects settings netem would not take", () => {
  const mem = new MemoryDevice();
  assertThrows(() => new FaultInjector(mem, { lossPercent: 101 }), RangeError, "loss");
  assertThrows(() => new FaultInjector(mem, { delayMs: -1 }), RangeError, "delay");
  assertThrows(() => new FaultInjector(mem, { reorderPercent: 10 }), RangeError, "delay");
  assertThrows(() => new FaultInjector(mem, { lossPercent: NaN }), RangeError, "loss");
});
