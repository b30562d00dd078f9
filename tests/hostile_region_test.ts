/**
 * A hostile application cannot hurt the bridge or anyone else. Three of them, each next to a
 * good application (tests/_ring_peer.ts, an echo server on the rings) whose transfers must stay
 * byte-exact while the bridge keeps answering /stats:
 *
 * - one scribbles random bytes over its whole region;
 * - one has a second thread rewrite the command slots the bridge is reading (opcode and socket
 *   id flipping under the reader: the bridge copies a descriptor once and checks the copy);
 * - one makes its wake socket a trap (queue full, O_NONBLOCK cleared on the shared file), never
 *   reads the acknowledgements of the wake fds it registers, and offers an eventfd as a wake fd
 *   (refused: only sockets, sent to with MSG_DONTWAIT; acknowledgements are never waited for).
 */
import { assert, assertEquals } from "@std/assert";
import { inNs, sh, type WireConfig } from "../cli/wire.ts";
import { addressOf, type BridgeProcess, TestChild, withBridge } from "./_harness.ts";

type App = Record<string, number>;
type Stats = {
  queues: Array<{ apps: App[]; control?: { refused: number; lastErrors: string[] } }>;
};

async function stats(bridge: BridgeProcess): Promise<Stats["queues"][number]> {
  // The bridge must answer promptly whatever an application does.
  const t0 = performance.now();
  const s = await bridge.stats() as unknown as Stats;
  const ms = performance.now() - t0;
  assert(ms < 2000, `/stats took ${ms.toFixed(0)} ms`);
  return s.queues[0];
}

/** Echoes `mib` MiB of random bytes through the good application `times` times; checks SHA-256. */
async function echoIntact(w: WireConfig, port: number, mib: number, times: number, what: string) {
  const file = await Deno.makeTempFile();
  try {
    await sh(["sh", "-c", `head -c ${mib << 20} /dev/urandom > ${file}`]);
    const want = (await sh(["sha256sum", file])).split(" ")[0];
    for (let i = 0; i < times; i++) {
      const t0 = performance.now();
      const got = await sh(
        inNs(
          w,
          "sh",
          "-c",
          `timeout 30 nc -N ${addressOf(w.bridgeAddress)} ${port} < ${file} | sha256sum`,
        ),
      );
      assertEquals(got.split(" ")[0], want, `transfer ${i} ${what}`);
      console.log(`${mib} MiB echoed ${what} in ${(performance.now() - t0).toFixed(0)} ms`);
    }
  } finally {
    await Deno.remove(file);
  }
}

/** Waits until only the good application is attached, and checks it saw no fault. */
async function onlyGoodLeft(w: WireConfig, bridge: BridgeProcess, port: number): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if ((await stats(bridge)).apps.length === 1) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const apps = (await stats(bridge)).apps;
  assertEquals(apps.length, 1, JSON.stringify(apps));
  assertEquals(apps[0].ringFaults, 0);
  assertEquals(apps[0].rejected, 0);
  assertEquals(
    await sh(
      inNs(w, "sh", "-c", `echo alive | timeout 5 nc -N ${addressOf(w.bridgeAddress)} ${port}`),
    ),
    "alive\n",
  );
}

Deno.test("a region scribbled with random bytes is refused and counted; others are unharmed", async () => {
  const control = `/tmp/pno-hostile-${Deno.pid}.sock`;
  await withBridge("thost", 146, async (w, bridge) => {
    const good = TestChild.ringApp("_ring_peer.ts", control, ["serve", "8020"]);
    const hostile = TestChild.ringApp("_hostile_app.ts", control, ["scribble", "6"]);
    try {
      assert((await good.nextLine()).includes("listening"));
      assertEquals(await hostile.nextLine(), "attached");
      // While the hostile app scribbles, the good app serves 8 MiB intact, three times.
      await echoIntact(w, 8020, 8, 3, "during the scribbling");
      const bad = (await stats(bridge)).apps.find((a) => a.pid === hostile.pid);
      if (!bad) throw new Error(`the hostile app is not attached`);
      const refused = bad.ringFaults + bad.rejected + bad.checkerBadOpcode + bad.checkerBadSock;
      console.log(`refused from the hostile region so far: ${JSON.stringify(bad)}`);
      assert(refused > 0, "the scribbling was seen and refused");
      assertEquals(await hostile.nextLine(), "done");
      await hostile.child.status;
      // The hostile app is gone (detached); the good one remains and saw no fault.
      await onlyGoodLeft(w, bridge, 8020);
    } finally {
      await good.kill();
      await hostile.kill();
    }
  }, ["--control", control]);
});

