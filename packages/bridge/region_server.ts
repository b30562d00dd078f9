/**
 * The bridge's control socket: applications ask it for a region, and their going away is
 * seen here.
 *
 * A client connects to the Unix socket and says HELLO with its layout version; it receives a
 * freshly created region (a sealed, sparse memfd) over SCM_RIGHTS, then the bridge's own
 * eventfd (MSG_WAKER), and the ring service starts serving the region at once. A forked child
 * says HELLO with HELLO_JOIN and its parent's region id: it is admitted only if it really has
 * that region mapped (its /proc/PID/maps names the memfd), and gets no new region. Each
 * connection then carries the application's waiter wake sockets (MSG_WAIT_FD); a received fd
 * is accepted only if it is a socket, because the bridge wakes waiters with MSG_DONTWAIT sends
 * that nothing on the application's side can make block.
 *
 * The region lives while any of its connections is open (children inherit their parent's
 * and open their own). A process that dies while others live is noticed in the region's
 * process table, a few times a second: its references are dropped, and sockets it was the last
 * holder of are closed as Linux closes them at exit. Versions that do not match are refused
 * with a message naming both.
 *
 * The host proxy says HELLO with HELLO_PROXY instead: it creates regions itself and has them
 * mapped and served here (proxy_peer.ts); applications attached through it never talk to this
 * socket. Attaching directly stays possible (tests, the Deno ring client).
 *
 * @module
 */
import {
  type ControlConn,
  ControlListener,
  HELLO_JOIN,
  HELLO_PROXY,
  MSG_ERROR,
  MSG_WAIT_FD,
  MSG_WAKER,
  parseHello,
  sendRegion,
} from "../rings/control.ts";
import type { RegionParams } from "../rings/layout.ts";
import {
  closeRegion,
  createRegion,
  processMapsRegion,
  type Region,
  regionName,
} from "../rings/region.ts";
import { libc } from "../../ffi/libc.ts";
import { checkWakeSocket, Waker } from "../rings/waker.ts";
import type { AttachedApp, RingService } from "./ring_service.ts";
import { ProxyPeers } from "./proxy_peer.ts";

/**
 * Region size for each application unless configured. The memfd is sparse: these bound what an
 * application may use, not what it costs (an idle connection costs its state lines).
 */
export const DEFAULT_REGION: RegionParams = {
  maxThreads: 64,
  maxWaiters: 256,
  maxProcs: 64,
  maxSockets: 16384,
  cmdSlots: 256,
  cplSlots: 64,
  evSlots: 4096,
  txBytes: 256 * 1024,
  rxBytes: 256 * 1024,
};

/** How often the process tables are read for processes that died. */
const REAP_INTERVAL_MS = 100;

/** Applications attached directly at once (each a region; the proxy's policy is finer). */
export const MAX_REGIONS = 1024;

/** An attached application: its region, its connections, its processes. */
interface AppEntry {
  readonly app: AttachedApp;
  readonly region: Region;
  connections: number;
}

export class RegionServer {
  private readonly listener: ControlListener;
  private readonly conns = new Set<ControlConn>();
  private readonly entries = new Map<number, AppEntry>();
  private closed = false;
  private readonly reaper: ReturnType<typeof setInterval>;
  private reapRounds = 0;
  /** The bridge's eventfd: applications kick it when they post commands to a parked bridge. */
  readonly waker: Waker = Waker.create();
  /** Regions refused (bad hello, version mismatch) and errors while serving clients. */
  refused = 0;
  /** Messages of the last refusals, newest last (at most 8). */
  readonly lastErrors: string[] = [];
  /** Regions the host proxy created and had mapped here (HELLO_PROXY connections). */
  readonly proxies: ProxyPeers;

