/**
 * Micro-benchmarks of the host-NIC rings, in one process: descriptor rate (batched and one at a
 * time), stream-ring bandwidth against plain memcpy (Uint8Array.set) measured in the same run,
 * and one-way latency to a busy-polling consumer on another thread (a Worker; half a round trip);
 * then the bridge's per-segment ring <-> mbuf copies, TypeScript against libpno_copy, with heap
 * bytes per segment (bench/rings_copy.ts, in child processes).
 *
 * Run: deno run -A bench/rings_micro.ts (or `./pno bench --micro`, through `runMicroBench`).
 *
 * @module
 */

import {
  BYTE_RING_CTRL_SIZE,
  DESC_SIZE,
  DescRingConsumer,
  DescRingProducer,
  HostRxConsumer,
  HostTxProducer,
  NicRxProducer,
  NicTxConsumer,
} from "../packages/rings/mod.ts";
import { runRingCopyBench } from "./rings_copy.ts";

type Report = (line: string) => void;

function descriptorRate(batch: number, seconds: number): number {
  const slots = 256;
  const mem = new SharedArrayBuffer(BYTE_RING_CTRL_SIZE + slots * DESC_SIZE);
  const tx = new DescRingProducer(mem, 0, BYTE_RING_CTRL_SIZE, slots);
  const rx = new DescRingConsumer(mem, 0, BYTE_RING_CTRL_SIZE, slots);
  let moved = 0;
  let check = 0;
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  while (performance.now() < end) {
    for (let r = 0; r < 1000; r++) {
      const k = tx.reserve(batch);
      for (let i = 0; i < k; i++) {
        const at = tx.slotOffset(i);
        tx.view.setUint32(at, moved + i, true); // opcode+flags word
        tx.view.setUint32(at + 8, moved + i, true); // request id
      }
      tx.publish(k);
      const n = rx.peek(batch);
      for (let i = 0; i < n; i++) check ^= rx.view.getUint32(rx.slotOffset(i) + 8, true);
      rx.release(n);
      moved += n;
    }
  }
  if (check === 0.5) console.log(""); // keep the reads alive
  return moved / ((performance.now() - start) / 1000);
}

function memcpyBandwidth(size: number, seconds: number): number {
  const src = new Uint8Array(size);
  const dst = new Uint8Array(size);
  src.fill(7);
  let bytes = 0;
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  while (performance.now() < end) {
    for (let r = 0; r < 64; r++) {
      dst.set(src);
      bytes += size;
    }
  }
  return bytes / ((performance.now() - start) / 1000);
}

function ringBandwidth(size: number, seconds: number): number {
  const cap = 1 << 18;
  const mem = new SharedArrayBuffer(BYTE_RING_CTRL_SIZE + cap);
  const host = new HostTxProducer(mem, 0, BYTE_RING_CTRL_SIZE, cap);
  const nic = new NicTxConsumer(mem, 0, BYTE_RING_CTRL_SIZE, cap);
  const src = new Uint8Array(size);
  const dst = new Uint8Array(size);
  src.fill(7);
  let bytes = 0;
  const end = performance.now() + seconds * 1000;
  const start = performance.now();
  while (performance.now() < end) {
    for (let r = 0; r < 64; r++) {
      const n = host.write(src, 0, size);
      nic.copyOut(0, dst, 0, n);
      nic.release(n);
      bytes += n;
    }
  }
  return bytes / ((performance.now() - start) / 1000);
}

async function oneWayLatencyNs(messages: number, size: number): Promise<number[]> {
  const cap = 4096;
  const ringBytes = BYTE_RING_CTRL_SIZE + cap;
  const mem = new SharedArrayBuffer(2 * ringBytes);
  const ringA: [number, number, number] = [0, BYTE_RING_CTRL_SIZE, cap];
  const ringB: [number, number, number] = [ringBytes, ringBytes + BYTE_RING_CTRL_SIZE, cap];
  const out = new NicRxProducer(mem, ...ringA);
  const back = new HostRxConsumer(mem, ...ringB);
  const worker = new Worker(new URL("./_rings_echo_worker.ts", import.meta.url).href, {
    type: "module",
  });
  const done = new Promise((resolve) => (worker.onmessage = resolve));
  worker.postMessage({ mem, ringA, ringB, messages, size });
  const msg = new Uint8Array(size);
  const rtt = new Float64Array(messages);
  for (let i = 0; i < messages; i++) {
    const t0 = performance.now();
    out.copyIn(0, msg, 0, size);
    out.publish(size);
    let got = 0;
    while (got < size) got += Math.max(0, back.read(msg, got, size - got));
    rtt[i] = performance.now() - t0;
  }
  await done;
  worker.terminate();
  const warm = rtt.subarray(messages >> 4).sort();
  const q = (p: number) => (warm[Math.floor(p * (warm.length - 1))] / 2) * 1e6;
  return [q(0.5), q(0.99)];
}

/** Runs every micro-benchmark (about 15 s) and returns the report; `report` sees each line. */
export async function runMicroBench(report: Report = console.log): Promise<string> {
  const lines: string[] = [];
  const say = (s: string) => {
    lines.push(s);
    report(s);
  };
  say("rings micro-benchmark (one process; Deno " + Deno.version.deno + ")");
  const one = descriptorRate(1, 1.5);
  const batched = descriptorRate(32, 1.5);
  say(`descriptors, one per publish:  ${(one / 1e6).toFixed(2)} M/s`);
  say(`descriptors, 32 per publish:   ${(batched / 1e6).toFixed(2)} M/s`);
  for (const size of [64, 1024, 65536]) {
    const ring = ringBandwidth(size, 1.5);
    const copy = memcpyBandwidth(size, 1.5);
    say(
      `stream ring, ${String(size).padStart(5)} B writes: ${(ring / 1e9).toFixed(2)} GB/s ` +
        `through the ring (write + copyOut), memcpy ${(copy / 1e9).toFixed(2)} GB/s, ` +
        `ratio ${(ring / copy).toFixed(3)} (2 copies per byte: 0.5 is the ideal)`,
    );
  }
  const [p50, p99] = await oneWayLatencyNs(200_000, 64);
  say(`one-way latency, 64 B, polling worker: p50 ${p50.toFixed(0)} ns, p99 ${p99.toFixed(0)} ns`);
  await runRingCopyBench(say);
  return lines.join("\n");
}

if (import.meta.main) await runMicroBench();
