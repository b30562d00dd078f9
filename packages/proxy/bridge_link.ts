/**
 * The proxy's connection to the bridge's control socket: HELLO with HELLO_PROXY, then the
 * bridge's address, region parameters and eventfd; then requests (reserve an id, map a region,
 * register a waiter's wake socket, unmap), each answered by a REPLY with its sequence number,
 * so that requests for many applications may be in flight at once.
 *
 * @example
 * ```ts ignore
 * import { BridgeLink } from "./bridge_link.ts";
 * const bridge = await BridgeLink.connect("/run/pno/bridge.sock");
 * const id = await bridge.reserveId();
 * // createRegion(..., { localIp: bridge.info.localIp, regionId: id }), then:
 * // await bridge.map(id, pid, region.fd);
 * bridge.close();
 * ```
 * @module
 */
import {
  connectControl,
  type ControlConn,
  HELLO_PROXY,
  LAYOUT_VERSION,
  mapFd,
  type Mapping,
  MSG_BRIDGE_INFO,
  MSG_ERROR,
  MSG_HELLO,
  MSG_MAP_REGION,
  MSG_REPLY,
  MSG_STATS_PAGE,
  MSG_UNMAP_REGION,
  MSG_WAIT_FD,
  MSG_WAKER,
  payloadU32,
  REGION_PARAM_NAMES,
  type RegionParams,
  u32Payload,
} from "@pno/rings";
import { StatsReader } from "@pno/stats";
import { libc } from "../../ffi/libc.ts";

/** What the bridge tells the proxy when it connects. */
export interface BridgeInfo {
  /** The bridge's IPv4 address, host order (written into every region's header). */
  readonly localIp: number;
  /** The bridge's region parameters: what an application gets at most. */
  readonly params: RegionParams;
}

interface Pending {
  resolve(status: number): void;
  reject(err: Error): void;
}

/** One connection from the proxy to the bridge. */
export class BridgeLink {
  private nextSeq = 1;
  private readonly pending = new Map<number, Pending>();
  private lost: string | null = null;
  /** A reader over the bridge's stats page; null when the bridge has none. */
  readonly stats: StatsReader | null;
  /** Resolves with the reason once the bridge has hung up. */
  readonly closed: Promise<string>;

  private constructor(
    private readonly conn: ControlConn,
    readonly info: BridgeInfo,
    /** The bridge's eventfd, passed on to every application (MSG_WAKER). */
    readonly wakerFd: number,
    /** The bridge's stats page (MSG_STATS_PAGE), mapped here for the live stats server. */
    statsPage: Mapping | null,
  ) {
    this.stats = statsPage === null ? null : new StatsReader(statsPage.buffer);
    this.closed = this.readReplies();
  }

