/**
 * The TCP engine alone on the in-memory wire: one bulk connection A→B on one thread, payloads
 * of 64 B and 1460 B (the link MTU sets the MSS), reporting segments per second per core and
 * heap bytes allocated per segment.
 *
 * Allocation is measured with a young generation large enough that no scavenge runs during a
 * measured window (`--max-semi-space-size`), so the growth of `heapUsed` across the window is
 * what the data path allocated; windows where the heap shrank (a GC ran anyway) are discarded.
 *
 * Run: `deno run -A bench/tcp_engine.ts` (re-executes itself with the V8 flags it needs).
 *
 * @module
 */

import { TcpEngine } from "../packages/bridge/tcp/engine.ts";
import { MemWire } from "../packages/bridge/tcp/mem_wire.ts";
import { MemStream } from "../packages/bridge/tcp/_mem_stream.ts";
import { ESTABLISHED, type TcpSocket } from "../packages/bridge/tcp/socket.ts";
import { checksumAdd } from "../packages/bridge/wire/checksum.ts";

/** ns per Internet checksum of a 1,472-byte segment (TCP header with timestamps + 1,460 B). */
function checksumNs(): number {
  const seg = new Uint8Array(2048).map((_, i) => i * 7);
  let sink = 0;
  for (let i = 0; i < 100000; i++) sink += checksumAdd(0, seg, i & 7, 1472);
  const n = 1000000, t0 = performance.now();
  for (let i = 0; i < n; i++) sink += checksumAdd(0, seg, i & 7, 1472);
  const ns = (performance.now() - t0) * 1e6 / n;
  return sink > 0 ? ns : NaN;
}

interface Run {
  payload: number;
  dataSegs: number;
  totalSegs: number;
  bytes: number;
  ms: number;
  allocPerSeg: number;
}

function setup(payload: number, loopCopy: boolean) {
  // TCP payload = MTU - 20 (IP) - 20 (TCP) - 12 (timestamps).
  const wire = new MemWire({ mtu: payload + 52, delayMs: 1, slots: 16384 });
  const buf = 1 << 20;
  const streams = () => ({ tx: new MemStream(buf, loopCopy), rx: new MemStream(buf, loopCopy) });
  const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1, sndBuf: buf, rcvBuf: buf });
  const b = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, sndBuf: buf, rcvBuf: buf });
  wire.attach(a, b);
  const l = b.listen(5001, 4, { streams });
  const ca = a.connect(wire.ipB, 5001, { nodelay: true, streams });
  let cb: TcpSocket | null = null;
  wire.runUntil(() => ca.state === ESTABLISHED && (cb ??= b.accept(l)) !== null, 1000);
  const chunk = new Uint8Array(65536);
  for (let i = 0; i < chunk.length; i++) chunk[i] = i & 255;
  const sink = new Uint8Array(65536);
  const sc = cb!;
  const app = () => {
    while (a.send(ca, chunk, 0, chunk.length) > 0) { /* fill */ }
    while (b.recv(sc, sink, 0, sink.length) > 0) { /* drain */ }
  };
  const segs = () => a.counters[0] + a.counters[1] + b.counters[0] + b.counters[1];
  return { wire, a, b, ca, app, segs };
}

function measure(payload: number, targetSegs: number, loopCopy: boolean): Run {
  const t = setup(payload, loopCopy);
  const { wire, ca, app, segs } = t;
  // Warm up (JIT, window growth).
  const warm = segs() + targetSegs / 4;
  wire.runUntil(() => segs() >= warm, 1e9, app);
  // Throughput.
  const s0 = segs();
  const d0 = ca.segsOut;
  const b0 = ca.bytesOut;
  const t0 = performance.now();
  const end = s0 + targetSegs;
  wire.runUntil(() => segs() >= end, 1e9, app);
  const ms = performance.now() - t0;
  // Allocation: windows of ~2000 segments between forced GCs.
  const gc = (globalThis as { gc?: () => void }).gc;
  const per: number[] = [];
  if (gc) {
    for (let w = 0; w < 15; w++) {
      gc();
      const h0 = Deno.memoryUsage().heapUsed;
      const x0 = segs();
      const x1 = x0 + 2000;
      wire.runUntil(() => segs() >= x1, 1e9, app);
      const dh = Deno.memoryUsage().heapUsed - h0;
      if (dh >= 0) per.push(dh / (segs() - x0));
    }
    per.sort((x, y) => x - y);
  }
  return {
    payload,
    dataSegs: ca.segsOut - d0,
    totalSegs: segs() - s0,
    bytes: ca.bytesOut - b0,
    ms,
    allocPerSeg: per.length ? per[per.length >> 1] : NaN,
  };
}

/** Runs the benchmark and returns the report text. */
export function tcpEngineBench(segments = 400000): string {
  const lines = [
    "TCP engine on the in-memory wire, one connection, one thread (segments both ways:",
    "data A→B and ACKs B→A; each counted once when sent and once when received)",
    "copy  payload | data segs/s | all segs/s (in+out) | goodput MB/s | heap bytes/segment",
  ];
  for (const [payload, loop] of [[64, false], [1460, false], [64, true], [1460, true]] as const) {
    const r = measure(payload, segments, loop);
    const s = r.ms / 1000;
    lines.push(
      `${loop ? "loop" : "view"}  ${String(r.payload).padStart(7)} | ${
        (r.dataSegs / s).toFixed(0).padStart(11)
      } | ` +
        `${(r.totalSegs / s).toFixed(0).padStart(19)} | ${
          (r.bytes / s / 1e6).toFixed(1).padStart(12)
        } | ` +
        `${isNaN(r.allocPerSeg) ? "n/a (no gc)" : r.allocPerSeg.toFixed(1).padStart(18)}`,
    );
  }
  lines.push(
    "copy: 'view' = ring copies with set(subarray) (default MemStream), 'loop' = byte loops.",
    "The engine allocates nothing per segment; the bytes in 'view' rows are the ring's",
    "short-lived subarray views (two per data segment: copyOut on send, copyIn on receive).",
    `Internet checksum of a 1472-byte segment: ${checksumNs().toFixed(0)} ns`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  if ((globalThis as { gc?: () => void }).gc === undefined && !Deno.env.get("PNO_BENCH_CHILD")) {
    const cmd = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-ffi", // libpno_copy's checksum (PNO_NATIVE_CSUM=0: the TypeScript one)
        "--v8-flags=--expose-gc,--max-semi-space-size=256",
        new URL(import.meta.url).pathname,
      ],
      env: { PNO_BENCH_CHILD: "1" },
      stdout: "inherit",
      stderr: "inherit",
    });
    Deno.exit((await cmd.output()).code);
  }
  console.log(tcpEngineBench());
}
