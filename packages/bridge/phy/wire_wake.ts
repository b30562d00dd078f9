/**
 * Waking the bridge on the wire: what an RX interrupt is to a NIC driver's poll loop (NAPI,
 * DPDK's rx-interrupt mode). net_af_packet has no RX interrupt, so a second AF_PACKET socket on
 * the port's interface (ffi/dp/pno_dp.c) serves as one: disarmed while the loop polls (its
 * filter drops every frame in the kernel), armed just before the loop sleeps, when the first
 * frame to arrive makes it readable and ends the sleep.
 *
 * A frame that arrived after the loop's last empty round but before `arm()` wakes nobody: the
 * loop runs one more round after arming (poll_loop.ts), which finds it.
 *
 * net_af_xdp needs none of this: its queue's AF_XDP socket is readable exactly while its RX
 * ring holds a frame, so `wait` polls that socket and arming costs nothing (`onXsk`).
 *
 * @module
 */
import { dpLastError, type DpLibrary } from "../../../ffi/dp.ts";
import { libc } from "../../../ffi/libc.ts";

export class WireWake {
  private armed = false;
  /** Disarmed by the loop, filter not yet put back (see `disarm`). */
  private disarmPending = false;

  private constructor(
    private readonly dp: DpLibrary,
    readonly fd: number,
    /** The fd is DPDK's AF_XDP socket: level-triggered by its RX ring, and not ours to close. */
    readonly xsk: boolean,
  ) {}

  /** Opens the wake socket on `iface` (the interface DPDK drives through net_af_packet). */
  static open(dp: DpLibrary, iface: string): WireWake {
    const fd = dp.pno_dp_wake_open(new TextEncoder().encode(`${iface}\0`));
    if (fd < 0) throw new Error(dpLastError(dp));
    return new WireWake(dp, fd, false);
  }

  /** Waits on the AF_XDP socket net_af_xdp opened for `queue`. */
  static onXsk(dp: DpLibrary, queue: number): WireWake {
    const fd = dp.pno_dp_rx_wake_fd(queue);
    if (fd < 0) throw new Error(dpLastError(dp));
    return new WireWake(dp, fd, true);
  }

  /** From now on a frame on the wire ends `wait`. */
  arm(): void {
    if (this.xsk) return;
    if (this.disarmPending) {
      // Still armed: only what queued since the last sleep goes.
      this.disarmPending = false;
      this.armed = true;
      this.dp.pno_dp_wake_drain(this.fd);
      return;
    }
    if (this.armed) return;
    if (this.dp.pno_dp_wake_arm(this.fd, 1) !== 0) throw new Error(dpLastError(this.dp));
    this.armed = true;
  }

  /**
   * Frames stop reaching the socket (the loop polls the port itself), once `settle` runs: the
   * filter's attach is a system call, and the reply to the frame that woke the loop should
   * not wait for it. Until then at most a socket buffer of frames (4 KiB) is queued; the
   * rest the kernel drops before copying.
   */
  disarm(): void {
    if (!this.armed) return;
    this.armed = false;
    this.disarmPending = true;
  }

  /** Puts the dropping filter back after a disarm (called after the round's work is sent). */
  settle(): void {
    if (!this.disarmPending) return;
    this.disarmPending = false;
    if (this.dp.pno_dp_wake_arm(this.fd, 0) !== 0) throw new Error(dpLastError(this.dp));
  }

  /**
   * Sleeps (on a thread of Deno's pool) until a frame arrives, `eventFd` is written, or `ms`
   * pass; resolves with DP_WOKE_WIRE | DP_WOKE_KICK bits, 0 on timeout.
   */
  async wait(eventFd: number, ms: number): Promise<number> {
    const why = await this.dp.pno_dp_wait(this.fd, eventFd, Math.max(0, Math.ceil(ms)));
    return why < 0 ? 0 : why;
  }

  /** As `wait`, blocking this thread (see Parking.waitHere in poll_loop.ts). */
  waitHere(eventFd: number, ms: number): number {
    const why = this.dp.pno_dp_wait_here(this.fd, eventFd, Math.max(0, Math.ceil(ms)));
    return why < 0 ? 0 : why;
  }

  close(): void {
    if (!this.xsk) libc().close(this.fd);
  }
}
