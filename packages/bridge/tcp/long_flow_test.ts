import { assert, assertEquals } from "@std/assert";
import { TcpEngine } from "./engine.ts";
import { MemWire } from "./mem_wire.ts";
import { startServices } from "./services.ts";
import { ESTABLISHED } from "./socket.ts";

Deno.test("a flow past 2 GiB goes on sending (sequence numbers more than 2^31 from the ISS)", () => {
  const wire = new MemWire({ delayMs: 1 });
  const server = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2 });
  const client = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1 });
  wire.attach(client, server);
  startServices(server);
  const s = client.connect(wire.ipB, 7);
  assert(wire.runUntil(() => s.state === ESTABLISHED, 1000));
  // Stands for 2 GiB and a little more already sent and acknowledged: SND.UNA is now more
  // than 2^31 past the ISS, where a signed sequence comparison of the two turns around.
  s.iss = (s.sndUna - 2 ** 31 - 1000) >>> 0;
  const data = new Uint8Array(100_000).map((_, i) => i % 251);
  const back = new Uint8Array(data.length);
  let sent = 0, got = 0;
  wire.runUntil(() => got === data.length, 5000, () => {
    if (sent < data.length) sent += Math.max(0, client.send(s, data, sent, data.length - sent));
    got += Math.max(0, client.recv(s, back, got, back.length - got));
  });
  assertEquals(got, data.length, "the echo came back whole");
  assertEquals(back, data);
});
