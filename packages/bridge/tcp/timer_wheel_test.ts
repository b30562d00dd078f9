import { assert, assertEquals } from "@std/assert";
import { TimerWheel, WHEEL_SLOTS, type WheelEntry } from "./timer_wheel.ts";

class T implements WheelEntry<T> {
  tAt = 0;
  tSlot = 0;
  tLinked = false;
  tPrev: T | null = null;
  tNext: T | null = null;
  firedAt = -1;
  constructor(readonly name: string) {}
}

function runTo(w: TimerWheel<T>, from: number, to: number, step: number, fired: T[]) {
  for (let now = from; now <= to; now += step) {
    w.run(now, (t) => {
      t.firedAt = now;
      fired.push(t);
    });
  }
}

Deno.test("timer wheel: entries fire once, at or after their deadline, in time order", () => {
  const w = new TimerWheel<T>();
  const fired: T[] = [];
  w.run(0, () => {});
  const a = new T("a"), b = new T("b"), c = new T("c");
  w.arm(a, 30);
  w.arm(b, 10.4); // fractional: fires at the next tick, not a wheel turn later
  w.arm(c, 3 * WHEEL_SLOTS + 5); // more than a turn away
  assertEquals(w.count, 3);
  assertEquals(w.nextDeadline(), 10.4);
  runTo(w, 0.5, 3 * WHEEL_SLOTS + 10, 0.5, fired);
  assertEquals(fired.map((t) => t.name), ["b", "a", "c"]);
  assertEquals(b.firedAt, 11);
  assertEquals(a.firedAt, 30);
  assertEquals(c.firedAt, 3 * WHEEL_SLOTS + 5);
  assertEquals(w.count, 0);
  assertEquals(w.nextDeadline(), Infinity);
});

Deno.test("timer wheel: arming earlier moves an entry, later leaves it; unlink cancels", () => {
  const w = new TimerWheel<T>();
  const fired: T[] = [];
  w.run(100, () => {});
  const a = new T("a"), b = new T("b");
  w.arm(a, 500);
  w.arm(a, 200); // earlier: moved
  w.arm(a, 900); // later: stays at 200 (its owner re-arms when it fires)
  assertEquals(w.count, 1);
  assertEquals(a.tAt, 200);
  w.arm(b, 150);
  w.unlink(b);
  assert(!b.tLinked);
  runTo(w, 101, 300, 1, fired);
  assertEquals(fired.map((t) => t.name), ["a"]);
  assertEquals(a.firedAt, 200);
});

Deno.test("timer wheel: a deadline already past fires at the next run; a long sleep skips ahead", () => {
  const w = new TimerWheel<T>();
  const fired: T[] = [];
  w.run(1000, () => {});
  const a = new T("a"), b = new T("b");
  w.arm(a, 990);
  w.arm(b, 1000 + 2 * WHEEL_SLOTS);
  runTo(w, 1001, 1001, 1, fired);
  assertEquals(fired.map((t) => t.name), ["a"]);
  runTo(w, 1000 + 10 * WHEEL_SLOTS, 1000 + 10 * WHEEL_SLOTS, 1, fired);
  assertEquals(fired.map((t) => t.name), ["a", "b"]);
});
