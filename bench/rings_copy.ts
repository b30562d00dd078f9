/**
 * The bridge's per-segment ring copies, alone: `copyOut` from a socket's TX ring into a frame of
 * the mbuf pool (what the engine does for each data segment it sends) and `copyIn` from a frame
 * into the RX ring (each in-order or out-of-order segment received). Both ends are native
 * memory here, as in the bridge: the ring in a mapped region (memfd), the "pool" in a second
 * mapping. Each copy is timed two ways over the same memory: through libpno_copy (the buffers
 * are registered as native, one FFI fast call per copy) and through the TypeScript path
 * (unregistered views: a DataView word loop under 256 bytes, `set(subarray)` above, which
 * allocates a view per copy). Reports ns per segment, GB/s and heap bytes per segment.
 *
 * Allocation is measured as in bench/tcp_engine.ts: forced GC, then the growth of `heapUsed`
 * over a window too short for a scavenge (`--max-semi-space-size`); windows where the heap
 * shrank are dropped; the median is reported.
 *
 * Run: `deno run -A --unstable-ffi bench/rings_copy.ts` (re-executes itself with the V8 flags it
 * needs); `./pno bench --micro` runs it after the ring micro-benchmarks.
 *
 * @module
 */
import { HostTxProducer, NicRxProducer, NicTxConsumer } from "../packages/rings/mod.ts";
import { streamOffset } from "../packages/rings/layout.ts";
import { nativeCopy, registerNativeMemory } from "../packages/rings/_native.ts";
import { closeRegion, createRegion } from "../packages/rings/region.ts";

const CAP = 1 << 18;
const FRAME = 2048;
const FRAMES = 512;

interface Result {
  nsPerSeg: number;
  gbps: number;
  allocPerSeg: number;
}

/** Times `step` (one segment each call) and measures its allocation. */
function measure(step: (i: number) => void, len: number, segs: number): Result {
  for (let i = 0; i < 20000; i++) step(i); // warm up: optimized code
  const t0 = performance.now();
  for (let i = 0; i < segs; i++) step(i);
  const ms = performance.now() - t0;
  const gc = (globalThis as { gc?: () => void }).gc;
  const per: number[] = [];
  if (gc) {
    for (let w = 0; w < 15; w++) {
      gc();
      const h0 = Deno.memoryUsage().heapUsed;
      for (let i = 0; i < 2000; i++) step(i);
      const dh = Deno.memoryUsage().heapUsed - h0;
      if (dh >= 0) per.push(dh / 2000);
    }
    per.sort((a, b) => a - b);
  }
  return {
    nsPerSeg: (ms * 1e6) / segs,
    gbps: (len * segs) / (ms / 1000) / 1e9,
    allocPerSeg: per.length ? per[per.length >> 1] : NaN,
  };
}

/**
 * Runs the copy benchmark over one path ("ts" or "native"); returns its report lines. Each
 * path runs in a process of its own: sharing one would make the ring code polymorphic.
 */
export function ringCopyBench(path: "ts" | "native", segs = 2_000_000): string[] {
  const small = { maxThreads: 1, maxWaiters: 1, maxProcs: 1, maxSockets: 1 };
  const region = createRegion({
    ...small,
    cmdSlots: 64,
    cplSlots: 64,
    evSlots: 64,
    txBytes: CAP,
    rxBytes: CAP,
  });
  const pool = createRegion({
    ...small,
    cmdSlots: 64,
    cplSlots: 64,
    evSlots: 64,
    txBytes: FRAME * FRAMES,
    rxBytes: 4096,
  });
  const lines: string[] = [];
  try {
    // The same memory viewed twice: registered (native copies) and not (TypeScript copies).
    const views = {
      native: { ring: region.buffer, pool: new Uint8Array(pool.buffer) },
      ts: {
        ring: Deno.UnsafePointerView.getArrayBuffer(region.ptr, region.size),
        pool: new Uint8Array(Deno.UnsafePointerView.getArrayBuffer(pool.ptr, pool.size)),
      },
    };
    registerNativeMemory(pool.buffer, pool.ptr);
    if (path === "native" && nativeCopy() === null) {
      return ["native: libpno_copy not loadable (build it with make -C ffi)"];
    }
    for (const len of [64, 512, 1448]) {
      {
        const v = views[path];
        // Ring offsets: the region's only socket, TX then RX (layout.ts).
        const l = region.layout;
        const base = streamOffset(l, 0);
        const host = new HostTxProducer(v.ring, base + l.txCtrl, base + l.txData, CAP);
        const tx = new NicTxConsumer(v.ring, base + l.txCtrl, base + l.txData, CAP);
        const rx = new NicRxProducer(v.ring, base + l.rxCtrl, base + l.rxData, CAP);
        // Fill the TX ring once; copyOut then reads segments anywhere in it, as retransmits do.
        const fill = new Uint8Array(CAP);
        for (let i = 0; i < CAP; i++) fill[i] = i * 7;
        while (host.writable() > 0) host.write(fill, 0, host.writable());
        const span = CAP - len - 1;
        const poolOff = (i: number) => (i % FRAMES) * FRAME + 66;
        // A stride that is not a multiple of the segment: copies cross the ring's wrap too.
        const out = measure(
          (i) => tx.copyOut((i * 1453) % span, v.pool, poolOff(i), len),
          len,
          segs,
        );
        const inn = measure(
          (i) => rx.copyIn((i * 1453) % span, v.pool, poolOff(i), len),
          len,
          segs,
        );
        tx.release(tx.readable());
        const f = (r: Result) =>
          `${r.nsPerSeg.toFixed(1).padStart(8)} ${r.gbps.toFixed(2).padStart(6)} ${
            isNaN(r.allocPerSeg) ? "     n/a" : r.allocPerSeg.toFixed(1).padStart(10)
          }`;
        lines.push(`${path.padEnd(6)} ${String(len).padStart(5)} |    ${f(out)} |   ${f(inn)}`);
      }
    }
  } finally {
    closeRegion(region);
    closeRegion(pool);
  }
  return lines;
}

/**
 * Runs both paths, each in a child with the V8 flags allocation measurement needs; `report`
 * sees each line. Resolves false if a child failed.
 */
export async function runRingCopyBench(
  report: (line: string) => void = console.log,
): Promise<boolean> {
  report("ring <-> mbuf copies per segment (region and pool both native memory, one thread)");
  report("path       size | copyOut ns/seg   GB/s heap B/seg | copyIn ns/seg   GB/s heap B/seg");
  let ok = true;
  for (const path of ["ts", "native"]) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--unstable-ffi",
        "--v8-flags=--expose-gc,--max-semi-space-size=256",
        new URL(import.meta.url).pathname,
        path,
      ],
      env: { PNO_BENCH_CHILD: "1" },
      stdout: "piped",
      stderr: "inherit",
    }).output();
    ok &&= out.success;
    for (const line of new TextDecoder().decode(out.stdout).trimEnd().split("\n")) report(line);
  }
  report("ts = TypeScript copies (word loop < 256 B, set(subarray) >= 256 B: a view allocated");
  report("per copy); native = libpno_copy memcpy, an FFI fast call with cached base pointers.");
  return ok;
}

if (import.meta.main) {
  const path = Deno.args[0];
  if (path === "ts" || path === "native") {
    for (const line of ringCopyBench(path)) console.log(line);
  } else {
    Deno.exit((await runRingCopyBench()) ? 0 : 1);
  }
}
