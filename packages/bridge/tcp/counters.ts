/**
 * Engine-wide counters in one preallocated Float64Array, indexed by the constants below, and a
 * snapshot that turns them into a plain object.
 *
 * @module
 */

export const C_SEGS_IN = 0;
export const C_SEGS_OUT = 1;
export const C_BYTES_IN = 2;
export const C_BYTES_OUT = 3;
export const C_RETRANS_SEGS = 4;
export const C_RTO_EVENTS = 5;
export const C_DUP_ACKS = 6;
export const C_SACK_RECOVERIES = 7;
export const C_RENO_RECOVERIES = 8;
export const C_OFO_BYTES = 9;
export const C_RST_IN = 10;
export const C_RST_OUT = 11;
export const C_CHALLENGE_ACKS = 12;
export const C_SYN_COOKIES_SENT = 13;
export const C_SYN_COOKIES_OK = 14;
export const C_SYN_COOKIES_BAD = 15;
export const C_ACTIVE_OPENS = 16;
export const C_PASSIVE_OPENS = 17;
export const C_TIMEOUTS = 18;
export const C_WINDOW_PROBES = 19;
export const C_KEEPALIVE_PROBES = 20;
export const C_NO_BUFFER = 21;
export const C_DROP_SHORT = 22;
export const C_DROP_CHECKSUM = 23;
export const C_DROP_DATA_OFFSET = 24;
/** Segments with a malformed option, which was ignored (the segment was not). */
export const C_BAD_OPTIONS = 25;
export const C_DROP_ADDRESS = 26;
export const C_DROP_NO_SOCKET = 27;
export const C_DROP_OUT_OF_WINDOW = 28;
export const C_DROP_PAWS = 29;
export const C_DROP_BAD_ACK = 30;
export const C_DROP_BACKLOG = 31;
export const C_DROP_OFO_FULL = 32;
export const C_DROP_FLAGS = 33;
export const C_DROP_RST_OUT_OF_WINDOW = 34;
export const C_DROP_SYN_IN_WINDOW = 35;
export const C_DROP_OTHER = 36;
export const C_SPURIOUS_DATA = 37;
export const C_CONN_RESETS = 38;
export const C_TIME_WAIT_REUSE = 39;
export const C_TLP_PROBES = 40;
/** Tail loss probes that repaired a loss (RFC 8985 §7.4; Linux TCPLossProbeRecovery). */
export const C_TLP_RECOVERIES = 41;
/** D-SACK blocks received (RFC 2883): a segment arrived twice at the peer. */
export const C_DSACKS_IN = 42;
/** D-SACK blocks sent for duplicate data received. */
export const C_DSACKS_OUT = 43;
/** Recoveries undone because every retransmission in them proved spurious (Linux TCPFullUndo). */
export const C_UNDO_RECOVERIES = 44;
/** The peer dropped data it had SACKed (Linux TCPSACKReneging). */
export const C_SACK_RENEGING = 45;
/** Challenge and out-of-window ACKs not sent because of the per-socket or global limit. */
export const C_ACKS_RATE_LIMITED = 46;
/** Segments marked lost by RACK's time-based detection (RFC 8985 §6.2). */
export const C_RACK_LOSSES = 47;
/** Path MTU reductions from ICMP "fragmentation needed" (RFC 1191). */
export const C_PMTU_UPDATES = 48;
/** Connections that closed without TIME-WAIT because `maxTimeWait` records were held. */
export const C_TIME_WAIT_OVERFLOW = 49;
/** close() calls that reset because `maxOrphans` connections were finishing already. */
export const C_ORPHAN_OVERFLOW = 50;
/**
 * In-order data segments taken by the receive fast path: the payload summed for its checksum
 * while copied into the receive ring, in one pass (input.ts `copyVerified`; Linux's TCPHPHits).
 */
export const C_RCV_FAST_PATH = 51;

/** Counter names, in index order (snapshot keys). */
export const COUNTER_NAMES = [
  "segsIn",
  "segsOut",
  "bytesIn",
  "bytesOut",
  "retransSegs",
  "rtoEvents",
  "dupAcks",
  "sackRecoveries",
  "renoRecoveries",
  "ofoBytes",
  "rstIn",
  "rstOut",
  "challengeAcks",
  "synCookiesSent",
  "synCookiesOk",
  "synCookiesBad",
  "activeOpens",
  "passiveOpens",
  "timeouts",
  "windowProbes",
  "keepaliveProbes",
  "noBuffer",
  "dropShort",
  "dropChecksum",
  "dropDataOffset",
  "badOptions",
  "dropAddress",
  "dropNoSocket",
  "dropOutOfWindow",
  "dropPaws",
  "dropBadAck",
  "dropBacklog",
  "dropOfoFull",
  "dropFlags",
  "dropRstOutOfWindow",
  "dropSynInWindow",
  "dropOther",
  "duplicateDataSegs",
  "connResets",
  "timeWaitReuse",
  "tlpProbes",
  "tlpRecoveries",
  "dsacksIn",
  "dsacksOut",
  "undoRecoveries",
  "sackReneging",
  "acksRateLimited",
  "rackLosses",
  "pmtuUpdates",
  "timeWaitOverflow",
  "orphanOverflow",
  "rcvFastPath",
] as const;

export type CounterName = typeof COUNTER_NAMES[number];

/** Fresh zeroed counters. */
export function newCounters(): Float64Array {
  return new Float64Array(COUNTER_NAMES.length);
}

/** A plain-object copy of the counters. */
export function snapshotCounters(c: Float64Array): Record<CounterName, number> {
  const o = {} as Record<CounterName, number>;
  for (let i = 0; i < COUNTER_NAMES.length; i++) o[COUNTER_NAMES[i]] = c[i];
  return o;
}