Deno.test("command slots rewritten by another thread while the bridge reads them: copied once, checked, refused", async () => {
  const control = `/tmp/pno-hostile-flip-${Deno.pid}.sock`;
  await withBridge("thflip", 152, async (w, bridge) => {
    const good = TestChild.ringApp("_ring_peer.ts", control, ["serve", "8022"]);
    const hostile = TestChild.ringApp("_hostile_app.ts", control, ["flip", "2", "8097"]);
    try {
      assert((await good.nextLine()).includes("listening"));
      assertEquals(await hostile.nextLine(), "attached");
      // The opcode flips CMD_BIND <-> CMD_LISTEN and the socket id flips to 0xffffffff in a
      // tight loop on another thread for two seconds; the good app's transfers overlap it.
      await echoIntact(w, 8022, 4, 2, "while the command slots flip");
      const during = await stats(bridge);
      const bad = during.apps.find((a) => a.pid === hostile.pid);
      if (!bad) throw new Error(`the hostile app is not attached: ${JSON.stringify(during)}`);
      const summary = JSON.parse(await hostile.nextLine());
      console.log(`flipping: ${JSON.stringify(summary)}; bridge: ${JSON.stringify(bad)}`);
      assertEquals(await hostile.nextLine(), "done");
      await hostile.child.status;
      assert(summary.flips > 1000, "the slots really flipped");
      assert(bad.commands > 1000, "the bridge read many flipping slots");
      assert(bad.rejected > 0 && bad.checkerBadSock > 0, "LISTEN of socket 0xffffffff refused");
      await onlyGoodLeft(w, bridge, 8022);
    } finally {
      await good.kill();
      await hostile.kill();
    }
  }, ["--control", control]);
});

Deno.test("a wake socket made to block and an eventfd as wake fd: the bridge never waits on them", async () => {
  const control = `/tmp/pno-hostile-wake-${Deno.pid}.sock`;
  await withBridge("thwake", 154, async (w, bridge) => {
    const good = TestChild.ringApp("_ring_peer.ts", control, ["serve", "8023"]);
    const hostile = TestChild.ringApp("_hostile_app.ts", control, ["wake", "8", "8094"]);
    try {
      assert((await good.nextLine()).includes("listening"));
      const ready = JSON.parse(await hostile.nextLine());
      assertEquals(ready.event, "ready");
      assert(ready.queued > 0, "the wake socket's queue is full");
      // Connections to the hostile listener: each is an edge for its sleeping waiter, so a
      // send on the trapped wake socket. A blocking send would stop the whole bridge here.
      const bridgeIp = addressOf(w.bridgeAddress);
      await sh(inNs(
        w,
        "sh",
        "-c",
        `for i in 1 2 3 4 5 6; do timeout 3 nc -z ${bridgeIp} 8094; sleep 0.05; done`,
      ));
      await echoIntact(w, 8023, 4, 2, "while a wake socket is trapped");
      const during = await stats(bridge);
      const bad = during.apps.find((a) => a.pid === hostile.pid);
      if (!bad) throw new Error(`the hostile app is not attached: ${JSON.stringify(during)}`);
      console.log(
        `trapped waiter: ${JSON.stringify(bad)}; control: ${JSON.stringify(during.control)}`,
      );
      assert(bad.kicks > 0, "the bridge tried to wake the trapped waiter (and did not block)");
      assert(bad.events > 0);
      // The eventfd offered as a wake fd was refused and counted. It comes after 2,000 wake
      // sockets on the control socket, which the bridge reads a turn of its event loop at a
      // time: wait for it.
      let refusals = during.control ?? { refused: 0, lastErrors: [] };
      for (
        let i = 0;
        i < 200 && !refusals.lastErrors.some((e) => e.includes("not a socket"));
        i++
      ) {
        await new Promise((r) => setTimeout(r, 100));
        refusals = (await stats(bridge)).control ?? refusals;
      }
      assert(refusals.refused >= 1);
      assert(
        refusals.lastErrors.some((e) => e.includes("not a socket")),
        JSON.stringify(refusals.lastErrors),
      );
      // Its wake fds' acknowledgements, which it never reads, were dropped, not waited for.
      assert(
        refusals.lastErrors.some((e) => e.includes("does not read its control socket")),
        JSON.stringify(refusals.lastErrors),
      );
      assertEquals(await hostile.nextLine(), "done");
      await hostile.child.status;
      await onlyGoodLeft(w, bridge, 8023);
    } finally {
      await good.kill();
      await hostile.kill();
    }
  }, ["--control", control]);
});
