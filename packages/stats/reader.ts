/**
 * Reads a mapped stats page into the JSON that `GET /stats` serves (its schema:
 * `stats.schema.json`) and the rows of `GET /connections`. Control path: allocates freely.
 *
 * Per-application host CPU and names come from /proc of the application's pid (the page knows
 * the pid; the reader runs on the host, where /proc is).
 *
 * @module
 */
import { readHeader, rowObject, SectionReader, type StatsSchema } from "./page.ts";

/** `GET /stats`: see stats.schema.json for what each field means. */
export interface StatsSnapshot {
  version: number;
  time: number;
  intervalMs: number;
  bridge: {
    pid: number;
    address: string;
    mac: string;
    workers: number;
    uptimeMs: number;
    cpuMs: number;
    rssBytes: number;
  };
  port: Record<string, number>;
  iface: Record<string, number>;
  tcp: Record<string, number>;
  dma: Record<string, number>;
  workers: WorkerStats[];
  apps: AppStats[];
}

/** One worker (queue) of the bridge. */
export interface WorkerStats {
  worker: number;
  cpuMs: number;
  busyPolls: number;
  idlePolls: number;
  /** Frames received per busy poll round (the batch the loop works on). */
  framesPerBusyPoll: number;
  /** The stats page's cost to this worker's loop: publications, and time they took (µs). */
  publishes: number;
  publishUs: number;
  loop: Record<string, number>;
  iface: Record<string, number>;
  tcp: Record<string, number>;
}

/** One attached application. */
export interface AppStats {
  id: number;
  pid: number;
  name: string;
  hostCpuMs: number;
  [field: string]: number | string;
}

/** One row of the live connection table. */
export interface ConnectionRow {
  worker: number;
  app: number;
  pid: number;
  name: string;
  /** The application's fd for it (its placeholder, found by inode in /proc/PID/fd), or -1. */
  fd: number;
  slot: number;
  ino: number;
  local: string;
  remote: string;
  state: string;
  srttMs: number;
  rtoMs: number;
  cwnd: number;
  ssthresh: number;
  inFlight: number;
  bytesIn: number;
  bytesOut: number;
  segsIn: number;
  segsOut: number;
  retransSegs: number;
  rtoEvents: number;
  /** Payload received in order, each byte once; payload the peer acknowledged. */
  bytesReceived: number;
  bytesAcked: number;
}

/** Which connections `connections()` returns. */
export interface ConnectionQuery {
  offset?: number;
  limit?: number;
  pid?: number;
  state?: string;
  port?: number;
}

/** A page of connection rows. */
export interface ConnectionPage {
  total: number;
  offset: number;
  limit: number;
  /** Connections the bridge holds beyond the rows it lists. */
  unlisted: number;
  rows: ConnectionRow[];
}

