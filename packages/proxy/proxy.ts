/**
 * The host proxy: the control plane between applications and the bridge, off the data path.
 *
 * Applications (the shim, the Deno ring client) connect to the proxy's socket exactly as they
 * would to the bridge's and see the same frames (control.ts): HELLO, then REGION with the
 * region's memfd, WAKER with the bridge's eventfd, and an acknowledged WAIT_FD per waiter. The
 * proxy:
 *
 * 1. admits the peer by SO_PEERCRED against the policy (policy.ts), or answers ERROR with the
 *    reason (the shim prints it and keeps its sockets in the kernel);
 * 2. reserves a region id with the bridge, creates the region here, sized by the policy, and has
 *    the bridge map it (MAP_REGION) before the application can touch it;
 * 3. hands the region and the bridge's eventfd to the application;
 * 4. forwards each waiter's wake socket to the bridge and acknowledges it to the application
 *    only once the bridge has (from then on the bridge wakes that waiter directly);
 * 5. watches the application's processes with pidfds: the peer of each of its connections, and
 *    every process in the region's process table that maps the region (forked children); once
 *    its last connection has closed and the last of them has exited (or unmapped the region),
 *    has the bridge finish its connections as Linux does at exit and free the region
 *    (UNMAP_REGION), then lets its own mapping go.
 *
 * A forked child that says HELLO_JOIN with its region's id is admitted if it maps that region.
 * Data-path wakeups never pass through here: the bridge writes the waiters' wake sockets and
 * applications kick the bridge's eventfd.
 *
 * @module
 */
import {
  checkWakeSocket,
  closeRegion,
  type ControlConn,
  ControlListener,
  createRegion,
  HELLO_JOIN,
  MSG_ERROR,
  MSG_WAIT_FD,
  MSG_WAKER,
  parseHello,
  PROC_PID,
  processMapsRegion,
  procOffset,
  type Region,
  regionName,
  sendRegion,
  u32Payload,
} from "@pno/rings";
import { libc } from "../../ffi/libc.ts";
import { BridgeLink } from "./bridge_link.ts";
import { ProcessWatcher } from "./pidfd.ts";
import { type Admission, admit, OPEN_POLICY, type Policy } from "./policy.ts";

/** How to run a proxy. */
export interface ProxyOptions {
  /** The socket applications connect to (PNO_CONTROL). */
  listen: string;
  /** The bridge's control socket. */
  bridge: string;
  /** Who may offload and how much; default: everyone, the bridge's limits. */
  policy?: Policy;
  /** How often process tables are read for new processes, in ms (default 100). */
  scanMs?: number;
  /** One JSON object per event (admit, refuse, gone); default: none. */
  onEvent?: (event: Record<string, unknown>) => void;
}

/** An admitted application: its region and what keeps it alive. */
interface App {
  readonly id: number;
  readonly uid: number;
  readonly pid: number;
  readonly name: string;
  readonly region: Region;
  readonly admission: Admission;
  readonly since: number;
  /** Open control connections (the first and those of children that joined). */
  readonly conns: Set<ControlConn>;
  /** Processes watched by pidfd, still alive. */
  readonly pids: Set<number>;
  /** Process table entries whose pid was looked at and is not a member: entry -> pid. */
  readonly strangers: Map<number, number>;
  waiters: number;
  ending: boolean;
}

/** Counters of a proxy. */
export class ProxyCounters {
  /** Applications admitted (new regions). */
  admitted = 0;
  /** Children admitted to their parent's region (HELLO_JOIN). */
  joined = 0;
  /** Connections refused (policy, bad HELLO, bridge refusal). */
  refused = 0;
  /** Applications whose every process exited; their regions were unmapped. */
  ended = 0;
  /** Wake sockets forwarded to the bridge and acknowledged. */
  waitFds = 0;
  /** Wake sockets the bridge refused. */
  waitFdsRefused = 0;
  /** Process exits seen through pidfds. */
  exits = 0;
}

