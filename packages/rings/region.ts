/**
 * Region lifecycle: create a region (memfd, sized, sealed against shrinking and growing, mapped
 * shared) or map one from a file descriptor, and unmap it. Through libc FFI (ffi/libc.ts), so
 * it needs `--unstable-ffi` and Linux.
 *
 * The seals matter: once sealed, no process holding the fd can shrink the file under a peer's
 * mapping (which would turn loads into SIGBUS), so a mapped region stays fully backed.
 *
 * @example
 * ```ts ignore
 * import { closeRegion, createRegion } from "./region.ts";
 * const region = createRegion({ maxThreads: 1, maxWaiters: 1, maxProcs: 1, maxSockets: 4,
 *   cmdSlots: 64, cplSlots: 64, evSlots: 64, txBytes: 4096, rxBytes: 4096 });
 * // hand region.fd to a peer (control.ts), build rings with attach.ts, then:
 * closeRegion(region);
 * ```
 * @module
 */

import {
  cString,
  F_ADD_SEALS,
  F_SEAL_GROW,
  F_SEAL_SHRINK,
  libc,
  libcError,
  MAP_SHARED,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  O_CLOEXEC,
  O_RDWR,
  PROT_READ,
  PROT_WRITE,
  SEEK_END,
} from "../../ffi/libc.ts";
import {
  computeLayout,
  readRegionHeader,
  type RegionIdentity,
  type RegionLayout,
  type RegionParams,
  writeRegionHeader,
} from "./layout.ts";
import { registerNativeMemory } from "./_native.ts";

/** A mapped region. `buffer` views the shared mapping; it is invalid after `closeRegion`. */
export interface Region {
  /** The memfd (owned: `closeRegion` closes it). */
  readonly fd: number;
  /** Bytes mapped. */
  readonly size: number;
  /** Start of the mapping. */
  readonly ptr: Deno.PointerObject;
  /** The mapping as an ArrayBuffer (Atomics work on views of it, across processes). */
  readonly buffer: ArrayBuffer;
  /** Offsets, from the header. */
  readonly layout: RegionLayout;
}

/** A raw shared mapping of a whole file, no header checks (for the DMA module and tests). */
export interface Mapping {
  /** The file descriptor (owned by the caller). */
  readonly fd: number;
  /** Bytes mapped. */
  readonly size: number;
  /** Start of the mapping. */
  readonly ptr: Deno.PointerObject;
  /** The mapping as an ArrayBuffer. */
  readonly buffer: ArrayBuffer;
}

const MAP_FAILED = 0xffffffffffffffffn;

/** Maps all of `fd` shared read-write; throws with errno on failure. Does not take the fd. */
export function mapFd(fd: number): Mapping {
  const c = libc();
  const end = c.fstat_size(fd, 0n, SEEK_END);
  if (end <= 0n) throw libcError(`lseek(fd ${fd})`);
  const size = Number(end);
  const ptr = c.mmap(null, BigInt(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n);
  if (ptr === null || Deno.UnsafePointer.value(ptr) === MAP_FAILED) throw libcError("mmap");
  const buffer = Deno.UnsafePointerView.getArrayBuffer(ptr, size);
  registerNativeMemory(buffer, ptr); // ring copies to and from other native memory use memcpy
  return { fd, size, ptr, buffer };
}

/** Unmaps a mapping made by `mapFd` (the fd stays open). */
export function unmap(m: Mapping): void {
  if (libc().munmap(m.ptr, BigInt(m.size)) !== 0) throw libcError("munmap");
}

/** Creates, sizes, seals, maps and initializes a region for `params`. */
export function createRegion(
  params: RegionParams,
  name = "pno-region",
  identity?: RegionIdentity,
): Region {
  const layout = computeLayout(params);
  const c = libc();
  const fd = c.memfd_create(cString(name), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw libcError("memfd_create");
  try {
    if (c.ftruncate(fd, BigInt(layout.totalSize)) !== 0) throw libcError("ftruncate");
    if (c.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) !== 0) {
      throw libcError("fcntl(F_ADD_SEALS)");
    }
    const m = mapFd(fd);
    writeRegionHeader(m.buffer, layout, identity);
    return { ...m, layout };
  } catch (e) {
    c.close(fd);
    throw e;
  }
}

/**
 * Maps an existing region from `fd` (received over the control socket) and validates its
 * header; takes ownership of `fd` (closed on failure too). Throws with the header's error
 * string (bad magic, version mismatch, torn header).
 */
export function mapRegionFd(fd: number): Region {
  let m: Mapping;
  try {
    m = mapFd(fd);
  } catch (e) {
    libc().close(fd);
    throw e;
  }
  const layout = readRegionHeader(m.buffer, m.size);
  if (typeof layout === "string") {
    unmap(m);
    libc().close(fd);
    throw new Error(`region rejected: ${layout}`);
  }
  return { ...m, layout };
}

/** Opens a region by path (e.g. `/proc/<pid>/fd/<n>`) and maps it as `mapRegionFd` does. */
export function openRegionPath(path: string): Region {
  const fd = libc().open(cString(path), O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) throw libcError(`open(${path})`);
  return mapRegionFd(fd);
}

/** Unmaps a region and closes its fd. Views of `region.buffer` must not be used afterwards. */
export function closeRegion(region: Region): void {
  unmap(region);
  libc().close(region.fd);
}

/** The memfd name of region `id`: what /proc/PID/maps of every process mapping it shows. */
export function regionName(id: number): string {
  return `pno-region-${id}`;
}

/**
 * True if process `pid` maps the region named `name` (its /proc/PID/maps lists the memfd):
 * how a process that says it belongs to an application (a forked child) is believed.
 */
export function processMapsRegion(pid: number, name: string): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/maps`).includes(`/memfd:${name} `);
  } catch {
    return false;
  }
}
