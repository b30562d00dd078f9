/**
 * The host side of the rings in TypeScript: a ring client that opens sockets through a region,
 * and PnO sockets shaped like Deno's (`PnoListener` ~ Deno.Listener, `PnoConn` ~ Deno.Conn).
 *
 * The client asks the bridge's control socket for a region, maps it, and then talks to the
 * NIC only through that memory: commands on its thread's command ring, completions and events
 * on the completion ring, bytes through each socket's TX and RX rings. The control connection
 * stays open for the client's lifetime; when it closes (the process exits or dies) the bridge
 * tears the region's connections down. Completions are polled while there is traffic; when a
 * poll finds none the poller parks on its eventfd (waker.ts), which the bridge writes
 * only when it publishes completions for a parked thread, so an idle client costs no CPU and
 * wakes within microseconds, never a timer's milliseconds. Symmetrically, a command posted
 * while the bridge is parked kicks the bridge's eventfd.
 *
 * @example
 * ```ts ignore
 * import { RingClient } from "./client.ts";
 * const client = await RingClient.attach("/run/pno/bridge.sock");
 * const listener = await client.listen({ port: 8007 });
 * for await (const conn of listener) {
 *   const buf = new Uint8Array(4096);
 *   for (let n; (n = await conn.read(buf)) !== null;) await conn.write(buf.subarray(0, n));
 *   conn.close();
 * }
 * ```
 * @module
 */
import { hostGRings, hostSRings } from "./attach.ts";
import type { HostRxConsumer, HostTxProducer } from "./byte_ring.ts";
import { RING_FAULT } from "./byte_ring.ts";
import {
  connectControl,
  type ControlConn,
  MSG_ERROR,
  MSG_HELLO,
  MSG_REGION,
  MSG_WAKER,
} from "./control.ts";
import type { DescRingConsumer, DescRingProducer } from "./desc_ring.ts";
import {
  ACCEPT_NEW_SOCK,
  ACCEPT_PEER,
  AF_INET,
  BIND_ADDR,
  CMD_ACCEPT,
  CMD_BIND,
  CMD_CLOSE,
  CMD_CONNECT,
  CMD_LISTEN,
  CMD_RX_FREED,
  CMD_SETSOCKOPT,
  CMD_SHUTDOWN,
  CMD_SOCKET,
  CMD_TX_AVAIL,
  CONNECT_ADDR,
  CONNECTED_LOCAL,
  CPL_ACCEPT,
  CPL_RESULT,
  EV_CONNECTED,
  EV_ERROR,
  EV_PEER_CLOSED,
  EV_READABLE,
  EV_RESET,
  EV_WRITABLE,
  LISTEN_BACKLOG,
  readOpcode,
  readReqId,
  readResult,
  readSock,
  readSockaddrPort,
  readSockaddrV4,
  RESULT_CMD_OPCODE,
  RX_FREED_CONS,
  SHUTDOWN_HOW,
  SOCK_NONE,
  SOCKET_DOMAIN,
  SOCKET_TYPE,
  SOCKOPT_LEVEL,
  SOCKOPT_NAME,
  SOCKOPT_VALUE,
  SOCKOPT_VALUE2,
  TX_AVAIL_PROD,
  writeHeader,
  writeSockaddrV4,
} from "./descriptors.ts";
import {
  DOORBELL_SLEEPING,
  LAYOUT_VERSION,
  regionDoorbellOffset,
  threadDoorbellOffset,
} from "./layout.ts";
import { closeRegion, mapRegionFd, type Region } from "./region.ts";
import { libc } from "../../ffi/libc.ts";
import { kickFd, Waker } from "./waker.ts";

/** Default path of the bridge's control socket. */
export const DEFAULT_CONTROL_PATH = "/run/pno/bridge.sock";

const SOCK_STREAM = 1;
/**
 * How long the poller keeps polling after the last completion before it parks. Measured on
 * the 64 MiB ring echo (bench/rings_wire.ts): 1 ms of spinning cost the echo server 5x the
 * CPU of parking at once (0.40 s against 0.08 s) for no more throughput; the eventfd wakeup
 * is fast enough. The poller always looks once more after a yield before parking.
 */
const SPIN_MS = 0;
/** Longest park: a kick that never comes (a bridge without wakeups) costs at most this. */
const PARK_MS = 50;
const EAGAIN = 11;
const EINPROGRESS = 115;

