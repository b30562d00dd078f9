/**
 * Descriptors carried by the G-type rings: commands (host to NIC) and completions and events
 * (NIC to host), 64 bytes each, little-endian, read and written in place through a DataView.
 *
 * Every descriptor starts with the same 16-byte header: opcode (u16), flags (u16), socket id
 * (u32, `SOCK_NONE` when there is none), request id (u32, echoed in the completion so the shim
 * can match it) and result (i32: in completions a value >= 0 or a negated Linux errno; zero in
 * commands). The body layouts below are the one source of truth: the constants, the C header
 * (gen_header.ts) and its compile test all come from `DESCRIPTOR_STRUCTS`.
 *
 * Descriptors come from untrusted memory: the consumer validates each one with
 * `CommandChecker` / `CompletionChecker`, which reject and count unknown opcodes, socket ids
 * out of range and fields out of their domain, without allocating or throwing.
 *
 * @example
 * ```ts
 * import { CMD_LISTEN, CommandChecker, DESC_OK, LISTEN_BACKLOG, writeHeader } from "./descriptors.ts";
 * const v = new DataView(new ArrayBuffer(64));
 * writeHeader(v, 0, CMD_LISTEN, 3, 42);
 * v.setInt32(LISTEN_BACKLOG, 128, true);
 * const checker = new CommandChecker(16);
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
  size: 16,
  align: 4,
  doc: "Header shared by every descriptor.",
  fields: [
    { name: "opcode", type: "u16", offset: 0, doc: "PNO_CMD_* or PNO_CPL_* / PNO_EV_*" },
    { name: "flags", type: "u16", offset: 2, doc: "reserved, zero" },
    { name: "sock", type: "u32", offset: 4, doc: "socket id, PNO_SOCK_NONE if none" },
    { name: "req_id", type: "u32", offset: 8, doc: "request id, echoed by the completion" },
    { name: "result", type: "i32", offset: 12, doc: "completion: value >= 0 or -errno" },
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
/** Offset of the socket id (u32). */
export const DESC_SOCK = 4;
/** Offset of the request id (u32). */
export const DESC_REQ_ID = 8;
/** Offset of the result (i32). */
export const DESC_RESULT = 12;
/** Offset of the first body byte. */
export const DESC_BODY = 16;
/** Socket id meaning "no socket". */
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

/** socket(domain, type, protocol): completion result is the new socket id. */
export const CMD_SOCKET = 1;
/** bind(sock, addr). */
export const CMD_BIND = 2;
/** listen(sock, backlog). */
export const CMD_LISTEN = 3;
/** connect(sock, addr): completion when started (nonblocking) and EV_CONNECTED when done. */
export const CMD_CONNECT = 4;
/** accept(sock): completed by CPL_ACCEPT with the new socket id and peer address. */
export const CMD_ACCEPT = 5;
/** close(sock): the NIC drains the TX ring, then frees the socket's rings. */
export const CMD_CLOSE = 6;
/** shutdown(sock, how). */
export const CMD_SHUTDOWN = 7;
/** setsockopt(sock, level, name, value, value2) for the supported subset. */
export const CMD_SETSOCKOPT = 8;
/** getsockopt(sock, level, name): values come back in CPL_RESULT. */
export const CMD_GETSOCKOPT = 9;
/** Doorbell: the socket's TX ring has new bytes (up to producer index `tx_prod`). */
export const CMD_TX_AVAIL = 10;
/** Doorbell: the application freed RX ring space (consumer index `rx_cons`): reopen window. */
export const CMD_RX_FREED = 11;

/** Completion of any command but accept: result, plus option values for getsockopt. */
export const CPL_RESULT = 0x81;
/** Completion of accept: new socket id, peer and local address. */
export const CPL_ACCEPT = 0x82;
/** Event: the socket's RX ring has bytes (or a listener has a pending connection). */
export const EV_READABLE = 0xc1;
/** Event: the socket's TX ring has room again. */
export const EV_WRITABLE = 0xc2;
/** Event: the peer sent FIN; reads return 0 after the RX ring drains. */
export const EV_PEER_CLOSED = 0xc3;
/** Event: the connection was reset (RST received or sent). */
export const EV_RESET = 0xc4;
/** Event: an outgoing connection is established; carries local and peer address. */
export const EV_CONNECTED = 0xc5;
/** Event: an asynchronous error (errno in `result` as -errno and in `errno`). */
export const EV_ERROR = 0xc6;

// ---- Socket options (Linux numbering) --------------------------------------------------------

