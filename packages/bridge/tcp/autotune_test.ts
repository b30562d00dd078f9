import { assert, assertEquals } from "@std/assert";
import { TcpEngine, type TcpEngineOptions } from "./engine.ts";
import type { IpLink } from "./link.ts";
import { MemWire, type MemWireOptions } from "./mem_wire.ts";
import type { MemStream } from "./_mem_stream.ts";
import { ESTABLISHED, type TcpSocket } from "./socket.ts";
import { TRIM_INTERVAL_MS, trimQuietBuffers, wscaleFor } from "./autotune.ts";
import { TCP_SYN } from "../wire/tcp.ts";
import { SEND_MAP_INITIAL, SEND_MAP_RECORD_BYTES } from "./sendmap.ts";

const KiB = 1024, MiB = 1 << 20;
const PORT = 5001;

/** Every segment one engine sends: ack, window field and flags read from the header. */
class TapLink implements IpLink {
  readonly seen: { ack: number; window: number; flags: number; wscale: number }[] = [];
  private off = -1;
  constructor(private readonly inner: IpLink) {}
  get buf(): Uint8Array {
    return this.inner.buf;
  }
  get mtu(): number {
    return this.inner.mtu;
  }
  reserve(): number {
    return this.off = this.inner.reserve();
  }
  send(srcIp: number, dstIp: number, tcpLen: number): void {
    const b = this.inner.buf, o = this.off;
    const flags = b[o + 13];
    let wscale = -1;
    if (flags & TCP_SYN) {
      // Walk the options for kind 3 (window scale).
      const end = o + (b[o + 12] >> 4) * 4;
      for (let p = o + 20; p < end;) {
        const kind = b[p];
        if (kind === 0) break;
        if (kind === 1) {
          p++;
          continue;
        }
        if (kind === 3) wscale = b[p + 2];
        p += b[p + 1];
      }
    }
    this.seen.push({
      ack: ((b[o + 8] << 24) | (b[o + 9] << 16) | (b[o + 10] << 8) | b[o + 11]) >>> 0,
      window: (b[o + 14] << 8) | b[o + 15],
      flags,
      wscale,
    });
    this.inner.send(srcIp, dstIp, tcpLen);
  }
}

/** A (client) -> B (server) connection on an in-memory wire; B's output is tapped. */
function pair(wireOpts: MemWireOptions, opts: TcpEngineOptions = {}) {
  const wire = new MemWire({ slots: 16384, ...wireOpts });
  const tapB = new TapLink(wire.b);
  const a = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1, ...opts });
  const b = new TcpEngine(tapB, { localIp: wire.ipB, seed: 2, ...opts });
  wire.attach(a, b);
  const l = b.listen(PORT, 4);
  const ca = a.connect(wire.ipB, PORT, { nodelay: true });
  let cb: TcpSocket | null = null;
  assert(wire.runUntil(() => ca.state === ESTABLISHED && (cb ??= b.accept(l)) !== null, 1000));
  return { wire, a, b, ca, cb: cb!, tapB };
}

/** Walks the windows B offered: how many put the right edge left of the furthest one, by how much. */
function rightEdges(tap: TapLink, ws: number) {
  let edge = 0, checked = 0, retracted = 0, worst = 0;
  for (const s of tap.seen) {
    if (s.flags & TCP_SYN) continue;
    const right = (s.ack + s.window * 2 ** ws) >>> 0;
    // Sequence comparison (RFC 9293 §3.4): a signed 32-bit difference.
    const moved = edge === 0 ? 1 : (right - edge) | 0;
    if (edge !== 0) checked++;
    if (moved < 0) {
      retracted++;
      worst = Math.max(worst, -moved);
    } else edge = right;
  }
  return { checked, retracted, worst };
}

