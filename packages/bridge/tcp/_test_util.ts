/**
 * Test helpers: a bulk transfer over the in-memory wire with byte-exact checks, and a scripted
 * peer that crafts segments by hand and captures what the engine sends back.
 *
 * @module
 */

import {
  type ConnectOptions,
  type ListenOptions,
  TcpEngine,
  type TcpEngineOptions,
} from "./engine.ts";
import { MemWire, type MemWireOptions } from "./mem_wire.ts";
import { ESTABLISHED, type TcpSocket } from "./socket.ts";
import type { IpLink } from "./link.ts";
import { TCP_ACK, TCP_FIN, TCP_SYN, TcpSegment, tcpSetChecksum } from "../wire/tcp.ts";

export function patternAB(i: number): number {
  return i % 251;
}
export function patternBA(i: number): number {
  return (i * 7 + 3) & 255;
}

export interface TransferResult {
  wire: MemWire;
  a: TcpEngine;
  b: TcpEngine;
  ca: TcpSocket;
  cb: TcpSocket;
  gotAB: number;
  gotBA: number;
  badAB: number;
  badBA: number;
  ms: number;
}

/** Connects A to B and moves `nAB` bytes A→B and `nBA` bytes B→A at once, then closes. */
export function transfer(
  nAB: number,
  nBA: number,
  wo: MemWireOptions = {},
  eo: TcpEngineOptions = {},
  maxMs = 600000,
): TransferResult {
  const wire = new MemWire(wo);
  const a = new TcpEngine(wire.a, { ...eo, localIp: wire.ipA, seed: 11 });
  const b = new TcpEngine(wire.b, { ...eo, localIp: wire.ipB, seed: 22 });
  wire.attach(a, b);
  const l = b.listen(5001, 16);
  const ca = a.connect(wire.ipB, 5001);
  let cb: TcpSocket | null = null;
  if (!wire.runUntil(() => ca.state === ESTABLISHED && (cb ??= b.accept(l)) !== null, 60000)) {
    throw new Error("no connection");
  }
  const sc = cb!;
  const buf = new Uint8Array(65536);
  let sentAB = 0, sentBA = 0, gotAB = 0, gotBA = 0, badAB = 0, badBA = 0;
  let closedA = false, closedB = false;
  const start = wire.now;
  wire.runUntil(() => gotAB >= nAB && gotBA >= nBA, maxMs, () => {
    while (sentAB < nAB) {
      const n = Math.min(buf.length, nAB - sentAB);
      for (let i = 0; i < n; i++) buf[i] = patternAB(sentAB + i);
      const w = a.send(ca, buf, 0, n);
      if (w <= 0) break;
      sentAB += w;
    }
    while (sentBA < nBA) {
      const n = Math.min(buf.length, nBA - sentBA);
      for (let i = 0; i < n; i++) buf[i] = patternBA(sentBA + i);
      const w = b.send(sc, buf, 0, n);
      if (w <= 0) break;
      sentBA += w;
    }
    if (sentAB >= nAB && !closedA) {
      a.shutdown(ca);
      closedA = true;
    }
    if (sentBA >= nBA && !closedB) {
      b.shutdown(sc);
      closedB = true;
    }
    for (;;) {
      const r = b.recv(sc, buf, 0, buf.length);
      if (r <= 0) break;
      for (let i = 0; i < r; i++) if (buf[i] !== patternAB(gotAB + i)) badAB++;
      gotAB += r;
    }
    for (;;) {
      const r = a.recv(ca, buf, 0, buf.length);
      if (r <= 0) break;
      for (let i = 0; i < r; i++) if (buf[i] !== patternBA(gotBA + i)) badBA++;
      gotBA += r;
    }
  });
  return { wire, a, b, ca, cb: sc, gotAB, gotBA, badAB, badBA, ms: wire.now - start };
}

/** A link that records every segment the engine sends. */
export class CaptureLink implements IpLink {
  readonly buf = new Uint8Array(4096);
  mtu = 1500;
  readonly out: { src: number; dst: number; bytes: Uint8Array }[] = [];
  reserve(): number {
    return 64;
  }
  send(src: number, dst: number, len: number): void {
    this.out.push({ src, dst, bytes: this.buf.slice(64, 64 + len) });
  }
}

/** What a scripted segment carries. */
export interface Craft {
  flags: number;
  seq: number;
  ack?: number;
  window?: number;
  data?: Uint8Array;
  mss?: number;
  wscale?: number;
  sackPermitted?: boolean;
  ts?: [number, number];
  sack?: number[];
  srcPort?: number;
  /** A byte of the segment (header and payload) whose lowest bit flips after the checksum. */
  corrupt?: number;
}

