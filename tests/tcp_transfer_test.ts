/**
 * Bulk TCP transfers between the Linux kernel (a python3 client in the namespace) and the
 * bridge's services: echo (7) with SHA-256 of both directions, source (19) with every byte
 * checked against i mod 251, discard (9) with the bridge's byte counter and a clean close.
 *
 * Impairments: this machine's kernel has no sch_netem, so `impair()` of cli/wire.ts fails
 * ("Specified qdisc kind is unknown"); the impaired cases run the user-space relay of
 * _tcp_peers.ts instead, which drops, duplicates, delays and reorders TCP frames in BOTH
 * directions (so that the bridge's own data is lost too and it has to retransmit).
 *
 * What is true on a clean wire (measured before writing the assertions): the 256 MiB runs are
 * not loss-free. veth delivery reorders frames when the sending thread moves between CPUs
 * (the bridge's ofoBytes grows, and the kernel then retransmits spuriously: 10-54 segments per
 * discard run), and one echo run in several shows an RTO with 160 bridge retransmissions while
 * the port's imissed and /proc/net/softnet_stat drops stay 0 (a stall of the 2-core machine
 * with three busy threads, or a drop in the client's receive path); af_packet's RX ring can
 * also overflow (port imissed). So the bulk runs print their retransmissions and assert data
 * integrity only. The 8 MiB echo is paced by the echo itself (the client's window and the
 * bridge's rings): there nothing is lost, and the bridge neither times out nor retransmits
 * anything but a tail loss probe (the test says why a probe may happen).
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import type { WireConfig } from "../cli/wire.ts";
import { addressOf, type BridgeProcess, withBridge } from "./_harness.ts";
import {
  delta,
  type RelayImpairments,
  runPy,
  startRelay,
  STREAM_CLIENT,
  type StreamResult,
  type TcpCounters,
  tcpStats,
  waitFor,
} from "./_tcp_peers.ts";

const MiB = 1 << 20;
const PORTS = { echo: 7, source: 19, discard: 9 } as const;
type Mode = keyof typeof PORTS;
const WATCH = [
  "bytesIn",
  "bytesOut",
  "segsIn",
  "segsOut",
  "retransSegs",
  "rtoEvents",
  "dupAcks",
  "sackRecoveries",
  "ofoBytes",
  "rstIn",
  "rstOut",
  "dropPaws",
  "dropOutOfWindow",
  "dropNoSocket",
  "rackLosses",
  "tlpProbes",
  "tlpRecoveries",
  "undoRecoveries",
  "dsacksIn",
  "dsacksOut",
  "sackReneging",
];

interface Outcome {
  r: StreamResult;
  d: TcpCounters;
}

/**
 * One transfer with the stream client; every run is bounded by `timeoutMs` (a timeout fails the
 * test) and each socket operation by `stallS` seconds. Checks the data, then that the bridge's
 * connection table empties.
 */
