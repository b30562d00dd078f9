/**
 * The bridge's side of the stats page (packages/stats/page.ts): the memfd is created once at
 * start, and each queue's loop copies its counters into its own section every `intervalMs`
 * with plain stores (a seqlock lets readers take consistent copies). Publishing allocates
 * nothing: the field lists become index tables at construction, and the loop pays a few
 * hundred stores every interval, not a cost per packet.
 *
 * The connection rows are written only when a reader asked for them (the section's request
 * word moved), so an unwatched bridge never walks its connection table.
 *
 * @module
 */
import {
  GLOBAL_HEAD_FIELDS,
  planPage,
  QUEUE_HEAD_FIELDS,
  type SchemaInput,
  SectionWriter,
  type StatsSchema,
  writeHeader,
} from "@pno/stats";
import { DP_STATS_FIELDS } from "../../ffi/dp.ts";
import { cString, libc, libcError, MFD_CLOEXEC } from "../../ffi/libc.ts";
import { mapFd, type Mapping } from "../rings/region.ts";
import { InterfaceCounters } from "./iface.ts";
import { LoopCounters } from "./poll_loop.ts";
import type { RingService } from "./ring_service.ts";
import { COUNTER_NAMES } from "./tcp/counters.ts";
import type { TcpEngine } from "./tcp/engine.ts";
import { STATE_NAMES, type TcpSocket } from "./tcp/socket.ts";
import { IPV4_ERROR_NAMES } from "./wire/ipv4.ts";

/** How often the loops publish, in ms (also the freshest a reader can see). */
export const PUBLISH_INTERVAL_MS = 100;
/** Application rows per queue section. */
const MAX_APPS = 64;
/** Connection rows per queue section; more connections are counted, not listed. */
const MAX_CONNS = 4096;

const IFACE_SCALARS = Object.entries(new InterfaceCounters())
  .filter(([, v]) => typeof v === "number")
  .map(([k]) => k);
const LOOP_FIELDS = Object.keys(new LoopCounters());

/**
 * Per-application fields, in row order. `ringBytes`, `connections`, `listeners`,
 * `residentBytes` and `socketsOpen` are gauges; `bytesToHost` is payload its connections
 * received from the wire in order, `bytesFromHost` what they sent and the peers acknowledged.
 */
export const APP_FIELDS = [
  "id",
  "pid",
  "ringBytes",
  "connections",
  "listeners",
  "bytesToHost",
  "bytesFromHost",
  "residentBytes",
  "socketsOpen",
  "commands",
  "completions",
  "events",
  "kicks",
  "rejected",
  "ringFaults",
  "overflows",
  "dmaTransfers",
] as const;

/** Per-connection fields, in row order (`app` 0: a socket of the bridge's own services). */
export const CONN_FIELDS = [
  "app",
  "slot",
  "ino",
  "localIp",
  "localPort",
  "peerIp",
  "peerPort",
  "state",
  "srtt",
  "rto",
  "cwnd",
  "ssthresh",
  "inFlight",
  "sndWnd",
  "rcvWnd",
  "bytesIn",
  "bytesOut",
  "segsIn",
  "segsOut",
  "retransSegs",
  "rtoEvents",
  "bytesReceived",
  "bytesAcked",
] as const;

/** The field lists of this bridge's page. */
export function statsSchemaInput(
  info: { address: string; mac: string; queues: number },
): SchemaInput {
  return {
    bridgePid: Deno.pid,
    address: info.address,
    mac: info.mac,
    startedAt: Date.now(),
    intervalMs: PUBLISH_INTERVAL_MS,
    queues: info.queues,
    maxApps: MAX_APPS,
    maxConns: MAX_CONNS,
    global: [
      ...GLOBAL_HEAD_FIELDS,
      ...DP_STATS_FIELDS.map((f) => `port.${f}`),
      "cpuUserMs",
      "cpuSystemMs",
      "rssBytes",
    ],
    queue: [
      ...QUEUE_HEAD_FIELDS,
      "cpuMs",
      ...LOOP_FIELDS.map((f) => `loop.${f}`),
      ...IFACE_SCALARS.map((f) => `iface.${f}`),
      ...IPV4_ERROR_NAMES.slice(1).map((f) => `iface.dropIpv4.${f}`),
      ...COUNTER_NAMES.map((f) => `tcp.${f}`),
      "tcp.connections",
      "dma.transfers",
      "dma.bytesRead",
      "dma.bytesWritten",
      "dma.injectedNs",
      "stats.publishes",
      "stats.publishUs",
    ],
    app: [...APP_FIELDS],
    conn: [...CONN_FIELDS],
    states: [...STATE_NAMES],
  };
}

/** A created stats page: its memfd (shared with workers and the proxy) and mapping. */
export interface StatsPage {
  readonly mapping: Mapping;
  readonly schema: StatsSchema;
}

