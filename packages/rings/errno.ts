/**
 * Linux errno values, the one table PnO spells them in. The rings carry them negated in
 * completion results (`-ECONNREFUSED`) and positive in socket state (`err`), as the kernel
 * does in its own return values and in `sk_err`.
 *
 * @module
 */

/** Operation not permitted. */
export const EPERM = 1;
/** Bad file descriptor (or a socket id that is not open). */
export const EBADF = 9;
/** Try again: nothing to read, no room to write, no connection to accept. */
export const EAGAIN = 11;
/** Out of memory. */
export const ENOMEM = 12;
/** Invalid argument. */
export const EINVAL = 22;
/** Too many open files (the region's socket table is full). */
export const EMFILE = 24;
/** Broken pipe. */
export const EPIPE = 32;
/** Operation not supported. */
export const EOPNOTSUPP = 95;
/** Address in use. */
export const EADDRINUSE = 98;
/** Address not available. */
export const EADDRNOTAVAIL = 99;
/** Network unreachable. */
export const ENETUNREACH = 101;
/** Connection aborted. */
export const ECONNABORTED = 103;
/** Connection reset by peer. */
export const ECONNRESET = 104;
/** No buffer space. */
export const ENOBUFS = 105;
/** Already connected. */
export const EISCONN = 106;
/** Not connected. */
export const ENOTCONN = 107;
/** Connection timed out. */
export const ETIMEDOUT = 110;
/** Connection refused. */
export const ECONNREFUSED = 111;
/** Host unreachable. */
export const EHOSTUNREACH = 113;
/** Connection already in progress. */
export const EALREADY = 114;
/** Operation now in progress. */
export const EINPROGRESS = 115;
