/**
 * The typed dlopen table of the libc calls PnO needs and Deno does not expose: shared memory
 * (memfd, seals, mmap) and Unix sockets with SCM_RIGHTS and SO_PEERCRED. Linux x86-64 only.
 *
 * Blocking calls (accept, recvmsg, poll) also come in `*Async` variants that run on a
 * worker thread so the event loop keeps turning while a peer is slow or a side sleeps. eventfd,
 * read and write serve the wakeups (packages/rings/waker.ts).
 *
 * @module
 */

const libcSymbols = {
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  malloc_trim: { parameters: ["usize"], result: "i32" },
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // fcntl is variadic; called with exactly one int argument it matches this signature on x86-64.
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  fstat_size: { name: "lseek", parameters: ["i32", "i64", "i32"], result: "i64" },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  accept: { parameters: ["i32", "pointer", "pointer"], result: "i32" },
  acceptAsync: {
    name: "accept",
    parameters: ["i32", "pointer", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  recvmsgAsync: {
    name: "recvmsg",
    parameters: ["i32", "buffer", "i32"],
    result: "isize",
    nonblocking: true,
  },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  unlink: { parameters: ["buffer"], result: "i32" },
  getpid: { parameters: [], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  kill: { parameters: ["i32", "i32"], result: "i32" },
  fallocate: { parameters: ["i32", "i32", "i64", "i64"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  pollAsync: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // syscall(2) is variadic and reads longs: three i64 arguments match it on x86-64.
  syscall: { parameters: ["i64", "i64", "i64"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The libc symbols, typed. */
export type Libc = Deno.DynamicLibrary<typeof libcSymbols>["symbols"];

let lib: Libc | null = null;

/** Opens libc.so.6 once and returns its typed symbols. */
export function libc(): Libc {
  if (lib === null) lib = Deno.dlopen("libc.so.6", libcSymbols).symbols;
  return lib;
}

/** The calling thread's errno (valid right after a failed call on the same thread). */
export function errno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : new Deno.UnsafePointerView(p).getInt32(0);
}

/** An Error naming the failed call, with errno and its text. */
export function libcError(call: string, err = errno()): Error {
  const msg = libc().strerror(err);
  const text = msg === null ? "" : Deno.UnsafePointerView.getCString(msg);
  return new Error(`${call} failed: errno ${err} (${text})`);
}

/** A NUL-terminated C string in a fresh buffer. */
export function cString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** Linux constants used with these calls. */
export const MFD_CLOEXEC = 1;
/** memfd_create flag: allow F_ADD_SEALS. */
export const MFD_ALLOW_SEALING = 2;
/** fcntl command: add seals. */
export const F_ADD_SEALS = 1033;
/** fcntl command: read seals. */
export const F_GET_SEALS = 1034;
/** Seal: the file may not shrink. */
export const F_SEAL_SHRINK = 2;
/** Seal: the file may not grow. */
export const F_SEAL_GROW = 4;
/** mmap protection: read. */
export const PROT_READ = 1;
/** mmap protection: write. */
export const PROT_WRITE = 2;
/** mmap flag: shared mapping. */
export const MAP_SHARED = 1;
/** open flag: read and write. */
export const O_RDWR = 2;
/** open flag: close on exec. */
export const O_CLOEXEC = 0o2000000;
/** lseek whence: end of file. */
export const SEEK_END = 2;
/** Address family: Unix sockets. */
export const AF_UNIX = 1;
/** Socket type: stream. */
export const SOCK_STREAM = 1;
/** Datagram sockets (a waiter's wake socket pair). */
export const SOCK_DGRAM = 2;
/** socket()/socketpair() type flag: non-blocking. */
export const SOCK_NONBLOCK = 0o4000;
/** socket() type flag: close on exec. */
export const SOCK_CLOEXEC = 0o2000000;
/** Socket level. */
export const SOL_SOCKET = 1;
/** Control message type: pass file descriptors. */
export const SCM_RIGHTS = 1;
/** Socket option: credentials of the peer. */
export const SO_PEERCRED = 17;
/** recvmsg flag: close received fds on exec. */
export const MSG_CMSG_CLOEXEC = 0x40000000;
/** send flag: no SIGPIPE. */
export const MSG_NOSIGNAL = 0x4000;
/** eventfd flag: non-blocking. */
export const EFD_NONBLOCK = 0o4000;
/** eventfd flag: close on exec. */
export const EFD_CLOEXEC = 0o2000000;
/** fcntl command: read the file status flags. */
export const F_GETFL = 3;
/** fcntl command: set the file status flags. */
export const F_SETFL = 4;
/** open/fcntl flag: non-blocking. */
export const O_NONBLOCK = 0o4000;
/** poll event: readable. */
export const POLLIN = 1;
/** send(): do not block, whatever the file's flags (the fd's owner cannot make us wait). */
export const MSG_DONTWAIT = 0x40;
/** fallocate(): give the range's pages back (with FALLOC_FL_KEEP_SIZE). */
export const FALLOC_FL_PUNCH_HOLE = 2;
/** fallocate(): keep the file's size. */
export const FALLOC_FL_KEEP_SIZE = 1;
/** syscall number of pidfd_open(2) on x86-64 (Linux 5.3). */
export const SYS_PIDFD_OPEN = 434;
