/**
 * The bridge's polling discipline: busy while there is work, asleep when there is none.
 *
 * A NIC core polls; it never waits for an interrupt. But a core spinning on an idle link is
 * wasted, so after `spinMs` without work the loop sleeps, doubling the nap from `minSleepMs`
 * up to `maxSleepMs` (and never past the next timer deadline), and goes back to spinning on
 * the first frame. While spinning it still yields to Deno's event loop every `yieldEveryMs`
 * so signals, the stats server and workers' messages are served: a MessageChannel round
 * costs microseconds where a zero-delay timer costs milliseconds; but every `ioEveryMs` without
 * a nap it takes one zero-delay timer, so that the runtime polls its sockets too (MessageChannel
 * rounds alone leave them unpolled for seconds). Given a `Parking` (the wire's wake socket and
 * the region server's eventfd), the nap is a wait on those instead of a timer: a frame on the
 * wire, or an application that posts commands to a parked bridge, wakes it at once, as an RX
 * interrupt wakes a NAPI poll loop (measured: a ping after a quiet second answered in 0.2 ms
 * instead of up to the 8 ms nap).
 *
 * @module
 */

/** Tuning of the adaptive back-off. */
/** PNO_SPIN_YIELD=0 keeps spinning without giving the core away on empty rounds. */
const YIELD_WHEN_EMPTY = Deno.env.get("PNO_SPIN_YIELD") !== "0";

/**
 * The I/O turn's call on a pool thread (see ioYield): long enough that the runtime has parked
 * before it returns (with 50 us, /stats went unanswered for up to 1.6 s under a ping flood).
 */
const POOL_HOP_US = 200;
/** Every this many I/O turns, and for control exchanges, the turn is a zero-delay timer. */
const TIMER_TURN_EVERY = 10;

let libcYield: {
  sched_yield: () => number;
  poolHop: (us: number) => Promise<number>;
} | null = null;

function yieldSymbols() {
  libcYield ??= Deno.dlopen("libc.so.6", {
    sched_yield: { parameters: [], result: "i32" },
    poolHop: { name: "usleep", parameters: ["u32"], result: "i32", nonblocking: true },
  }).symbols;
  return libcYield;
}

/** sched_yield(2), through a fast FFI call (loaded on first use). */
function yieldCpu(): void {
  yieldSymbols().sched_yield();
}

export interface BackoffOptions {
  spinMs: number;
  minSleepMs: number;
  maxSleepMs: number;
  yieldEveryMs: number;
  /**
   * The longest the loop goes without letting the runtime poll for I/O. A MessageChannel yield
   * runs the event loop but not the I/O driver under it, which a loop that never naps reaches
   * too seldom: measured, a stats request then waits 4 to 8 s (1 to 2 s under a hostile
   * application's command flood). After this long without a nap the yield is a zero-delay
   * timer: the runtime parks, polling its sockets, for about 2 ms (a call on a blocking thread
   * is cheaper at the median but was seen to take up to 140 ms).
   */
  ioEveryMs: number;
  /**
   * With a `Parking` that can wait on this thread (`waitHere`), the longest such a wait lasts,
   * and how long the wait that lets the runtime poll its I/O lasts (once per `ioEveryMs`).
   */
  heldSleepMs: number;
  ioSleepMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  spinMs: 2,
  minSleepMs: 1,
  maxSleepMs: 8,
  yieldEveryMs: 1,
  ioEveryMs: 100,
  heldSleepMs: 50,
  ioSleepMs: 1,
};

/**
 * After control I/O was asked for, how long the loop naps only in ways that let I/O run and,
 * when busy, takes an I/O turn every CONTROL_IO_EVERY_MS (an exchange takes several turns).
 */
const CONTROL_WINDOW_MS = 250;
const CONTROL_IO_EVERY_MS = 5;

/** What ended a `Parking.wait` (bits; 0: the nap's timeout). */
export const WOKE_WIRE = 1;
export const WOKE_KICK = 2;

/**
 * How the loop parks when something else can wake it: `park` arms the wakeups (the wire's, and
 * the flag the regions' producers look at) and returns false if work arrived meanwhile; `wait`
 * blocks until woken or the nap ends and says why (WOKE_* bits); `unpark` disarms; `kick` ends
 * a wait.
 */