/** The host proxy. */
export class Proxy {
  readonly counters: ProxyCounters = new ProxyCounters();
  /** The last refusals and errors, newest last (at most 8). */
  readonly lastErrors: string[] = [];
  private readonly apps = new Map<number, App>();
  /** Which applications each watched pid belongs to. */
  private readonly members = new Map<number, Set<App>>();
  private readonly conns = new Set<ControlConn>();
  private readonly watcher: ProcessWatcher;
  private readonly scanner: ReturnType<typeof setInterval>;
  private readonly accepting: Promise<void>;
  private closed = false;

  private constructor(
    private readonly listener: ControlListener,
    readonly bridge: BridgeLink,
    readonly policy: Policy,
    readonly opts: ProxyOptions,
  ) {
    this.watcher = new ProcessWatcher((pid) => this.exited(pid));
    this.scanner = setInterval(() => {
      for (const app of this.apps.values()) {
        this.scan(app);
        if (app.conns.size === 0) this.maybeEnd(app);
      }
    }, opts.scanMs ?? 100);
    this.accepting = this.acceptLoop();
    void bridge.closed.then((why) => {
      if (!this.closed) this.error(`bridge link lost: ${why}`);
    });
  }

  /**
   * Connects to the bridge as its proxy, then listens for applications (anyone may connect:
   * the policy decides). Throws if the bridge refuses or cannot be reached.
   *
   * @example
   * ```ts ignore
   * import { Proxy } from "./proxy.ts";
   * const proxy = await Proxy.start({ listen: "/run/pno/proxy.sock", bridge: "/run/pno/bridge.sock" });
   * // applications run with PNO_CONTROL=/run/pno/proxy.sock
   * await proxy.close();
   * ```
   */
  static async start(opts: ProxyOptions): Promise<Proxy> {
    const bridge = await BridgeLink.connect(opts.bridge);
    let listener: ControlListener;
    try {
      Deno.mkdirSync(opts.listen.slice(0, opts.listen.lastIndexOf("/")) || "/", {
        recursive: true,
      });
      listener = ControlListener.listen(opts.listen);
      Deno.chmodSync(opts.listen, 0o666);
    } catch (err) {
      bridge.close();
      throw err;
    }
    return new Proxy(listener, bridge, opts.policy ?? OPEN_POLICY, opts);
  }

  /**
   * Stops admitting and hangs up on the bridge. Applications attached keep their regions: the
   * bridge frees each once every process of it has exited (a restarted proxy does not cut
   * running applications off).
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.scanner);
    // shutdown(2) wakes the accept and the receives pending on other threads; close does not.
    libc().shutdown(this.listener.fd, 2);
    await this.accepting;
    this.listener.close();
    for (const conn of this.conns) libc().shutdown(conn.fd, 2);
    await this.watcher.close();
    this.bridge.close();
    await this.bridge.closed;
    for (const app of this.apps.values()) closeRegion(app.region);
    this.apps.clear();
  }

  /** Counters and the attached applications, as plain data. */
  stats(): ProxyStats {
    return {
      ...this.counters,
      lastErrors: [...this.lastErrors],
      apps: [...this.apps.values()].map((app) => ({
        region: app.id,
        uid: app.uid,
        pid: app.pid,
        pids: [...app.pids].sort((a, b) => a - b),
        connections: app.conns.size,
        waiters: app.waiters,
        sockets: app.admission.sockets,
        memory: app.admission.memory,
        seconds: Math.round((performance.now() - app.since) / 100) / 10,
      })),
    };
  }

  private async acceptLoop(): Promise<void> {
    while (!this.closed) {
      let conn: ControlConn;
      try {
        conn = await this.listener.accept();
      } catch (err) {
        if (!this.closed) this.error(`accept: ${(err as Error).message}`);
        return;
      }
      if (this.closed) {
        conn.close();
        return;
      }
      void this.serve(conn);
    }
  }

