/**
 * The TCP engine alone on the in-memory wire: one bulk connection A→B on one thread, payloads
 * of 64 B and 1460 B (the link MTU sets the MSS), reporting segments per second per core and
 * heap bytes allocated per segment.
 *
 * Allocation is measured with a young generation large enough that no scavenge runs during a
 * measured window (`--max-semi-space-size`), so the growth of `heapUsed` across the window is
 * what the data path allocated; windows where the heap shrank (a GC ran anyway) are discarded.
 *
 * Run: `deno run -A --unstable-ffi bench/tcp_engine.ts` (each row runs in a child of its own,
 * with the V8 flags it needs).
 *
 * @module
 */

import { TcpEngine } from "../packages/bridge/tcp/engine.ts";
import { MemWire } from "../packages/bridge/tcp/mem_wire.ts";
import { MemStream } from "../packages/bridge/tcp/_mem_stream.ts";
import { ESTABLISHED, type TcpSocket } from "../packages/bridge/tcp/socket.ts";
import {
  checksumAdd,
  checksumAddPseudoV4,
  checksumFinish,
} from "../packages/bridge/wire/checksum.ts";
import {
  TCP_ACK,
  TCP_PSH,
  TCP_SYN,
  TcpSegment,
  tcpSeq,
  tcpSetChecksum,
} from "../packages/bridge/wire/tcp.ts";
import type { IpLink } from "../packages/bridge/tcp/link.ts";
import * as K from "../packages/bridge/tcp/counters.ts";

/** The receive benchmark's addresses: the sender (A) and the engine (B). */
const PEER_A = 0x0a000001, PEER_B = 0x0a000002;

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
  /** Share of received segments the receive fast path took (bulk receive only). */
  fastPath?: number;
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

export function measure(payload: number, targetSegs: number, loopCopy: boolean): Run {
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

/** A link whose segments go nowhere (the receive benchmark's engine ACKs into it). */
class SinkLink implements IpLink {
  readonly buf = new Uint8Array(4096);
  readonly mtu: number;
  /** The sequence number of the last segment sent (the SYN-ACK's is the ISN). */
  lastSeq = 0;
  constructor(mtu: number) {
    this.mtu = mtu;
  }
  reserve(): number {
    return 64;
  }
  send(): void {
    this.lastSeq = tcpSeq(this.buf, 64);
  }
}

/**
 * Bulk receive alone: one engine fed in-order data segments of `payload` bytes (timestamps on,
 * as Linux sends them) by a sender that only rewrites the sequence number and its share of
 * the checksum, in rounds of 32 segments, each followed by `poll` (its ACKs go nowhere) and the
 * application reading everything. What a receiving bridge does per segment: verify, copy into
 * the receive ring, process the ACK, schedule ACKs, and the read.
 */
export function measureReceive(payload: number, segments: number): Run {
  const mtu = payload + 52;
  const link = new SinkLink(mtu);
  let now = 1000;
  const e = new TcpEngine(link, {
    localIp: PEER_B,
    seed: 2,
    rcvBuf: 1 << 20,
    sndBuf: 1 << 20,
    clock: () => now,
  });
  const l = e.listen(5001, 4);
  const seg = new TcpSegment();
  const frame = new Uint8Array(mtu);
  const put = (flags: number, seq: number, ack: number, data: number): number => {
    seg.srcPort = 40000;
    seg.dstPort = 5001;
    seg.seq = seq;
    seg.ack = ack;
    seg.flags = flags;
    seg.window = 65535;
    seg.hasTimestamp = true;
    seg.tsVal = 7;
    seg.tsEcr = 0;
    seg.mss = flags & TCP_SYN ? payload + 12 : 0;
    seg.wscale = flags & TCP_SYN ? 7 : -1;
    seg.sackPermitted = (flags & TCP_SYN) !== 0;
    const hl = seg.emit(frame, 0);
    for (let i = 0; i < data; i++) frame[hl + i] = i & 255;
    tcpSetChecksum(frame, 0, hl + data, PEER_A, PEER_B);
    return hl;
  };
  const isn = 1;
  const synLen = put(TCP_SYN, isn, 0, 0);
  e.input(frame, 0, synLen, PEER_A, PEER_B, now);
  e.poll(now);
  const iss = link.lastSeq;
  let hl = put(TCP_ACK, isn + 1, iss + 1, 0);
  e.input(frame, 0, hl, PEER_A, PEER_B, now);
  const sock = e.accept(l);
  if (sock === null || sock.state !== ESTABLISHED) throw new Error("receive bench: no connection");
  // The data segment: only the sequence number changes, so the checksum is the sum of the
  // rest (seq 0) plus the two words of the sequence number.
  hl = put(TCP_ACK | TCP_PSH, 0, iss + 1, payload);
  const len = hl + payload;
  frame[16] = frame[17] = 0;
  const base = checksumAddPseudoV4(checksumAdd(0, frame, 0, len), PEER_A, PEER_B, 6, len);
  let seq = isn + 1;
  const sink = new Uint8Array(1 << 20);
  const round = (): void => {
    for (let i = 0; i < 32; i++) {
      frame[4] = seq >>> 24;
      frame[5] = seq >>> 16;
      frame[6] = seq >>> 8;
      frame[7] = seq;
      const c = checksumFinish(base + (seq >>> 16) + (seq & 0xffff));
      frame[16] = c >>> 8;
      frame[17] = c;
      e.input(frame, 0, len, PEER_A, PEER_B, now);
      seq = (seq + payload) >>> 0;
    }
    while (e.recv(sock, sink, 0, sink.length) > 0) { /* drain */ }
    now += 0.01;
    e.poll(now);
  };
  const rounds = Math.ceil(segments / 32);
  for (let r = 0; r < rounds / 4; r++) round();
  const b0 = sock.bytesIn, s0 = sock.segsIn;
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) round();
  const ms = performance.now() - t0;
  const dataSegs = sock.segsIn - s0, bytes = sock.bytesIn - b0;
  if (e.counters[K.C_DROP_CHECKSUM] > 0 || sock.rcvNxt !== seq) {
    throw new Error("receive bench: segments were not all taken");
  }
  const gc = (globalThis as { gc?: () => void }).gc;
  const per: number[] = [];
  if (gc) {
    for (let w = 0; w < 15; w++) {
      gc();
      const h0 = Deno.memoryUsage().heapUsed;
      for (let r = 0; r < 64; r++) round();
      const dh = Deno.memoryUsage().heapUsed - h0;
      if (dh >= 0) per.push(dh / (64 * 32));
    }
    per.sort((x, y) => x - y);
  }
  return {
    payload,
    dataSegs,
    totalSegs: dataSegs,
    bytes,
    ms,
    allocPerSeg: per.length ? per[per.length >> 1] : NaN,
    fastPath: e.counters[K.C_RCV_FAST_PATH] / e.counters[K.C_SEGS_IN],
  };
}