/** Socket-level options. */
export const SOL_SOCKET = 1;
/** TCP-level options. */
export const IPPROTO_TCP = 6;
/** SO_REUSEADDR (boolean). */
export const SO_REUSEADDR = 2;
/** SO_ERROR (get only: pending error, cleared on read). */
export const SO_ERROR = 4;
/** SO_SNDBUF (bytes; bounded by the TX ring size). */
export const SO_SNDBUF = 7;
/** SO_RCVBUF (bytes; bounded by the RX ring size). */
export const SO_RCVBUF = 8;
/** SO_KEEPALIVE (boolean). */
export const SO_KEEPALIVE = 9;
/** SO_LINGER (value = l_onoff, value2 = l_linger seconds). */
export const SO_LINGER = 13;
/** TCP_NODELAY (boolean). */
export const TCP_NODELAY = 1;

/** Whether (level, name) is in the supported subset; `forSet` excludes get-only SO_ERROR. */
export function isSupportedSockopt(level: number, name: number, forSet: boolean): boolean {
  if (level === IPPROTO_TCP) return name === TCP_NODELAY;
  if (level !== SOL_SOCKET) return false;
  switch (name) {
    case SO_REUSEADDR:
    case SO_KEEPALIVE:
    case SO_LINGER:
    case SO_RCVBUF:
    case SO_SNDBUF:
      return true;
    case SO_ERROR:
      return !forSet;
    default:
      return false;
  }
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
  descriptor("pno_cmd_socket", CMD_SOCKET, "socket()", [
    ["domain", "i32", 16, "AF_INET or AF_INET6"],
    ["type", "i32", 20, "SOCK_STREAM, flags masked off"],
    ["protocol", "i32", 24, "0 or IPPROTO_TCP"],
  ]),
  descriptor("pno_cmd_bind", CMD_BIND, "bind()", [["addr", SOCKADDR, 16, "local address"]]),
  descriptor("pno_cmd_listen", CMD_LISTEN, "listen()", [["backlog", "i32", 16, "backlog"]]),
  descriptor("pno_cmd_connect", CMD_CONNECT, "connect()", [["addr", SOCKADDR, 16, "peer"]]),
  descriptor("pno_cmd_accept", CMD_ACCEPT, "accept4()", [["flags", "i32", 16, "accept4 flags"]]),
  descriptor("pno_cmd_close", CMD_CLOSE, "close()", []),
  descriptor("pno_cmd_shutdown", CMD_SHUTDOWN, "shutdown()", [
    ["how", "i32", 16, "SHUT_RD 0, SHUT_WR 1, SHUT_RDWR 2"],
  ]),
  descriptor("pno_cmd_setsockopt", CMD_SETSOCKOPT, "setsockopt(), supported subset", [
    ["level", "i32", 16, "SOL_SOCKET or IPPROTO_TCP"],
    ["optname", "i32", 20, "option"],
    ["value", "i32", 24, "int value, or l_onoff for SO_LINGER"],
    ["value2", "i32", 28, "l_linger for SO_LINGER"],
  ]),
  descriptor("pno_cmd_getsockopt", CMD_GETSOCKOPT, "getsockopt(), supported subset", [
    ["level", "i32", 16, "SOL_SOCKET or IPPROTO_TCP"],
    ["optname", "i32", 20, "option"],
  ]),
  descriptor("pno_cmd_tx_avail", CMD_TX_AVAIL, "S-ring doorbell: new TX bytes", [
    ["tx_prod", "u32", 16, "TX producer index after the write (a hint; the ring is the truth)"],
  ]),
  descriptor("pno_cmd_rx_freed", CMD_RX_FREED, "S-ring doorbell: RX space freed", [
    ["rx_cons", "u32", 16, "RX consumer index after the read (a hint)"],
  ]),
];