  private async serve(conn: ControlConn): Promise<void> {
    this.conns.add(conn);
    let app: App | null = null;
    try {
      app = await this.admit(conn);
    } catch (err) {
      const reason = (err as Error).message;
      this.counters.refused++;
      this.error(`pid ${conn.peer.pid} uid ${conn.peer.uid}: ${reason}`);
      this.event({ event: "refuse", pid: conn.peer.pid, uid: conn.peer.uid, reason });
      try {
        conn.send(MSG_ERROR, new TextEncoder().encode(reason));
      } catch {
        // gone already
      }
    }
    if (app !== null) {
      try {
        for (;;) {
          const f = await conn.recv();
          if (f.type === MSG_WAIT_FD) await this.forwardWaitFd(app, conn, f.payload, f.fd);
          else if (f.fd >= 0) libc().close(f.fd);
        }
      } catch {
        // the process hung up (or the proxy closes)
      }
      app.conns.delete(conn);
    }
    this.conns.delete(conn);
    conn.close();
    if (app !== null) this.maybeEnd(app);
  }

  /** Reads the HELLO and admits the peer (a new application or a joining child). */
  private async admit(conn: ControlConn): Promise<App> {
    const hello = await conn.recv();
    if (hello.fd >= 0) libc().close(hello.fd);
    const parsed = parseHello(hello);
    if (typeof parsed === "string") throw new Error(parsed);
    const { pid, uid } = conn.peer;
    if (parsed.flags & HELLO_JOIN) {
      const app = this.apps.get(parsed.regionId);
      if (app === undefined || app.ending) throw new Error(`no region ${parsed.regionId} to join`);
      if (!processMapsRegion(pid, app.name)) {
        throw new Error(`pid ${pid} does not map region ${parsed.regionId}`);
      }
      app.conns.add(conn);
      this.join(app, pid);
      sendRegion(conn, app.region, app.id, false);
      conn.send(MSG_WAKER, new Uint8Array(4), this.bridge.wakerFd);
      this.counters.joined++;
      return app;
    }
    const admission = admit(this.policy, uid, this.bridge.info.params);
    if (typeof admission === "string") throw new Error(admission);
    const id = await this.bridge.reserveId();
    const name = regionName(id);
    const region = createRegion(admission.params, name, {
      localIp: this.bridge.info.localIp,
      regionId: id,
    });
    try {
      // Mapped by the bridge before the application can write to it: the bridge reads the
      // header this proxy wrote.
      await this.bridge.map(id, pid, region.fd);
    } catch (err) {
      closeRegion(region);
      throw new Error(`the bridge refused the region: ${(err as Error).message}`);
    }
    const app: App = {
      id,
      uid,
      pid,
      name,
      region,
      admission,
      since: performance.now(),
      conns: new Set([conn]),
      pids: new Set(),
      strangers: new Map(),
      waiters: 0,
      ending: false,
    };
    this.apps.set(id, app);
    this.join(app, pid);
    this.counters.admitted++;
    this.event({
      event: "admit",
      region: id,
      pid,
      uid,
      sockets: admission.sockets,
      memory: admission.memory,
    });
    try {
      sendRegion(conn, region, id, true);
      conn.send(MSG_WAKER, new Uint8Array(4), this.bridge.wakerFd);
    } catch {
      // The application is gone already: its connection closes and it ends.
    }
    return app;
  }

  /** Passes a waiter's wake socket to the bridge; acknowledges once the bridge has it. */
  private async forwardWaitFd(
    app: App,
    conn: ControlConn,
    payload: Uint8Array,
    fd: number,
  ): Promise<void> {
    const w = payload.length >= 4
      ? new DataView(payload.buffer, payload.byteOffset).getUint32(0, true)
      : -1;
    let refusal = fd < 0 ? "WAIT_FD without a descriptor" : checkWakeSocket(fd);
    if (refusal === null) {
      try {
        await this.bridge.waitFd(app.id, w, fd);
      } catch (err) {
        refusal = (err as Error).message;
      }
    }
    if (fd >= 0) libc().close(fd); // the bridge holds its own copy now
    if (refusal === null) {
      app.waiters++;
      this.counters.waitFds++;
      // The acknowledgement tells the waiter it may sleep: from now on the bridge wakes it.
      conn.send(MSG_WAIT_FD, u32Payload(w));
    } else {
      this.counters.waitFdsRefused++;
      this.error(`region ${app.id} pid ${conn.peer.pid}: ${refusal}`);
      conn.send(MSG_ERROR, new TextEncoder().encode(refusal));
    }
  }