export interface Parking {
  park(): boolean;
  unpark(): void;
  wait(ms: number): Promise<number>;
  /**
   * Waits as `wait` does but blocking this thread. A wakeup then reaches the loop in one
   * thread switch instead of two (the pool thread's, then the event loop's): measured on this
   * 2-core VM, a ping after a quiet second 0.3 to 0.75 ms with `wait`. The runtime's I/O is
   * served in a short `wait` once every `ioEveryMs`.
   */
  waitHere?(ms: number): number;
  kick(): void;
}

/** One round of work: returns how much it did (frames, segments, events); 0 means idle. */
export type PollStep = (nowMs: number) => number;

/** Counters of the loop itself, to show where the core's time went. */
export class LoopCounters {
  rounds = 0;
  busyRounds = 0;
  sleeps = 0;
  sleptMs = 0;
  /** Naps cut short because a producer kicked the loop (or refused: work was waiting). */
  kicked = 0;
  /** Naps cut short by a frame on the wire. */
  wireWakes = 0;
  /** Naps taken blocking the loop's own thread (`Parking.waitHere`). */
  heldSleeps = 0;
  /** Parks given up because the round after arming found work (it came before the arm). */
  parkRaces = 0;
  /** Yields of a loop that had not napped for `ioEveryMs`, so that I/O is served. */
  ioYields = 0;
}

export class PollLoop {
  readonly counters = new LoopCounters();
  private stopping = false;
  /** Until then naps let the event loop run (control I/O in progress; see run()). */
  private controlUntil = 0;
  private readonly channel = new MessageChannel();
  private wake: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private ioTurns = 0;

  constructor(
    private readonly step: PollStep,
    private readonly nextDeadline: () => number = () => Infinity,
    private readonly opts: BackoffOptions = DEFAULT_BACKOFF,
    private readonly parking: Parking | null = null,
    /**
     * Whether an application waits on its control socket (its doorbell's control word moved):
     * then the runtime gets an I/O turn at once, and every CONTROL_IO_EVERY_MS for a while.
     */
    private readonly controlWanted: () => boolean = () => false,
  ) {
    this.channel.port1.onmessage = () => this.resume();
  }

  /** Runs until `stop()`. */
  async run(): Promise<void> {
    const o = this.opts, c = this.counters;
    let lastWork = performance.now();
    let lastYield = lastWork;
    let lastNap = lastWork;
    let nap = o.minSleepMs;
    while (!this.stopping) {
      const now = performance.now();
      c.rounds++;
      if (this.step(now) > 0) {
        c.busyRounds++;
        lastWork = now;
        nap = o.minSleepMs;
      } else if (now - lastWork < o.spinMs) {
        // An empty round while spinning: let a runnable thread that shares this core have it
        // (the application we are waiting for, on a host without cores of its own for us).
        if (YIELD_WHEN_EMPTY) yieldCpu();
      } else {
        const ms = Math.max(0, Math.min(nap, this.nextDeadline() - now));
        const p = this.parking;
        if (p !== null && ms > 0) {
          // Parks on the waker: producers kick it instead of waiting out the nap.
          if (p.park()) {
            // What arrived between the last round and the arm woke nobody: one more round.
            if (this.step(performance.now()) > 0) {
              p.unpark();
              c.parkRaces++;
              c.busyRounds++;
              lastWork = performance.now();
              nap = o.minSleepMs;
              continue;
            }
            c.sleeps++;
            const held = p.waitHere !== undefined && now - lastNap < o.ioEveryMs &&
              now >= this.controlUntil;
            let why: number;
            if (held) {
              c.heldSleeps++;
              why = p.waitHere!(Math.min(ms, o.heldSleepMs));
            } else {
              why = await p.wait(p.waitHere !== undefined ? Math.min(ms, o.ioSleepMs) : ms);
            }
            if (why & WOKE_KICK) c.kicked++;
            if (why & WOKE_WIRE) c.wireWakes++;
            p.unpark();
            c.sleptMs += performance.now() - now;
            nap = Math.min(nap * 2, o.maxSleepMs);
            if (held && (why & WOKE_KICK) !== 0) {
              // A kick that brings no ring work is an application waiting on the control
              // socket (a wake socket to register, a forked child joining), which only an I/O
              // turn serves: take it now rather than at the next one, up to ioEveryMs away.
              const work = this.step(performance.now());
              if (work > 0) {
                c.busyRounds++;
                lastWork = performance.now();
                nap = o.minSleepMs;
              } else {
                // The shim bumped the control word with this kick: one turn serves both.
                this.controlWanted();
                await this.controlTurn();
                lastYield = lastNap = performance.now();
              }
              continue;
            }
            // After a held nap the round comes first; tasks queued meanwhile (workers'
            // messages, settled promises) run at the next yield or I/O turn.
            if (!held) lastYield = lastNap = performance.now();
            continue;
          }
          // Work arrived while parking: spin again, but still yield below, so that nothing
          // (a region that always looks busy, say) can keep the event loop from running.
          c.kicked++;
          lastWork = performance.now();
          nap = o.minSleepMs;
        } else {
          c.sleeps++;
          await this.sleep(ms);
          c.sleptMs += performance.now() - now;
          lastYield = lastNap = performance.now();
          nap = Math.min(nap * 2, o.maxSleepMs);
          continue;
        }
      }
      if (this.controlWanted()) {
        await this.controlTurn();
        lastYield = lastNap = performance.now();
      } else if (
        now - lastNap >= (now < this.controlUntil ? CONTROL_IO_EVERY_MS : o.ioEveryMs)
      ) {
        c.ioYields++;
        await this.ioYield();
        lastYield = lastNap = performance.now();
      } else if (now - lastYield >= o.yieldEveryMs) {
        await this.yieldNow();
        lastYield = performance.now();
      }
    }
    this.channel.port1.close();
  }