/** Every completion and event layout. */
export const COMPLETION_STRUCTS: readonly DescriptorSpec[] = [
  descriptor("pno_cpl_result", CPL_RESULT, "Result of a command", [
    ["cmd_opcode", "u16", 16, "opcode of the command completed"],
    ["value", "i32", 20, "getsockopt value (l_onoff for SO_LINGER)"],
    ["value2", "i32", 24, "getsockopt second value (l_linger)"],
  ]),
  descriptor("pno_cpl_accept", CPL_ACCEPT, "Result of accept", [
    ["new_sock", "u32", 16, "socket id of the accepted connection"],
    ["peer", SOCKADDR, 20, "peer address"],
    ["local", SOCKADDR, 40, "local address"],
  ]),
  descriptor("pno_ev_readable", EV_READABLE, "Readable", []),
  descriptor("pno_ev_writable", EV_WRITABLE, "Writable", []),
  descriptor("pno_ev_peer_closed", EV_PEER_CLOSED, "Peer closed (FIN)", []),
  descriptor("pno_ev_reset", EV_RESET, "Connection reset", []),
  descriptor("pno_ev_connected", EV_CONNECTED, "Connected", [
    ["local", SOCKADDR, 20, "local address"],
    ["peer", SOCKADDR, 40, "peer address"],
  ]),
  descriptor("pno_ev_error", EV_ERROR, "Asynchronous error", [
    ["err", "i32", 16, "positive errno"],
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

/** socket(): domain (i32). */
export const SOCKET_DOMAIN: number = at(COMMAND_STRUCTS, CMD_SOCKET, "domain");
/** socket(): type (i32). */
export const SOCKET_TYPE: number = at(COMMAND_STRUCTS, CMD_SOCKET, "type");
/** socket(): protocol (i32). */
export const SOCKET_PROTOCOL: number = at(COMMAND_STRUCTS, CMD_SOCKET, "protocol");
/** bind(): the sockaddr. */
export const BIND_ADDR: number = at(COMMAND_STRUCTS, CMD_BIND, "addr");
/** listen(): backlog (i32). */
export const LISTEN_BACKLOG: number = at(COMMAND_STRUCTS, CMD_LISTEN, "backlog");
/** connect(): the sockaddr. */
export const CONNECT_ADDR: number = at(COMMAND_STRUCTS, CMD_CONNECT, "addr");
/** accept(): accept4 flags (i32). */
export const ACCEPT_FLAGS: number = at(COMMAND_STRUCTS, CMD_ACCEPT, "flags");
/** shutdown(): how (i32). */
export const SHUTDOWN_HOW: number = at(COMMAND_STRUCTS, CMD_SHUTDOWN, "how");
/** set/getsockopt(): level (i32). */
export const SOCKOPT_LEVEL: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "level");
/** set/getsockopt(): option name (i32). */
export const SOCKOPT_NAME: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "optname");
/** setsockopt(): value (i32). */
export const SOCKOPT_VALUE: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "value");
/** setsockopt(): second value (i32, l_linger). */
export const SOCKOPT_VALUE2: number = at(COMMAND_STRUCTS, CMD_SETSOCKOPT, "value2");
/** TX doorbell: producer index hint (u32). */
export const TX_AVAIL_PROD: number = at(COMMAND_STRUCTS, CMD_TX_AVAIL, "tx_prod");
/** RX doorbell: consumer index hint (u32). */
export const RX_FREED_CONS: number = at(COMMAND_STRUCTS, CMD_RX_FREED, "rx_cons");
/** CPL_RESULT: opcode of the completed command (u16). */
export const RESULT_CMD_OPCODE: number = at(COMPLETION_STRUCTS, CPL_RESULT, "cmd_opcode");
/** CPL_RESULT: getsockopt value (i32). */
export const RESULT_VALUE: number = at(COMPLETION_STRUCTS, CPL_RESULT, "value");
/** CPL_RESULT: getsockopt second value (i32). */
export const RESULT_VALUE2: number = at(COMPLETION_STRUCTS, CPL_RESULT, "value2");
/** CPL_ACCEPT: new socket id (u32). */
export const ACCEPT_NEW_SOCK: number = at(COMPLETION_STRUCTS, CPL_ACCEPT, "new_sock");
/** CPL_ACCEPT: peer sockaddr. */
export const ACCEPT_PEER: number = at(COMPLETION_STRUCTS, CPL_ACCEPT, "peer");
/** CPL_ACCEPT: local sockaddr. */
export const ACCEPT_LOCAL: number = at(COMPLETION_STRUCTS, CPL_ACCEPT, "local");
/** EV_CONNECTED: local sockaddr. */
export const CONNECTED_LOCAL: number = at(COMPLETION_STRUCTS, EV_CONNECTED, "local");
/** EV_CONNECTED: peer sockaddr. */
export const CONNECTED_PEER: number = at(COMPLETION_STRUCTS, EV_CONNECTED, "peer");
/** EV_ERROR: positive errno (i32). */
export const ERROR_ERRNO: number = at(COMPLETION_STRUCTS, EV_ERROR, "err");

// ---- Accessors (no allocation) ---------------------------------------------------------------

/** Clears a descriptor slot and writes its header; `result` is 0 for commands. */
export function writeHeader(
  v: DataView,
  at: number,
  opcode: number,
  sock: number,
  reqId: number,
  result = 0,
): void {
  for (let i = 0; i < DESC_SIZE; i += 8) v.setBigUint64(at + i, 0n);
  v.setUint16(at + DESC_OPCODE, opcode, true);
  v.setUint32(at + DESC_SOCK, sock, true);
  v.setUint32(at + DESC_REQ_ID, reqId, true);
  v.setInt32(at + DESC_RESULT, result, true);
}

