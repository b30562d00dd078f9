import { assert, assertAlmostEquals, assertEquals } from "@std/assert";
import { type CcState, cubic, newReno } from "./cc.ts";

const MSS = 1000;

function state(cwndSegs: number, srtt: number): CcState {
  return {
    cwnd: cwndSegs * MSS,
    ssthresh: 0x3fffffff,
    sndMss: MSS,
    srtt,
    ccWmax: 0,
    ccK: 0,
    ccOrigin: 0,
    ccEpoch: -1,
    ccWest: 0,
    ccAcc: 0,
    sndUna: 0,
    sndNxt: 0,
    lastRtt: srtt,
    hsRoundEnd: 0,
    hsRoundStarted: false,
    hsLastRoundMinRtt: Infinity,
    hsRoundMinRtt: Infinity,
    hsSamples: 0,
    hsCssBaseline: Infinity,
    hsCssRounds: 0,
  };
}

/** One round trip of ACKs: a window's worth, one segment each, at time `now`. */
function roundTrip(s: CcState, now: number): void {
  const acks = Math.floor(s.cwnd / MSS);
  for (let i = 0; i < acks; i++) cubic.onAck(s, MSS, now, true);
}

Deno.test("CUBIC: a loss sets W_max, ssthresh = 0.7 cwnd, and K = cbrt(W_max (1 - beta) / C)", () => {
  const s = state(100, 100);
  cubic.onLoss(s, 100 * MSS, 0);
  assertEquals(s.ccWmax, 100);
  assertEquals(s.ssthresh, 70 * MSS);
  s.cwnd = s.ssthresh; // what recovery leaves behind
  cubic.onAck(s, MSS, 1000, true);
  assertAlmostEquals(s.ccK, Math.cbrt(30 / 0.4), 1e-9); // 4.217 s (RFC 9438 §4.2)
  assertEquals(s.ccOrigin, 100);
});

Deno.test("CUBIC: fast convergence lowers W_max when losses come below the last one (RFC 9438 §4.7)", () => {
  const s = state(100, 100);
  cubic.onLoss(s, 100 * MSS, 0);
  s.cwnd = 80 * MSS; // lost again before regaining the old maximum
  cubic.onLoss(s, 80 * MSS, 1000);
  assertAlmostEquals(s.ccWmax, (80 * 1.7) / 2, 1e-9);
  s.cwnd = 120 * MSS; // above: W_max is the window itself
  cubic.onLoss(s, 120 * MSS, 2000);
  assertEquals(s.ccWmax, 120);
});

Deno.test("CUBIC: the window plateaus at W_max near t = K, then probes above it", () => {
  const s = state(100, 100); // 100 ms RTT: CUBIC, not the Reno estimate, governs
  cubic.onLoss(s, 100 * MSS, 0);
  s.cwnd = s.ssthresh;
  const start = 10_000;
  const at: Record<number, number> = {};
  for (let now = start; now <= start + 7000; now += 100) {
    roundTrip(s, now);
    at[now - start] = s.cwnd / MSS;
  }
  const k = 4217;
  const near = at[Math.round(k / 100) * 100];
  assert(Math.abs(near - 100) <= 3, `cwnd ${near} segments at t = K, W_max 100`);
  // Concave before K: growth slows as W_max approaches; convex after: it speeds up.
  const g = (t: number) => at[t + 1000] - at[t];
  assert(g(1000) > g(3000), `concave: ${g(1000)} then ${g(3000)} per second`);
  assert(g(5000) > g(4000), `convex: ${g(4000)} then ${g(5000)} per second`);
  assert(at[7000] > 100, "never probed above W_max");
});

Deno.test("CUBIC: on a short RTT the Reno-friendly estimate governs (RFC 9438 §4.3)", () => {
  const s = state(100, 1); // 1 ms RTT: the cubic curve is flat over 200 round trips
  cubic.onLoss(s, 100 * MSS, 0);
  s.cwnd = s.ssthresh;
  for (let i = 0; i < 200; i++) roundTrip(s, 1000 + i);
  const segs = s.cwnd / MSS;
  // W_est grows by 3(1-beta)/(1+beta) = 0.53 segments per RTT: about 70 + 106.
  assert(segs > 160 && segs < 190, `cwnd ${segs} segments after 200 round trips`);
  const t = 0.2, k = Math.cbrt(30 / 0.4);
  const wCubic = 0.4 * (t - k) ** 3 + 100;
  assert(segs > wCubic + 50, `${segs} vs the cubic curve's ${wCubic}`);
});

Deno.test("NewReno: slow start doubles per RTT, congestion avoidance adds one segment per RTT", () => {
  const s = state(10, 100);
  for (let i = 0; i < 3; i++) {
    const acks = s.cwnd / MSS;
    for (let j = 0; j < acks; j++) newReno.onAck(s, MSS, 0, true);
  }
  assertEquals(s.cwnd, 80 * MSS);
  newReno.onLoss(s, 80 * MSS, 0);
  assertEquals(s.ssthresh, 40 * MSS);
  s.cwnd = s.ssthresh;
  for (let i = 0; i < 5; i++) {
    const acks = s.cwnd / MSS;
    for (let j = 0; j < acks; j++) newReno.onAck(s, MSS, 0, true);
  }
  assertEquals(s.cwnd, 45 * MSS);
  newReno.onRto(s, 45 * MSS, true);
  assertEquals(s.cwnd, MSS);
  assertEquals(s.ssthresh, 22 * MSS + 500);
});

/**
 * Slow start round by round: each round ACKs the whole window one segment at a time, with the
 * RTT `rtt(round)`; the sequence space advances so that HyStart++ sees rounds end.
 */
function slowStartRounds(s: CcState, rounds: number, rtt: (round: number) => number): number[] {
  const cwnds: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const acks = Math.floor(s.cwnd / MSS);
    s.sndNxt = (s.sndUna + acks * MSS) >>> 0; // the round's flight
    for (let i = 0; i < acks; i++) {
      s.sndUna = (s.sndUna + MSS) >>> 0;
      s.lastRtt = rtt(r);
      cubic.onAck(s, MSS, r * 100, true);
    }
    cwnds.push(s.cwnd / MSS);
  }
  return cwnds;
}

Deno.test("HyStart++: a steady RTT leaves slow start alone; a rising one ends it early (RFC 9406)", () => {
  const steady = state(10, 20);
  cubic.init(steady);
  const a = slowStartRounds(steady, 5, () => 20);
  assertEquals(a, [20, 40, 80, 160, 320], "slow start doubles per round");
  assertEquals(steady.ssthresh, 0x3fffffff);

  const rising = state(10, 20);
  cubic.init(rising);
  // The queue builds from the fourth round: +6 ms per round (the threshold is 20/8 -> 4 ms).
  const b = slowStartRounds(rising, 12, (r) => (r < 3 ? 20 : 20 + 6 * (r - 2)));
  assert(b[3] < 2 * b[2], `round 4 still doubled: ${b}`);
  // Conservative slow start grows by a quarter as much, then congestion avoidance follows.
  assert(rising.ssthresh < 0x3fffffff, `never left slow start: ${b}`);
  assert(b[11] < 320, `cwnd ${b[11]} segments after 12 rounds`);
});

Deno.test("HyStart++: a rise that falls back resumes slow start", () => {
  const s = state(10, 20);
  cubic.init(s);
  const c = slowStartRounds(s, 6, (r) => (r === 2 ? 30 : 20));
  assertEquals(s.ssthresh, 0x3fffffff);
  assert(c[5] >= 2 * c[4] - 1, `slow start did not resume: ${c}`);
});
