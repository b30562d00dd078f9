/**
 * The bridge's side of the host proxy: regions the proxy created, mapped and served here.
 *
 * A proxy connects to the bridge's control socket and says HELLO with HELLO_PROXY. It is
 * admitted only if SO_PEERCRED says it runs as root or as the bridge's own uid: anyone else
 * could hand the bridge memory to serve in another application's name. It gets BRIDGE_INFO (the
 * bridge's address and region parameters, from which it sizes regions under its policy) and
 * the bridge's eventfd (MSG_WAKER, which it passes on to each application) and its stats page
 * (MSG_STATS_PAGE, the memfd the proxy's stats server reads), then sends requests
 * (control.ts): reserve an id, MAP_REGION with the region's memfd and the application's pid,
 * WAIT_FD with a waiter's wake socket, UNMAP_REGION when the application's last process has
 * exited. Each is answered by a REPLY carrying its sequence number. An application attached
 * directly (plain HELLO) can send none of these: its connection carries WAIT_FD only.
 *
 * The proxy maps a region here before the application has it, so the header the bridge reads
 * is the one the proxy wrote. UNMAP finishes the application's connections as Linux's exit does
 * (RingService.detach) and unmaps once nothing sends from the region any more. If the proxy
 * goes away, its applications are not cut off: each region is freed once the bridge's reaper
 * finds every process of its process table gone.
 *
 * @module
 */
import {
  type ControlConn,
  MSG_BRIDGE_INFO,
  MSG_MAP_REGION,
  MSG_REPLY,
  MSG_STATS_PAGE,
  MSG_UNMAP_REGION,
  MSG_WAIT_FD,
  MSG_WAKER,
  payloadU32,
  REGION_PARAM_NAMES,
  u32Payload,
} from "../rings/control.ts";
import { LAYOUT_VERSION, type RegionParams } from "../rings/layout.ts";
import { closeRegion, mapRegionFd, type Region } from "../rings/region.ts";
import { checkWakeSocket, type Waker } from "../rings/waker.ts";
import { libc } from "../../ffi/libc.ts";
import type { AttachedApp, RingService } from "./ring_service.ts";

/** A region the proxy had mapped. `owner` is null once that proxy has gone. */
interface ProxiedApp {
  readonly app: AttachedApp;
  readonly region: Region;
  owner: ControlConn | null;
  unmapping: boolean;
}

/** Serves proxy connections for one ring service. */
export class ProxyPeers {
  private readonly apps = new Map<number, ProxiedApp>();
  /** Ids reserved by each proxy connection and not yet mapped. */
  private readonly reserved = new Map<ControlConn, Set<number>>();
  /** Proxy connections admitted. */
  admitted = 0;

  constructor(
    private readonly service: RingService,
    private readonly waker: Waker,
    private readonly params: RegionParams,
    private readonly localIp: number,
    private readonly note: (message: string) => void,
    private readonly statsPageFd = -1,
  ) {}

  /** Why `conn`'s peer may not act as a proxy, or null if it may (root or the bridge's uid). */
  refusal(conn: ControlConn): string | null {
    const uid = conn.peer.uid, own = Deno.uid();
    if (uid === 0 || uid === own) return null;
    return `pid ${conn.peer.pid} (uid ${uid}) may not act as a proxy: only root or uid ${own}`;
  }

  /**
   * Serves a proxy connection whose HELLO said HELLO_PROXY, until it hangs up; throws (before
   * anything is served) if the peer is not admitted. The caller closes `conn`.
   */
  async serve(conn: ControlConn): Promise<void> {
    const why = this.refusal(conn);
    if (why !== null) throw new Error(why);
    this.admitted++;
    conn.send(
      MSG_BRIDGE_INFO,
      u32Payload(LAYOUT_VERSION, this.localIp, ...REGION_PARAM_NAMES.map((k) => this.params[k])),
    );
    conn.send(MSG_WAKER, new Uint8Array(4), this.waker.fd);
    // The proxy serves the live stats from the bridge's page (read-only to it but for the
    // connection-table request word, which the bridge only compares).
    // A bridge without a page (an in-process test bridge) says so: the frame without an fd.
    conn.send(MSG_STATS_PAGE, new Uint8Array(4), this.statsPageFd);
    this.reserved.set(conn, new Set());
    try {
      for (;;) {
        const f = await conn.recv();
        const seq = payloadU32(f.payload, 0);
        try {
          if (f.type === MSG_MAP_REGION) this.map(conn, seq, f.payload, f.fd);
          else if (f.type === MSG_WAIT_FD) this.waitFd(conn, seq, f.payload, f.fd);
          else if (f.type === MSG_UNMAP_REGION) this.unmap(conn, seq, payloadU32(f.payload, 1));
          else {
            if (f.fd >= 0) libc().close(f.fd);
            this.refuse(conn, seq, `unknown request type ${f.type}`);
          }
        } catch (err) {
          this.refuse(conn, seq, (err as Error).message);
        }
      }
    } catch {
      // the proxy hung up (or the bridge closes)
    } finally {
      this.reserved.delete(conn);
      for (const p of this.apps.values()) if (p.owner === conn) p.owner = null;
    }
  }