/** A row of the report: the bulk flow over the in-memory wire, or the receive alone. */
interface Row {
  kind: "wire" | "receive";
  payload: number;
  loop: boolean;
}

function measureRow(row: Row, segments: number): Run {
  return row.kind === "wire"
    ? measure(row.payload, segments, row.loop)
    : measureReceive(row.payload, segments);
}

/**
 * Measures one row in a process of its own, with the V8 flags the allocation figure needs. In
 * one process, code V8 had optimized for the rows before (another link class, another copy
 * mode) was deoptimized and tiered up again in the next, which then showed about 13 heap
 * bytes per segment more or not, depending on the order of the rows.
 */
async function measureInChild(row: Row, segments: number): Promise<Run> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-ffi", // libpno_copy's checksum (PNO_NATIVE_CSUM=0: the TypeScript one)
      "--v8-flags=--expose-gc,--max-semi-space-size=256",
      new URL(import.meta.url).pathname,
    ],
    env: { PNO_BENCH_ROW: JSON.stringify({ ...row, segments }) },
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`engine bench: row ${JSON.stringify(row)} failed`);
  const r = JSON.parse(new TextDecoder().decode(out.stdout));
  // JSON has no NaN: a figure that could not be measured comes back as null.
  return { ...r, allocPerSeg: r.allocPerSeg ?? NaN, fastPath: r.fastPath ?? undefined };
}

/** Runs the benchmark, each row in a process of its own, and returns the report text. */
export async function tcpEngineBench(segments = 400000): Promise<string> {
  const lines = [
    "TCP engine on the in-memory wire, one connection, one thread (segments both ways:",
    "data A→B and ACKs B→A; each counted once when sent and once when received)",
    "copy  payload | data segs/s | all segs/s (in+out) | goodput MB/s | heap bytes/segment",
  ];
  for (const [payload, loop] of [[64, false], [1460, false], [64, true], [1460, true]] as const) {
    const r = await measureInChild({ kind: "wire", payload, loop }, segments);
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
    "bulk receive alone: one engine taking in-order data (verify, copy into the receive ring,",
    "ACK processing and ACKs, the application's read), segments fed without a wire",
    "copy  payload | data segs/s |      ns/segment | goodput MB/s | heap bytes/segment | fast path",
  );
  for (const payload of [64, 1460]) {
    const r = await measureInChild({ kind: "receive", payload, loop: false }, segments);
    const s = r.ms / 1000;
    lines.push(
      `view  ${String(r.payload).padStart(7)} | ${(r.dataSegs / s).toFixed(0).padStart(11)} | ` +
        `${(r.ms * 1e6 / r.dataSegs).toFixed(0).padStart(15)} | ${
          (r.bytes / s / 1e6).toFixed(1).padStart(12)
        } | ` +
        `${isNaN(r.allocPerSeg) ? "n/a (no gc)" : r.allocPerSeg.toFixed(1).padStart(18)} | ${
          r.fastPath === undefined || isNaN(r.fastPath)
            ? "      n/a"
            : `${(r.fastPath * 100).toFixed(0).padStart(8)}%`
        }`,
    );
  }
  lines.push(
    "copy: 'view' = ring copies (default MemStream: libpno_copy's memcpy, summing as it copies",
    "for the engine; with PNO_NATIVE_CSUM=0 set(subarray), a short-lived view per copy: those",
    "rows' extra bytes), 'loop' = byte loops. The engine emits an ACK without allocating",
    "(output_test.ts); the rest is the in-memory wire's and the benchmark's own. Each row",
    "runs in a process of its own (after rows of another kind, V8's re-tiering added ~13",
    "bytes); a row can still show ~13 bytes more in one run of several, from how V8 tiered.",
    `Internet checksum of a 1472-byte segment: ${checksumNs().toFixed(0)} ns`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const row = Deno.env.get("PNO_BENCH_ROW");
  if (row !== undefined) {
    const { segments, ...r } = JSON.parse(row);
    console.log(JSON.stringify(measureRow(r, segments)));
  } else console.log(await tcpEngineBench());
}
