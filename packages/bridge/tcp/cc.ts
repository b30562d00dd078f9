/**
 * Congestion control behind one interface: NewReno (RFC 5681, RFC 6582) and CUBIC (RFC 9438).
 * The algorithms are stateless singletons working on the fields of the socket
 * (`cwnd`, `ssthresh` in bytes, `cc*` scratch); loss recovery itself (fast retransmit, SACK
 * recovery, PRR) lives in the engine and calls `onLoss` once per episode.
 *
 * @module
 */

/** The fields a congestion controller reads and writes. */
export interface CcState {
  cwnd: number;
  ssthresh: number;
  sndMss: number;
  srtt: number;
  /** Largest cwnd (segments) before the last reduction (CUBIC W_max). */
  ccWmax: number;
  /** CUBIC K (seconds), origin point (segments), epoch start (ms, -1 none), Reno estimate. */
  ccK: number;
  ccOrigin: number;
  ccEpoch: number;
  ccWest: number;
  /** Bytes acknowledged toward the next congestion-avoidance increment (NewReno). */
  ccAcc: number;
  /** HyStart++ (RFC 9406) inputs: the sequence space and the latest RTT sample (ms). */
  sndUna: number;
  sndNxt: number;
  lastRtt: number;
  /** HyStart++ state: the round's end, the last and current rounds' minimum RTT, samples. */
  hsRoundEnd: number;
  hsRoundStarted: boolean;
  hsLastRoundMinRtt: number;
  hsRoundMinRtt: number;
  hsSamples: number;
  /** Conservative slow start: its baseline RTT (Infinity: not in CSS) and rounds done. */
  hsCssBaseline: number;
  hsCssRounds: number;
}

/** A congestion control algorithm. */
export interface CongestionControl {
  readonly id: number;
  readonly name: string;
  /** Sets the initial window (RFC 6928: ten segments). */
  init(s: CcState): void;
  /** New data acknowledged outside loss recovery; `limited` is true when cwnd was the limit. */
  onAck(s: CcState, acked: number, nowMs: number, limited: boolean): void;
  /** Loss detected by duplicate ACKs or SACK: sets ssthresh (the engine then runs PRR). */
  onLoss(s: CcState, flight: number, nowMs: number): void;
  /** Retransmission timeout: sets ssthresh (first timeout of a series) and cwnd to one segment. */
  onRto(s: CcState, flight: number, first: boolean): void;
}

export const CC_NEWRENO = 0;
export const CC_CUBIC = 1;

const MAX_CWND = 0x3fffffff;

// HyStart++ constants (RFC 9406 §4.3).
const HS_MIN_RTT_THRESH = 4;
const HS_MAX_RTT_THRESH = 16;
const HS_MIN_RTT_DIVISOR = 8;
const HS_N_RTT_SAMPLE = 8;
const HS_CSS_GROWTH_DIVISOR = 4;
const HS_CSS_ROUNDS = 5;
/** Segments one ACK may grow cwnd by in slow start (RFC 9406's L for an unpaced sender). */
const HS_L = 8;

function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

/**
 * HyStart++ (RFC 9406) around the initial slow start only (ssthresh still unset, §4.3): the
 * minimum RTT of each round is compared with the last round's; a rise of an eighth (4-16 ms)
 * means the queue is building, and slow start gives way to Conservative Slow Start (a quarter
 * of the growth) for five rounds, then to congestion avoidance, unless the RTT falls back,
 * which resumes slow start. Returns the divisor of this ACK's growth (1 or 4).
 */
function hystart(s: CcState): number {
  if (s.ssthresh !== MAX_CWND) return 1;
  if (!s.hsRoundStarted || seqGe(s.sndUna, s.hsRoundEnd)) {
    if (s.hsRoundStarted && s.hsCssBaseline !== Infinity && ++s.hsCssRounds >= HS_CSS_ROUNDS) {
      s.ssthresh = s.cwnd; // congestion avoidance from here
      return 1;
    }
    s.hsRoundStarted = true;
    s.hsRoundEnd = s.sndNxt;
    s.hsLastRoundMinRtt = s.hsRoundMinRtt;
    s.hsRoundMinRtt = Infinity;
    s.hsSamples = 0;
  }
  if (s.lastRtt > 0 && s.lastRtt < s.hsRoundMinRtt) s.hsRoundMinRtt = s.lastRtt;
  s.hsSamples++;
  if (s.hsSamples >= HS_N_RTT_SAMPLE && s.hsLastRoundMinRtt !== Infinity) {
    if (s.hsCssBaseline === Infinity) {
      const thresh = Math.max(
        HS_MIN_RTT_THRESH,
        Math.min(s.hsLastRoundMinRtt / HS_MIN_RTT_DIVISOR, HS_MAX_RTT_THRESH),
      );
      if (s.hsRoundMinRtt >= s.hsLastRoundMinRtt + thresh) {
        s.hsCssBaseline = s.hsRoundMinRtt;
        s.hsCssRounds = 0;
      }
    } else if (s.hsRoundMinRtt < s.hsCssBaseline) {
      s.hsCssBaseline = Infinity; // the rise was a blip: back to slow start
    }
  }
  return s.hsCssBaseline === Infinity ? 1 : HS_CSS_GROWTH_DIVISOR;
}