  /** Reserves an id, or maps the region whose fd came with the frame. */
  private map(conn: ControlConn, seq: number, payload: Uint8Array, fd: number): void {
    const id = payloadU32(payload, 1), pid = payloadU32(payload, 2);
    const mine = this.reserved.get(conn)!;
    if (fd < 0) {
      if (id !== 0) throw new Error(`MAP_REGION ${id} without a region fd`);
      const fresh = this.service.reserveId();
      mine.add(fresh);
      this.reply(conn, seq, fresh);
      return;
    }
    if (!mine.delete(id)) {
      libc().close(fd);
      throw new Error(`region id ${id} was not reserved by this proxy`);
    }
    const region = mapRegionFd(fd); // takes the fd; throws with the header's fault
    const app = this.service.attach(
      { buffer: region.buffer, layout: region.layout, fd: region.fd },
      pid,
      id,
    );
    this.apps.set(id, { app, region, owner: conn, unmapping: false });
    this.reply(conn, seq, id);
  }

  /** Registers a waiter's wake socket for a region this proxy mapped. */
  private waitFd(conn: ControlConn, seq: number, payload: Uint8Array, fd: number): void {
    const id = payloadU32(payload, 1), w = payloadU32(payload, 2);
    const p = this.apps.get(id);
    const refusal = fd < 0
      ? "WAIT_FD without a descriptor"
      : p === undefined || p.owner !== conn
      ? `no region ${id} of this proxy`
      : !(w >= 0 && w < p.app.waiters.length)
      ? `wake socket for waiter ${w}`
      : checkWakeSocket(fd);
    if (refusal !== null) {
      if (fd >= 0) libc().close(fd);
      throw new Error(`region ${id}: ${refusal}`);
    }
    const waiter = p!.app.waiters[w];
    if (waiter.wakeFd >= 0) libc().close(waiter.wakeFd);
    waiter.wakeFd = fd;
    this.reply(conn, seq, 0);
  }

  /** The application is gone: finish its connections, then free the region and reply. */
  private unmap(conn: ControlConn | null, seq: number, id: number): void {
    const p = this.apps.get(id);
    if (p === undefined || (conn !== null && p.owner !== conn)) {
      throw new Error(`no region ${id} of this proxy`);
    }
    if (p.unmapping) return;
    p.unmapping = true;
    for (const w of p.app.waiters) {
      if (w.wakeFd >= 0) libc().close(w.wakeFd);
      w.wakeFd = -1;
    }
    // Connections finish sending from the region first (as at a Linux process's exit).
    this.service.detach(p.app, () => {
      closeRegion(p.region);
      this.apps.delete(id);
      if (conn !== null) this.reply(conn, seq, id);
    });
  }

  /**
   * Called by the region server's reaper: drops the references of processes that died, and
   * frees the region of an application whose proxy has gone once its processes have too.
   */
  reap(): void {
    for (const [id, p] of this.apps) {
      if (p.unmapping) continue;
      this.service.reapDeadProcesses(p.app);
      if (p.owner === null && p.app.knownPids.every((pid) => pid === 0)) this.unmap(null, 0, id);
    }
  }

  /** The bridge stops: every proxied application is detached. */
  close(): void {
    for (const id of [...this.apps.keys()]) this.unmap(null, 0, id);
  }

  private reply(conn: ControlConn, seq: number, status: number, reason = ""): void {
    const text = new TextEncoder().encode(reason.slice(0, 1000));
    const payload = new Uint8Array(8 + text.length);
    payload.set(u32Payload(seq, status));
    payload.set(text, 8);
    try {
      conn.send(MSG_REPLY, payload);
    } catch {
      // the proxy is gone
    }
  }

  private refuse(conn: ControlConn, seq: number, reason: string): void {
    this.note(`proxy pid ${conn.peer.pid}: ${reason}`);
    this.reply(conn, seq, -1, reason);
  }
}