/** Creates the memfd, sizes it and writes the schema. */
export function createStatsPage(input: SchemaInput): StatsPage {
  const { schema, size } = planPage(input);
  const c = libc();
  const fd = c.memfd_create(cString("pno-stats"), MFD_CLOEXEC);
  if (fd < 0) throw libcError("memfd_create(pno-stats)");
  try {
    if (c.ftruncate(fd, BigInt(size)) !== 0) throw libcError("ftruncate(pno-stats)");
    const mapping = mapFd(fd);
    writeHeader(mapping.buffer, schema);
    return { mapping, schema };
  } catch (err) {
    c.close(fd);
    throw err;
  }
}

const SYS_FSTAT = 5n, SYS_GETRUSAGE = 98n;
const RUSAGE_SELF = 0n, RUSAGE_THREAD = 1n;

/** getrusage(2) and fstat(2) through syscall(), into buffers made once. */
class Usage {
  private readonly ru = new BigInt64Array(18);
  private readonly ruPtr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.ru)));
  private readonly st = new BigInt64Array(18);
  private readonly stPtr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.st)));

  /** CPU time of this thread (or process) in ms: user, system. */
  cpu(thread: boolean, out: Float64Array, at: number): void {
    if (libc().syscall(SYS_GETRUSAGE, thread ? RUSAGE_THREAD : RUSAGE_SELF, this.ruPtr) !== 0n) {
      return;
    }
    const ru = this.ru;
    out[at] = Number(ru[0]) * 1e3 + Number(ru[1]) / 1e3;
    out[at + 1] = Number(ru[2]) * 1e3 + Number(ru[3]) / 1e3;
  }

  /** Bytes allocated to file `fd` (st_blocks * 512): a memfd's resident pages. */
  allocated(fd: number): number {
    if (fd < 0 || libc().syscall(SYS_FSTAT, BigInt(fd), this.stPtr) !== 0n) return 0;
    return Number(this.st[8]) * 512; // struct stat on x86-64: st_blocks at byte 64
  }
}

/** What a queue's publisher reads. */
export interface QueueSources {
  readonly queue: number;
  readonly iface: InterfaceCounters;
  readonly loop: LoopCounters;
  readonly engine: TcpEngine;
  readonly rings: RingService;
}

/** Copies one queue's counters into its section of the page. */
export class QueuePublisher {
  private readonly section: SectionWriter;
  private readonly usage = new Usage();
  private readonly cpuPair = new Float64Array(2);
  private last = -Infinity;
  private lastServed = 0;
  private readonly at: Record<string, number>;
  private readonly appBase: number;
  private readonly connBase: number;
  private readonly appWidth = APP_FIELDS.length;
  private readonly connWidth = CONN_FIELDS.length;
  private connRow = 0;
  private connTotal = 0;
  private readonly visit = (s: TcpSocket) => this.writeConn(s);
  /** What publishing itself costs this loop: calls and time spent, measured here. */
  private publishes = 0;
  private publishUs = 0;
  private readonly publishesAt: number;

  constructor(
    buffer: ArrayBufferLike,
    private readonly schema: StatsSchema,
    private readonly src: QueueSources,
  ) {
    const count = schema.queue.length + schema.maxApps * this.appWidth +
      schema.maxConns * this.connWidth;
    this.section = new SectionWriter(buffer, schema.queueAt[src.queue], count);
    this.at = Object.fromEntries(schema.queue.map((n, i) => [n, i]));
    this.publishesAt = this.at["stats.publishes"];
    this.appBase = schema.queue.length;
    this.connBase = this.appBase + schema.maxApps * this.appWidth;
  }

  /** Publishes if the interval has passed (called from the loop's step). */
  maybePublish(nowMs: number): void {
    if (nowMs - this.last < PUBLISH_INTERVAL_MS) return;
    this.last = nowMs;
    this.publish();
  }