/** Bulk A -> B of `total` bytes, B's application reading `readPerStep` bytes per step. */
function bulk(
  p: ReturnType<typeof pair>,
  total: number,
  readPerStep: number,
  maxMs: number,
  check?: () => void,
) {
  const chunk = Uint8Array.from({ length: 64 * KiB }, (_, i) => i % 251);
  const sink = new Uint8Array(64 * KiB);
  let sent = 0, got = 0, bad = 0;
  const app = () => {
    while (sent < total) {
      const off = sent % 251;
      const n = p.a.send(p.ca, chunk, off, Math.min(chunk.length - off, total - sent));
      if (n <= 0) break;
      sent += n;
    }
    let budget = readPerStep;
    while (budget > 0) {
      const n = p.b.recv(p.cb, sink, 0, Math.min(sink.length, budget));
      if (n <= 0) break;
      for (let i = 0; i < n; i++) if (sink[i] !== (got + i) % 251) bad++;
      got += n;
      budget -= n;
    }
    check?.();
  };
  // The application writes first: an idle wire's next event may be far off, and runUntil
  // jumps to it.
  app();
  p.wire.runUntil(() => got >= total, maxMs, app);
  return { sent, got, bad };
}

Deno.test("autotune: a fast flow grows both rings by doubling, a few times, up to the limit", () => {
  // 5 ms each way: a 10 ms RTT with no bandwidth limit, so only the windows bound the flow.
  const p = pair({ delayMs: 5 });
  const rx = p.cb.rx as MemStream, tx = p.ca.tx as MemStream;
  assertEquals(rx.capacity, 64 * KiB, "small to begin with");
  assertEquals(tx.capacity, 32 * KiB);
  const r = bulk(p, 32 * MiB, Infinity, 60_000);
  assertEquals(r.got, 32 * MiB);
  assertEquals(r.bad, 0);
  assertEquals(rx.capacity, 4 * MiB, "the receive ring reached the limit");
  assertEquals(tx.capacity, 4 * MiB, "the send ring followed the congestion window");
  // Growth is by powers of two: at most log2(4 MiB / initial) steps, and as many allocations
  // of the backing (plus its first 4 KiB).
  assert(p.cb.rcvBufGrows >= 2 && p.cb.rcvBufGrows <= 6, `${p.cb.rcvBufGrows} receive growths`);
  assert(p.ca.sndBufGrows >= 2 && p.ca.sndBufGrows <= 7, `${p.ca.sndBufGrows} send growths`);
  assert(rx.allocations <= 11 && tx.allocations <= 11, `${rx.allocations}, ${tx.allocations}`);
  // The window offered grew past what 16 bits hold unscaled: the scale was needed.
  const maxOffered = Math.max(...p.tapB.seen.map((s) => s.window << p.cb.rcvWscale));
  assert(maxOffered > 1 * MiB, `largest window offered ${maxOffered}`);
  // Growth never moved the offered right edge left (quantisation aside: see below).
  assert(rightEdges(p.tapB, p.cb.rcvWscale).worst < 128);
});

Deno.test("autotune: a receiver that does not read never grows its ring", () => {
  const p = pair({ delayMs: 5 });
  const rx = p.cb.rx as MemStream;
  // Nobody reads: the sender fills the initial window and then probes a closed window.
  bulk(p, 8 * MiB, 0, 3000);
  // All of it but what the scale's 128-byte unit cannot express.
  assert(rx.readable() > 64 * KiB - 128, `${rx.readable()} bytes of the initial window filled`);
  assertEquals(rx.capacity, 64 * KiB);
  assertEquals(p.cb.rcvBufGrows, 0);
  assertEquals(p.tapB.seen.at(-1)!.window, 0, "a zero window offered");
});

Deno.test("autotune: a slow reader grows its ring no further than its reading rate needs", () => {
  const p = pair({ delayMs: 5 });
  const rx = p.cb.rx as MemStream;
  // 8 KiB per 1 ms step is 8 MB/s: 80 KiB per 10 ms RTT, about what 64 KiB already covers.
  bulk(p, 4 * MiB, 8 * KiB, 5000);
  assert(rx.capacity <= 256 * KiB, `receive ring ${rx.capacity} for an 8 MB/s reader`);
  assert(rx.backingBytes() <= rx.capacity);
});

