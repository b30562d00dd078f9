/**
 * End to end through the rings, without the shim: host applications written against the ring
 * client, their TCP run by the bridge's engine, reached by and reaching the Linux kernel in the
 * client namespace.
 */
import { assert, assertEquals } from "@std/assert";
import { inNs, sh } from "../cli/wire.ts";
import { addressOf, type BridgeProcess, TestChild, withBridge } from "./_harness.ts";

const MiB = 1 << 20;

async function apps(bridge: BridgeProcess): Promise<Array<Record<string, number>>> {
  const s = await bridge.stats() as unknown as {
    queues: Array<{ apps: Array<Record<string, number>> }>;
  };
  return s.queues[0].apps;
}

Deno.test("a host echo server on the rings serves 64 MiB to a kernel client, SHA-256 intact", async () => {
  const control = `/tmp/pno-e2e-${Deno.pid}-a.sock`;
  await withBridge("te2ea", 140, async (w, bridge) => {
    const server = TestChild.ringApp("_ring_peer.ts", control, ["serve", "8007"]);
    try {
      assert((await server.nextLine()).includes("listening"));
      const file = await Deno.makeTempFile();
      try {
        await sh(["sh", "-c", `head -c ${64 * MiB} /dev/urandom > ${file}`]);
        const want = (await sh(["sha256sum", file])).split(" ")[0];
        const t0 = performance.now();
        const out = await sh(
          inNs(
            w,
            "sh",
            "-c",
            `timeout 120 nc -N ${addressOf(w.bridgeAddress)} 8007 < ${file} | sha256sum`,
          ),
        );
        const secs = (performance.now() - t0) / 1000;
        console.log(
          `64 MiB echoed through the rings in ${secs.toFixed(2)} s ` +
            `(${(64 / secs).toFixed(1)} MiB/s each way)`,
        );
        assertEquals(out.split(" ")[0], want);
      } finally {
        await Deno.remove(file);
      }
      // The host kernel holds no TCP socket for the application: its port is served on the NIC.
      const ss = await sh(["ss", "-tanpH"]);
      assert(!ss.includes(`pid=${server.pid},`), `kernel sockets of the server: ${ss}`);
      assert(!/:8007\b/.test(ss), `a kernel socket on port 8007: ${ss}`);
      const [app] = await apps(bridge);
      assert(app.commands > 0 && app.events > 0);
      assertEquals(app.rejected, 0);
    } finally {
      await server.kill();
    }
  }, ["--control", control]);
});

Deno.test("a host client on the rings connects out to a kernel server and exchanges 16 MiB", async () => {
  const control = `/tmp/pno-e2e-${Deno.pid}-b.sock`;
  await withBridge("te2eb", 142, async (w, bridge) => {
    const script = [
      "import socket, threading",
      "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
      `s.bind(("${addressOf(w.clientAddress)}", 9100)); s.listen(4); print("up", flush=True)`,
      "c, _ = s.accept()",
      "while True:",
      "    b = c.recv(65536)",
      "    if not b: break",
      "    c.sendall(b)",
      "c.shutdown(socket.SHUT_WR); c.close()",
    ].join("\n");
    const server = TestChild.run(inNs(w, "python3", "-c", script));
    try {
      assertEquals(await server.nextLine(), "up");
      const client = TestChild.ringApp("_ring_peer.ts", control, [
        "send",
        addressOf(w.clientAddress),
        "9100",
        String(16 * MiB),
      ]);
      const line = await client.nextLine();
      await client.child.status;
      const r = JSON.parse(line);
      assertEquals(r.total, 16 * MiB);
      assertEquals(r.sha, r.sentSha);
      const stats = await bridge.stats();
      assert((stats as unknown as { tcp: Record<string, number> }).tcp.activeOpens >= 1);
    } finally {
      await server.kill();
    }
  }, ["--control", control]);
});

Deno.test("an application killed mid-connection: its connection ends as at a Linux process's exit, the bridge stays up", async () => {
  const control = `/tmp/pno-e2e-${Deno.pid}-c.sock`;
  await withBridge("te2ec", 144, async (w, bridge) => {
    const server = TestChild.ringApp("_ring_peer.ts", control, ["serve", "8008"]);
    let client: TestChild | null = null;
    try {
      assert((await server.nextLine()).includes("listening"));
      // A kernel client that writes slowly and waits. When the app dies its connection is
      // closed as Linux closes a dead process's sockets: FIN if nothing was left unread, RST if
      // something was (which of the two depends on where the kill falls in the exchange).
      client = TestChild.run(inNs(
        w,
        "python3",
        "-c",
        [
          "import socket, time",
          `c = socket.create_connection(("${addressOf(w.bridgeAddress)}", 8008))`,
          "c.sendall(b'x' * 1000); c.recv(1000); print('echoed', flush=True)",
          "try:",
          "    while True:",
          "        c.sendall(b'y' * 100); b = c.recv(100)",
          "        if not b: print('eof', flush=True); break",
          "        time.sleep(0.05)",
          "except ConnectionResetError: print('reset', flush=True)",
        ].join("\n"),
      ));
      assertEquals(await client.nextLine(), "echoed");
      assertEquals((await apps(bridge)).length, 1);
      await server.kill();
      const end = await client.nextLine();
      assert(end === "reset" || end === "eof", `the connection ended with: ${end}`);
      for (let i = 0; i < 50 && (await apps(bridge)).length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assertEquals((await apps(bridge)).length, 0, "the region is gone");
      // The bridge still serves: its echo service answers.
      const echoed = await sh(
        inNs(w, "sh", "-c", `echo still-up | timeout 5 nc -N ${addressOf(w.bridgeAddress)} 7`),
      );
      assertEquals(echoed.trim(), "still-up");
    } finally {
      await server.kill();
      if (client) await client.kill();
    }
  }, ["--control", control]);
});