  /** Writes every field (and the connection rows, if a reader asked). */
  publish(): void {
    const t0 = performance.now();
    const v = this.section.values, at = this.at, src = this.src;
    const requests = this.section.requests();
    const wantConns = requests !== this.lastServed;
    this.section.begin();
    v[at.updatedMs] = Date.now();
    this.usage.cpu(true, this.cpuPair, 0);
    v[at.cpuMs] = this.cpuPair[0] + this.cpuPair[1];
    // The fields after cpuMs follow statsSchemaInput's order: written in sequence.
    let i = at.cpuMs + 1;
    const loop = src.loop as unknown as Record<string, number>;
    for (const f of LOOP_FIELDS) v[i++] = loop[f];
    const iface = src.iface as unknown as Record<string, number>;
    for (const f of IFACE_SCALARS) v[i++] = iface[f];
    for (let k = 1; k < IPV4_ERROR_NAMES.length; k++) v[i++] = src.iface.dropIpv4[k];
    const tcp = src.engine.counters;
    for (let k = 0; k < tcp.length; k++) v[i++] = tcp[k];
    v[i++] = src.engine.connectionCount();
    let transfers = 0, read = 0, written = 0, injected = 0, apps = 0;
    const base = this.appBase, width = this.appWidth;
    for (const app of src.rings.apps.values()) {
      const d = app.dma.counters;
      transfers += d.transfers;
      read += d.bytesRead;
      written += d.bytesWritten;
      injected += d.injectedNs;
      if (apps >= this.schema.maxApps) continue;
      const r = base + apps++ * width, c = app.counters;
      v[r] = app.id;
      v[r + 1] = app.pid;
      app.ringUse(v, r + 2); // ringBytes, connections, listeners, bytesToHost, bytesFromHost
      v[r + 7] = this.usage.allocated(app.region.fd ?? -1);
      v[r + 8] = c.socketsOpen;
      v[r + 9] = c.commands;
      v[r + 10] = c.completions;
      v[r + 11] = c.events;
      v[r + 12] = c.kicks;
      v[r + 13] = c.rejected;
      v[r + 14] = c.ringFaults;
      v[r + 15] = c.overflows;
      v[r + 16] = d.transfers;
    }
    v[i++] = transfers;
    v[i++] = read;
    v[i++] = written;
    v[i++] = injected;
    v[at.apps] = apps;
    if (wantConns) {
      this.connRow = 0;
      this.connTotal = 0;
      src.engine.eachSocket(this.visit);
      src.engine.eachListener(this.visit);
      for (const app of src.rings.apps.values()) {
        app.eachBound((slot, ino, port) => this.writeBound(app.id, slot, ino, port));
      }
      v[at.connRows] = this.connRow;
      v[at.connTotal] = this.connTotal;
      v[at.connServed] = requests;
      this.lastServed = requests;
    }
    v[this.publishesAt] = ++this.publishes;
    this.publishUs += (performance.now() - t0) * 1000;
    v[this.publishesAt + 1] = this.publishUs;
    this.section.end();
  }

  /** A bound socket of an application: no engine socket, state CLOSED as Linux shows it. */
  private writeBound(app: number, slot: number, ino: number, port: number): void {
    this.connTotal++;
    if (this.connRow >= this.schema.maxConns) return;
    const v = this.section.values;
    const r = this.connBase + this.connRow++ * this.connWidth;
    v.fill(0, r, r + this.connWidth);
    v[r] = app;
    v[r + 1] = slot;
    v[r + 2] = ino;
    v[r + 4] = port;
  }

  private writeConn(s: TcpSocket): void {
    this.connTotal++;
    if (this.connRow >= this.schema.maxConns) return;
    const v = this.section.values;
    const r = this.connBase + this.connRow++ * this.connWidth;
    if (!this.src.rings.owner(s, v, r)) v[r] = v[r + 1] = v[r + 2] = 0;
    v[r + 3] = s.localIp >>> 0;
    v[r + 4] = s.localPort;
    v[r + 5] = s.remoteIp >>> 0;
    v[r + 6] = s.remotePort;
    v[r + 7] = s.state;
    v[r + 8] = s.srtt;
    v[r + 9] = s.rto;
    v[r + 10] = s.cwnd;
    v[r + 11] = s.ssthresh;
    v[r + 12] = (s.sndNxt - s.sndUna) >>> 0;
    v[r + 13] = s.sndWnd;
    v[r + 14] = (s.rcvAdvEdge - s.rcvNxt) | 0;
    v[r + 15] = s.bytesIn;
    v[r + 16] = s.bytesOut;
    v[r + 17] = s.segsIn;
    v[r + 18] = s.segsOut;
    v[r + 19] = s.retransSegs;
    v[r + 20] = s.rtoEvents;
    v[r + 21] = s.bytesReceived();
    v[r + 22] = s.bytesAcked();
  }
}

/** Copies the port's and the process's figures into the global section (main thread). */
export class GlobalPublisher {
  private readonly section: SectionWriter;
  private readonly usage = new Usage();
  private readonly at: Record<string, number>;

  constructor(
    buffer: ArrayBufferLike,
    schema: StatsSchema,
    private readonly portStats: () => Record<string, number>,
  ) {
    this.section = new SectionWriter(buffer, schema.globalAt, schema.global.length);
    this.at = Object.fromEntries(schema.global.map((n, i) => [n, i]));
  }

  /** Control path (a timer of the main thread): the port's stats are an FFI call each. */
  publish(): void {
    const v = this.section.values, at = this.at;
    const port = this.portStats();
    this.section.begin();
    v[at.updatedMs] = Date.now();
    let i = at["port." + DP_STATS_FIELDS[0]];
    for (const f of DP_STATS_FIELDS) v[i++] = port[f];
    this.usage.cpu(false, v, at.cpuUserMs);
    v[at.rssBytes] = Deno.memoryUsage().rss;
    this.section.end();
  }
}
