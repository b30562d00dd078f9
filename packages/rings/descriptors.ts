/**
 * Descriptors of protocol v2, 64 bytes each, little-endian: commands (host to NIC, on a
 * thread's command ring), completions (NIC to host, on the same thread's completion ring) and
 * events (NIC to host, on a waiter's event queue).
 *
 * Every descriptor starts with the same 24-byte header: opcode (u16), flags (u16), socket slot
 * (u32, `SOCK_NONE` when there is none), the socket's generation (u32: a reused slot is never
 * mistaken for its predecessor), request id (u32, echoed by the completion) and result (i32: in
 * completions a value >= 0 or a negated Linux errno). The body layouts below are the one source
 * of truth: the constants, the C header (gen_header.ts) and its compile test come from them.
 *
 * Only commands that return something have a completion (bind, listen, connect, TCP_INFO).
 * Everything else (data doorbells, subscriptions, options, shutdown, close) is posted and
 * forgotten: the shim checks what it can locally, and the NIC applies the rest in order.
 *
 * Descriptors come from untrusted memory: the bridge copies each one out of the ring once and
 * validates the copy with `CommandChecker`, which rejects and counts unknown opcodes, ids out
 * of range and fields out of their domain, without allocating or throwing.
 *
 * @example
 * ```ts
 * import { CMD_LISTEN, CommandChecker, DESC_OK, LISTEN_BACKLOG, writeHeader } from "./descriptors.ts";
 * const v = new DataView(new ArrayBuffer(64));
 * writeHeader(v, 0, CMD_LISTEN, 3, 1, 42);
 * v.setInt32(LISTEN_BACKLOG, 128, true);
 * const checker = new CommandChecker(16, 4);
 * if (checker.check(v, 0) !== DESC_OK) throw new Error("rejected");
 * ```
 * @module
 */

import {
  checkStruct,
  type FieldSpec,
  offsetOf,
  type ScalarType,
  type StructSpec,
} from "./_schema.ts";
import { DESC_SIZE } from "./desc_ring.ts";

// ---- Header ----------------------------------------------------------------------------------

/** The header every descriptor starts with. */
export const DESC_HEADER: StructSpec = {
  name: "pno_desc_hdr",
  size: 24,
  align: 4,
  doc: "Header shared by every descriptor.",
  fields: [
    { name: "opcode", type: "u16", offset: 0, doc: "PNO_CMD_*, PNO_CPL_* or PNO_EV_*" },
    { name: "flags", type: "u16", offset: 2, doc: "per opcode, else zero" },
    { name: "sock", type: "u32", offset: 4, doc: "socket slot, PNO_SOCK_NONE if none" },
    { name: "gen", type: "u32", offset: 8, doc: "the socket's generation" },
    { name: "req_id", type: "u32", offset: 12, doc: "request id, echoed by the completion" },
    { name: "result", type: "i32", offset: 16, doc: "completion: value >= 0 or -errno" },
  ],
};

/** A socket address: IPv4 in the first 4 bytes of `addr`, IPv6 in all 16; port in host order. */
export const SOCKADDR: StructSpec = {
  name: "pno_sockaddr",
  size: 20,
  align: 2,
  doc: "Socket address: AF_INET or AF_INET6, port in host byte order, address in network order.",
  fields: [
    { name: "family", type: "u16", offset: 0, doc: "AF_INET (2) or AF_INET6 (10)" },
    { name: "port", type: "u16", offset: 2, doc: "port, host byte order" },
    { name: "addr", type: "u8", offset: 4, count: 16, doc: "IPv4 in bytes 0-3, or IPv6" },
  ],
};

/** Byte offsets of the header fields from a descriptor's start. */
export const DESC_OPCODE = 0;
/** Offset of the flags (u16). */
export const DESC_FLAGS = 2;
/** Offset of the socket slot (u32). */
export const DESC_SOCK = 4;
/** Offset of the socket generation (u32). */
export const DESC_GEN = 8;
/** Offset of the request id (u32). */
export const DESC_REQ_ID = 12;
/** Offset of the result (i32). */
export const DESC_RESULT = 16;
/** Offset of the first body byte. */
export const DESC_BODY = 24;
/** Socket slot meaning "no socket". */
export const SOCK_NONE = 0xffffffff;