/** An error carrying the errno the NIC reported. */
export class RingError extends Error {
  constructor(readonly errno: number, what: string) {
    super(`${what}: ${errnoName(errno)}`);
  }
}

function errnoName(errno: number): string {
  const names: Record<number, string> = {
    11: "EAGAIN",
    22: "EINVAL",
    24: "EMFILE",
    32: "EPIPE",
    98: "EADDRINUSE",
    99: "EADDRNOTAVAIL",
    103: "ECONNABORTED",
    104: "ECONNRESET",
    107: "ENOTCONN",
    110: "ETIMEDOUT",
    111: "ECONNREFUSED",
    113: "EHOSTUNREACH",
  };
  return names[errno] ?? `errno ${errno}`;
}

/** What a completion carries back to the request that caused it. */
interface Completion {
  result: number;
  sock: number;
  peerIp: number;
  peerPort: number;
  localIp: number;
  localPort: number;
}

/** Per-socket event state the poller updates and readers and writers wait on. */
class SocketEvents {
  peerClosed = false;
  error = 0;
  connected = false;
  private waiters: Array<() => void> = [];

  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

/** A connection to the bridge through one region. */
export class RingClient {
  private readonly commands: DescRingProducer;
  private readonly completions: DescRingConsumer;
  private readonly pending = new Map<number, (c: Completion) => void>();
  private readonly sockets = new Map<number, SocketEvents>();
  private nextReqId = 1;
  private closed = false;
  private polling: Promise<void>;
  private readonly channel = new MessageChannel();
  private readonly words: Int32Array;
  /** Word indices of the bridge's and this thread's sleeping flags. */
  private readonly bridgeSleeping: number;
  private readonly sleeping: number;
  /** Completions and events the client refused as malformed. */
  rejected = 0;
  /** Times the poller parked, and eventfd writes that woke a parked bridge. */
  parks = 0;
  kicks = 0;

  private constructor(
    readonly region: Region,
    private readonly control: ControlConn,
    private readonly waker: Waker,
    private readonly bridgeFd: number,
  ) {
    const g = hostGRings(region.buffer, region.layout, 0);
    this.commands = g.commands;
    this.completions = g.completions;
    this.words = new Int32Array(region.buffer);
    this.bridgeSleeping = (regionDoorbellOffset(region.layout) + DOORBELL_SLEEPING) >> 2;
    this.sleeping = (threadDoorbellOffset(region.layout, 0) + DOORBELL_SLEEPING) >> 2;
    this.channel.port1.onmessage = () => {};
    this.polling = this.poll();
  }

  /** Asks the bridge at `controlPath` for a region and maps it. */
  static async attach(controlPath = DEFAULT_CONTROL_PATH): Promise<RingClient> {
    const conn = connectControl(controlPath);
    try {
      const hello = new Uint8Array(8);
      new DataView(hello.buffer).setUint32(0, LAYOUT_VERSION, true);
      conn.send(MSG_HELLO, hello);
      const reply = await conn.recv();
      if (reply.type === MSG_ERROR) {
        throw new Error(`bridge refused the region: ${new TextDecoder().decode(reply.payload)}`);
      }
      if (reply.type !== MSG_REGION || reply.fd < 0) {
        throw new Error(`unexpected reply ${reply.type} from ${controlPath}`);
      }
      const region = mapRegionFd(reply.fd);
      // The bridge's eventfd follows (or a WAKER frame without one: it cannot be kicked).
      let bridgeFd = -1, waker: Waker | null = null;
      try {
        const w = await conn.recv();
        if (w.type !== MSG_WAKER) throw new Error(`expected WAKER, got frame type ${w.type}`);
        bridgeFd = w.fd;
        waker = Waker.create();
        const line = new Uint8Array(4);
        new DataView(line.buffer).setUint32(0, 1, true); // thread 0's doorbell
        conn.send(MSG_WAKER, line, waker.fd);
      } catch (err) {
        if (bridgeFd >= 0) libc().close(bridgeFd);
        waker?.close();
        closeRegion(region);
        throw err;
      }
      return new RingClient(region, conn, waker, bridgeFd);
    } catch (err) {
      conn.close();
      throw err;
    }
  }