  /** Ends `run()` after the current round; wakes it if asleep. */
  stop(): void {
    this.stopping = true;
    this.parking?.kick();
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.resume();
    }
  }

  /**
   * An I/O turn for an application waiting on its control socket. A control exchange takes
   * several turns of the event loop (accept, a frame's header, its body, the reply): for a
   * while after it the naps are ones that let the loop run, not held ones, and a busy loop
   * turns every CONTROL_IO_EVERY_MS (measured: a thread's first epoll_ctl took 150 ms, a
   * fork and its first epoll_ctl 360 ms, with held naps only).
   */
  private controlTurn(): Promise<void> {
    this.controlUntil = performance.now() + CONTROL_WINDOW_MS;
    this.counters.ioYields++;
    return this.ioYield(true);
  }

  private yieldNow(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.channel.port2.postMessage(0);
    });
  }

  /**
   * A turn in which the runtime parks and polls its sockets. A zero-delay timer always gets
   * one, but takes about 2 ms here (1 ms timer resolution) in which the loop is deaf to the
   * wire: every 100 ms under load that was 1 to 4 ms of frames piling up in the RX ring (11 to
   * 17 of 1,000 pings 1 ms apart took over 1 ms; p99 1.5 to 1.8 ms). Most turns are instead a
   * 200 us sleep on a pool thread: the runtime parks until its completion unparks it (0 to 3 of
   * 1,000 over 1 ms, p99 0.04 to 0.11 ms). The park is likely, not certain (the pool thread
   * may finish before the runtime gets there on a saturated host), so every tenth turn, and
   * every turn a control exchange asks for, is the timer.
   */
  private ioYield(certain = false): Promise<void> {
    if (certain || ++this.ioTurns % TIMER_TURN_EVERY === 0) return this.timerTurn();
    return new Promise((resolve) => {
      let done = false;
      const end = () => {
        if (done) return; // stop() resumed it before the call returned
        done = true;
        if (this.wake === end) this.wake = null;
        resolve();
      };
      this.wake = end;
      yieldSymbols().poolHop(POOL_HOP_US).then(end);
    });
  }

  /** A zero-delay timer: the runtime always parks until it fires. */
  private timerTurn(): Promise<void> {
    return this.timerNap(0);
  }

  private sleep(ms: number): Promise<void> {
    return ms <= 0 ? this.yieldNow() : this.timerNap(ms);
  }

  /** Resumes the loop when a timer of `ms` fires (or at stop()). */
  private timerNap(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.resume();
      }, ms);
    });
  }

  private resume(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}
