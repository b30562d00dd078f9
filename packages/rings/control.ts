/**
 * The attach handshake: a region fd handed from the proxy to an application (or to the bridge)
 * over a Unix stream socket with SCM_RIGHTS, the peer identified by SO_PEERCRED. Deno has no
 * API for either, so this goes through libc (ffi/libc.ts) with msghdr and cmsg built by hand.
 *
 * Frames are `[u32 length][u8 type][payload]`, length counting type and payload:
 *
 * - HELLO (client): u32 layout version, u32 flags (HELLO_JOIN), u32 region id (to join).
 * - REGION (server): u32 version, u32 region id, u64 total size; the region fd rides along as
 *   SCM_RIGHTS (not to a joining process, which has it mapped already).
 * - ERROR (server): UTF-8 text, e.g. on a version mismatch.
 * - WAKER (server): the bridge's eventfd, which applications kick when it sleeps.
 * - WAIT_FD (client): u32 waiter entry; one end of a datagram socket pair rides along, on
 *   which the bridge wakes that waiter (see kickSocket).
 *
 * The host proxy (packages/proxy) speaks the same frames to applications and has the bridge
 * serve the regions it creates. It says HELLO with HELLO_PROXY (the bridge admits only root or
 * its own uid) and gets BRIDGE_INFO and WAKER; then it sends requests, each answered by a
 * REPLY with the request's sequence number:
 *
 * - BRIDGE_INFO (bridge): u32 version, u32 the bridge's IPv4 address (host order), then the
 *   bridge's region parameters (REGION_PARAM_NAMES order, u32 each).
 * - MAP_REGION (proxy): u32 seq, u32 region id, u32 pid, the region fd attached: map and serve
 *   it. Without a fd and with region id 0: reserve an id (the REPLY's status).
 * - UNMAP_REGION (proxy): u32 seq, u32 region id: the application is gone; its connections
 *   finish as at exit, then the region is freed (the REPLY comes then).
 * - WAIT_FD (proxy): u32 seq, u32 region id, u32 waiter entry, the wake socket attached.
 * - REPLY (bridge): u32 seq, i32 status (>= 0 done; < 0 refused), UTF-8 reason.
 *
 * Control path only: these calls allocate freely.
 *
 * @module
 */

import {
  AF_UNIX,
  cString,
  errno,
  libc,
  libcError,
  MSG_CMSG_CLOEXEC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  SCM_RIGHTS,
  SO_PEERCRED,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  SOL_SOCKET,
} from "../../ffi/libc.ts";
import { EAGAIN } from "./errno.ts";
import { LAYOUT_VERSION, type RegionParams } from "./layout.ts";
import type { Region } from "./region.ts";

/** Client to server: the layout version the client speaks. */
export const MSG_HELLO = 1;
/** Server to client: region parameters, with the region fd attached. */
export const MSG_REGION = 2;
/** Server to client: why the request was refused. */
export const MSG_ERROR = 3;
/** Server to client, right after REGION: the bridge's own eventfd (kicked when it sleeps). */
export const MSG_WAKER = 4;
/** Client to server: u32 waiter entry, with the waiter's wake socket attached. */
export const MSG_WAIT_FD = 5;
/** HELLO flag: a forked child joins its parent's region (id in the HELLO). */
export const HELLO_JOIN = 1;
/** HELLO flag: the host proxy, which creates regions and has the bridge map them. */
export const HELLO_PROXY = 2;
/** Bridge to proxy: version, the bridge's address and region parameters. */
export const MSG_BRIDGE_INFO = 6;
/** Proxy to bridge: map and serve a region (fd attached), or reserve a region id. */
export const MSG_MAP_REGION = 7;
/** Proxy to bridge: an application is gone; finish its connections, free its region. */
export const MSG_UNMAP_REGION = 8;
/** Bridge to proxy: the outcome of one request, by sequence number. */
export const MSG_REPLY = 9;
/**
 * Bridge to proxy, right after WAKER: the bridge's stats page (a memfd, attached; see
 * packages/stats/page.ts), which the proxy maps and serves; no fd when the bridge has none.
 */
export const MSG_STATS_PAGE = 10;