async function transfer(
  w: WireConfig,
  bridge: BridgeProcess,
  mode: Mode,
  bytes: number,
  timeoutMs: number,
  label: string,
  stallS = 20,
): Promise<Outcome> {
  const before = await tcpStats(bridge);
  let r: StreamResult;
  try {
    r = await runPy<StreamResult>(
      w,
      STREAM_CLIENT,
      [mode, addressOf(w.bridgeAddress), String(PORTS[mode]), String(bytes), String(stallS)],
      timeoutMs,
    );
  } catch (err) {
    const now = await tcpStats(bridge);
    throw new Error(
      `${label} ${mode}: ${(err as Error).message}\nbridge: ${
        JSON.stringify(delta(before, now, [...WATCH, "connections"]))
      }`,
    );
  }
  assert(!("error" in r), JSON.stringify(r));
  // The bridge closes echo and discard after the client's FIN (passive close: LAST-ACK, no
  // TIME-WAIT on the bridge); source ends with the client's RST. Either way the table empties.
  const empty = await waitFor(async () => (await tcpStats(bridge)).connections === 0, 10_000);
  const after = await tcpStats(bridge);
  const d = delta(before, after, WATCH);
  const mibs = bytes / MiB / r.seconds;
  console.log(
    `${label}: ${mode} ${bytes / MiB} MiB in ${r.seconds.toFixed(2)} s = ${mibs.toFixed(1)} MiB/s` +
      ` (${(mibs * 8 * 1.048576).toFixed(0)} Mbit/s); kernel retrans ${r.kernelRetrans};` +
      ` bridge ${JSON.stringify(d)}`,
  );
  assert(empty, `bridge still has ${after.connections} connections 10 s after the transfer`);
  if (mode === "echo") {
    assertEquals(r.sent, bytes);
    assertEquals(r.received, bytes);
    assertEquals(r.shaRecv, r.shaSent, "echoed bytes differ from the bytes sent");
  } else if (mode === "source") {
    assertEquals(r.received, bytes); // and the client checked every byte against i mod 251
  } else {
    assertEquals(r.sent, bytes);
    assert(r.eof, "the client saw no FIN from the bridge");
    assert(d.bytesIn >= bytes, `bridge bytesIn grew by ${d.bytesIn} < ${bytes}`);
    // FIN both ways: the bridge closed only after reading the client's FIN (recv() == 0), the
    // client read the bridge's FIN as EOF, and nobody reset the connection. Under reordering a
    // late duplicate of the client's may arrive after the bridge (LAST-ACK, then CLOSED) is
    // gone: it is answered with a RST like any segment for no connection (the client, in
    // TIME-WAIT, ignores it: RFC 1337). Those are the only RSTs allowed.
    assertEquals(d.rstIn, 0, "discard connection saw a RST from the client");
    assert(
      d.rstOut <= d.dropNoSocket,
      `the bridge reset a live connection (${d.rstOut} RSTs, ${d.dropNoSocket} for no socket)`,
    );
  }
  return { r, d };
}

/**
 * Runs `body` with the impairment relay in place (stopped, by PID, whatever happens); returns
 * the relay's counters (frames, dropped, ...).
 */
async function withRelay(
  w: WireConfig,
  imp: RelayImpairments,
  body: () => Promise<void>,
): Promise<Record<string, number>> {
  const relay = await startRelay(w, imp);
  let counts: Record<string, number> = {};
  try {
    await body();
  } finally {
    counts = await relay.stop();
    console.log(`relay: ${JSON.stringify(counts)}`);
  }
  return counts;
}

// ---- clean wire ----

Deno.test("clean wire: 8 MiB echoed byte-exact, no timeout, no retransmission but a tail loss probe", async () => {
  await withBridge("tcpt1", 130, async (w, bridge) => {
    const { d } = await transfer(w, bridge, "echo", 8 * MiB, 60_000, "clean");
    // Nothing is lost here, so no timeout and no loss recovery. A tail loss probe (RFC 8985 §7: one
    // segment after 2 SRTT without an ACK, at least 10 ms) is what a sender does when the ACK clock
    // stalls, and on this 2-core machine it can stall without a loss: run beside three CPU hogs, 5
    // runs in 50 retransmitted a probe; in the three captured at both ends, the Linux peer had
    // ACKed the probed segment 1-9 ms before the probe went out, and the ACK waited behind 100-221
    // frames of its data in the bridge's port (read 9-22 ms later, the bridge descheduled between
    // rounds). The bridge now holds a probe while a full burst says frames wait unread (recovery.ts
    // onPto; 0 retransmissions in 55 runs under the same load), but an ACK can still be late inside
    // the kernel, before the port. Nor can every probe be proven spurious by a D-SACK: Linux 6.18
    // D-SACKed the first probe of a run and not the second, though its capture shows that segment
    // arriving twice too (tcp_data_queue clears the pending D-SACK at each data segment, and six
    // in-order ones were processed before the ACK left).
    assertEquals(d.rtoEvents, 0, "a retransmission timeout on a clean, echo-paced transfer");
    assert(
      d.retransSegs <= d.tlpProbes,
      `${d.retransSegs} retransmissions, ${d.tlpProbes} of them tail loss probes: only probes`,
    );
    assertEquals(d.rackLosses, 0, "a segment marked lost on a clean wire");
  });
});