/** A hand-driven remote end: crafts segments into the engine, parses what comes back. */
export class ScriptPeer {
  readonly link = new CaptureLink();
  readonly engine: TcpEngine;
  now = 1000;
  readonly ip = 0x0a000063;
  readonly engineIp = 0x0a000001;
  port = 40000;
  private readonly tx = new Uint8Array(4096);

  constructor(opts: TcpEngineOptions = {}) {
    this.engine = new TcpEngine(this.link, {
      localIp: this.engineIp,
      seed: 5,
      clock: () => this.now,
      ...opts,
    });
  }

  /** Sends one crafted segment to `dstPort` of the engine, then polls. */
  send(dstPort: number, c: Craft): void {
    const s = new TcpSegment();
    s.srcPort = c.srcPort ?? this.port;
    s.dstPort = dstPort;
    s.seq = c.seq >>> 0;
    s.ack = (c.ack ?? 0) >>> 0;
    s.flags = c.flags;
    s.window = c.window ?? 65535;
    if (c.mss !== undefined) s.mss = c.mss;
    if (c.wscale !== undefined) s.wscale = c.wscale;
    s.sackPermitted = c.sackPermitted ?? false;
    if (c.ts) {
      s.hasTimestamp = true;
      s.tsVal = c.ts[0] >>> 0;
      s.tsEcr = c.ts[1] >>> 0;
    }
    if (c.sack) {
      s.sackCount = c.sack.length / 2;
      for (let i = 0; i < c.sack.length; i++) s.sack[i] = c.sack[i] >>> 0;
    }
    const hl = s.emit(this.tx, 0);
    const dl = c.data?.length ?? 0;
    if (c.data) this.tx.set(c.data, hl);
    tcpSetChecksum(this.tx, 0, hl + dl, this.ip, this.engineIp);
    if (c.corrupt !== undefined) this.tx[c.corrupt] ^= 1;
    this.engine.input(this.tx, 0, hl + dl, this.ip, this.engineIp, this.now);
    this.engine.poll(this.now);
  }

  /** Hands the engine one crafted segment to `dstPort` without polling (a burst's member). */
  inject(dstPort: number, c: Craft): void {
    const s = new TcpSegment();
    s.srcPort = c.srcPort ?? this.port;
    s.dstPort = dstPort;
    s.seq = c.seq >>> 0;
    s.ack = (c.ack ?? 0) >>> 0;
    s.flags = c.flags;
    s.window = c.window ?? 65535;
    if (c.ts) {
      s.hasTimestamp = true;
      s.tsVal = c.ts[0] >>> 0;
      s.tsEcr = c.ts[1] >>> 0;
    }
    const hl = s.emit(this.tx, 0);
    const dl = c.data?.length ?? 0;
    if (c.data) this.tx.set(c.data, hl);
    tcpSetChecksum(this.tx, 0, hl + dl, this.ip, this.engineIp);
    this.engine.input(this.tx, 0, hl + dl, this.ip, this.engineIp, this.now);
  }

  /** Hands the engine raw TCP bytes (header and payload) with a correct checksum, then polls. */
  sendRaw(bytes: Uint8Array): void {
    this.tx.set(bytes, 0);
    tcpSetChecksum(this.tx, 0, bytes.length, this.ip, this.engineIp);
    this.engine.input(this.tx, 0, bytes.length, this.ip, this.engineIp, this.now);
    this.engine.poll(this.now);
  }

  /** Advances the clock by `ms` (in 1 ms steps, so timers fire in order). */
  advance(ms: number): void {
    const end = this.now + ms;
    while (this.now < end) {
      this.now++;
      this.engine.poll(this.now);
    }
  }

  /** Everything the engine sent since the last call, parsed. */
  take(): (TcpSegment & { data: Uint8Array })[] {
    const r: (TcpSegment & { data: Uint8Array })[] = [];
    for (const o of this.link.out) {
      const s = new TcpSegment() as TcpSegment & { data: Uint8Array };
      if (s.parse(o.bytes, 0, o.bytes.length) !== 0) throw new Error("engine sent garbage");
      s.data = o.bytes.slice(s.payloadOff, s.payloadOff + s.payloadLen);
      r.push(s);
    }
    this.link.out.length = 0;
    return r;
  }
}

/** A connection between the scripted peer and the engine, with the peer's view of the numbers. */
export interface ScriptConn {
  p: ScriptPeer;
  s: TcpSocket;
  /** The engine's local port (what the peer sends to) and the peer's port. */
  port: number;
  peerPort: number;
  /** Next sequence number the peer sends, and the next it expects from the engine. */
  seq: number;
  ack: number;
  /** The peer's next TSval and the TSecr it echoes (the engine's last TSval). */
  ts: number;
  ecr: number;
}