/** The order of region parameters in a BRIDGE_INFO frame. */
export const REGION_PARAM_NAMES: readonly (keyof RegionParams)[] = [
  "maxThreads",
  "maxWaiters",
  "maxProcs",
  "maxSockets",
  "cmdSlots",
  "cplSlots",
  "evSlots",
  "txBytes",
  "rxBytes",
];

/** A payload of little-endian u32 values (negative values as their two's complement). */
export function u32Payload(...values: number[]): Uint8Array {
  const out = new Uint8Array(4 * values.length);
  const v = new DataView(out.buffer);
  values.forEach((n, i) => v.setUint32(4 * i, n >>> 0, true));
  return out;
}

/** The `i`th little-endian u32 of a payload, or -1 when the payload is too short. */
export function payloadU32(payload: Uint8Array, i: number): number {
  if (payload.length < 4 * (i + 1)) return -1;
  return new DataView(payload.buffer, payload.byteOffset).getUint32(4 * i, true);
}

const MAX_FRAME = 4096;
const CMSG_SPACE_ONE_FD = 24; // CMSG_SPACE(sizeof(int)) on x86-64
const CMSG_LEN_ONE_FD = 20;

/** Credentials of the process on the other end, from SO_PEERCRED. */
export interface PeerCred {
  /** Peer process id. */
  readonly pid: number;
  /** Peer user id. */
  readonly uid: number;
  /** Peer group id. */
  readonly gid: number;
}

/** A received frame. `fd` is -1 unless a descriptor came with it (the receiver owns it). */
export interface Frame {
  /** MSG_* type. */
  readonly type: number;
  /** Payload bytes. */
  readonly payload: Uint8Array;
  /** Descriptor passed with SCM_RIGHTS, or -1. */
  readonly fd: number;
}

function address(buf: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buf)));
}

function sockaddrUn(path: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length >= 108) throw new Error(`socket path too long: ${path}`);
  const sa = new Uint8Array(128); // >64 bytes: off-heap, so its address is stable
  new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
  sa.set(bytes, 2);
  return sa;
}

/** The buffers of one sendmsg or recvmsg (off the V8 heap, so pointers to them stay valid). */
class MsgBuffers {
  readonly msghdr = new Uint8Array(128);
  readonly iov = new Uint8Array(128);
  readonly cmsg = new Uint8Array(128);
  readonly frame = new Uint8Array(MAX_FRAME + 5);

  /** Points the msghdr at `frame[dataOffset..+len]` and, if `controlLen`, at `cmsg`. */
  prepare(dataOffset: number, len: number, controlLen: number): void {
    const h = new DataView(this.msghdr.buffer);
    const iov = new DataView(this.iov.buffer);
    this.msghdr.fill(0);
    iov.setBigUint64(0, address(this.frame) + BigInt(dataOffset), true);
    iov.setBigUint64(8, BigInt(len), true);
    h.setBigUint64(16, address(this.iov), true);
    h.setBigUint64(24, 1n, true);
    if (controlLen > 0) {
      h.setBigUint64(32, address(this.cmsg), true);
      h.setBigUint64(40, BigInt(controlLen), true);
    }
  }
}

/**
 * One connected control socket, either end. Sending and receiving use buffers of their own, so
 * a frame may be sent while a receive is pending (a receive runs on another thread).
 */
export class ControlConn {
  private readonly out = new MsgBuffers();
  private readonly in = new MsgBuffers();

  /** `fd` is owned: `close()` closes it. */
  constructor(readonly fd: number, readonly peer: PeerCred) {}

  /**
   * Sends one frame, with `passFd` attached as SCM_RIGHTS when >= 0. With `wait` false it never
   * blocks: when the peer's queue is full it sends nothing and returns false (and throws if
   * that happens mid-frame: the stream is then unusable). A peer that does not read must not
   * be able to make the bridge wait.
   */
  send(type: number, payload: Uint8Array, passFd = -1, wait = true): boolean {
    if (payload.length > MAX_FRAME) throw new Error(`frame of ${payload.length} bytes too long`);
    const b = this.out;
    const total = 5 + payload.length;
    const v = new DataView(b.frame.buffer);
    v.setUint32(0, 1 + payload.length, true);
    b.frame[4] = type;
    b.frame.set(payload, 5);
    let sent = 0;
    while (sent < total) {
      const withFd = sent === 0 && passFd >= 0;
      b.prepare(sent, total - sent, withFd ? CMSG_SPACE_ONE_FD : 0);
      if (withFd) {
        const c = new DataView(b.cmsg.buffer);
        b.cmsg.fill(0);
        c.setBigUint64(0, BigInt(CMSG_LEN_ONE_FD), true);
        c.setInt32(8, SOL_SOCKET, true);
        c.setInt32(12, SCM_RIGHTS, true);
        c.setInt32(16, passFd, true);
      }
      const flags = wait ? MSG_NOSIGNAL : MSG_NOSIGNAL | MSG_DONTWAIT;
      const n = Number(libc().sendmsg(this.fd, b.msghdr, flags));
      if (n <= 0) {
        const err = errno();
        if (!wait && sent === 0 && err === EAGAIN) return false;
        throw libcError("sendmsg", err);
      }
      sent += n;
    }
    return true;
  }