Deno.test("clean wire: 256 MiB to echo comes back with the same SHA-256", async () => {
  await withBridge("tcpt2", 132, async (w, bridge) => {
    await transfer(w, bridge, "echo", 256 * MiB, 120_000, "clean");
    const port = (await bridge.stats()).port;
    console.log(`port counters after 256 MiB echo: ${JSON.stringify(port)}`);
  });
});

Deno.test("clean wire: 256 MiB from source, every byte i mod 251", async () => {
  await withBridge("tcpt3", 134, async (w, bridge) => {
    const { d } = await transfer(w, bridge, "source", 256 * MiB, 120_000, "clean");
    assert(d.bytesOut >= 256 * MiB);
  });
});

Deno.test("clean wire: 256 MiB to discard, counted by the bridge, FIN both ways", async () => {
  await withBridge("tcpt4", 136, async (w, bridge) => {
    await transfer(w, bridge, "discard", 256 * MiB, 120_000, "clean");
  });
});

// ---- 1% loss, 25% reordering, 10 ms delay, each direction ----
// 1% loss each way at a 20 ms RTT allows about 1 MB/s (Mathis et al.: MSS/RTT * 1.22/sqrt(p)),
// measured 0.5 (source) to 1.5 (discard) MiB/s here, so these use 8 MiB, not 256 MiB (which
// would take minutes each). 90 s is several times what a healthy transfer needs.

const LOSSY: RelayImpairments = { lossPercent: 1, delayMs: 10, reorderPercent: 25 };

// An echo under loss in both directions couples the two transfers: each side's sends wait on
// the other's receive window. Three engine bugs made this stall (fixed; each has a unit test
// in packages/bridge/tcp/): the window field was rounded up past the ring's free space and
// right-edge ACKs were refused; a zero-window probe carrying a piggybacked ACK was dropped
// whole; and timers placed in the wheel by a fractional deadline (performance.now()) waited a
// full 4 s turn. Two more made it slow: full-sized data segments that also carried SACK blocks
// were longer than the MTU and the link dropped them (so most of the bridge's data was lost
// until RTOs: 4 MiB took 33 s and 34 RTOs), and the reordering window came from the minimum
// RTT, which the relay's reordering (a quarter of the frames skip its 10 ms delay) puts near
// 0. Now 4 MiB takes about 3 s with an RTO or none.
Deno.test("1% loss + 25% reorder + 10 ms delay: 4 MiB echo, SHA-256 match, no stall", async () => {
  await withBridge("tcpl1", 138, async (w, bridge) => {
    await withRelay(w, LOSSY, async () => {
      const { d } = await transfer(w, bridge, "echo", 4 * MiB, 150_000, "lossy");
      assert(d.retransSegs > 0, "bridge retransmitted nothing under 1% loss");
    });
  });
});

Deno.test("1% loss + 25% reorder + 10 ms delay: 8 MiB from source, no stall", async () => {
  await withBridge("tcpl2", 140, async (w, bridge) => {
    await withRelay(w, LOSSY, async () => {
      const { d } = await transfer(w, bridge, "source", 8 * MiB, 90_000, "lossy");
      assert(d.retransSegs > 0, "bridge retransmitted nothing under 1% loss");
    });
  });
});

Deno.test("1% loss + 25% reorder + 10 ms delay: 8 MiB to discard, FIN both ways", async () => {
  await withBridge("tcpl3", 142, async (w, bridge) => {
    await withRelay(w, LOSSY, async () => {
      const { r, d } = await transfer(w, bridge, "discard", 8 * MiB, 90_000, "lossy");
      // The bridge only sends ACKs here: the retransmissions are the kernel's, the holes the
      // bridge's out-of-order queue.
      assert(r.kernelRetrans > 0, "client retransmitted nothing under 1% loss");
      assert(d.ofoBytes > 0, "bridge queued nothing out of order under loss and reordering");
    });
  });
});