/** What the scripted peer offers in its SYN or SYN-ACK. */
export interface PeerSynOptions {
  isn?: number;
  window?: number;
  wscale?: number;
  mss?: number;
  sack?: boolean;
  /** The peer's first TSval; null: no timestamps. */
  ts?: number | null;
}

/** Scripted peer -> engine on an open connection: ACK set, current numbers, timestamps. */
export function peerSend(
  c: ScriptConn,
  flags: number,
  data?: Uint8Array,
  extra: {
    seq?: number;
    ack?: number;
    sack?: number[];
    window?: number;
    ts?: number;
    corrupt?: number;
  } = {},
): void {
  c.p.send(c.port, {
    srcPort: c.peerPort,
    flags: flags | TCP_ACK,
    seq: extra.seq ?? c.seq,
    ack: extra.ack ?? c.ack,
    data,
    sack: extra.sack,
    window: extra.window,
    ts: c.ts >= 0 ? [extra.ts ?? c.ts++, c.ecr] : undefined,
    corrupt: extra.corrupt,
  });
  if (extra.seq === undefined) {
    c.seq = (c.seq + (data?.length ?? 0) + (flags & (TCP_FIN | TCP_SYN) ? 1 : 0)) >>> 0;
  }
}

/**
 * The engine opens a connection to the scripted peer (the engine is the active opener): SYN
 * out, the peer's SYN-ACK in (window field `window`, unscaled as every SYN's is), the engine's
 * ACK out.
 */
export function activeOpen(
  opts: TcpEngineOptions = {},
  peer: PeerSynOptions = {},
  connectOpts: ConnectOptions = {},
): ScriptConn {
  const p = new ScriptPeer(opts);
  const peerPort = 5555;
  const s = p.engine.connect(p.ip, peerPort, connectOpts);
  const [syn] = p.take();
  if (syn === undefined || syn.flags !== TCP_SYN) throw new Error("no SYN");
  const isn = (peer.isn ?? 7000) >>> 0;
  const ts = peer.ts === undefined ? 500 : peer.ts;
  p.send(syn.srcPort, {
    srcPort: peerPort,
    flags: TCP_SYN | TCP_ACK,
    seq: isn,
    ack: (syn.seq + 1) >>> 0,
    window: peer.window ?? 65535,
    wscale: peer.wscale ?? 7,
    mss: peer.mss ?? 1460,
    sackPermitted: peer.sack ?? true,
    ts: ts === null ? undefined : [ts, syn.tsVal],
  });
  if (s.state !== ESTABLISHED) throw new Error(`state ${s.state} after the SYN-ACK`);
  const out = p.take();
  const ack = out.find((r) => r.flags === TCP_ACK);
  if (ack === undefined) throw new Error("no ACK of the SYN-ACK");
  return {
    p,
    s,
    port: syn.srcPort,
    peerPort,
    seq: (isn + 1) >>> 0,
    ack: (syn.seq + 1) >>> 0,
    ts: ts === null ? -1 : (ts + 1) >>> 0,
    ecr: ack.tsVal,
  };
}

/** The engine accepts a connection from the scripted peer (passive open) on `port`. */
export function passiveOpen(
  opts: TcpEngineOptions = {},
  peer: PeerSynOptions = {},
  port = 80,
  listenOpts: ListenOptions = {},
): ScriptConn {
  const p = new ScriptPeer(opts);
  const l = p.engine.listen(port, 4, listenOpts);
  const isn = (peer.isn ?? 1000) >>> 0;
  const ts = peer.ts === undefined ? 100 : peer.ts;
  p.send(port, {
    flags: TCP_SYN,
    seq: isn,
    window: peer.window ?? 65535,
    mss: peer.mss ?? 1460,
    wscale: peer.wscale ?? 7,
    sackPermitted: peer.sack ?? true,
    ts: ts === null ? undefined : [ts, 0],
  });
  const [sa] = p.take();
  if (sa === undefined || sa.flags !== (TCP_SYN | TCP_ACK)) throw new Error("no SYN-ACK");
  p.send(port, {
    flags: TCP_ACK,
    seq: (isn + 1) >>> 0,
    ack: (sa.seq + 1) >>> 0,
    ts: ts === null ? undefined : [(ts + 1) >>> 0, sa.tsVal],
  });
  const s = p.engine.accept(l);
  if (s === null) throw new Error("nothing to accept");
  return {
    p,
    s,
    port,
    peerPort: p.port,
    seq: (isn + 1) >>> 0,
    ack: (sa.seq + 1) >>> 0,
    ts: ts === null ? -1 : (ts + 2) >>> 0,
    ecr: sa.tsVal,
  };
}

/** Data segments the engine sent since the last take(), as [seq, length] pairs. */
export function dataSent(c: ScriptConn): [number, number][] {
  return c.p.take().filter((r) => r.payloadLen > 0).map((r) => [r.seq, r.payloadLen]);
}
