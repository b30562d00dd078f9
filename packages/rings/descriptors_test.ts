import { assertEquals } from "@std/assert";
import {
  AF_INET,
  BIND_ADDR,
  CMD_BIND,
  CMD_CLOSE,
  CMD_RX_FREED,
  CMD_SETSOCKOPT,
  CMD_SHUTDOWN,
  CMD_SOCKET,
  COMMAND_STRUCTS,
  CommandChecker,
  COMPLETION_STRUCTS,
  CompletionChecker,
  CPL_ACCEPT,
  CPL_RESULT,
  DESC_ERR_FIELD,
  DESC_ERR_OPCODE,
  DESC_ERR_SOCK,
  DESC_OK,
  EV_READABLE,
  IPPROTO_TCP,
  readOpcode,
  readReqId,
  readSock,
  readSockaddrPort,
  readSockaddrV4,
  RESULT_CMD_OPCODE,
  SHUTDOWN_HOW,
  SO_ERROR,
  SO_LINGER,
  SOCK_NONE,
  SOCKET_DOMAIN,
  SOCKOPT_LEVEL,
  SOCKOPT_NAME,
  SOL_SOCKET,
  TCP_NODELAY,
  writeHeader,
  writeSockaddrV4,
} from "./descriptors.ts";

const v = new DataView(new ArrayBuffer(128));

Deno.test("descriptors: header round trip, slot cleared, sockaddr in place", () => {
  new Uint8Array(v.buffer).fill(0xee);
  writeHeader(v, 64, CMD_BIND, 7, 0xdeadbeef);
  writeSockaddrV4(v, 64 + BIND_ADDR, 0x0a580001, 6379);
  assertEquals(readOpcode(v, 64), CMD_BIND);
  assertEquals(readSock(v, 64), 7);
  assertEquals(readReqId(v, 64), 0xdeadbeef);
  assertEquals(readSockaddrPort(v, 64 + BIND_ADDR), 6379);
  assertEquals(readSockaddrV4(v, 64 + BIND_ADDR), 0x0a580001);
  assertEquals(new Uint8Array(v.buffer, 64 + BIND_ADDR + 4, 4), new Uint8Array([10, 88, 0, 1]));
  assertEquals(v.getUint8(127), 0, "the rest of the slot is zero");
  assertEquals(v.getUint8(0), 0xee, "the previous slot is untouched");
});

Deno.test("descriptors: opcodes are unique and every layout is 64 bytes", () => {
  const ops = [...COMMAND_STRUCTS, ...COMPLETION_STRUCTS].map((s) => s.opcode);
  assertEquals(new Set(ops).size, ops.length);
  for (const s of [...COMMAND_STRUCTS, ...COMPLETION_STRUCTS]) assertEquals(s.size, 64);
});

Deno.test("descriptors: command checker accepts good ones, rejects and counts bad ones", () => {
  const c = new CommandChecker(8);
  writeHeader(v, 0, CMD_SOCKET, SOCK_NONE, 1);
  v.setInt32(SOCKET_DOMAIN, AF_INET, true);
  assertEquals(c.check(v, 0), DESC_OK);
  v.setInt32(SOCKET_DOMAIN, 1, /* AF_UNIX */ true);
  assertEquals(c.check(v, 0), DESC_ERR_FIELD);
  writeHeader(v, 0, 0x7777, 0, 2);
  assertEquals(c.check(v, 0), DESC_ERR_OPCODE);
  writeHeader(v, 0, 0, 0, 2);
  assertEquals(c.check(v, 0), DESC_ERR_OPCODE);
  writeHeader(v, 0, CMD_RX_FREED + 1, 0, 2);
  assertEquals(c.check(v, 0), DESC_ERR_OPCODE);
  writeHeader(v, 0, CMD_CLOSE, 8, 3);
  assertEquals(c.check(v, 0), DESC_ERR_SOCK);
  writeHeader(v, 0, CMD_CLOSE, 7, 3);
  assertEquals(c.check(v, 0), DESC_OK);
  writeHeader(v, 0, CMD_BIND, 1, 4);
  assertEquals(c.check(v, 0), DESC_ERR_FIELD, "family 0");
  writeHeader(v, 0, CMD_SHUTDOWN, 1, 5);
  v.setInt32(SHUTDOWN_HOW, 3, true);
  assertEquals(c.check(v, 0), DESC_ERR_FIELD);
  writeHeader(v, 0, CMD_SETSOCKOPT, 1, 6);
  v.setInt32(SOCKOPT_LEVEL, IPPROTO_TCP, true);
  v.setInt32(SOCKOPT_NAME, TCP_NODELAY, true);
  assertEquals(c.check(v, 0), DESC_OK);
  v.setInt32(SOCKOPT_LEVEL, SOL_SOCKET, true);
  v.setInt32(SOCKOPT_NAME, SO_LINGER, true);
  assertEquals(c.check(v, 0), DESC_OK);
  v.setInt32(SOCKOPT_NAME, SO_ERROR, true);
  assertEquals(c.check(v, 0), DESC_ERR_FIELD, "SO_ERROR is get-only");
  assertEquals([c.accepted, c.badOpcode, c.badSock, c.badField], [4, 3, 1, 4]);
});

Deno.test("descriptors: completion checker bounds every socket id it will use", () => {
  const c = new CompletionChecker(4);
  writeHeader(v, 0, CPL_RESULT, SOCK_NONE, 1, 3);
  v.setUint16(RESULT_CMD_OPCODE, CMD_SOCKET, true);
  assertEquals(c.check(v, 0), DESC_OK);
  writeHeader(v, 0, CPL_RESULT, SOCK_NONE, 1, 4);
  v.setUint16(RESULT_CMD_OPCODE, CMD_SOCKET, true);
  assertEquals(c.check(v, 0), DESC_ERR_SOCK);
  writeHeader(v, 0, CPL_ACCEPT, 1, 1, 0);
  v.setUint32(16, 9, true);
  assertEquals(c.check(v, 0), DESC_ERR_SOCK);
  writeHeader(v, 0, EV_READABLE, 3, 0);
  assertEquals(c.check(v, 0), DESC_OK);
  writeHeader(v, 0, 0x42, 3, 0);
  assertEquals(c.check(v, 0), DESC_ERR_OPCODE);
  assertEquals([c.accepted, c.badOpcode, c.badSock], [2, 1, 2]);
});