const ipText = (ip: number) =>
  `${(ip >>> 24) & 255}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;

/** A reader over one mapped page. */
export class StatsReader {
  readonly schema: StatsSchema;
  private readonly global: SectionReader;
  private readonly queues: SectionReader[];
  private readonly queueIdx: Record<string, number>;
  private readonly globalIdx: Record<string, number>;

  constructor(buffer: ArrayBufferLike) {
    const schema = readHeader(buffer);
    if (typeof schema === "string") throw new Error(schema);
    this.schema = schema;
    this.global = new SectionReader(buffer, schema.globalAt, schema.global.length);
    const count = schema.queue.length + schema.maxApps * schema.app.length +
      schema.maxConns * schema.conn.length;
    this.queues = schema.queueAt.map((at) => new SectionReader(buffer, at, count));
    this.queueIdx = Object.fromEntries(schema.queue.map((n, i) => [n, i]));
    this.globalIdx = Object.fromEntries(schema.global.map((n, i) => [n, i]));
  }

  /** Everything but the connection rows, as `GET /stats` serves it. */
  snapshot(): StatsSnapshot {
    const s = this.schema;
    this.global.read();
    const g = this.global.copy, gi = this.globalIdx;
    const port: Record<string, number> = {};
    for (const name of s.global) if (name.startsWith("port.")) port[name.slice(5)] = g[gi[name]];
    const workers: WorkerStats[] = [];
    const apps: AppStats[] = [];
    const iface: Record<string, number> = {}, tcp: Record<string, number> = {};
    const dma: Record<string, number> = {};
    let workerCpu = 0;
    const appRowsAt = s.queue.length;
    for (let q = 0; q < this.queues.length; q++) {
      const r = this.queues[q];
      r.read(appRowsAt + s.maxApps * s.app.length);
      const v = r.copy;
      const grouped: Record<string, Record<string, number>> = {
        loop: {},
        iface: {},
        tcp: {},
        stats: {},
      };
      for (let i = 0; i < s.queue.length; i++) {
        const name = s.queue[i];
        const dot = name.indexOf(".");
        if (dot < 0) continue;
        const group = name.slice(0, dot), key = name.slice(dot + 1);
        if (group === "dma") dma[key] = (dma[key] ?? 0) + v[i];
        else if (grouped[group]) grouped[group][key] = v[i];
      }
      for (const [k, x] of Object.entries(grouped.iface)) iface[k] = (iface[k] ?? 0) + x;
      for (const [k, x] of Object.entries(grouped.tcp)) tcp[k] = (tcp[k] ?? 0) + x;
      const loop = grouped.loop;
      const cpuMs = v[this.queueIdx.cpuMs];
      workerCpu += cpuMs;
      workers.push({
        worker: q,
        cpuMs,
        busyPolls: loop.busyRounds ?? 0,
        idlePolls: (loop.rounds ?? 0) - (loop.busyRounds ?? 0),
        framesPerBusyPoll: loop.busyRounds ? (grouped.iface.rxFrames ?? 0) / loop.busyRounds : 0,
        publishes: grouped.stats.publishes ?? 0,
        publishUs: grouped.stats.publishUs ?? 0,
        loop,
        iface: grouped.iface,
        tcp: grouped.tcp,
      });
      const n = Math.min(v[this.queueIdx.apps], s.maxApps);
      for (let a = 0; a < n; a++) {
        const row = rowObject(v, appRowsAt + a * s.app.length, s.app);
        const pid = row.pid;
        apps.push({ ...row, id: row.id, pid, name: processName(pid), hostCpuMs: hostCpuMs(pid) });
      }
    }
    const now = Date.now();
    return {
      version: s.version,
      time: now,
      intervalMs: s.intervalMs,
      bridge: {
        pid: s.bridgePid,
        address: s.address,
        mac: s.mac,
        workers: s.queues,
        uptimeMs: now - s.startedAt,
        cpuMs: g[gi.cpuUserMs] + g[gi.cpuSystemMs],
        rssBytes: g[gi.rssBytes],
      },
      port,
      iface,
      tcp,
      dma,
      workers,
      apps,
    };
  }

  /**
   * The live connection table: asks each queue's writer for fresh rows and waits (at most
   * about two publish intervals) for them.
   */
  async connections(query: ConnectionQuery = {}): Promise<ConnectionPage> {
    const s = this.schema, qi = this.queueIdx;
    const asked = this.queues.map((r) => r.requestConnections());
    const deadline = Date.now() + 3 * s.intervalMs + 200;
    const served = (q: number) => {
      const r = this.queues[q];
      r.read(s.queue.length);
      return r.copy[qi.connServed] >= asked[q];
    };
    for (;;) {
      if (this.queues.every((_, q) => served(q)) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    const appBase = s.queue.length, connBase = appBase + s.maxApps * s.app.length;
    const rows: ConnectionRow[] = [];
    let unlisted = 0;
    const fds = new Map<number, Map<number, number>>();
    const fdOf = (pid: number, ino: number) => {
      if (ino <= 0 || pid <= 0) return -1;
      let byIno = fds.get(pid);
      if (byIno === undefined) fds.set(pid, byIno = socketFds(pid));
      return byIno.get(ino) ?? -1;
    };
    for (let q = 0; q < this.queues.length; q++) {
      const r = this.queues[q];
      r.read();
      const v = r.copy;
      const pids = new Map<number, number>();
      for (let a = 0; a < Math.min(v[qi.apps], s.maxApps); a++) {
        pids.set(v[appBase + a * s.app.length], v[appBase + a * s.app.length + 1]);
      }
      const n = Math.min(v[qi.connRows], s.maxConns);
      unlisted += v[qi.connTotal] - n;
      for (let c = 0; c < n; c++) {
        const o = rowObject(v, connBase + c * s.conn.length, s.conn);
        const pid = o.app ? pids.get(o.app) ?? 0 : s.bridgePid;
        rows.push({
          worker: q,
          app: o.app,
          pid,
          name: o.app ? processName(pid) : "pno-bridge",
          fd: o.app ? fdOf(pid, o.ino) : -1,
          slot: o.slot,
          ino: o.ino,
          local: `${ipText(o.localIp)}:${o.localPort}`,
          remote: `${ipText(o.peerIp)}:${o.peerPort}`,
          state: s.states[o.state] ?? String(o.state),
          srttMs: o.srtt,
          rtoMs: o.rto,
          cwnd: o.cwnd,
          ssthresh: o.ssthresh,
          inFlight: o.inFlight,
          bytesIn: o.bytesIn,
          bytesOut: o.bytesOut,
          segsIn: o.segsIn,
          segsOut: o.segsOut,
          retransSegs: o.retransSegs,
          rtoEvents: o.rtoEvents,
          bytesReceived: o.bytesReceived ?? 0,
          bytesAcked: o.bytesAcked ?? 0,
        });
      }
    }
    const picked = rows.filter((r) =>
      (query.pid === undefined || r.pid === query.pid) &&
      (query.state === undefined || r.state === query.state) &&
      (query.port === undefined || r.local.endsWith(`:${query.port}`) ||
        r.remote.endsWith(`:${query.port}`))
    );
    const offset = query.offset ?? 0, limit = query.limit ?? 100;
    return {
      total: picked.length,
      offset,
      limit,
      unlisted,
      rows: picked.slice(offset, offset + limit),
    };
  }
}

/** Socket inode to fd of `pid`'s open sockets (/proc/PID/fd), empty if unreadable. */
export function socketFds(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  try {
    for (const e of Deno.readDirSync(`/proc/${pid}/fd`)) {
      try {
        const m = Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).match(/^socket:\[(\d+)\]$/);
        if (m) out.set(Number(m[1]), Number(e.name));
      } catch {
        // closed meanwhile
      }
    }
  } catch {
    // gone, or not ours to read
  }
  return out;
}

/** The command name of `pid` (/proc/PID/comm), or "" if it is gone. */
export function processName(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return "";
  }
}

const TICK_MS = 10; // USER_HZ is 100 on Linux x86-64

/** utime + stime of `pid` in ms (/proc/PID/stat), or 0 if it is gone. */
export function hostCpuMs(pid: number): number {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name, which may hold spaces and parentheses.
    const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return (Number(rest[11]) + Number(rest[12])) * TICK_MS;
  } catch {
    return 0;
  }
}
