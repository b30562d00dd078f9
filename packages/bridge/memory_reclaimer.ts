/**
 * Gives memory back to the system after connections go away.
 *
 * Each connection's buffers are ArrayBuffers that V8 frees only when it collects their
 * sockets, and that glibc keeps in its free lists after that: a bridge that served 5,000
 * connections kept about 1.2 GiB resident with none left (measured: 155 MiB before, 1,497 MiB
 * after). When the number of live connections has fallen far from its peak and the loop is
 * idle, this collects garbage (when the process runs with `--v8-flags=--expose-gc`; V8 would
 * otherwise wait for allocation pressure that an idle bridge never creates) and calls
 * `malloc_trim(0)`, which returns free heap pages to the kernel. The same when connections that
 * went quiet let their rings' memory go (tcp/autotune.ts). Never on the data path: at most once
 * a second, and only after a drop.
 *
 * @module
 */
import { libc } from "../../ffi/libc.ts";

/** Reclaims when this many connections have gone since the last peak. */
const DROP = 256;
/** Or when quiet connections' ring memory this large was let go (tcp/autotune.ts). */
const RELEASED_BYTES = 16 << 20;
const MIN_INTERVAL_MS = 1000;

/** V8 frees collected ArrayBuffers' memory on a background thread: trim a little later. */
const TRIM_AFTER_GC_MS = 200;

export class MemoryReclaimer {
  private peak = 0;
  private last = 0;
  private trimAt = 0;
  /** Ring memory let go since the last collection. */
  private releasedBytes = 0;
  /** Times memory was reclaimed. */
  reclaims = 0;

  /** Call when the loop is idle, with the live connection count. */
  idle(connections: number, nowMs: number): void {
    if (this.trimAt !== 0 && nowMs >= this.trimAt) {
      this.trimAt = 0;
      libc().malloc_trim(0n);
      this.reclaims++;
    }
    if (connections > this.peak) this.peak = connections;
    if (this.peak - connections < DROP || nowMs - this.last < MIN_INTERVAL_MS) return;
    this.peak = connections;
    this.collect(nowMs);
  }

  /**
   * Call when the loop is idle with the bytes of ring memory just let go (the backing arrays
   * of connections gone quiet): enough of it is reclaimed as dropped connections are.
   */
  released(bytes: number, nowMs: number): void {
    this.releasedBytes += bytes;
    if (this.releasedBytes < RELEASED_BYTES || nowMs - this.last < MIN_INTERVAL_MS) return;
    this.collect(nowMs);
  }

  private collect(nowMs: number): void {
    this.last = nowMs;
    this.releasedBytes = 0;
    (globalThis as { gc?: () => void }).gc?.();
    this.trimAt = nowMs + TRIM_AFTER_GC_MS;
  }
}