// ---- 1% random loss each way, 10 ms delay, no reordering: loss repaired without timeouts ----
// Linux repairs nearly every such loss by fast recovery, RACK or a tail loss probe; a timeout
// is the exception. The relay drops 1% of the frames of both directions; its count of drops
// (data and ACKs, both ways) bounds the bridge's loss events from above, so "RTOs at most a
// tenth of the drops" is the bar as Linux clears it, every byte checked.

const RANDOM_LOSS: RelayImpairments = { lossPercent: 1, delayMs: 10 };

Deno.test("1% random loss: 8 MiB from source, losses repaired without timeouts (RTOs <= drops / 10)", async () => {
  await withBridge("tengr1", 114, async (w, bridge) => {
    let d: TcpCounters = {};
    const relay = await withRelay(w, RANDOM_LOSS, async () => {
      d = (await transfer(w, bridge, "source", 8 * MiB, 90_000, "random loss")).d;
    });
    assert(relay.dropped > 0, "the relay dropped nothing");
    assert(d.retransSegs > 0, "the bridge retransmitted nothing under 1% loss");
    assert(
      d.rtoEvents * 10 <= relay.dropped,
      `${d.rtoEvents} RTOs for ${relay.dropped} frames dropped (both directions)`,
    );
  });
});

// The echo couples both directions through the client, which writes everything before it
// reads: while it is blocked writing, its kernel's receive buffer fills and the kernel drops
// what does not fit. Until the bridge cut the payload of segments carrying SACK blocks to fit
// the MTU, most of its data in a two-way transfer under loss never arrived and only the timer
// repaired it (10-13 RTOs for 75 drops here); now 0 RTOs in each of 4 runs, so the echo is held
// to the same bar as the source.
Deno.test("1% random loss: 4 MiB echo, SHA-256 match, losses repaired without timeouts (RTOs <= drops / 10)", async () => {
  await withBridge("tengr2", 116, async (w, bridge) => {
    let d: TcpCounters = {};
    const relay = await withRelay(w, RANDOM_LOSS, async () => {
      d = (await transfer(w, bridge, "echo", 4 * MiB, 120_000, "random loss")).d;
    });
    assert(relay.dropped > 0, "the relay dropped nothing");
    assert(d.retransSegs > 0, "the bridge retransmitted nothing under 1% loss");
    assert(d.rackLosses > 0, "no loss found by RACK");
    assert(
      d.rtoEvents * 10 <= relay.dropped,
      `${d.rtoEvents} RTOs for ${relay.dropped} frames dropped (both directions)`,
    );
  });
});

// ---- 0.1% duplication each direction (no delay: the full 256 MiB, through the relay) ----

const DUP: RelayImpairments = { duplicatePercent: 0.1 };

Deno.test("0.1% duplication: 256 MiB echo, SHA-256 match", async () => {
  await withBridge("tcpd1", 144, async (w, bridge) => {
    await withRelay(w, DUP, async () => {
      await transfer(w, bridge, "echo", 256 * MiB, 120_000, "dup");
    });
  });
});

Deno.test("0.1% duplication: 256 MiB from source, every byte i mod 251", async () => {
  await withBridge("tcpd2", 146, async (w, bridge) => {
    await withRelay(w, DUP, async () => {
      await transfer(w, bridge, "source", 256 * MiB, 120_000, "dup");
    });
  });
});

Deno.test("0.1% duplication: 256 MiB to discard, duplicates dropped, FIN both ways", async () => {
  await withBridge("tcpd3", 148, async (w, bridge) => {
    await withRelay(w, DUP, async () => {
      const { d } = await transfer(w, bridge, "discard", 256 * MiB, 120_000, "dup");
      assert(d.dropOutOfWindow > 0, "no duplicate segment was recognised as old");
    });
  });
});