  /** Opens a listening socket on the bridge's address. */
  async listen(opts: { port: number; backlog?: number }): Promise<PnoListener> {
    const sock = await this.socket();
    try {
      await this.call(CMD_BIND, sock, (v, at) => writeSockaddrV4(v, at + BIND_ADDR, 0, opts.port));
      await this.call(
        CMD_LISTEN,
        sock,
        (v, at) => v.setInt32(at + LISTEN_BACKLOG, opts.backlog ?? 128, true),
      );
    } catch (err) {
      await this.call(CMD_CLOSE, sock).catch(() => {});
      throw err;
    }
    return new PnoListener(this, sock, opts.port);
  }

  /** Connects out through the bridge to `hostname:port` (dotted-quad IPv4). */
  async connect(opts: { hostname: string; port: number }): Promise<PnoConn> {
    const ip = parseIp(opts.hostname);
    const sock = await this.socket();
    const ev = this.events(sock);
    const started = await this.send(
      CMD_CONNECT,
      sock,
      (v, at) => writeSockaddrV4(v, at + CONNECT_ADDR, ip, opts.port),
    );
    if (started.result < 0 && started.result !== -EINPROGRESS) {
      this.forget(sock);
      await this.call(CMD_CLOSE, sock).catch(() => {});
      throw new RingError(-started.result, `connect to ${opts.hostname}:${opts.port}`);
    }
    while (!ev.connected && ev.error === 0) await ev.wait();
    if (ev.error !== 0) {
      const errno = ev.error;
      this.forget(sock);
      await this.call(CMD_CLOSE, sock).catch(() => {});
      throw new RingError(errno, `connect to ${opts.hostname}:${opts.port}`);
    }
    return new PnoConn(this, sock, { hostname: opts.hostname, port: opts.port });
  }

  /** Closes every socket, unmaps the region and hangs up the control connection. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.channel.port2.postMessage(0);
    this.waker.kick();
    await this.polling;
    this.channel.port1.close();
    this.waker.close();
    if (this.bridgeFd >= 0) libc().close(this.bridgeFd);
    closeRegion(this.region);
    this.control.close();
  }

  // ---- internals used by PnoListener and PnoConn ----

  /** @internal */
  streams(sock: number): { tx: HostTxProducer; rx: HostRxConsumer } {
    return hostSRings(this.region.buffer, this.region.layout, sock);
  }

  /** @internal */
  events(sock: number): SocketEvents {
    let ev = this.sockets.get(sock);
    if (!ev) this.sockets.set(sock, ev = new SocketEvents());
    return ev;
  }

  /** @internal */
  forget(sock: number): void {
    this.sockets.get(sock)?.wake();
    this.sockets.delete(sock);
  }

  /** @internal Posts a doorbell command that has no completion worth waiting for. */
  doorbell(opcode: number, sock: number, value: number): void {
    this.post(
      opcode,
      sock,
      0,
      (v, at) =>
        v.setUint32(at + (opcode === CMD_TX_AVAIL ? TX_AVAIL_PROD : RX_FREED_CONS), value, true),
    );
  }

  /** @internal Sends a command and waits for its completion. */
  send(
    opcode: number,
    sock: number,
    fill?: (v: DataView, at: number) => void,
  ): Promise<Completion> {
    if (this.closed) return Promise.reject(new Error("ring client is closed"));
    const reqId = this.nextReqId;
    this.nextReqId = (this.nextReqId % 0x7fffffff) + 1;
    const done = new Promise<Completion>((resolve) => this.pending.set(reqId, resolve));
    this.post(opcode, sock, reqId, fill);
    return done;
  }

  /** @internal Like `send`, but a negative result throws. */
  async call(
    opcode: number,
    sock: number,
    fill?: (v: DataView, at: number) => void,
  ): Promise<Completion> {
    const c = await this.send(opcode, sock, fill);
    if (c.result < 0) throw new RingError(-c.result, opcodeName(opcode));
    return c;
  }

  /** @internal */
  async setOption(
    sock: number,
    level: number,
    name: number,
    value: number,
    value2 = 0,
  ): Promise<void> {
    await this.call(CMD_SETSOCKOPT, sock, (v, at) => {
      v.setInt32(at + SOCKOPT_LEVEL, level, true);
      v.setInt32(at + SOCKOPT_NAME, name, true);
      v.setInt32(at + SOCKOPT_VALUE, value, true);
      v.setInt32(at + SOCKOPT_VALUE2, value2, true);
    });
  }