  /** Receives exactly `len` bytes at `in.frame[offset..]`; returns a passed fd or -1. */
  private async recvExact(offset: number, len: number): Promise<number> {
    const b = this.in;
    let fd = -1;
    let got = 0;
    while (got < len) {
      b.prepare(offset + got, len - got, CMSG_SPACE_ONE_FD);
      b.cmsg.fill(0);
      const n = Number(await libc().recvmsgAsync(this.fd, b.msghdr, MSG_CMSG_CLOEXEC));
      if (n < 0) throw new Error("recvmsg failed on the control socket");
      if (n === 0) throw new Error("control socket closed by the peer");
      const h = new DataView(b.msghdr.buffer);
      const c = new DataView(b.cmsg.buffer);
      if (
        h.getBigUint64(40, true) >= BigInt(CMSG_LEN_ONE_FD) &&
        c.getInt32(8, true) === SOL_SOCKET && c.getInt32(12, true) === SCM_RIGHTS
      ) {
        if (fd >= 0) libc().close(fd); // only one fd per frame is meaningful
        fd = c.getInt32(16, true);
      }
      got += n;
    }
    return fd;
  }

  /** Receives one frame; rejects frames longer than the protocol allows. */
  async recv(): Promise<Frame> {
    const frame = this.in.frame;
    let fd = await this.recvExact(0, 5);
    const len = new DataView(frame.buffer).getUint32(0, true);
    if (len < 1 || len > MAX_FRAME + 1) {
      if (fd >= 0) libc().close(fd);
      throw new Error(`bad control frame length ${len}`);
    }
    if (len > 1) {
      const more = await this.recvExact(5, len - 1);
      if (more >= 0) {
        if (fd >= 0) libc().close(fd);
        fd = more;
      }
    }
    return { type: frame[4], payload: frame.slice(5, 4 + len), fd };
  }

  /** Closes the socket. */
  close(): void {
    libc().close(this.fd);
  }
}

function peerCred(fd: number): PeerCred {
  const cred = new Uint8Array(128);
  const len = new Uint8Array(128);
  new DataView(len.buffer).setUint32(0, 12, true);
  if (libc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, len) !== 0) {
    throw libcError("getsockopt(SO_PEERCRED)");
  }
  const v = new DataView(cred.buffer);
  return { pid: v.getInt32(0, true), uid: v.getUint32(4, true), gid: v.getUint32(8, true) };
}

/** A listening control socket at a filesystem path. */
export class ControlListener {
  private constructor(readonly path: string, readonly fd: number) {}

  /** Binds and listens at `path`, replacing a stale socket file. */
  static listen(path: string): ControlListener {
    const c = libc();
    c.unlink(cString(path));
    const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw libcError("socket(AF_UNIX)");
    if (c.bind(fd, sockaddrUn(path), 110) !== 0 || c.listen(fd, 64) !== 0) {
      const err = libcError(`bind/listen(${path})`);
      c.close(fd);
      throw err;
    }
    return new ControlListener(path, fd);
  }

  /** Waits for a client without blocking the event loop; returns it with its credentials. */
  async accept(): Promise<ControlConn> {
    const fd = await libc().acceptAsync(this.fd, null, null);
    if (fd < 0) throw new Error(`accept on ${this.path} failed`);
    return new ControlConn(fd, peerCred(fd));
  }

  /** Closes the socket and removes its path. */
  close(): void {
    libc().close(this.fd);
    libc().unlink(cString(this.path));
  }
}