function slowStart(s: CcState, acked: number): number {
  const divisor = hystart(s);
  if (s.cwnd >= s.ssthresh) return acked;
  const room = s.ssthresh - s.cwnd;
  let inc = acked < room ? acked : room;
  if (inc > HS_L * s.sndMss) inc = HS_L * s.sndMss;
  s.cwnd += divisor === 1 ? inc : Math.max(1, Math.floor(inc / divisor));
  return acked - inc;
}

/** Fresh HyStart++ state (at the start of a connection). */
function hystartInit(s: CcState): void {
  s.hsRoundStarted = false;
  s.hsLastRoundMinRtt = Infinity;
  s.hsRoundMinRtt = Infinity;
  s.hsSamples = 0;
  s.hsCssBaseline = Infinity;
  s.hsCssRounds = 0;
}

/** NewReno: slow start, then one segment per window of acknowledged bytes. */
export const newReno: CongestionControl = {
  id: CC_NEWRENO,
  name: "newreno",
  init(s) {
    s.cwnd = 10 * s.sndMss;
    s.ssthresh = MAX_CWND;
    s.ccAcc = 0;
    hystartInit(s);
  },
  onAck(s, acked, _now, limited) {
    if (!limited) return;
    if (s.cwnd < s.ssthresh) {
      acked = slowStart(s, acked);
      if (acked <= 0) return;
    }
    s.ccAcc += acked;
    if (s.ccAcc >= s.cwnd) {
      s.ccAcc -= s.cwnd;
      if (s.cwnd < MAX_CWND) s.cwnd += s.sndMss;
    }
  },
  onLoss(s, flight) {
    s.ssthresh = Math.max(flight >> 1, 2 * s.sndMss);
    s.ccAcc = 0;
  },
  onRto(s, flight, first) {
    if (first) s.ssthresh = Math.max(flight >> 1, 2 * s.sndMss);
    s.cwnd = s.sndMss;
    s.ccAcc = 0;
  },
};

const CUBIC_C = 0.4;
const CUBIC_BETA = 0.7;
const CUBIC_ALPHA = (3 * (1 - CUBIC_BETA)) / (1 + CUBIC_BETA);

function cubicReduce(s: CcState): void {
  const w = s.cwnd / s.sndMss;
  // Fast convergence (RFC 9438 §4.7).
  s.ccWmax = w < s.ccWmax ? (w * (1 + CUBIC_BETA)) / 2 : w;
  s.ssthresh = Math.max(Math.floor(s.cwnd * CUBIC_BETA), 2 * s.sndMss);
  s.ccEpoch = -1;
}

/** CUBIC (RFC 9438) with the Reno-friendly region and fast convergence. */
export const cubic: CongestionControl = {
  id: CC_CUBIC,
  name: "cubic",
  init(s) {
    s.cwnd = 10 * s.sndMss;
    s.ssthresh = MAX_CWND;
    hystartInit(s);
    s.ccWmax = 0;
    s.ccEpoch = -1;
    s.ccAcc = 0;
  },
  onAck(s, acked, now, limited) {
    if (!limited) return;
    if (s.cwnd < s.ssthresh) {
      acked = slowStart(s, acked);
      if (acked <= 0) return;
    }
    const mss = s.sndMss;
    const w = s.cwnd / mss;
    if (s.ccEpoch < 0) {
      s.ccEpoch = now;
      if (w < s.ccWmax) {
        s.ccK = Math.cbrt((s.ccWmax - w) / CUBIC_C);
        s.ccOrigin = s.ccWmax;
      } else {
        s.ccK = 0;
        s.ccOrigin = w;
      }
      s.ccWest = w;
    }
    const t = (now - s.ccEpoch) / 1000;
    const rtt = s.srtt / 1000;
    const segs = acked / mss;
    s.ccWest += (CUBIC_ALPHA * segs) / w;
    const dt = t - s.ccK;
    const wCubicNow = CUBIC_C * dt * dt * dt + s.ccOrigin;
    if (wCubicNow < s.ccWest) {
      // Reno-friendly region.
      if (s.ccWest > w) s.cwnd = Math.min(Math.floor(s.ccWest * mss), MAX_CWND);
      return;
    }
    const dn = t + rtt - s.ccK;
    let target = CUBIC_C * dn * dn * dn + s.ccOrigin;
    if (target < w) target = w;
    else if (target > 1.5 * w) target = 1.5 * w;
    s.ccAcc += ((target - w) / w) * segs * mss;
    if (s.ccAcc >= 1) {
      const inc = Math.floor(s.ccAcc);
      s.ccAcc -= inc;
      s.cwnd = Math.min(s.cwnd + inc, MAX_CWND);
    }
  },
  onLoss(s) {
    cubicReduce(s);
    s.ccAcc = 0;
  },
  onRto(s, _flight, first) {
    if (first) cubicReduce(s);
    s.cwnd = s.sndMss;
    s.ccAcc = 0;
  },
};

/** The algorithm for an id (CC_NEWRENO, CC_CUBIC). */
export function ccById(id: number): CongestionControl {
  return id === CC_NEWRENO ? newReno : cubic;
}