/** Offsets inside a `pno_sockaddr`. */
export const SA_FAMILY = 0;
/** Offset of the port (u16, host order) in a sockaddr. */
export const SA_PORT = 2;
/** Offset of the 16 address bytes in a sockaddr. */
export const SA_ADDR = 4;
/** Size of a `pno_sockaddr`. */
export const SA_SIZE = 20;

/** Linux address families the rings carry. */
export const AF_INET = 2;
/** IPv6 address family. */
export const AF_INET6 = 10;

// ---- Opcodes ---------------------------------------------------------------------------------

/** bind(addr) of a new socket: CPL_SOCKET with its slot, generation and local address. */
export const CMD_BIND = 1;
/** listen(backlog) of a bound socket: CPL_RESULT. */
export const CMD_LISTEN = 2;
/** connect(addr), of a bound socket or a new one (SOCK_NONE): CPL_SOCKET. */
export const CMD_CONNECT = 3;
/** The last holder closed the socket (linger in the body). No completion. */
export const CMD_CLOSE = 4;
/** shutdown(how). No completion. */
export const CMD_SHUTDOWN = 5;
/** setsockopt of an option the NIC acts on. No completion. */
export const CMD_SETSOCKOPT = 6;
/** getsockopt(TCP_INFO): CPL_TCP_INFO. */
export const CMD_TCP_INFO = 7;
/** Doorbell: the TX ring has new bytes, or the host read what the NIC wanted to hear of. */
export const CMD_DATA = 8;
/** Subscribe a waiter to a socket's events (mask 0 removes it). No completion. */
export const CMD_SUBSCRIBE = 9;
/** A waiter is released: drop all its subscriptions. No completion. */
export const CMD_WAITER_RELEASE = 10;

/** Completion: a result. */
export const CPL_RESULT = 0x81;
/** Completion of bind/connect: slot and generation in the header, the local address. */
export const CPL_SOCKET = 0x82;
/** Completion of CMD_TCP_INFO. */
export const CPL_TCP_INFO = 0x83;
/** Event: a subscribed socket changed (edges in the body, Linux EPOLL* bits). */
export const EV_NOTIFY = 0xc1;

/** CMD_BIND/CMD_CONNECT option: SO_REUSEADDR was set. */
export const BIND_REUSEADDR = 1;
/** CMD_BIND/CMD_CONNECT option: SO_REUSEPORT was set. */
export const BIND_REUSEPORT = 2;

/** Subscription flag: edge-triggered (EPOLLET). */
export const SUB_ET = 1;
/** Subscription flag: one shot (EPOLLONESHOT). */
export const SUB_ONESHOT = 2;
/** Subscription flag: exclusive wakeup (EPOLLEXCLUSIVE). */
export const SUB_EXCLUSIVE = 4;

// ---- Readiness (Linux's EPOLL* values: the shim ORs them straight into epoll_event) ----------

/** Readable, or a connection to accept. */
export const EPOLLIN = 0x001;
/** Urgent data (never set: PnO has no urgent data). */
export const EPOLLPRI = 0x002;
/** Writable. */
export const EPOLLOUT = 0x004;
/** Error pending. */
export const EPOLLERR = 0x008;
/** Hung up: both directions shut, or the connection is gone. */
export const EPOLLHUP = 0x010;
/** The peer shut its sending side (FIN received). */
export const EPOLLRDHUP = 0x2000;

// ---- Socket options (Linux numbering) --------------------------------------------------------