  constructor(
    readonly path: string,
    private readonly service: RingService,
    private readonly params: RegionParams = DEFAULT_REGION,
    private readonly localIp = 0,
    /** The bridge's stats page, handed to each proxy (-1: none). */
    statsPageFd = -1,
  ) {
    Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true });
    this.listener = ControlListener.listen(path);
    // Any local user may open TCP sockets on Linux, so any user's program may attach here
    // (memcached and nginx's workers drop root before their first socket); what one
    // application may take is bounded per region (sockets, threads, waiters) and by
    // MAX_REGIONS, and admission by user is the host proxy's policy.
    Deno.chmodSync(path, 0o666);
    this.proxies = new ProxyPeers(
      service,
      this.waker,
      params,
      localIp,
      (m) => this.note(m),
      statsPageFd,
    );
    this.reaper = setInterval(() => {
      for (const { app } of this.entries.values()) this.service.reapDeadProcesses(app);
      if (++this.reapRounds % 10 === 0) {
        // Once a second: quiet connections give their ring pages back.
        for (const { app } of this.entries.values()) app.reclaimIdle();
      }
      this.proxies.reap();
    }, REAP_INTERVAL_MS);
    void this.acceptLoop();
  }

  /** Stops accepting; every application still attached is detached. Call after the loop ends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.reaper);
    this.listener.close();
    for (const conn of this.conns) conn.close();
    this.proxies.close();
    this.waker.close();
  }

  private async acceptLoop(): Promise<void> {
    while (!this.closed) {
      let conn: ControlConn;
      try {
        conn = await this.listener.accept();
      } catch (err) {
        if (!this.closed) this.note(`accept: ${(err as Error).message}`);
        return;
      }
      void this.serve(conn);
    }
  }

  private async serve(conn: ControlConn): Promise<void> {
    this.conns.add(conn);
    let entry: AppEntry | null = null;
    try {
      const hello = await conn.recv();
      if (hello.fd >= 0) libc().close(hello.fd);
      const parsed = parseHello(hello);
      if (typeof parsed === "string") throw new Error(parsed);
      if (parsed.flags & HELLO_PROXY) {
        await this.proxies.serve(conn); // until the proxy hangs up
        this.conns.delete(conn);
        if (!this.closed) conn.close();
        return;
      }
      if (parsed.flags & HELLO_JOIN) {
        entry = this.entries.get(parsed.regionId) ?? null;
        if (entry === null) throw new Error(`no region ${parsed.regionId} to join`);
        if (!processMapsRegion(conn.peer.pid, regionName(parsed.regionId))) {
          throw new Error(`pid ${conn.peer.pid} does not map region ${parsed.regionId}`);
        }
        entry.connections++;
        sendRegion(conn, entry.region, parsed.regionId, false);
      } else {
        if (this.entries.size >= MAX_REGIONS) {
          throw new Error(`the bridge serves ${MAX_REGIONS} applications already`);
        }
        const id = this.service.reserveId();
        const region = createRegion(this.params, regionName(id), {
          localIp: this.localIp,
          regionId: id,
        });
        const app = this.service.attach(
          { buffer: region.buffer, layout: region.layout, fd: region.fd },
          conn.peer.pid,
          id,
        );
        entry = { app, region, connections: 1 };
        this.entries.set(id, entry);
        sendRegion(conn, region, id, true);
      }
      conn.send(MSG_WAKER, new Uint8Array(4), this.waker.fd);
    } catch (err) {
      const reason = (err as Error).message;
      this.note(`pid ${conn.peer.pid}: ${reason}`);
      try {
        conn.send(MSG_ERROR, new TextEncoder().encode(reason));
      } catch {
        // the client is gone already
      }
      if (entry !== null) this.leave(entry);
      this.conns.delete(conn);
      conn.close();
      return;
    }
    try {
      // Only wake sockets are said on this socket; recv throws when the process hangs up.
      for (;;) {
        const f = await conn.recv();
        if (f.type === MSG_WAIT_FD) this.takeWaitFd(entry.app, conn, f.payload, f.fd);
        else if (f.fd >= 0) libc().close(f.fd);
      }
    } catch {
      // closed by the peer, or by close()
    } finally {
      this.leave(entry);
      this.conns.delete(conn);
      if (!this.closed) conn.close();
    }
  }

  /** A connection of the application closed: the last one detaches it. */
  private leave(entry: AppEntry): void {
    if (--entry.connections > 0) return;
    const app = entry.app;
    this.entries.delete(app.id);
    for (const w of app.waiters) {
      if (w.wakeFd >= 0) libc().close(w.wakeFd);
      w.wakeFd = -1;
    }
    // Connections finish sending from the region first (as at a Linux process's exit).
    this.service.detach(app, () => closeRegion(entry.region));
  }

  /** Registers a waiter's wake socket after checking the entry and that the fd is a socket. */
  private takeWaitFd(app: AttachedApp, conn: ControlConn, payload: Uint8Array, fd: number): void {
    const w = payload.length >= 4
      ? new DataView(payload.buffer, payload.byteOffset).getUint32(0, true)
      : -1;
    const refusal = fd < 0
      ? "WAIT_FD without a descriptor"
      : !(w >= 0 && w < app.waiters.length)
      ? `wake socket for waiter ${w}`
      : checkWakeSocket(fd);
    if (refusal !== null) {
      this.note(`pid ${conn.peer.pid}: ${refusal}`);
      if (fd >= 0) libc().close(fd);
      return;
    }
    const waiter = app.waiters[w];
    if (waiter.wakeFd >= 0) libc().close(waiter.wakeFd);
    waiter.wakeFd = fd;
    // The acknowledgement tells the waiter it may sleep: from now on it is woken. Never waited
    // for: an application that does not read its control socket only loses acknowledgements.
    if (!conn.send(MSG_WAIT_FD, payload.slice(0, 4), -1, false)) {
      this.note(`pid ${conn.peer.pid}: does not read its control socket (acknowledgement dropped)`);
    }
  }

  /**
   * Keeps the last 8 distinct reasons: one application repeating itself (acknowledgements it
   * never reads, one per wake socket) counts up on its line, "(xN)", instead of pushing the
   * other reasons out.
   */
  private note(message: string): void {
    this.refused++;
    const i = this.lastErrors.findIndex((e) => e === message || e.startsWith(`${message} (x`));
    if (i >= 0) {
      const m = / \(x(\d+)\)$/.exec(this.lastErrors[i]);
      const times = m ? Number(m[1]) + 1 : 2;
      this.lastErrors.splice(i, 1);
      this.lastErrors.push(`${message} (x${times})`);
      return;
    }
    this.lastErrors.push(message);
    if (this.lastErrors.length > 8) this.lastErrors.shift();
  }
}