/** Opcode of the descriptor at `at`. */
export function readOpcode(v: DataView, at: number): number {
  return v.getUint16(at + DESC_OPCODE, true);
}

/** Socket id of the descriptor at `at`. */
export function readSock(v: DataView, at: number): number {
  return v.getUint32(at + DESC_SOCK, true);
}

/** Request id of the descriptor at `at`. */
export function readReqId(v: DataView, at: number): number {
  return v.getUint32(at + DESC_REQ_ID, true);
}

/** Result of the descriptor at `at` (completions: value or -errno). */
export function readResult(v: DataView, at: number): number {
  return v.getInt32(at + DESC_RESULT, true);
}

/** Writes an IPv4 sockaddr; `ip` is the address as a u32 in network order (a.b.c.d = a<<24...). */
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
/** The socket id is out of range (or missing where one is required). */
export const DESC_ERR_SOCK = 2;
/** A field is outside its domain (address family, shutdown how, option, flags). */
export const DESC_ERR_FIELD = 3;

/** Validates commands read by the NIC and counts what it rejects. */
export class CommandChecker {
  /** Commands accepted. */
  accepted = 0;
  /** Commands rejected for an unknown opcode. */
  badOpcode = 0;
  /** Commands rejected for a socket id out of range. */
  badSock = 0;
  /** Commands rejected for a field out of its domain. */
  badField = 0;

  /** `maxSockets` bounds socket ids: the S-ring table has that many entries. */
  constructor(readonly maxSockets: number) {}

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
    if (op < CMD_SOCKET || op > CMD_RX_FREED) return DESC_ERR_OPCODE;
    if (op === CMD_SOCKET) {
      const d = v.getInt32(at + SOCKET_DOMAIN, true);
      return d === AF_INET || d === AF_INET6 ? DESC_OK : DESC_ERR_FIELD;
    }
    if (readSock(v, at) >= this.maxSockets) return DESC_ERR_SOCK;
    switch (op) {
      case CMD_BIND:
      case CMD_CONNECT: {
        const f = readSockaddrFamily(v, at + (op === CMD_BIND ? BIND_ADDR : CONNECT_ADDR));
        return f === AF_INET || f === AF_INET6 ? DESC_OK : DESC_ERR_FIELD;
      }
      case CMD_SHUTDOWN: {
        const how = v.getInt32(at + SHUTDOWN_HOW, true);
        return how >= 0 && how <= 2 ? DESC_OK : DESC_ERR_FIELD;
      }
      case CMD_SETSOCKOPT:
      case CMD_GETSOCKOPT: {
        const level = v.getInt32(at + SOCKOPT_LEVEL, true);
        const name = v.getInt32(at + SOCKOPT_NAME, true);
        return isSupportedSockopt(level, name, op === CMD_SETSOCKOPT) ? DESC_OK : DESC_ERR_FIELD;
      }
      default:
        return DESC_OK;
    }
  }
}

/** Validates completions and events read by the host side and counts what it rejects. */
export class CompletionChecker {
  /** Descriptors accepted. */
  accepted = 0;
  /** Rejected for an unknown opcode. */
  badOpcode = 0;
  /** Rejected for a socket id out of range. */
  badSock = 0;

  /** `maxSockets` bounds socket ids. */
  constructor(readonly maxSockets: number) {}

  /** Returns `DESC_OK` or a `DESC_ERR_*` code for the completion or event at `at`. */
  check(v: DataView, at: number): number {
    const op = readOpcode(v, at);
    const known = op === CPL_RESULT || op === CPL_ACCEPT || (op >= EV_READABLE && op <= EV_ERROR);
    if (!known) {
      this.badOpcode++;
      return DESC_ERR_OPCODE;
    }
    const sock = readSock(v, at);
    const newSock = op === CPL_ACCEPT ? v.getUint32(at + ACCEPT_NEW_SOCK, true) : 0;
    const createdSock = op === CPL_RESULT &&
        v.getUint16(at + RESULT_CMD_OPCODE, true) === CMD_SOCKET
      ? readResult(v, at)
      : -1;
    if (
      (op !== CPL_RESULT && sock >= this.maxSockets) ||
      (op === CPL_ACCEPT && newSock >= this.maxSockets) || createdSock >= this.maxSockets
    ) {
      this.badSock++;
      return DESC_ERR_SOCK;
    }
    this.accepted++;
    return DESC_OK;
  }
}