/** Socket-level options. */
export const SOL_SOCKET = 1;
/** TCP-level options. */
export const IPPROTO_TCP = 6;
/** SO_REUSEADDR (boolean). */
export const SO_REUSEADDR = 2;
/** SO_ERROR (get only: pending error, cleared on read). */
export const SO_ERROR = 4;
/** SO_SNDBUF (bytes). */
export const SO_SNDBUF = 7;
/** SO_RCVBUF (bytes). */
export const SO_RCVBUF = 8;
/** SO_KEEPALIVE (boolean). */
export const SO_KEEPALIVE = 9;
/** SO_LINGER (value = l_onoff, value2 = l_linger seconds). */
export const SO_LINGER = 13;
/** SO_REUSEPORT (boolean). */
export const SO_REUSEPORT = 15;
/** TCP_NODELAY (boolean). */
export const TCP_NODELAY = 1;
/** TCP_MAXSEG (bytes). */
export const TCP_MAXSEG = 2;
/** TCP_CORK (boolean). */
export const TCP_CORK = 3;
/** TCP_KEEPIDLE (seconds). */
export const TCP_KEEPIDLE = 4;
/** TCP_KEEPINTVL (seconds). */
export const TCP_KEEPINTVL = 5;
/** TCP_KEEPCNT (probes). */
export const TCP_KEEPCNT = 6;
/** TCP_INFO (get only). */
export const TCP_INFO = 11;

/** Whether the NIC acts on (level, name) when the shim forwards a setsockopt. */
export function isForwardedSockopt(level: number, name: number): boolean {
  if (level === IPPROTO_TCP) {
    return name === TCP_NODELAY || name === TCP_CORK || name === TCP_KEEPIDLE ||
      name === TCP_KEEPINTVL || name === TCP_KEEPCNT;
  }
  return level === SOL_SOCKET && (name === SO_KEEPALIVE || name === SO_LINGER);
}

// ---- Body layouts ----------------------------------------------------------------------------

type BodyField = readonly [string, ScalarType | StructSpec, number, string, number?];

function descriptor(
  name: string,
  opcode: number,
  doc: string,
  body: readonly BodyField[],
): DescriptorSpec {
  const fields: FieldSpec[] = [{ name: "hdr", type: DESC_HEADER, offset: 0 }];
  for (const [fname, type, offset, fdoc, count] of body) {
    fields.push({ name: fname, type, offset, doc: fdoc, count });
  }
  const spec = { name, size: DESC_SIZE, align: 4, doc, fields, opcode };
  checkStruct(spec);
  return spec;
}

/** A descriptor layout with its opcode. */
export interface DescriptorSpec extends StructSpec {
  /** The opcode stored in `hdr.opcode`. */
  readonly opcode: number;
}

/** Every command layout. */
export const COMMAND_STRUCTS: readonly DescriptorSpec[] = [
  descriptor("pno_cmd_bind", CMD_BIND, "bind() of a new socket", [
    ["addr", SOCKADDR, 24, "local address (port 0: an ephemeral port)"],
    ["opts", "u32", 44, "PNO_BIND_* bits"],
  ]),
  descriptor("pno_cmd_listen", CMD_LISTEN, "listen()", [["backlog", "i32", 24, "backlog"]]),
  descriptor("pno_cmd_connect", CMD_CONNECT, "connect()", [
    ["addr", SOCKADDR, 24, "peer"],
    ["opts", "u32", 44, "PNO_BIND_* bits"],
  ]),
  descriptor("pno_cmd_close", CMD_CLOSE, "last close()", [
    ["linger", "i32", 24, "SO_LINGER: -1 off, 0 abort (RST), > 0 seconds"],
  ]),
  descriptor("pno_cmd_shutdown", CMD_SHUTDOWN, "shutdown()", [
    ["how", "i32", 24, "SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2"],
  ]),
  descriptor("pno_cmd_setsockopt", CMD_SETSOCKOPT, "setsockopt() the NIC acts on", [
    ["level", "i32", 24, "SOL_SOCKET or IPPROTO_TCP"],
    ["optname", "i32", 28, "option"],
    ["value", "i32", 32, "int value, or l_onoff for SO_LINGER"],
    ["value2", "i32", 36, "l_linger for SO_LINGER"],
  ]),
  descriptor("pno_cmd_tcp_info", CMD_TCP_INFO, "getsockopt(TCP_INFO)", []),
  descriptor("pno_cmd_data", CMD_DATA, "S-ring doorbell", [
    ["data_req", "u32", 24, "the host line's data_req when posted"],
  ]),
  descriptor("pno_cmd_subscribe", CMD_SUBSCRIBE, "epoll_ctl() as a subscription", [
    ["waiter", "u32", 24, "waiter entry"],
    ["waiter_gen", "u32", 28, "its generation"],
    ["mask", "u32", 32, "EPOLL* bits of interest, 0 to unsubscribe"],
    ["sub_flags", "u32", 36, "PNO_SUB_* bits"],
  ]),
  descriptor("pno_cmd_waiter_release", CMD_WAITER_RELEASE, "a waiter is gone", [
    ["waiter", "u32", 24, "waiter entry"],
    ["waiter_gen", "u32", 28, "its generation"],
  ]),
];