  /** Watches `pid` as a process of `app`; false if it is gone already. */
  private join(app: App, pid: number): boolean {
    if (app.pids.has(pid)) return true;
    if (!this.watcher.has(pid) && !this.watcher.watch(pid)) return false;
    app.pids.add(pid);
    let set = this.members.get(pid);
    if (set === undefined) this.members.set(pid, set = new Set());
    set.add(app);
    return true;
  }

  /**
   * Reads the region's process table (written by the application: untrusted) for processes
   * not watched yet. A pid counts only if that process maps this region; its pidfd is taken
   * before the check, so the process checked is the process watched.
   */
  private scan(app: App): void {
    if (app.ending) return;
    const layout = app.region.layout;
    const words = new Int32Array(app.region.buffer);
    for (let p = 0; p < layout.params.maxProcs; p++) {
      const pid = Atomics.load(words, (procOffset(layout, p) + PROC_PID) / 4);
      if (pid <= 0 || app.pids.has(pid) || app.strangers.get(p) === pid) continue;
      if (!this.join(app, pid)) {
        app.strangers.set(p, pid);
        continue;
      }
      if (!processMapsRegion(pid, app.name)) {
        this.leave(app, pid);
        app.strangers.set(p, pid);
      }
    }
  }

  /** `pid` is no process of `app` (any more); unwatched unless another application has it. */
  private leave(app: App, pid: number): void {
    app.pids.delete(pid);
    const set = this.members.get(pid);
    set?.delete(app);
    if (set !== undefined && set.size === 0) {
      this.members.delete(pid);
      this.watcher.unwatch(pid);
    }
  }

  /** A watched process exited. */
  private exited(pid: number): void {
    this.counters.exits++;
    const apps = this.members.get(pid);
    this.members.delete(pid);
    for (const app of apps ?? []) {
      app.pids.delete(pid);
      this.scan(app); // a child it forked may have registered since the last scan
      this.maybeEnd(app);
    }
  }

  /**
   * Ends the application once no connection of it is open and no process of it is left: none
   * alive that maps the region (a process that unmapped it, as the Deno client's close does,
   * or that exec'd, holds nothing in it any more).
   */
  private maybeEnd(app: App): void {
    if (this.closed || app.ending || app.conns.size > 0) return;
    this.scan(app);
    for (const pid of [...app.pids]) {
      // The proxy maps every region itself: in its own process a mapping proves nothing.
      if (pid === Deno.pid || !processMapsRegion(pid, app.name)) this.leave(app, pid);
    }
    if (app.pids.size === 0) void this.end(app);
  }

  /** Has the bridge finish the application's connections and free its region. */
  private async end(app: App): Promise<void> {
    if (app.ending) return;
    app.ending = true;
    for (const pid of [...app.pids]) this.leave(app, pid);
    try {
      await this.bridge.unmap(app.id);
    } catch (err) {
      this.error(`region ${app.id}: unmap: ${(err as Error).message}`);
    }
    if (this.apps.get(app.id) !== app) return; // the proxy closed meanwhile
    this.apps.delete(app.id);
    closeRegion(app.region);
    this.counters.ended++;
    this.event({
      event: "gone",
      region: app.id,
      pid: app.pid,
      seconds: Math.round((performance.now() - app.since) / 100) / 10,
    });
  }

  private error(message: string): void {
    this.lastErrors.push(message);
    if (this.lastErrors.length > 8) this.lastErrors.shift();
  }

  private event(e: Record<string, unknown>): void {
    this.opts.onEvent?.(e);
  }
}

/** What `Proxy.stats()` returns. */
export interface ProxyStats {
  admitted: number;
  joined: number;
  refused: number;
  ended: number;
  waitFds: number;
  waitFdsRefused: number;
  exits: number;
  lastErrors: string[];
  apps: Array<{
    region: number;
    uid: number;
    pid: number;
    pids: number[];
    connections: number;
    waiters: number;
    sockets: number;
    memory: number;
    seconds: number;
  }>;
}
