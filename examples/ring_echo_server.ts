/**
 * An echo server on the host whose TCP runs on the NIC: it holds no kernel socket, only a
 * region of rings that the bridge serves. Prints "listening" when ready.
 *
 * Usage: deno run -A --unstable-ffi examples/ring_echo_server.ts [--control PATH] [--port N]
 */
import { parseArgs } from "@std/cli";
import { RingClient } from "../packages/rings/client.ts";

const flags = parseArgs(Deno.args, {
  string: ["control", "port"],
  default: { control: "/run/pno/bridge.sock", port: "8007" },
});
const client = await RingClient.attach(flags.control);
const listener = await client.listen({ port: Number(flags.port) });
console.log(JSON.stringify({ event: "listening", port: listener.port, pid: Deno.pid }));
// A clean exit on SIGINT/SIGTERM (so --cpu-prof writes its profile): the bridge sees the
// control socket close and resets whatever is still open.
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(sig, () => {
    listener.close();
    void client.close().finally(() => Deno.exit(0));
  });
}
for await (const conn of listener) {
  (async () => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
    } catch (err) {
      console.error(`connection from ${conn.remoteAddr.hostname}: ${(err as Error).message}`);
    } finally {
      conn.close();
    }
  })();
}