/** Every completion and event layout. */
export const COMPLETION_STRUCTS: readonly DescriptorSpec[] = [
  descriptor("pno_cpl_result", CPL_RESULT, "Result of a command", [
    ["cmd_opcode", "u16", 24, "opcode of the command completed"],
  ]),
  descriptor("pno_cpl_socket", CPL_SOCKET, "Result of bind or connect", [
    ["local", SOCKADDR, 24, "local address"],
  ]),
  descriptor("pno_cpl_tcp_info", CPL_TCP_INFO, "TCP_INFO of a connection", [
    ["state", "u32", 24, "Linux TCP state number"],
    ["rto_us", "u32", 28, "retransmission timeout"],
    ["rtt_us", "u32", 32, "smoothed RTT"],
    ["rttvar_us", "u32", 36, "RTT variance"],
    ["snd_mss", "u32", 40, "send MSS"],
    ["rcv_mss", "u32", 44, "receive MSS estimate"],
    ["snd_cwnd", "u32", 48, "congestion window, segments"],
    ["snd_ssthresh", "u32", 52, "slow start threshold, segments"],
    ["total_retrans", "u32", 56, "segments retransmitted"],
    ["unacked", "u32", 60, "segments in flight"],
  ]),
  descriptor("pno_ev_notify", EV_NOTIFY, "A subscribed socket changed", [
    ["events", "u32", 24, "EPOLL* edges"],
  ]),
];

/** All descriptor-related structs in dependency order, for the header generator. */
export const DESCRIPTOR_STRUCTS: readonly StructSpec[] = [
  DESC_HEADER,
  SOCKADDR,
  ...COMMAND_STRUCTS,
  ...COMPLETION_STRUCTS,
];
checkStruct(DESC_HEADER);
checkStruct(SOCKADDR);

function at(list: readonly DescriptorSpec[], opcode: number, field: string): number {
  return offsetOf(list.find((s) => s.opcode === opcode)!, field);
}

