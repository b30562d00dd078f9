/**
 * A host application for the end-to-end tests, written against the ring client only (it
 * opens no kernel socket): `serve PORT` echoes every connection; `send HOST PORT BYTES`
 * connects out, streams BYTES of a deterministic pattern while reading the echo back, and
 * prints the SHA-256 of both directions as JSON.
 */
import { createHash } from "node:crypto";
import { RingClient } from "../packages/rings/client.ts";

const [mode, ...rest] = Deno.args;
const control = Deno.env.get("PNO_CONTROL") ?? "/run/pno/bridge.sock";
const client = await RingClient.attach(control);

if (mode === "serve") {
  const listener = await client.listen({ port: Number(rest[0]) });
  console.log(JSON.stringify({ event: "listening", pid: Deno.pid }));
  for await (const conn of listener) {
    (async () => {
      const buf = new Uint8Array(64 * 1024);
      try {
        for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
      } catch {
        // the peer reset: nothing to echo
      } finally {
        conn.close();
      }
    })();
  }
} else if (mode === "send") {
  const [host, port, bytes] = [rest[0], Number(rest[1]), Number(rest[2])];
  const conn = await client.connect({ hostname: host, port });
  const pattern = new Uint8Array(64 * 1024);
  for (let i = 0; i < pattern.length; i++) pattern[i] = (i * 7 + 3) & 0xff;
  const reader = (async () => {
    const hash = createHash("sha256");
    const buf = new Uint8Array(64 * 1024);
    let total = 0;
    for (let n; (n = await conn.read(buf)) !== null;) {
      hash.update(buf.subarray(0, n));
      total += n;
    }
    return { total, sha: hash.digest("hex") };
  })();
  const sent = createHash("sha256");
  for (let done = 0; done < bytes;) {
    const chunk = pattern.subarray(0, Math.min(pattern.length, bytes - done));
    await conn.write(chunk);
    sent.update(chunk);
    done += chunk.length;
  }
  await conn.closeWrite();
  const got = await reader;
  conn.close();
  console.log(JSON.stringify({ sent: bytes, sentSha: sent.digest("hex"), ...got }));
  await client.close();
}
