/**
 * A hashed timing wheel of intrusive lists (Varghese and Lauck): one slot per millisecond tick,
 * 4096 slots. Each entry is linked in at most once, at its earliest deadline; arming, moving
 * and firing cost O(1), and a deadline more than a turn away simply stays in its slot until a
 * visit finds it due.
 *
 * @module
 */

/** Milliseconds per tick. */
export const TICK_MS = 1;
/** Slots in the wheel (one turn is 4.096 s). */
export const WHEEL_SLOTS = 4096;
const WHEEL_MASK = WHEEL_SLOTS - 1;

/** The links an entry carries (the wheel owns these fields). */
export interface WheelEntry<T> {
  /** The deadline it is linked at (ms). */
  tAt: number;
  tSlot: number;
  tLinked: boolean;
  tPrev: T | null;
  tNext: T | null;
}

/** A timing wheel over entries of type T. */
export class TimerWheel<T extends WheelEntry<T>> {
  private readonly slots: (T | null)[] = new Array(WHEEL_SLOTS).fill(null);
  private curTick = -1;
  /** Entries linked in. */
  count = 0;

  /**
   * Links `s` at deadline `at` (ms). An entry already linked at or before `at` stays where it
   * is (it fires early and its owner re-arms: cheaper than moving it).
   */
  arm(s: T, at: number): void {
    if (s.tLinked) {
      if (s.tAt <= at) return;
      this.unlink(s);
    }
    // The slot of the first tick that starts at or after `at`: when run() reaches it, `now` has
    // passed `at`. (With floor, a fractional deadline like 3174.1 ms sat in slot 3174, was
    // visited at now = 3174.05, not yet due, and then waited a whole wheel turn: 4 s late.)
    let tick = Math.ceil(at / TICK_MS);
    if (tick <= this.curTick) tick = this.curTick + 1;
    const slot = tick & WHEEL_MASK;
    s.tAt = at;
    s.tSlot = slot;
    s.tLinked = true;
    s.tPrev = null;
    const head = this.slots[slot];
    s.tNext = head;
    if (head !== null) head.tPrev = s;
    this.slots[slot] = s;
    this.count++;
  }

  /** Takes `s` off the wheel (it must be linked). */
  unlink(s: T): void {
    if (s.tPrev !== null) s.tPrev.tNext = s.tNext;
    else this.slots[s.tSlot] = s.tNext;
    if (s.tNext !== null) s.tNext.tPrev = s.tPrev;
    s.tPrev = s.tNext = null;
    s.tLinked = false;
    this.count--;
  }

  /**
   * Visits every tick up to `now` and calls `fire` for each entry whose deadline has passed,
   * after unlinking it (`fire` may arm it again).
   */
  run(now: number, fire: (s: T) => void): void {
    const target = Math.floor(now / TICK_MS);
    if (this.curTick < 0) this.curTick = target - 1;
    if (target <= this.curTick) return;
    let from = this.curTick + 1;
    if (target - this.curTick > WHEEL_SLOTS) from = target - WHEEL_SLOTS + 1;
    for (let t = from; t <= target; t++) {
      this.curTick = t;
      let s = this.slots[t & WHEEL_MASK];
      while (s !== null) {
        const next = s.tNext;
        if (s.tAt <= now) {
          this.unlink(s);
          fire(s);
        }
        s = next;
      }
    }
    this.curTick = target;
  }

  /** The earliest deadline linked, Infinity if none. */
  nextDeadline(): number {
    if (this.count === 0) return Infinity;
    let best = Infinity;
    for (let i = 1; i <= WHEEL_SLOTS; i++) {
      const t = this.curTick + i;
      for (let s = this.slots[t & WHEEL_MASK]; s !== null; s = s.tNext) {
        if (s.tAt < best) best = s.tAt;
      }
      if (best <= (t + 1) * TICK_MS) break;
    }
    return best;
  }
}
