/**
 * The bridge's control socket: applications ask it for a region, and their going away is
 * seen here.
 *
 * A client connects to the Unix socket, says HELLO with its layout version, and receives a
 * freshly created region (a sealed memfd) over SCM_RIGHTS; the ring service starts serving
 * it at once. The connection then stays open and silent: when it closes, whether the
 * application exited or was killed, its connections are reset and the region unmapped.
 * Versions that do not match are refused with a message naming both. This is the interface
 * the host proxy will take over (it will create regions on the host and hand them to both the
 * application and the bridge).
 *
 * Wakeups ride on the same socket (MSG_WAKER): right after the region the bridge sends its own
 * eventfd (`waker`, which its poll loop parks on when idle), and each application thread sends
 * one of its own, which the ring service writes only when that thread parked with completions
 * waiting. A received fd is accepted only if it is an eventfd.
 *
 * @module
 */
import { type ControlConn, ControlListener, MSG_WAKER, serveRegion } from "../rings/control.ts";
import type { RegionParams } from "../rings/layout.ts";
import { closeRegion, createRegion } from "../rings/region.ts";
import { libc } from "../../ffi/libc.ts";
import { checkEventFd, Waker } from "../rings/waker.ts";
import type { AttachedApp, RingService } from "./ring_service.ts";

/** Region size for each application unless configured: 8 threads, 1024 sockets. */
export const DEFAULT_REGION: RegionParams = {
  maxThreads: 8,
  maxSockets: 1024,
  cmdSlots: 256,
  cplSlots: 1024,
  txBytes: 256 * 1024,
  rxBytes: 256 * 1024,
};

export class RegionServer {
  private readonly listener: ControlListener;
  private readonly conns = new Set<ControlConn>();
  private closed = false;
  /** The bridge's eventfd: applications kick it when they post commands to a parked bridge. */
  readonly waker: Waker = Waker.create();
  /** Regions refused (bad hello, version mismatch) and errors while serving clients. */
  refused = 0;
  /** Messages of the last refusals, newest last (at most 8). */
  readonly lastErrors: string[] = [];

  constructor(
    readonly path: string,
    private readonly service: RingService,
    private readonly params: RegionParams = DEFAULT_REGION,
  ) {
    Deno.mkdirSync(path.slice(0, path.lastIndexOf("/")) || "/", { recursive: true });
    this.listener = ControlListener.listen(path);
    void this.acceptLoop();
  }

  /** Stops accepting; every application still attached is detached. Call after the loop ends. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener.close();
    for (const conn of this.conns) conn.close();
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
    let region = null;
    try {
      region = createRegion(this.params, `pno-app-${conn.peer.pid}`);
      const refusal = await serveRegion(conn, region);
      if (refusal !== null) {
        this.note(`pid ${conn.peer.pid}: ${refusal}`);
        closeRegion(region);
        return;
      }
    } catch (err) {
      this.note(`pid ${conn.peer.pid}: ${(err as Error).message}`);
      if (region) closeRegion(region);
      this.conns.delete(conn);
      conn.close();
      return;
    }
    const line0 = new Uint8Array(4);
    try {
      conn.send(MSG_WAKER, line0, this.waker.fd);
    } catch (err) {
      this.note(`pid ${conn.peer.pid}: ${(err as Error).message}`);
    }
    const app = this.service.attach(region, conn.peer.pid);
    try {
      // Only wakers are said on this socket; recv throws when the application hangs up.
      for (;;) {
        const f = await conn.recv();
        if (f.type === MSG_WAKER) this.takeWaker(app, conn, f.payload, f.fd);
        else if (f.fd >= 0) libc().close(f.fd);
      }
    } catch {
      // closed by the peer, or by close()
    } finally {
      this.service.detach(app);
      for (let t = 0; t < app.wakeFds.length; t++) {
        if (app.wakeFds[t] >= 0) libc().close(app.wakeFds[t]);
        app.wakeFds[t] = -1;
      }
      closeRegion(region);
      this.conns.delete(conn);
      if (!this.closed) conn.close();
    }
  }

  /** Registers a thread's eventfd after checking the line and that the fd is an eventfd. */
  private takeWaker(app: AttachedApp, conn: ControlConn, payload: Uint8Array, fd: number): void {
    const line = payload.length >= 4
      ? new DataView(payload.buffer, payload.byteOffset).getUint32(0, true)
      : 0;
    const t = line - 1;
    const refusal = fd < 0
      ? null
      : !(t >= 0 && t < app.wakeFds.length)
      ? `waker for doorbell line ${line}`
      : checkEventFd(fd);
    if (refusal !== null) {
      this.note(`pid ${conn.peer.pid}: ${refusal}`);
      libc().close(fd);
      return;
    }
    if (!(t >= 0 && t < app.wakeFds.length)) return;
    if (app.wakeFds[t] >= 0) libc().close(app.wakeFds[t]);
    app.wakeFds[t] = fd;
  }

  private note(message: string): void {
    this.refused++;
    this.lastErrors.push(message);
    if (this.lastErrors.length > 8) this.lastErrors.shift();
  }
}
