/**
 * An idle bridge wakes on the wire: after a quiet second its loop sleeps, and a ping then ends
 * the sleep through the wire's wakeup (packages/bridge/phy/wire_wake.ts: net_af_xdp's socket, or
 * net_af_packet's wake socket), not through the end of a nap. Asserted from the loop's counters,
 * with and without application regions (the loop then also waits on the region server's
 * eventfd), with each driver.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { addressOf, type BridgeProcess, ping, withBridge } from "./_harness.ts";
import type { WireConfig } from "../cli/wire.ts";

/** The poll loop's counters (one queue). */
async function loop(bridge: BridgeProcess): Promise<Record<string, number>> {
  const stats = (await bridge.stats()) as unknown as { queues: { loop: Record<string, number> }[] };
  return stats.queues[0].loop;
}

async function pingsAfterQuiet(
  w: WireConfig,
  bridge: BridgeProcess,
  driver: string,
): Promise<void> {
  assertEquals((await bridge.stats() as unknown as { driver: string }).driver, driver);
  const dst = addressOf(w.bridgeAddress);
  assertEquals(await ping(w, dst, 1), 1); // ARP both ways first
  const pings = 3;
  const before = await loop(bridge);
  let replies = 0;
  for (let i = 0; i < pings; i++) {
    await new Promise((r) => setTimeout(r, 1100)); // a quiet second: the loop sleeps
    replies += await ping(w, dst, 1);
  }
  const after = await loop(bridge);
  assertEquals(replies, pings);
  assert(after.sleeps > before.sleeps, "the idle loop never slept");
  // Each ping arrives while the loop sleeps; its sleep ends with the frame. (One may land in
  // the few microseconds between two sleeps: at least all but one.)
  const woke = after.wireWakes - before.wireWakes;
  assert(woke >= pings - 1, `${woke} of ${pings} pings woke the loop from the wire`);
  assertEquals(after.wireWake, 1);
}

Deno.test("an idle bridge wakes on a frame, not at the end of a nap", async () => {
  await withBridge("twbw1", 74, async (w, bridge) => {
    await pingsAfterQuiet(w, bridge, "af_xdp");
  }, ["--driver", "af_xdp"]);
});

Deno.test("an idle bridge serving regions wakes on a frame too", async () => {
  const control = `/tmp/pno-twbw2-${Deno.pid}.sock`;
  await withBridge("twbw2", 62, async (w, bridge) => {
    await pingsAfterQuiet(w, bridge, "af_xdp");
  }, ["--driver", "af_xdp", "--control", control]);
});

Deno.test("an idle bridge on net_af_packet wakes on a frame through its wake socket", async () => {
  await withBridge("twbw3", 156, async (w, bridge) => {
    await pingsAfterQuiet(w, bridge, "af_packet");
  }, ["--driver", "af_packet"]);
});