  private async socket(): Promise<number> {
    const c = await this.call(CMD_SOCKET, SOCK_NONE, (v, at) => {
      v.setInt32(at + SOCKET_DOMAIN, AF_INET, true);
      v.setInt32(at + SOCKET_TYPE, SOCK_STREAM, true);
    });
    return c.result;
  }

  private post(
    opcode: number,
    sock: number,
    reqId: number,
    fill?: (v: DataView, at: number) => void,
  ): void {
    // The command ring holds cmdSlots descriptors; a full ring means the NIC is behind, and
    // the caller's await resumes only after the poller has drained completions anyway.
    while (this.commands.reserve(1) < 1) {
      if (this.commands.faulted) throw new Error("command ring index corrupted");
      const spinUntil = performance.now() + 1;
      while (performance.now() < spinUntil) { /* the NIC consumes within microseconds */ }
    }
    const v = this.commands.view, at = this.commands.slotOffset(0);
    writeHeader(v, at, opcode, sock, reqId);
    fill?.(v, at);
    this.commands.publish(1);
    // Published, then look at the flag (the bridge sets it, then looks at the ring).
    if (
      Atomics.load(this.words, this.bridgeSleeping) !== 0 && this.bridgeFd >= 0 &&
      Atomics.exchange(this.words, this.bridgeSleeping, 0) !== 0
    ) {
      kickFd(this.bridgeFd);
      this.kicks++;
    }
  }

  private async poll(): Promise<void> {
    let idleSince = performance.now();
    while (!this.closed) {
      const n = this.completions.peek(64);
      if (n === RING_FAULT) throw new Error("completion ring index corrupted");
      for (let i = 0; i < n; i++) {
        this.dispatch(this.completions.view, this.completions.slotOffset(i));
      }
      if (n > 0) this.completions.release(n);
      const now = performance.now();
      if (n > 0) idleSince = now;
      if (n > 0 || now - idleSince < SPIN_MS) {
        await this.yieldNow();
        continue;
      }
      // Park: say so, look once more (the bridge publishes, then looks at the flag), block.
      Atomics.store(this.words, this.sleeping, 1);
      if (this.completions.peek(1) === 0 && !this.closed) {
        this.parks++;
        await this.waker.wait(PARK_MS);
      }
      Atomics.store(this.words, this.sleeping, 0);
      idleSince = performance.now();
    }
  }

  private yieldNow(): Promise<void> {
    return new Promise((resolve) => {
      this.channel.port1.onmessage = () => resolve();
      this.channel.port2.postMessage(0);
    });
  }

  private dispatch(v: DataView, at: number): void {
    const op = readOpcode(v, at), sock = readSock(v, at), result = readResult(v, at);
    if (op === CPL_RESULT || op === CPL_ACCEPT) {
      const resolve = this.pending.get(readReqId(v, at));
      if (!resolve) {
        this.rejected++;
        return;
      }
      this.pending.delete(readReqId(v, at));
      const accepted = op === CPL_ACCEPT;
      // A new socket's events may follow in this same batch, before the awaiting caller
      // resumes: its event state must exist now, fresh (socket ids are reused).
      const created = accepted
        ? (result >= 0 ? v.getUint32(at + ACCEPT_NEW_SOCK, true) : -1)
        : (v.getUint16(at + RESULT_CMD_OPCODE, true) === CMD_SOCKET ? result : -1);
      if (created >= 0) this.sockets.set(created, new SocketEvents());
      resolve({
        result: accepted ? (result < 0 ? result : v.getUint32(at + ACCEPT_NEW_SOCK, true)) : result,
        sock,
        peerIp: accepted ? readSockaddrV4(v, at + ACCEPT_PEER) : 0,
        peerPort: accepted ? readSockaddrPort(v, at + ACCEPT_PEER) : 0,
        localIp: 0,
        localPort: 0,
      });
      return;
    }
    const ev = this.sockets.get(sock);
    if (!ev) return; // an event for a socket already closed here
    if (op === EV_CONNECTED) {
      ev.connected = true;
      void readSockaddrPort(v, at + CONNECTED_LOCAL);
    } else if (op === EV_PEER_CLOSED) ev.peerClosed = true;
    else if (op === EV_RESET) ev.error = result < 0 ? -result : 104;
    else if (op === EV_ERROR) ev.error = result < 0 ? -result : 5;
    else if (op !== EV_READABLE && op !== EV_WRITABLE) {
      this.rejected++;
      return;
    }
    ev.wake();
  }
}

/** A listening PnO socket; `accept` resolves with each new connection. */
export class PnoListener implements AsyncIterable<PnoConn> {
  private closed = false;

