/**
 * `--workers N`: one engine per RX queue, each in its own Deno worker. Kernel flows spread
 * over the queues by af_packet's fanout hash, as RSS spreads them over a NIC's cores; the
 * services listen in every worker, so every flow is served wherever it lands. (af_packet is
 * the driver with more than one worker; net_af_xdp needs an interface with as many RX queues.)
 */
import { assert, assertEquals } from "@std/assert";
import { addressOf, ping, withBridge } from "./_harness.ts";
import { inNs, sh, testWire, wireDown, wireUp } from "../cli/wire.ts";

Deno.test("two workers serve 16 parallel echo flows from the kernel, both queues busy", async () => {
  await withBridge("twork", 150, async (w, bridge) => {
    assertEquals(await ping(w, addressOf(w.bridgeAddress), 3), 3);
    const script = [
      "import socket, hashlib, threading",
      "ok = []",
      "def flow(i):",
      `    c = socket.create_connection(("${addressOf(w.bridgeAddress)}", 7))`,
      "    data = bytes((i * 31 + j) & 0xff for j in range(1 << 20))",
      "    t = threading.Thread(target=c.sendall, args=(data,)); t.start()",
      "    got = bytearray()",
      "    while len(got) < len(data):",
      "        b = c.recv(65536)",
      "        if not b: break",
      "        got += b",
      "    t.join(); c.close()",
      "    ok.append(hashlib.sha256(got).digest() == hashlib.sha256(data).digest())",
      "    if not ok[-1]: print('flow', i, len(got), flush=True)",
      "ts = [threading.Thread(target=flow, args=(i,)) for i in range(16)]",
      "[t.start() for t in ts]; [t.join(60) for t in ts]",
      "print(sum(ok))",
    ].join("\n");
    const out = await sh(inNs(w, "timeout", "90", "python3", "-c", script));
    assertEquals(out.trim().split("\n").pop(), "16", `every flow echoed intact: ${out}`);
    const stats = await bridge.stats() as unknown as {
      workers: number;
      queues: Array<{ queue: number; tcp: { counters: Record<string, number> } }>;
    };
    assertEquals(stats.workers, 2);
    const perQueue = stats.queues.map((q) => q.tcp.counters.passiveOpens);
    console.log(`connections accepted per queue: ${perQueue.join(", ")}`);
    assertEquals(perQueue.reduce((a, b) => a + b, 0), 16);
    assert(perQueue.every((n) => n > 0), `both queues served flows: ${perQueue}`);
  }, ["--workers", "2", "--control", "none"]);
});

Deno.test("net_af_xdp with more workers than the interface has RX queues is refused, with the reason", async () => {
  const w = testWire("tworkx", 158);
  try {
    await wireUp(w);
    const run = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-ffi",
        new URL("../packages/bridge/main.ts", import.meta.url).pathname,
        "--iface",
        w.bridge,
        "--address",
        w.bridgeAddress,
        "--driver",
        "af_xdp",
        "--workers",
        "2",
        "--control",
        "none",
        "--stats-port",
        "0",
        "--file-prefix",
        `pno-test-${w.bridge}`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const err = new TextDecoder().decode(run.stderr);
    assertEquals(run.code, 1, err);
    assert(err.includes(`${w.bridge} has 1 RX queue(s) and the bridge 2 worker(s)`), err);
    // Nothing was attached to the interface: it is left as it was.
    const link = await sh(["ip", "link", "show", w.bridge]);
    assert(!link.includes("prog/xdp"), link);
  } finally {
    await wireDown(w);
  }
});