Deno.test("autotune: the offered right edge never moves left while the ring grows", () => {
  // Jitter and reordering make ACKs and window updates go out of step; loss makes SACKs.
  const p = pair({
    delayMs: 3,
    faultsAB: { loss: 0.01, reorder: 0.02, reorderMs: 2, jitterMs: 1, seed: 11 },
  });
  const ws = p.cb.rcvWscale;
  const rx = p.cb.rx as MemStream;
  // Inside the receiver, at every step: the edge it accepts up to never moves left, and every
  // byte up to it is backed by the ring (RCV.NXT + free space).
  let accept = p.cb.rcvAdvEdge, steps = 0;
  const tick = () => {
    const e = p.cb.rcvAdvEdge;
    assert(((e - accept) | 0) >= 0, `accepted edge moved left: ${accept} -> ${e}`);
    assert(((e - p.cb.rcvNxt) | 0) <= rx.writable(), "an offered byte the ring cannot hold");
    accept = e;
    steps++;
  };
  const r = bulk(p, 8 * MiB, 48 * KiB, 120_000, tick);
  assertEquals(r.got, 8 * MiB);
  assertEquals(r.bad, 0);
  assert(p.cb.rcvBufGrows > 0, "the ring grew meanwhile");
  assert(steps > 100);
  // On the wire: the right edge of every window offered (ACK + field << scale) is at or past
  // the last one, except for the quantisation RFC 7323 §2.4 describes: less than one scale
  // unit, when the ring has no room to round the field up to the last edge.
  const w = rightEdges(p.tapB, ws);
  assert(w.checked > 1000, `${w.checked} segments checked`);
  assert(w.worst < 2 ** ws, `right edge moved left by ${w.worst}`);
  console.log(`${w.retracted} of ${w.checked} offers short by less than ${2 ** ws} bytes`);
});

Deno.test("autotune: the window scale is chosen at the SYN for the largest ring", () => {
  // Defaults: 64 KiB to begin with, 4 MiB at most: shift 7, in the SYN and the SYN-ACK alike.
  let p = pair({});
  assertEquals(p.ca.rcvWscale, wscaleFor(4 * MiB));
  assertEquals(wscaleFor(4 * MiB), 7);
  const synAck = p.tapB.seen.find((s) => s.flags & TCP_SYN)!;
  assertEquals(synAck.wscale, 7);
  assertEquals(p.cb.rcvWscale, 7);
  // A 1 MiB limit needs shift 5; fixed 64 KiB rings (no autotuning) need none.
  p = pair({}, { rcvBufMax: MiB });
  assertEquals(p.tapB.seen.find((s) => s.flags & TCP_SYN)!.wscale, 5);
  p = pair({}, { autotune: false, rcvBuf: 32 * KiB });
  assertEquals(p.tapB.seen.find((s) => s.flags & TCP_SYN)!.wscale, 0);
  assertEquals((p.cb.rx as MemStream).backingBytes(), 32 * KiB, "fixed rings are allocated");
  assertEquals(wscaleFor(65535), 0);
  assertEquals(wscaleFor(65536), 1);
});

Deno.test("autotune: an idle connection holds no buffer memory; a small exchange a page", () => {
  const p = pair({});
  for (const s of [p.ca, p.cb]) {
    assertEquals((s.tx as MemStream).backingBytes(), 0);
    assertEquals((s.rx as MemStream).backingBytes(), 0);
  }
  const msg = new TextEncoder().encode("ping\n");
  p.a.send(p.ca, msg, 0, msg.length);
  const sink = new Uint8Array(100);
  let got = 0;
  p.wire.runUntil(() => got > 0, 100, () => {
    const n = p.b.recv(p.cb, sink, 0, sink.length);
    if (n > 0) got += n;
  });
  assertEquals(got, msg.length);
  assertEquals((p.ca.tx as MemStream).backingBytes(), 4 * KiB);
  assertEquals((p.cb.rx as MemStream).backingBytes(), 4 * KiB);
  assertEquals(p.ca.snapshot().sndBufBytes, 4 * KiB);
  assertEquals(p.cb.snapshot().rcvBuf, 64 * KiB);
});

