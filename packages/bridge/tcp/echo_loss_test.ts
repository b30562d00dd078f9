/**
 * Echo under loss in both directions: the case where each side's send buffer waits on the
 * other's receive window. A zero-window probe carrying a piggybacked ACK used to be dropped
 * whole, which stalled both sides behind RTOs backed off to two minutes.
 */
import { assert, assertEquals } from "@std/assert";
import { TcpEngine } from "./engine.ts";
import { MemWire } from "./mem_wire.ts";
import { startServices } from "./services.ts";
import { ESTABLISHED } from "./socket.ts";

Deno.test("8 MiB through the echo service with 1% loss and 25% reordering both ways", () => {
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const f = { loss: 0.01, reorder: 0.25, reorderMs: 10, seed };
    const wire = new MemWire({ delayMs: 10, faultsAB: f, faultsBA: { ...f, seed: seed + 100 } });
    const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 11 });
    const b = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 22 });
    wire.attach(a, b);
    startServices(b);
    const c = a.connect(wire.ipB, 7);
    assert(wire.runUntil(() => c.state === ESTABLISHED, 5000));
    const total = 8 << 20;
    const buf = new Uint8Array(65536);
    let sent = 0, got = 0, bad = 0;
    const start = wire.now;
    wire.runUntil(() => got >= total, 300_000, () => {
      while (sent < total) {
        const n = Math.min(buf.length, total - sent);
        for (let i = 0; i < n; i++) buf[i] = (sent + i) * 7;
        const w = a.send(c, buf, 0, n);
        if (w <= 0) break;
        sent += w;
      }
      for (let r; (r = a.recv(c, buf, 0, buf.length)) > 0; got += r) {
        for (let i = 0; i < r; i++) if (buf[i] !== (((got + i) * 7) & 0xff)) bad++;
      }
    });
    assertEquals(got, total, `seed ${seed}: the echo stalled after ${got} bytes`);
    assertEquals(bad, 0);
    // Data segments that carry SACK blocks have room for that much less payload: a segment
    // cut to the MSS with the options on top is longer than the MTU, and a real link drops it.
    assertEquals(wire.ab.oversized + wire.ba.oversized, 0, `seed ${seed}: frames over the MTU`);
    // At 20 ms RTT and 1% loss TCP moves a few hundred KB/s: 8 MiB well within a minute.
    assert(wire.now - start < 60_000, `seed ${seed}: ${wire.now - start} ms of virtual time`);
  }
});
