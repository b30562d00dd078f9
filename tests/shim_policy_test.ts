/**
 * The shim's offload policy file (PNO_POLICY) as the C shim reads it: a kernel port stays in
 * the kernel, `listen bridge` keeps INADDR_ANY listeners in the kernel while the bridge's own
 * address is offloaded, and a line the shim does not understand is reported, not fatal.
 * The program is python3, whose sockets go through the libc calls the shim interposes.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { AppProcess, appStats, waitUntil } from "../cli/apps.ts";
import { inNs, sh } from "../cli/wire.ts";
import { withAppWire } from "./_app_harness.ts";

const TAG = "apolicy";
const SUBNET = 216; // and 217 for the twin link

/** A python3 server: bind HOST:PORT, listen, say "listening", echo one connection's line. */
function server(host: string, port: number): string[] {
  return [
    "python3",
    "-c",
    [
      "import socket",
      "s = socket.socket()",
      "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
      `s.bind(("${host}", ${port})); s.listen(8)`,
      "print('listening', flush=True)",
      "c, _ = s.accept(); c.sendall(c.recv(100)); c.close()",
      "import time; time.sleep(30)",
    ].join("\n"),
  ];
}

async function kernelListens(port: number): Promise<boolean> {
  const out = await sh(["ss", "-tlnH"]);
  return out.split("\n").some((l) => l.includes(`:${port} `));
}

Deno.test("shim policy file: kernel-port and listen bridge keep sockets in the kernel; the bridge's address is offloaded; bad lines are reported", async () => {
  await withAppWire(TAG, SUBNET, async (ctx) => {
    const policy = `${ctx.dir}/policy`;
    await Deno.writeTextFile(
      policy,
      "kernel-port 9301\nlisten bridge\nthis-is-not-a-directive 1\n",
    );
    const start = (argv: string[], name: string) => {
      const app = AppProcess.start(argv, {
        control: ctx.control,
        env: { PNO_POLICY: policy },
        name,
      });
      return app;
    };
    const started: AppProcess[] = [];
    try {
      // INADDR_ANY with "listen bridge": a kernel listener.
      const any = start(server("0.0.0.0", 9300), "any");
      started.push(any);
      // A kernel port, even on the bridge's address: the kernel, which cannot bind it.
      const kport = start(server(ctx.bridgeIp, 9301), "kernel-port");
      started.push(kport);
      // The bridge's address on another port: offloaded, served from the namespace.
      const bridged = start(server(ctx.bridgeIp, 9302), "bridged");
      started.push(bridged);
      await waitUntil(
        () =>
          Promise.resolve(
            any.output.includes("listening") && bridged.output.includes("listening"),
          ),
        "the servers listen",
      );
      assert(await kernelListens(9300), "0.0.0.0:9300 is a kernel listener");
      await waitUntil(
        () => Promise.resolve(!kport.alive()),
        "the kernel-port server fails to bind",
      );
      assert(kport.output.includes("Cannot assign requested address"), kport.output);
      assert(!(await kernelListens(9302)), "the bridge's address is not bound in the kernel");
      const echoed = await sh(
        inNs(ctx.w, "sh", "-c", `echo via-bridge | timeout 5 nc -N ${ctx.bridgeIp} 9302`),
      );
      assertEquals(echoed.trim(), "via-bridge");
      const stats = await ctx.bridge.stats();
      assert((appStats(stats, bridged.pid)?.commands ?? 0) > 0, "the bridge served it");
      assert(any.output.includes("not understood"), any.output);
    } finally {
      for (const app of started) await app.stop("SIGKILL", 1000);
    }
  });
});
