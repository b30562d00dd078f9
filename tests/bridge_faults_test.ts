/**
 * The bridge's fault injector (`pno bridge --loss/--delay/--reorder/--duplicate`) on the veth
 * wire against the Linux kernel: the impairments tc netem would apply if this kernel had
 * sch_netem, injected at the bridge's port in both directions.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { inNs, sh } from "../cli/wire.ts";
import { addressOf, type BridgeProcess, ping, withBridge } from "./_harness.ts";
import { runPy, STREAM_CLIENT, type StreamResult, tcpStats, waitFor } from "./_tcp_peers.ts";

const MiB = 1 << 20;

/** /stats with the parts this test reads. */
interface FaultStats {
  tcp: Record<string, number>;
  faults?: Record<string, number>;
  queues: Array<{ faults?: Record<string, number> }>;
}

async function faultStats(bridge: BridgeProcess): Promise<FaultStats> {
  return (await bridge.stats()) as unknown as FaultStats;
}

// An echo under loss couples both directions (see tests/tcp_transfer_test.ts for the engine
// bugs that made it stall, now fixed: SACK-bearing data segments count as duplicate ACKs,
// zero-window probes' ACKs are taken, timers fire on time). It is still slow, about 75 KB/s,
// because with windows of a few segments losses wait for the RTO (no RACK-TLP yet).
Deno.test("bridge --loss 1 --delay 10 --reorder 25: 4 MiB echo, SHA-256 match, retransmits", async () => {
  await withBridge("tfault", 190, async (w, bridge) => {
    const r = await runPy<StreamResult>(
      w,
      STREAM_CLIENT,
      ["echo", addressOf(w.bridgeAddress), "7", String(4 * MiB), "20"],
      150_000, // measured 53 s; the bound only catches a stall
    );
    assert(!("error" in r), JSON.stringify(r));
    assertEquals(r.sent, 4 * MiB);
    assertEquals(r.received, 4 * MiB);
    assertEquals(r.shaRecv, r.shaSent, "echoed bytes differ from the bytes sent");
    const empty = await waitFor(async () => (await tcpStats(bridge)).connections === 0, 10_000);
    const s = await faultStats(bridge);
    console.log(
      `4 MiB echo in ${r.seconds.toFixed(2)} s (${(4 / r.seconds).toFixed(2)} MiB/s); ` +
        `kernel retrans ${r.kernelRetrans}; bridge retransSegs ${s.tcp.retransSegs}, ` +
        `rtoEvents ${s.tcp.rtoEvents}; faults ${JSON.stringify(s.faults)}`,
    );
    assert(empty, "the bridge still holds the connection 10 s after the transfer");
    assert(s.tcp.retransSegs > 0, "the bridge retransmitted nothing under 1% loss");
    assert(r.kernelRetrans > 0, "the kernel retransmitted nothing under 1% loss");
    const f = s.faults;
    if (f === undefined) throw new Error("no fault counters in /stats");
    assertEquals(s.queues[0].faults, f);
    assert(f.dropped > 0, `dropped ${f.dropped}`);
    assert(f.delayed > 0, `delayed ${f.delayed}`);
    assert(f.reordered > 0, `reordered ${f.reordered}`);
    assertEquals(f.duplicated, 0);
    assertEquals(f.poolFull, 0);
    // About 1% of the frames, both directions together, were lost; a quarter skipped the delay.
    const frames = f.delayed + f.reordered;
    assert(f.dropped > frames * 0.005 && f.dropped < frames * 0.02, JSON.stringify(f));
    assert(f.reordered > frames * 0.2 && f.reordered < frames * 0.3, JSON.stringify(f));
  }, ["--loss", "1", "--delay", "10", "--reorder", "25"]);
});

Deno.test("bridge without fault flags runs no injector: no faults in /stats", async () => {
  await withBridge("tfault", 190, async (w, bridge) => {
    assertEquals(await ping(w, addressOf(w.bridgeAddress), 5), 5);
    const s = await faultStats(bridge);
    assert(!("faults" in s), JSON.stringify(s.faults));
    assert(s.queues.every((q) => !("faults" in q)), JSON.stringify(s.queues));
  });
});

Deno.test("bridge --delay 20 delays both directions: ping RTT of 40 ms or more", async () => {
  await withBridge("tfault", 190, async (w, bridge) => {
    // One ping first: ARP resolution crosses the delayed link too, twice.
    assertEquals(await ping(w, addressOf(w.bridgeAddress), 1), 1);
    const out = await sh(
      inNs(w, "ping", "-c", "10", "-i", "0.1", "-W", "2", addressOf(w.bridgeAddress)),
    );
    const m = out.match(/rtt min\/avg\/max\/mdev = ([\d.]+)\/([\d.]+)\/([\d.]+)/);
    if (m === null) throw new Error(`no rtt summary in ping's output: ${out}`);
    const [min, avg, max] = [Number(m[1]), Number(m[2]), Number(m[3])];
    const f = (await faultStats(bridge)).faults;
    console.log(
      `ping through --delay 20: rtt min/avg/max ${min}/${avg}/${max} ms; ${JSON.stringify(f)}`,
    );
    assert(out.includes("10 received"), out);
    assert(min >= 40, `rtt ${min} ms < 40 ms: the delay is not applied both ways`);
    assert(max < 80, `rtt ${max} ms: held frames are released late`);
    assertEquals(f?.dropped, 0);
    assert((f?.delayed ?? 0) >= 20, JSON.stringify(f));
  }, ["--loss", "0", "--delay", "20"]);
});