Deno.test("autotune: a connection gone quiet gives its rings' memory back, not its window", () => {
  const p = pair({ delayMs: 5 });
  const rx = p.cb.rx as MemStream, tx = p.ca.tx as MemStream;
  const first = bulk(p, 8 * MiB, Infinity, 30_000);
  assertEquals(first.got, 8 * MiB);
  const rcvCap = rx.capacity, sndCap = tx.capacity;
  assert(rx.backingBytes() > 64 * KiB && tx.backingBytes() > 32 * KiB);
  // Let the last ACKs settle, then two sweeps a second apart.
  p.wire.runUntil(() => false, 500);
  let freed = 0;
  for (let i = 0; i < 2; i++) {
    freed += trimQuietBuffers(p.a, p.wire.now) + trimQuietBuffers(p.b, p.wire.now);
    p.wire.runUntil(() => false, TRIM_INTERVAL_MS);
  }
  assertEquals(rx.backingBytes(), 0);
  assertEquals(tx.backingBytes(), 0);
  assert(freed >= rcvCap, `${freed} bytes freed`);
  assertEquals(rx.capacity, rcvCap, "the receive window stays as large");
  assertEquals(tx.capacity, sndCap);
  // A second burst flows byte-exact through rings that allocate again.
  const r = bulk(p, 2 * MiB, Infinity, 30_000);
  assertEquals(r.bad, 0);
  assertEquals(r.got, 2 * MiB);
});

Deno.test("autotune: a quiet connection's send map goes back to its first size; the next flight flows", () => {
  const p = pair({ delayMs: 5 });
  const sm = p.ca.sm;
  assertEquals(sm.capacity, SEND_MAP_INITIAL);
  const first = bulk(p, 8 * MiB, Infinity, 30_000);
  assertEquals([first.got, first.bad], [8 * MiB, 0]);
  // A 10 ms RTT with windows up to 4 MiB: hundreds of segments in flight at the peak.
  const bigCap = sm.capacity;
  assert(bigCap >= 256, `send map of ${bigCap} records after the bulk`);
  p.wire.runUntil(() => false, 500);
  assertEquals(sm.count, 0, "everything acknowledged");
  // Two sweeps a second apart: the first still sees the large flight since the last one.
  const rings = [p.ca.tx, p.ca.rx, p.cb.tx, p.cb.rx] as MemStream[];
  const backing = rings.reduce((sum, r) => sum + r.backingBytes(), 0);
  const mapB = p.cb.sm.capacity;
  let freed = 0;
  for (let i = 0; i < 2; i++) {
    p.wire.runUntil(() => false, TRIM_INTERVAL_MS);
    freed += trimQuietBuffers(p.a, p.wire.now) + trimQuietBuffers(p.b, p.wire.now);
  }
  assertEquals(sm.capacity, SEND_MAP_INITIAL);
  assertEquals(p.cb.sm.capacity, SEND_MAP_INITIAL);
  assertEquals(
    freed,
    backing + (bigCap + mapB - 2 * SEND_MAP_INITIAL) * SEND_MAP_RECORD_BYTES,
    "the sweep counts the map's arrays with the rings' backing",
  );
  // The next flight grows the map again and arrives byte-exact.
  const next = bulk(p, 2 * MiB, Infinity, 30_000);
  assertEquals([next.got, next.bad], [2 * MiB, 0]);
  assert(sm.capacity > SEND_MAP_INITIAL, "the map grew again with the flight");
  p.wire.runUntil(() => false, 500);
  assertEquals(sm.count, 0);
});
