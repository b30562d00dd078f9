/**
 * The bridge's polling discipline: busy while there is work, asleep when there is none.
 *
 * A NIC core polls; it never waits for an interrupt. But a core spinning on an idle link is
 * wasted, so after `spinMs` without work the loop sleeps, doubling the nap from `minSleepMs`
 * up to `maxSleepMs` (and never past the next timer deadline), and goes back to spinning on
 * the first frame. While spinning it still yields to Deno's event loop every `yieldEveryMs`
 * so signals, the stats server and workers' messages are served: a MessageChannel round
 * costs microseconds where a zero-delay timer costs milliseconds.
 *
 * @module
 */

/** Tuning of the adaptive back-off. */
export interface BackoffOptions {
  spinMs: number;
  minSleepMs: number;
  maxSleepMs: number;
  yieldEveryMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  spinMs: 2,
  minSleepMs: 1,
  maxSleepMs: 8,
  yieldEveryMs: 1,
};

/** One round of work: returns how much it did (frames, segments, events); 0 means idle. */
export type PollStep = (nowMs: number) => number;

/** Counters of the loop itself, to show where the core's time went. */
export class LoopCounters {
  rounds = 0;
  busyRounds = 0;
  sleeps = 0;
  sleptMs = 0;
}

export class PollLoop {
  readonly counters = new LoopCounters();
  private stopping = false;
  private readonly channel = new MessageChannel();
  private wake: (() => void) | null = null;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly step: PollStep,
    private readonly nextDeadline: () => number = () => Infinity,
    private readonly opts: BackoffOptions = DEFAULT_BACKOFF,
  ) {
    this.channel.port1.onmessage = () => this.resume();
  }

  /** Runs until `stop()`. */
  async run(): Promise<void> {
    const o = this.opts, c = this.counters;
    let lastWork = performance.now();
    let lastYield = lastWork;
    let nap = o.minSleepMs;
    while (!this.stopping) {
      const now = performance.now();
      c.rounds++;
      if (this.step(now) > 0) {
        c.busyRounds++;
        lastWork = now;
        nap = o.minSleepMs;
      } else if (now - lastWork >= o.spinMs) {
        const ms = Math.max(0, Math.min(nap, this.nextDeadline() - now));
        c.sleeps++;
        await this.sleep(ms);
        c.sleptMs += performance.now() - now;
        lastYield = performance.now();
        nap = Math.min(nap * 2, o.maxSleepMs);
        continue;
      }
      if (now - lastYield >= o.yieldEveryMs) {
        await this.yieldNow();
        lastYield = performance.now();
      }
    }
    this.channel.port1.close();
  }

  /** Ends `run()` after the current round; wakes it if asleep. */
  stop(): void {
    this.stopping = true;
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.resume();
    }
  }

  private yieldNow(): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.channel.port2.postMessage(0);
    });
  }

  private sleep(ms: number): Promise<void> {
    if (ms <= 0) return this.yieldNow();
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