/** bind(): the sockaddr. */
export const BIND_ADDR: number = at(COMMAND_STRUCTS, CMD_BIND, "addr");
/** bind()/connect(): PNO_BIND_* options. */
export const BIND_OPTS: number = at(COMMAND_STRUCTS, CMD_BIND, "opts");
/** listen(): backlog (i32). */
export const LISTEN_BACKLOG: number = at(COMMAND_STRUCTS, CMD_LISTEN, "backlog");
/** connect(): the sockaddr. */
export const CONNECT_ADDR: number = at(COMMAND_STRUCTS, CMD_CONNECT, "addr");
/** connect(): options. */
export const CONNECT_OPTS: number = at(COMMAND_STRUCTS, CMD_CONNECT, "opts");
/** close(): linger (i32). */
export const CLOSE_LINGER: number = at(COMMAND_STRUCTS, CMD_CLOSE, "linger");
/** shutdown(): how (i32). */
export const SHUTDOWN_HOW: number = at(COMMAND_STRUCTS, CMD_SHUTDOWN, "how");
/** setsockopt(): level (i32). */
export const SOCKOPT_LEVEL: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "level");
/** setsockopt(): option name (i32). */
export const SOCKOPT_NAME: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "optname");
/** setsockopt(): value (i32). */
export const SOCKOPT_VALUE: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "value");
/** setsockopt(): second value (i32, l_linger). */
export const SOCKOPT_VALUE2: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "value2");
/** CMD_DATA: the data_req it answers to (u32). */
export const DATA_REQ: number = at(COMMAND_STRUCTS, CMD_DATA, "data_req");
/** CMD_SUBSCRIBE: waiter entry (u32). */
export const SUB_WAITER: number = at(COMMAND_STRUCTS, CMD_SUBSCRIBE, "waiter");
/** CMD_SUBSCRIBE: waiter generation (u32). */
export const SUB_WAITER_GEN: number = at(COMMAND_STRUCTS, CMD_SUBSCRIBE, "waiter_gen");
/** CMD_SUBSCRIBE: event mask (u32). */
export const SUB_MASK: number = at(COMMAND_STRUCTS, CMD_SUBSCRIBE, "mask");
/** CMD_SUBSCRIBE: PNO_SUB_* flags (u32). */
export const SUB_FLAGS: number = at(COMMAND_STRUCTS, CMD_SUBSCRIBE, "sub_flags");
/** CMD_WAITER_RELEASE: waiter entry (u32). */
export const RELEASE_WAITER: number = at(COMMAND_STRUCTS, CMD_WAITER_RELEASE, "waiter");
/** CMD_WAITER_RELEASE: waiter generation (u32). */
export const RELEASE_WAITER_GEN: number = at(COMMAND_STRUCTS, CMD_WAITER_RELEASE, "waiter_gen");
/** CPL_RESULT: opcode of the completed command (u16). */
export const RESULT_CMD_OPCODE: number = at(COMPLETION_STRUCTS, CPL_RESULT, "cmd_opcode");
/** CPL_SOCKET: local sockaddr. */
export const SOCKET_LOCAL: number = at(COMPLETION_STRUCTS, CPL_SOCKET, "local");
/** CPL_TCP_INFO: first field (state); the rest follow as u32 in struct order. */
export const INFO_STATE: number = at(COMPLETION_STRUCTS, CPL_TCP_INFO, "state");
/** EV_NOTIFY: EPOLL* edges (u32). */
export const NOTIFY_EVENTS: number = at(COMPLETION_STRUCTS, EV_NOTIFY, "events");

// ---- Accessors (no allocation) ---------------------------------------------------------------

/** Clears a descriptor slot and writes its header; `result` is 0 for commands. */
export function writeHeader(
  v: DataView,
  at: number,
  opcode: number,
  sock: number,
  gen: number,
  reqId: number,
  result = 0,
): void {
  for (let i = 0; i < DESC_SIZE; i += 8) v.setBigUint64(at + i, 0n);
  v.setUint16(at + DESC_OPCODE, opcode, true);
  v.setUint32(at + DESC_SOCK, sock, true);
  v.setUint32(at + DESC_GEN, gen, true);
  v.setUint32(at + DESC_REQ_ID, reqId, true);
  v.setInt32(at + DESC_RESULT, result, true);
}

/** Opcode of the descriptor at `at`. */
export function readOpcode(v: DataView, at: number): number {
  return v.getUint16(at + DESC_OPCODE, true);
}

/** Socket slot of the descriptor at `at`. */
export function readSock(v: DataView, at: number): number {
  return v.getUint32(at + DESC_SOCK, true);
}

/** Socket generation of the descriptor at `at`. */
export function readGen(v: DataView, at: number): number {
  return v.getUint32(at + DESC_GEN, true);
}

/** Request id of the descriptor at `at`. */
export function readReqId(v: DataView, at: number): number {
  return v.getUint32(at + DESC_REQ_ID, true);
}

/** Result of the descriptor at `at` (completions: value or -errno). */
export function readResult(v: DataView, at: number): number {
  return v.getInt32(at + DESC_RESULT, true);
}

/** Writes an IPv4 sockaddr; `ip` is the address as a u32 (a.b.c.d = a<<24...). */
export function writeSockaddrV4(v: DataView, at: number, ip: number, port: number): void {
  v.setUint16(at + SA_FAMILY, AF_INET, true);
  v.setUint16(at + SA_PORT, port, true);
  v.setUint32(at + SA_ADDR, ip, false);
  for (let i = 4; i < 16; i += 4) v.setUint32(at + SA_ADDR + i, 0);
}