  /** Connects to the bridge at `path` as its proxy; throws with the bridge's refusal. */
  static async connect(path: string): Promise<BridgeLink> {
    let conn: ControlConn;
    try {
      conn = connectControl(path);
    } catch (err) {
      throw new Error(
        `cannot reach the bridge at ${path} (is pno bridge --control ${path} running?): ${
          (err as Error).message
        }`,
      );
    }
    try {
      conn.send(MSG_HELLO, u32Payload(LAYOUT_VERSION, HELLO_PROXY, 0));
      const first = await conn.recv();
      if (first.fd >= 0) libc().close(first.fd);
      if (first.type === MSG_ERROR) {
        throw new Error(`the bridge refused the proxy: ${new TextDecoder().decode(first.payload)}`);
      }
      if (first.type !== MSG_BRIDGE_INFO || first.payload.length < 8 + 4 * 9) {
        throw new Error(`unexpected frame ${first.type} from the bridge at ${path}`);
      }
      const version = payloadU32(first.payload, 0);
      if (version !== LAYOUT_VERSION) {
        throw new Error(`the bridge speaks layout ${version}, the proxy ${LAYOUT_VERSION}`);
      }
      const params = Object.fromEntries(
        REGION_PARAM_NAMES.map((k, i) => [k, payloadU32(first.payload, 2 + i)]),
      ) as unknown as RegionParams;
      const waker = await conn.recv();
      if (waker.type !== MSG_WAKER || waker.fd < 0) {
        if (waker.fd >= 0) libc().close(waker.fd);
        throw new Error(`expected the bridge's eventfd, got frame ${waker.type}`);
      }
      const page = await conn.recv();
      if (page.type !== MSG_STATS_PAGE) {
        if (page.fd >= 0) libc().close(page.fd);
        libc().close(waker.fd);
        throw new Error(`expected the bridge's stats page, got frame ${page.type}`);
      }
      let mapping: Mapping | null = null;
      if (page.fd >= 0) {
        try {
          mapping = mapFd(page.fd);
          new StatsReader(mapping.buffer); // throws with what is wrong with the page
        } catch (err) {
          libc().close(page.fd);
          libc().close(waker.fd);
          throw new Error(`the bridge's stats page: ${(err as Error).message}`);
        }
      }
      return new BridgeLink(
        conn,
        { localIp: payloadU32(first.payload, 1), params },
        waker.fd,
        mapping,
      );
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  /** A fresh region id from the bridge. */
  reserveId(): Promise<number> {
    return this.request(MSG_MAP_REGION, [0, 0]);
  }

  /** Has the bridge map and serve region `id` (its memfd is `fd`, still ours) for `pid`. */
  async map(id: number, pid: number, fd: number): Promise<void> {
    await this.request(MSG_MAP_REGION, [id, pid], fd);
  }

  /** Registers waiter `waiter`'s wake socket `fd` (still ours) with the bridge. */
  async waitFd(id: number, waiter: number, fd: number): Promise<void> {
    await this.request(MSG_WAIT_FD, [id, waiter], fd);
  }

  /** The application is gone: resolves once the bridge has finished and freed its region. */
  async unmap(id: number): Promise<void> {
    await this.request(MSG_UNMAP_REGION, [id]);
  }

  /** True until the bridge hangs up. */
  get alive(): boolean {
    return this.lost === null;
  }

  /** Requests in flight. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Hangs up (requests in flight fail). */
  close(): void {
    if (this.lost === null) this.lost = "the proxy closed its bridge connection";
    libc().shutdown(this.conn.fd, 2);
  }

  private request(type: number, fields: number[], fd = -1): Promise<number> {
    if (this.lost !== null) return Promise.reject(new Error(this.lost));
    const seq = this.nextSeq++;
    const reply = new Promise<number>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
    });
    try {
      this.conn.send(type, u32Payload(seq, ...fields), fd);
    } catch (err) {
      this.pending.delete(seq);
      return Promise.reject(err);
    }
    return reply;
  }

  private async readReplies(): Promise<string> {
    let why: string;
    try {
      for (;;) {
        const f = await this.conn.recv();
        if (f.fd >= 0) libc().close(f.fd);
        if (f.type !== MSG_REPLY) continue;
        const seq = payloadU32(f.payload, 0);
        const status = payloadU32(f.payload, 1) | 0;
        const p = this.pending.get(seq);
        if (p === undefined) continue;
        this.pending.delete(seq);
        if (status >= 0) p.resolve(status);
        else p.reject(new Error(new TextDecoder().decode(f.payload.subarray(8))));
      }
    } catch (err) {
      why = this.lost ?? `the bridge hung up (${(err as Error).message})`;
    }
    this.lost = why;
    for (const p of this.pending.values()) p.reject(new Error(why));
    this.pending.clear();
    this.conn.close();
    libc().close(this.wakerFd);
    // The page froze with the bridge: the live stats server answers 503 from now on. It stays
    // mapped (one small mapping) so that a request being served never reads unmapped memory.
    return why;
  }
}
