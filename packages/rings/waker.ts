/**
 * Wakeups across the region: a side that has nothing to do parks on its own eventfd instead of
 * a timer, and the other side kicks it only when it said it was parking.
 *
 * Each doorbell line (layout.ts) has a `sleeping` word. The parking side stores 1 there, then
 * looks at its rings once more, and only if they are still empty blocks on its eventfd (with a
 * timeout, so a lost or refused kick costs at most that). The publishing side stores its ring
 * index, then reads `sleeping`; if it was set it swaps it to 0 and writes the parker's eventfd.
 * Both use sequentially consistent Atomics, so one of them always sees the other: either the
 * parker sees the new entries, or the publisher sees the flag. While both sides are busy no
 * syscall is made at all.
 *
 * The eventfds travel over the control socket (control.ts MSG_WAKER). An fd received from the
 * other side is untrusted: `checkEventFd` accepts only an eventfd and makes it non-blocking, so
 * a write can never block the bridge.
 *
 * @example
 * ```ts ignore
 * import { Waker } from "./waker.ts";
 * const w = Waker.create();
 * setTimeout(() => w.kick(), 5);
 * await w.wait(1000); // returns after about 5 ms
 * w.close();
 * ```
 * @module
 */
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  F_GETFL,
  F_SETFL,
  libc,
  libcError,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  O_NONBLOCK,
  POLLIN,
} from "../../ffi/libc.ts";

// Buffers of more than 64 bytes live off the V8 heap: their addresses stay valid while a
// nonblocking call runs on another thread.
const ONE = new Uint8Array(128);
new DataView(ONE.buffer).setBigUint64(0, 1n, true);

/** Writes 1 to the eventfd `fd` (non-blocking; a saturated counter is already a kick). */
export function kickFd(fd: number): void {
  libc().write(fd, ONE, 8n);
}

const WAKE_BYTE = new Uint8Array(128);

/**
 * Wakes a waiter through its wake socket: one datagram, sent with MSG_DONTWAIT so that nothing
 * the socket's owner does (a full queue, O_NONBLOCK cleared on the shared file) can make the
 * sender wait. A full queue already holds a wakeup; a closed peer is the owner's problem.
 * Returns true if the datagram went out.
 */
export function kickSocket(fd: number): boolean {
  return Number(libc().send(fd, WAKE_BYTE, 1n, MSG_DONTWAIT | MSG_NOSIGNAL)) === 1;
}

/** Accepts `fd` (received from an application) only if it is a socket: see kickSocket. */
export function checkWakeSocket(fd: number): string | null {
  let target: string;
  try {
    target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch (err) {
    return `fd ${fd}: ${(err as Error).message}`;
  }
  return target.startsWith("socket:") ? null : `fd ${fd} is ${target}, not a socket`;
}

/**
 * Accepts `fd` (received from the other side) only if it is an eventfd, and makes it
 * non-blocking. Returns null if accepted, else the reason; the caller closes a refused fd.
 */
export function checkEventFd(fd: number): string | null {
  let target: string;
  try {
    target = Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch (err) {
    return `fd ${fd}: ${(err as Error).message}`;
  }
  if (target !== "anon_inode:[eventfd]") return `fd ${fd} is ${target}, not an eventfd`;
  const c = libc();
  const flags = c.fcntl(fd, F_GETFL, 0);
  if (flags < 0 || c.fcntl(fd, F_SETFL, flags | O_NONBLOCK) !== 0) return `fcntl on fd ${fd}`;
  return null;
}

/** One side's own eventfd: it waits on it; the other side (or itself, to stop) kicks it. */
export class Waker {
  private readonly pollfd = new Uint8Array(128);
  private readonly drain = new Uint8Array(128);
  /** Waits that ended by a kick (not by their timeout). */
  kicked = 0;
  /** Waits started. */
  waits = 0;

  private constructor(readonly fd: number) {
    const v = new DataView(this.pollfd.buffer);
    v.setInt32(0, fd, true);
    v.setInt16(4, POLLIN, true);
  }

  /** A fresh non-blocking eventfd. */
  static create(): Waker {
    const fd = libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0) throw libcError("eventfd");
    return new Waker(fd);
  }

  /**
   * Blocks (on a worker thread; the event loop keeps turning) until kicked or `ms` elapse,
   * then clears the counter. Resolves true if it was kicked.
   */
  async wait(ms: number): Promise<boolean> {
    this.waits++;
    const r = await libc().pollAsync(this.pollfd, 1n, Math.max(0, Math.ceil(ms)));
    if (r <= 0) return false;
    libc().read(this.fd, this.drain, 8n);
    this.kicked++;
    return true;
  }

  /** Wakes a pending or the next `wait`. */
  kick(): void {
    kickFd(this.fd);
  }

  /** Closes the eventfd (no wait may be pending). */
  close(): void {
    libc().close(this.fd);
  }
}