/** Family of the sockaddr at `at`. */
export function readSockaddrFamily(v: DataView, at: number): number {
  return v.getUint16(at + SA_FAMILY, true);
}

/** Port (host order) of the sockaddr at `at`. */
export function readSockaddrPort(v: DataView, at: number): number {
  return v.getUint16(at + SA_PORT, true);
}

/** IPv4 address (u32, a.b.c.d = a<<24...) of the sockaddr at `at`. */
export function readSockaddrV4(v: DataView, at: number): number {
  return v.getUint32(at + SA_ADDR, false);
}

// ---- Validation ------------------------------------------------------------------------------

/** The descriptor is well formed. */
export const DESC_OK = 0;
/** The opcode is not one this consumer accepts. */
export const DESC_ERR_OPCODE = 1;
/** A socket or waiter id is out of range (or missing where one is required). */
export const DESC_ERR_SOCK = 2;
/** A field is outside its domain (address family, shutdown how, option, flags). */
export const DESC_ERR_FIELD = 3;

/**
 * Validates commands read by the NIC and counts what it rejects. It must be given a private
 * copy of the descriptor: the application may rewrite the ring slot while it is being read.
 */
export class CommandChecker {
  /** Commands accepted. */
  accepted = 0;
  /** Commands rejected for an unknown opcode. */
  badOpcode = 0;
  /** Commands rejected for a socket or waiter id out of range. */
  badSock = 0;
  /** Commands rejected for a field out of its domain. */
  badField = 0;

  /** Ids are bounded by the region's tables. */
  constructor(readonly maxSockets: number, readonly maxWaiters: number) {}

  /** Returns `DESC_OK` or a `DESC_ERR_*` code for the command at `at`, and counts it. */
  check(v: DataView, at: number): number {
    const code = this.classify(v, at);
    if (code === DESC_OK) this.accepted++;
    else if (code === DESC_ERR_OPCODE) this.badOpcode++;
    else if (code === DESC_ERR_SOCK) this.badSock++;
    else this.badField++;
    return code;
  }

  private classify(v: DataView, at: number): number {
    const op = readOpcode(v, at);
    if (op < CMD_BIND || op > CMD_WAITER_RELEASE) return DESC_ERR_OPCODE;
    const sock = readSock(v, at);
    const noSockOk = op === CMD_BIND || op === CMD_CONNECT || op === CMD_WAITER_RELEASE;
    if (sock === SOCK_NONE ? !noSockOk : sock >= this.maxSockets) return DESC_ERR_SOCK;
    switch (op) {
      case CMD_BIND:
      case CMD_CONNECT: {
        const f = readSockaddrFamily(v, at + (op === CMD_BIND ? BIND_ADDR : CONNECT_ADDR));
        const opts = v.getUint32(at + BIND_OPTS, true);
        if ((opts & ~(BIND_REUSEADDR | BIND_REUSEPORT)) !== 0) return DESC_ERR_FIELD;
        return f === AF_INET ? DESC_OK : DESC_ERR_FIELD;
      }
      case CMD_SHUTDOWN: {
        const how = v.getInt32(at + SHUTDOWN_HOW, true);
        return how >= 0 && how <= 2 ? DESC_OK : DESC_ERR_FIELD;
      }
      case CMD_SETSOCKOPT: {
        const level = v.getInt32(at + SOCKOPT_LEVEL, true);
        const name = v.getInt32(at + SOCKOPT_NAME, true);
        return isForwardedSockopt(level, name) ? DESC_OK : DESC_ERR_FIELD;
      }
      case CMD_SUBSCRIBE: {
        if (v.getUint32(at + SUB_WAITER, true) >= this.maxWaiters) return DESC_ERR_SOCK;
        const flags = v.getUint32(at + SUB_FLAGS, true);
        return (flags & ~(SUB_ET | SUB_ONESHOT | SUB_EXCLUSIVE)) === 0 ? DESC_OK : DESC_ERR_FIELD;
      }
      case CMD_WAITER_RELEASE:
        return v.getUint32(at + RELEASE_WAITER, true) < this.maxWaiters ? DESC_OK : DESC_ERR_SOCK;
      default:
        return DESC_OK;
    }
  }
}
