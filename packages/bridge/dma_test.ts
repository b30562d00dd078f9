import { assert, assertEquals, assertThrows } from "@std/assert";
import { closeRegion, createRegion, hostSRings, nicSRings, streamOffset } from "@pno/rings";
import { libc } from "../../ffi/libc.ts";
import { DMA_REJECTED, HostDma } from "./dma.ts";

const PARAMS = {
  maxThreads: 1,
  maxWaiters: 1,
  maxProcs: 1,
  maxSockets: 2,
  cmdSlots: 8,
  cplSlots: 8,
  evSlots: 8,
  txBytes: 4096,
  rxBytes: 4096,
};

/** The application's region and a second fd to it, as the proxy would hand the bridge. */
function appRegion() {
  const app = createRegion(PARAMS);
  const fd = libc().open(new TextEncoder().encode(`/proc/self/fd/${app.fd}\0`), 2, 0);
  assert(fd >= 0);
  return { app, fd };
}

Deno.test("dma: reads and writes host memory of a separately mapped region", () => {
  const { app, fd } = appRegion();
  const dma = HostDma.attach(fd);
  try {
    const l = dma.layout;
    hostSRings(app.buffer, app.layout, 1).tx.write(new Uint8Array([1, 2, 3, 4]), 0, 4);
    const mbuf = new Uint8Array(2048);
    assertEquals(dma.read(streamOffset(l, 1) + l.txData, mbuf, 10, 4), 4);
    assertEquals([...mbuf.subarray(10, 14)], [1, 2, 3, 4]);
    assertEquals(dma.write(streamOffset(l, 0) + l.rxData, mbuf, 10, 4), 4);
    assertEquals([...new Uint8Array(app.buffer, streamOffset(l, 0) + l.rxData, 4)], [1, 2, 3, 4]);
    // Ring views built over the DMA mapping see the application's writes.
    assertEquals(nicSRings(dma.buffer, l, 1).tx.readable(), 4);
    assertEquals(dma.counters, {
      transfers: 2,
      bytesRead: 4,
      bytesWritten: 4,
      rejected: 0,
      injectedNs: 0,
    });
  } finally {
    dma.detach();
    closeRegion(app);
  }
});

Deno.test("dma: every bad range is rejected and counted, none throws", () => {
  const { app, fd } = appRegion();
  const dma = HostDma.attach(fd);
  try {
    const mbuf = new Uint8Array(64);
    const bad: [number, number, number][] = [
      [-1, 0, 4],
      [dma.size - 2, 0, 4],
      [dma.size, 0, 1],
      [0, 62, 4],
      [0, -1, 4],
      [0.5, 0, 4],
      [0, 0, -1],
      [Number.MAX_SAFE_INTEGER, 0, 8],
      [NaN, 0, 1],
    ];
    for (const [h, o, n] of bad) {
      assertEquals(dma.read(h, mbuf, o, n), DMA_REJECTED, `read ${h},${o},${n}`);
      assertEquals(dma.write(h, mbuf, o, n), DMA_REJECTED, `write ${h},${o},${n}`);
    }
    assertEquals(dma.counters.rejected, bad.length * 2);
    assertEquals(dma.counters.transfers, 0);
    assertEquals(dma.read(dma.size - 4, mbuf, 60, 4), 4, "the last bytes are reachable");
  } finally {
    dma.detach();
    closeRegion(app);
  }
});

Deno.test("dma: a region with a bad header is refused at attach", () => {
  const { app, fd } = appRegion();
  try {
    new DataView(app.buffer).setUint32(0, 0xbad, true);
    assertThrows(() => HostDma.attach(fd), Error, "bad magic");
  } finally {
    closeRegion(app);
  }
});

Deno.test("dma: latency, jitter and bandwidth knobs slow transfers as configured", () => {
  const { app, fd } = appRegion();
  const dma = HostDma.attach(fd, { latencyNs: 20_000 });
  try {
    const mbuf = new Uint8Array(4096);
    let t = performance.now();
    for (let i = 0; i < 500; i++) dma.read(0, mbuf, 0, 64);
    const latencyMs = performance.now() - t;
    assert(latencyMs >= 10 && latencyMs < 200, `500 x 20 us took ${latencyMs} ms`);

    dma.knobs = { latencyNs: 0, jitterNs: 40_000, bandwidthBytesPerSec: 0, burstBytes: 0 };
    t = performance.now();
    for (let i = 0; i < 500; i++) dma.read(0, mbuf, 0, 64);
    const jitterMs = performance.now() - t;
    assert(jitterMs >= 5 && jitterMs < 200, `500 x U(0, 40 us) took ${jitterMs} ms`);

    dma.knobs = { latencyNs: 0, jitterNs: 0, bandwidthBytesPerSec: 100e6, burstBytes: 4096 };
    t = performance.now();
    for (let i = 0; i < 2500; i++) dma.read(0, mbuf, 0, 4096); // 10.24 MB at 100 MB/s
    const bwMs = performance.now() - t;
    assert(bwMs >= 90 && bwMs < 300, `10 MB at 100 MB/s took ${bwMs} ms`);
    assertEquals(dma.counters.bytesRead, 64 * 1000 + 4096 * 2500);
  } finally {
    dma.detach();
    closeRegion(app);
  }
});
