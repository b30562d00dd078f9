/**
 * Process exits seen through pidfds (pidfd_open(2), Linux 5.3): a pidfd turns readable when
 * its process exits, whoever its parent is, and it names that process and no later one that
 * reuses the pid. One poll(2) on a blocking thread waits for all of them at once, with an
 * eventfd beside them to bring it back when the set changes.
 *
 * @example
 * ```ts ignore
 * import { ProcessWatcher } from "./pidfd.ts";
 * const watcher = new ProcessWatcher((pid) => console.log(`${pid} exited`));
 * const child = new Deno.Command("sleep", { args: ["0.1"] }).spawn();
 * watcher.watch(child.pid);
 * await child.status; // "... exited" is printed
 * watcher.close();
 * ```
 * @module
 */
import { errno, libc, libcError, POLLIN, SYS_PIDFD_OPEN } from "../../ffi/libc.ts";
import { Waker } from "@pno/rings";

const ESRCH = 3;

/** A pidfd for `pid` (always close-on-exec), or null if there is no such process. */
export function pidfdOpen(pid: number): number | null {
  const fd = Number(libc().syscall(BigInt(SYS_PIDFD_OPEN), BigInt(pid), 0n));
  if (fd >= 0) return fd;
  const err = errno();
  if (err === ESRCH) return null;
  throw libcError(`pidfd_open(${pid})`, err);
}

/** Watches processes; calls `onExit(pid)` once for each watched process that exits. */
export class ProcessWatcher {
  private readonly fds = new Map<number, number>();
  /** Pidfds no longer watched, closed once no poll holds them. */
  private retired: number[] = [];
  private readonly waker = Waker.create();
  private closed = false;
  private readonly loop: Promise<void>;

  constructor(private readonly onExit: (pid: number) => void) {
    this.loop = this.run();
  }

  /** Pids watched now. */
  get size(): number {
    return this.fds.size;
  }

  /** True if `pid` is watched. */
  has(pid: number): boolean {
    return this.fds.has(pid);
  }

  /**
   * Starts watching `pid`. Returns false if it does not exist (already gone); `onExit` is
   * then not called for it.
   */
  watch(pid: number): boolean {
    if (this.closed) throw new Error("watcher closed");
    if (this.fds.has(pid)) return true;
    const fd = pidfdOpen(pid);
    if (fd === null) return false;
    this.fds.set(pid, fd);
    this.waker.kick();
    return true;
  }

  /** Stops watching `pid` (no call for it). */
  unwatch(pid: number): void {
    const fd = this.fds.get(pid);
    if (fd === undefined) return;
    this.fds.delete(pid);
    // Closed by the loop once the poll that may hold it has returned.
    this.retired.push(fd);
    this.waker.kick();
  }

  /** Stops watching everything. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.waker.kick();
    await this.loop;
    for (const fd of this.fds.values()) libc().close(fd);
    this.fds.clear();
    this.waker.close();
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      for (const fd of this.retired) libc().close(fd);
      this.retired = [];
      const watched = [...this.fds];
      // pollfd[]: {int fd; short events; short revents}; more than 64 bytes, so off the V8
      // heap (the poll runs on another thread).
      const pollfds = new Uint8Array(Math.max(128, 8 * (watched.length + 1)));
      const v = new DataView(pollfds.buffer);
      v.setInt32(0, this.waker.fd, true);
      v.setInt16(4, POLLIN, true);
      watched.forEach(([, fd], i) => {
        v.setInt32(8 * (i + 1), fd, true);
        v.setInt16(8 * (i + 1) + 4, POLLIN, true);
      });
      const n = await libc().pollAsync(pollfds, BigInt(watched.length + 1), -1);
      if (n < 0) {
        // EINTR: poll again. Anything else would repeat: back off instead of spinning.
        await new Promise((r) => setTimeout(r, 100));
        continue;
      }
      if (v.getInt16(6, true) !== 0) libc().read(this.waker.fd, new Uint8Array(128), 8n);
      watched.forEach(([pid, fd], i) => {
        if (v.getInt16(8 * (i + 1) + 6, true) === 0 || this.fds.get(pid) !== fd) return;
        this.fds.delete(pid);
        libc().close(fd);
        if (!this.closed) this.onExit(pid);
      });
    }
  }
}
