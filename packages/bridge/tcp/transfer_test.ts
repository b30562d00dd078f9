import { assert, assertEquals } from "@std/assert";
import { transfer } from "./_test_util.ts";
import { CC_NEWRENO } from "./cc.ts";
import { TIME_WAIT } from "./socket.ts";

const MiB = 1 << 20;

function check(r: ReturnType<typeof transfer>, nAB: number, nBA: number) {
  assertEquals(r.gotAB, nAB);
  assertEquals(r.gotBA, nBA);
  assertEquals(r.badAB, 0);
  assertEquals(r.badBA, 0);
}

Deno.test("transfer: 4 MiB each way at once, clean wire, no retransmissions", () => {
  const r = transfer(4 * MiB, 4 * MiB);
  check(r, 4 * MiB, 4 * MiB);
  assertEquals(r.a.counters[4] + r.b.counters[4], 0, "retransmits");
  assertEquals(r.ca.retransSegs + r.cb.retransSegs, 0);
  assertEquals(r.ca.rtoEvents + r.cb.rtoEvents, 0);
  // Both shut down after sending: the closes complete, one side in TIME-WAIT.
  r.wire.runUntil(() => r.ca.state === TIME_WAIT || r.cb.state === TIME_WAIT, 5000);
  assert(r.ca.state === TIME_WAIT || r.cb.state === TIME_WAIT);
});

Deno.test("transfer: 4 MiB each way with 1% loss and reordering (SACK recovery)", () => {
  const faults = { loss: 0.01, reorder: 0.01, reorderMs: 2 };
  const r = transfer(4 * MiB, 4 * MiB, {
    faultsAB: { ...faults, seed: 7 },
    faultsBA: { ...faults, seed: 8 },
  });
  check(r, 4 * MiB, 4 * MiB);
  assert(r.ca.retransSegs > 0 && r.cb.retransSegs > 0, "retransmits under loss");
  assert(r.ca.sackRecoveries > 0, "SACK recoveries");
  assert(r.cb.ofoBytes > 0, "out-of-order bytes");
});

Deno.test("transfer: 3 MiB each way with duplication and jitter", () => {
  const faults = { duplicate: 0.05, jitterMs: 2 };
  const r = transfer(3 * MiB, 3 * MiB, {
    faultsAB: { ...faults, seed: 3 },
    faultsBA: { ...faults, seed: 4 },
  });
  check(r, 3 * MiB, 3 * MiB);
  assert(r.a.counters[37] + r.b.counters[37] > 0, "duplicate data seen");
});

Deno.test("transfer: NewReno without SACK or timestamps, 2% loss", () => {
  const faults = { loss: 0.02, reorder: 0.005 };
  const r = transfer(
    3 * MiB,
    MiB,
    { faultsAB: { ...faults, seed: 5 }, faultsBA: { ...faults, seed: 6 } },
    { sack: false, timestamps: false, congestion: CC_NEWRENO },
  );
  check(r, 3 * MiB, MiB);
  assert(r.ca.renoRecoveries > 0, "NewReno recoveries");
  assertEquals(r.ca.sackRecoveries, 0);
  assert(r.ca.retransSegs > 0);
});

Deno.test("transfer: heavy loss (10%) and corruption still deliver byte-exact", () => {
  const faults = { loss: 0.1, corrupt: 0.02, reorder: 0.05 };
  const r = transfer(MiB, MiB, {
    faultsAB: { ...faults, seed: 9 },
    faultsBA: { ...faults, seed: 10 },
  });
  check(r, MiB, MiB);
  assert(r.a.counters[23] + r.b.counters[23] > 0, "checksum drops");
  assert(r.ca.rtoEvents + r.cb.rtoEvents > 0, "timeouts at this loss rate");
});

Deno.test("transfer: small MTU clamps the MSS; large window scaling", () => {
  const r = transfer(MiB, 0, { mtu: 576 }, { rcvBuf: 4 * MiB, sndBuf: 4 * MiB });
  check(r, MiB, 0);
  assertEquals(r.ca.sndMss, 576 - 40 - 12);
  assert(r.cb.rcvWscale >= 6);
});
