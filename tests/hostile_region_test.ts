/**
 * A hostile application cannot hurt the bridge or anyone else: while one application
 * scribbles random bytes over its whole region, another application's connections keep
 * working byte for byte, and the bridge counts what it refused and stays up.
 */
import { assert, assertEquals } from "@std/assert";
import { inNs, sh } from "../cli/wire.ts";
import { addressOf, TestChild, withBridge } from "./_harness.ts";

Deno.test("a region scribbled with random bytes is refused and counted; others are unharmed", async () => {
  const control = `/tmp/pno-hostile-${Deno.pid}.sock`;
  await withBridge("thost", 146, async (w, bridge) => {
    const good = TestChild.ringApp("_ring_peer.ts", control, ["serve", "8020"]);
    const hostile = TestChild.ringApp("_hostile_app.ts", control, ["6"]);
    try {
      assert((await good.nextLine()).includes("listening"));
      assertEquals(await hostile.nextLine(), "attached");
      // While the hostile app scribbles, the good app serves 8 MiB intact, three times.
      const file = await Deno.makeTempFile();
      try {
        await sh(["sh", "-c", `head -c ${8 << 20} /dev/urandom > ${file}`]);
        const want = (await sh(["sha256sum", file])).split(" ")[0];
        for (let i = 0; i < 3; i++) {
          const t0 = performance.now();
          const got = await sh(
            inNs(
              w,
              "sh",
              "-c",
              `timeout 30 nc -N ${addressOf(w.bridgeAddress)} 8020 < ${file} | sha256sum`,
            ),
          );
          assertEquals(got.split(" ")[0], want, `transfer ${i} during the scribbling`);
          console.log(
            `8 MiB echoed during the scribbling in ${(performance.now() - t0).toFixed(0)} ms`,
          );
        }
      } finally {
        await Deno.remove(file);
      }
      type Stats = { queues: Array<{ apps: Array<Record<string, number>> }> };
      const during = (await bridge.stats() as unknown as Stats).queues[0].apps;
      const bad = during.find((a) => a.pid === hostile.pid);
      if (!bad) throw new Error(`the hostile app is not attached: ${JSON.stringify(during)}`);
      const refused = bad.ringFaults + bad.rejected + bad.checkerBadOpcode + bad.checkerBadSock;
      console.log(`refused from the hostile region so far: ${JSON.stringify(bad)}`);
      assert(refused > 0, "the scribbling was seen and refused");
      assertEquals(await hostile.nextLine(), "done");
      await hostile.child.status;
      // The hostile app is gone (detached); the good one remains and saw no fault.
      for (let i = 0; i < 50; i++) {
        const apps = (await bridge.stats() as unknown as Stats).queues[0].apps;
        if (apps.length === 1) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const apps = (await bridge.stats() as unknown as Stats).queues[0].apps;
      assertEquals(apps.length, 1, JSON.stringify(apps));
      assertEquals(apps[0].ringFaults, 0);
      assertEquals(apps[0].rejected, 0);
      assertEquals(
        await sh(
          inNs(w, "sh", "-c", `echo alive | timeout 5 nc -N ${addressOf(w.bridgeAddress)} 8020`),
        ),
        "alive\n",
      );
    } finally {
      await good.kill();
      await hostile.kill();
    }
  }, ["--control", control]);
});
