import { assert, assertEquals, assertThrows } from "@std/assert";
import { TcpEngine, TcpError } from "./engine.ts";
import { MemWire } from "./mem_wire.ts";
import { ESTABLISHED, type TcpSocket } from "./socket.ts";

function pair() {
  const wire = new MemWire({ delayMs: 1 });
  const client = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 3 });
  const server = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 4 });
  wire.attach(client, server);
  return { wire, client, server };
}

/** Opens `n` connections to `port` and returns how many each listener accepted. */
function spread(
  w: ReturnType<typeof pair>,
  port: number,
  listeners: TcpSocket[],
  n: number,
): number[] {
  const conns: TcpSocket[] = [];
  for (let i = 0; i < n; i++) conns.push(w.client.connect(w.wire.ipB, port));
  assert(w.wire.runUntil(() => conns.every((c) => c.state === ESTABLISHED), 5000));
  // The handshakes' last ACKs reach the server a wire delay after the clients are established.
  w.wire.runUntil(() => false, 20);
  return listeners.map((l) => {
    let got = 0;
    while (w.server.accept(l) !== null) got++;
    return got;
  });
}

Deno.test("SO_REUSEPORT: listeners that all ask share a port, and connections spread over them", () => {
  const w = pair();
  const opts = { reusePort: true };
  const group = [0, 1, 2, 3].map(() => w.server.listen(8100, 128, opts));
  const counts = spread(w, 8100, group, 200);
  assertEquals(counts.reduce((a, b) => a + b, 0), 200);
  // Each of four members gets a share (a keyed hash of the peer's port: about 50 each).
  for (const c of counts) assert(c >= 20, `uneven spread ${counts}`);
});

Deno.test("SO_REUSEPORT: a listener without it cannot join, and one with it cannot join a listener without", () => {
  const w = pair();
  w.server.listen(8101, 8, { reusePort: true });
  const e1 = assertThrows(() => w.server.listen(8101, 8), TcpError);
  assertEquals(e1.errno, -98);
  w.server.listen(8102, 8);
  const e2 = assertThrows(() => w.server.listen(8102, 8, { reusePort: true }), TcpError);
  assertEquals(e2.errno, -98);
});

Deno.test("SO_REUSEPORT: a member that closes leaves the port to the others", () => {
  const w = pair();
  const a = w.server.listen(8103, 128, { reusePort: true });
  const b = w.server.listen(8103, 128, { reusePort: true });
  const c = w.server.listen(8103, 128, { reusePort: true });
  w.server.close(a);
  const counts = spread(w, 8103, [b, c], 60);
  assertEquals(counts[0] + counts[1], 60);
  assert(counts[0] > 0 && counts[1] > 0);
  w.server.close(b);
  w.server.close(c);
  // The port is free again: a plain listener may take it.
  w.server.listen(8103, 8);
});