/** Connects to a control socket at `path`. */
export function connectControl(path: string): ControlConn {
  const c = libc();
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw libcError("socket(AF_UNIX)");
  if (c.connect(fd, sockaddrUn(path), 110) !== 0) {
    const err = libcError(`connect(${path})`);
    c.close(fd);
    throw err;
  }
  return new ControlConn(fd, peerCred(fd));
}

/**
 * Serves one client on `conn`: reads its HELLO and answers with the region (fd attached) or an
 * ERROR frame. `admit` may refuse a peer by its credentials, returning the reason. Returns null
 * on success, else the reason sent to the client.
 */
export async function serveRegion(
  conn: ControlConn,
  region: Region,
  admit: (peer: PeerCred) => string | null = () => null,
  regionId = 0,
): Promise<string | null> {
  const hello = await conn.recv();
  if (hello.fd >= 0) libc().close(hello.fd);
  const parsed = parseHello(hello);
  const refusal = typeof parsed === "string" ? parsed : admit(conn.peer);
  if (refusal !== null) {
    conn.send(MSG_ERROR, new TextEncoder().encode(refusal));
    return refusal;
  }
  sendRegion(conn, region, regionId, true);
  return null;
}

/** Sends REGION for `region` (with its fd unless the peer has it mapped already). */
export function sendRegion(conn: ControlConn, region: Region, regionId: number, withFd: boolean) {
  const payload = new Uint8Array(16);
  const v = new DataView(payload.buffer);
  v.setUint32(0, LAYOUT_VERSION, true);
  v.setUint32(4, regionId, true);
  v.setBigUint64(8, BigInt(region.size), true);
  conn.send(MSG_REGION, payload, withFd ? region.fd : -1);
}

/** A parsed HELLO. */
export interface Hello {
  /** Layout version the client speaks. */
  readonly version: number;
  /** HELLO_* flags. */
  readonly flags: number;
  /** Region to join (with HELLO_JOIN). */
  readonly regionId: number;
}

/** Parses a HELLO frame, or returns why it is not one. */
export function parseHello(frame: Frame): Hello | string {
  if (frame.type !== MSG_HELLO || frame.payload.length < 8) {
    return `expected HELLO, got frame type ${frame.type}`;
  }
  const v = new DataView(frame.payload.buffer, frame.payload.byteOffset);
  const version = v.getUint32(0, true);
  if (version !== LAYOUT_VERSION) {
    return `layout version ${version} not supported: this side speaks ${LAYOUT_VERSION}`;
  }
  const flags = v.getUint32(4, true);
  const regionId = frame.payload.length >= 12 ? v.getUint32(8, true) : 0;
  return { version, flags, regionId };
}

/** What `requestRegion` returns: the region fd (caller owns it; map it with mapRegionFd). */
export interface RegionGrant {
  /** The region's memfd. */
  readonly fd: number;
  /** Bytes in the region. */
  readonly totalSize: number;
  /** The bridge's id of the region. */
  readonly regionId: number;
  /** Credentials of the server that granted it. */
  readonly server: PeerCred;
}

/**
 * Connects to `path`, says HELLO with `version`, and returns the granted region fd; throws
 * with the server's reason on refusal.
 */
export async function requestRegion(path: string, version = LAYOUT_VERSION): Promise<RegionGrant> {
  const conn = connectControl(path);
  try {
    const hello = new Uint8Array(12);
    new DataView(hello.buffer).setUint32(0, version, true);
    conn.send(MSG_HELLO, hello);
    const reply = await conn.recv();
    if (reply.type === MSG_ERROR) {
      if (reply.fd >= 0) libc().close(reply.fd);
      throw new Error(`region refused: ${new TextDecoder().decode(reply.payload)}`);
    }
    if (reply.type !== MSG_REGION || reply.fd < 0 || reply.payload.length < 16) {
      if (reply.fd >= 0) libc().close(reply.fd);
      throw new Error(`bad reply from ${path}: type ${reply.type}`);
    }
    const v = new DataView(reply.payload.buffer);
    return {
      fd: reply.fd,
      regionId: v.getUint32(4, true),
      totalSize: Number(v.getBigUint64(8, true)),
      server: conn.peer,
    };
  } finally {
    conn.close();
  }
}