  constructor(private readonly client: RingClient, readonly sock: number, readonly port: number) {}

  get addr(): { transport: "tcp"; hostname: string; port: number } {
    return { transport: "tcp", hostname: "0.0.0.0", port: this.port };
  }

  /** Waits for the next connection. */
  async accept(): Promise<PnoConn> {
    const ev = this.client.events(this.sock);
    for (;;) {
      if (this.closed) throw new Error("listener closed");
      const c = await this.client.send(CMD_ACCEPT, this.sock);
      if (c.result >= 0) {
        return new PnoConn(this.client, c.result, {
          hostname: formatIp(c.peerIp),
          port: c.peerPort,
        });
      }
      if (-c.result !== EAGAIN) throw new RingError(-c.result, "accept");
      await ev.wait();
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<PnoConn> {
    while (!this.closed) {
      try {
        yield await this.accept();
      } catch (err) {
        if (this.closed) return;
        throw err;
      }
    }
  }

  /** Stops listening. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.forget(this.sock);
    void this.client.send(CMD_CLOSE, this.sock).catch(() => {});
  }
}

/** A PnO connection: `read` and `write` copy straight out of and into its S-rings. */
export class PnoConn {
  private readonly tx: HostTxProducer;
  private readonly rx: HostRxConsumer;
  private readonly ev: SocketEvents;
  private closed = false;

  constructor(
    private readonly client: RingClient,
    readonly sock: number,
    readonly remoteAddr: { hostname: string; port: number },
  ) {
    const s = client.streams(sock);
    this.tx = s.tx;
    this.rx = s.rx;
    this.ev = client.events(sock);
  }

  /** Reads into `p`; resolves with the byte count, or null at end of stream. */
  async read(p: Uint8Array): Promise<number | null> {
    for (;;) {
      const avail = this.rx.readable();
      if (avail === RING_FAULT) throw new Error("RX ring index corrupted");
      if (avail > 0) {
        const n = this.rx.read(p, 0, Math.min(p.length, avail));
        this.client.doorbell(CMD_RX_FREED, this.sock, 0);
        return n;
      }
      if (this.ev.error !== 0) throw new RingError(this.ev.error, "read");
      if (this.ev.peerClosed || this.closed) return null;
      await this.ev.wait();
    }
  }

  /** Writes all of `p`, waiting for ring space as needed; resolves with `p.length`. */
  async write(p: Uint8Array): Promise<number> {
    let done = 0;
    while (done < p.length) {
      if (this.closed) throw new Error("connection closed");
      if (this.ev.error !== 0) throw new RingError(this.ev.error, "write");
      const n = this.tx.write(p, done, p.length - done);
      if (n === RING_FAULT) throw new Error("TX ring index corrupted");
      if (n > 0) {
        done += n;
        this.client.doorbell(CMD_TX_AVAIL, this.sock, 0);
      } else {
        await this.ev.wait();
      }
    }
    return done;
  }

  /** Half-closes: the peer reads end of stream after the bytes already written. */
  async closeWrite(): Promise<void> {
    await this.client.call(
      CMD_SHUTDOWN,
      this.sock,
      (v, at) => v.setInt32(at + SHUTDOWN_HOW, 1, true),
    );
  }

  /** Sets TCP_NODELAY. */
  async setNoDelay(on = true): Promise<void> {
    await this.client.setOption(this.sock, 6, 1, on ? 1 : 0);
  }

  /** Closes the connection: unsent bytes are delivered, then FIN (as Linux's close). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.forget(this.sock);
    void this.client.send(CMD_CLOSE, this.sock).catch(() => {});
  }
}

function opcodeName(op: number): string {
  return [
    "",
    "socket",
    "bind",
    "listen",
    "connect",
    "accept",
    "close",
    "shutdown",
    "setsockopt",
    "getsockopt",
  ][op] ?? `opcode ${op}`;
}

function parseIp(text: string): number {
  const p = text.split(".").map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) {
    throw new Error(`not an IPv4 address: ${text}`);
  }
  return ((p[0] << 24) | (p[1] << 16) | (p[2] << 8) | p[3]) >>> 0;
}

function formatIp(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}
