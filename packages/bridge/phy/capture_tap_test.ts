import { assertEquals, assertThrows } from "@std/assert";
import { bpfMatch, compileFilter, parseProgram } from "./bpf.ts";
import { CaptureTap } from "./capture_tap.ts";
import { MemoryDevice } from "./mem_device.ts";
import { pcapngHeader } from "./pcapng.ts";

/** An Ethernet + IPv4 + TCP frame from 10.0.0.1:sport to 10.0.0.2:dport with `payload` bytes. */
function tcpFrame(sport: number, dport: number, payload = 0): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + payload);
  const v = new DataView(f.buffer);
  f.set([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
  v.setUint16(12, 0x0800);
  f[14] = 0x45;
  v.setUint16(16, 40 + payload);
  f[22] = 64;
  f[23] = 6;
  f.set([10, 0, 0, 1, 10, 0, 0, 2], 26);
  v.setUint16(34, sport);
  v.setUint16(36, dport);
  f[46] = 0x50;
  f[47] = 0x02;
  return f;
}

function icmpFrame(): Uint8Array {
  const f = tcpFrame(0, 0);
  f[23] = 1;
  return f;
}

Deno.test("bpf: tcpdump's programs, run here, take what tcpdump would", async () => {
  const port7 = await compileFilter("tcp port 7");
  const icmp = await compileFilter("icmp");
  const a = tcpFrame(40000, 7), b = tcpFrame(40000, 9), c = icmpFrame();
  assertEquals([a, b, c].map((f) => bpfMatch(port7, f, 0, f.length)), [true, false, false]);
  assertEquals([a, b, c].map((f) => bpfMatch(icmp, f, 0, f.length)), [false, false, true]);
  // A frame cut short is rejected, not read past its end.
  assertEquals(bpfMatch(port7, a, 0, 30), false);
  await compileFilter("tcp portt 7").then(
    () => assertEquals("accepted", "refused"),
    (err) => assertEquals(String(err.message).includes("tcp portt 7"), true),
  );
  assertThrows(() => parseProgram("x", "2\n6 0 0 0\n"), Error, "unexpected program");
});

Deno.test("capture tap: frames both ways, filtered, counted, bounded; pass-through when idle", async () => {
  const dev = new MemoryDevice();
  const tap = new CaptureTap(dev);
  dev.inject(tcpFrame(40000, 7, 10));
  assertEquals(tap.receive(), 1); // no session: nothing kept
  const s = tap.start(3, await compileFilter("tcp"));
  assertThrows(() => tap.start(1, null), Error, "already running");
  dev.inject(tcpFrame(40000, 7, 10));
  dev.inject(icmpFrame());
  assertEquals(tap.receive(), 2);
  const out = tcpFrame(7, 40000, 10);
  const at = tap.reserve();
  tap.txBuf.set(out, at);
  tap.commit(out.length);
  assertEquals(tap.flush(), 1);
  assertEquals([s.captured, s.dropped], [2, 0]);
  const blocks = s.drain()!;
  // Two enhanced packet blocks of 44 + 64 bytes; the second one sent (epb_flags 2).
  assertEquals(blocks.length, 2 * (44 + 64));
  const v = new DataView(blocks.buffer);
  assertEquals([v.getUint32(0, true), v.getUint32(20, true), v.getUint32(28 + 64 + 4, true)], [
    6,
    64,
    1,
  ]);
  assertEquals(v.getUint32(108 + 28 + 64 + 4, true), 2);
  assertEquals(s.drain(), null);
  for (let i = 0; i < 3; i++) dev.inject(tcpFrame(40000, 9));
  tap.receive();
  assertEquals(s.captured, 3); // the count: the third kept, the rest passed by
  assertEquals(s.complete, false);
  s.drain();
  assertEquals(s.complete, true);
  assertEquals(new DataView(s.end().buffer).getUint32(0, true), 5); // statistics block
  tap.start(1, null).end(); // the session ended: another may start
  assertEquals(new DataView(pcapngHeader(2048).buffer).getUint32(0, true), 0x0a0d0d0a);
});
