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
 * @module
 */
import { type ControlConn, ControlListener, serveRegion } from "../rings/control.ts";
import type { RegionParams } from "../rings/layout.ts";
import { closeRegion, createRegion } from "../rings/region.ts";
import type { RingService } from "./ring_service.ts";

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

  /** Stops accepting; every application still attached is detached. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.listener.close();
    for (const conn of this.conns) conn.close();
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
    const app = this.service.attach(region, conn.peer.pid);
    try {
      // Nothing more is said on this socket; recv returns when the application hangs up.
      for (;;) await conn.recv();
    } catch {
      // closed by the peer, or by close()
    } finally {
      this.service.detach(app);
      closeRegion(region);
      this.conns.delete(conn);
      if (!this.closed) conn.close();
    }
  }

  private note(message: string): void {
    this.refused++;
    this.lastErrors.push(message);
    if (this.lastErrors.length > 8) this.lastErrors.shift();
  }
}
