import { assertEquals } from "@std/assert";
import * as D from "./descriptors.ts";
import * as E from "./errno.ts";
import {
  AF_INET,
  BIND_ADDR,
  BIND_OPTS,
  BIND_REUSEADDR,
  CMD_BIND,
  CMD_CLOSE,
  CMD_CONNECT,
  CMD_DATA,
  CMD_LISTEN,
  CMD_SETSOCKOPT,
  CMD_SHUTDOWN,
  CMD_SUBSCRIBE,
  CMD_WAITER_RELEASE,
  COMMAND_STRUCTS,
  CommandChecker,
  COMPLETION_STRUCTS,
  CONNECT_ADDR,
  DATA_REQ,
  DESC_ERR_FIELD,
  DESC_ERR_OPCODE,
  DESC_ERR_SOCK,
  DESC_OK,
  IPPROTO_TCP,
  isForwardedSockopt,
  readGen,
  readOpcode,
  readReqId,
  readResult,
  readSock,
  readSockaddrPort,
  readSockaddrV4,
  RELEASE_WAITER,
  SHUTDOWN_HOW,
  SO_ERROR,
  SO_KEEPALIVE,
  SO_LINGER,
  SOCK_NONE,
  SOCKOPT_LEVEL,
  SOCKOPT_NAME,
  SOL_SOCKET,
  SUB_ET,
  SUB_FLAGS,
  SUB_ONESHOT,
  SUB_WAITER,
  TCP_INFO,
  TCP_NODELAY,
  writeHeader,
  writeSockaddrV4,
} from "./descriptors.ts";

const v = new DataView(new ArrayBuffer(128));

Deno.test("descriptors: header round trip, slot cleared, sockaddr in place", () => {
  new Uint8Array(v.buffer).fill(0xee);
  writeHeader(v, 64, CMD_BIND, 7, 0x12345, 0xdeadbeef, -11);
  writeSockaddrV4(v, 64 + BIND_ADDR, 0x0a580001, 6379);
  assertEquals(readOpcode(v, 64), CMD_BIND);
  assertEquals(readSock(v, 64), 7);
  assertEquals(readGen(v, 64), 0x12345);
  assertEquals(readReqId(v, 64), 0xdeadbeef);
  assertEquals(readResult(v, 64), -11);
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
  assertEquals(BIND_OPTS, D.CONNECT_OPTS, "bind and connect share their options word");
});

Deno.test("descriptors: command checker accepts good ones, rejects and counts bad ones", () => {
  const c = new CommandChecker(8, 4);
  const verdicts: number[] = [];
  const check = (op: number, sock: number, fill?: () => void) => {
    writeHeader(v, 0, op, sock, 1, 1);
    fill?.();
    verdicts.push(c.check(v, 0));
  };
  // bind and connect of a new socket (SOCK_NONE), IPv4 only, known options only.
  check(CMD_BIND, SOCK_NONE, () => writeSockaddrV4(v, BIND_ADDR, 0, 80));
  check(CMD_BIND, SOCK_NONE, () => v.setUint16(BIND_ADDR, 1, /* AF_UNIX */ true));
  check(CMD_BIND, SOCK_NONE, () => {
    writeSockaddrV4(v, BIND_ADDR, 0, 80);
    v.setUint32(BIND_OPTS, BIND_REUSEADDR | 8, true);
  });
  check(CMD_CONNECT, SOCK_NONE, () => writeSockaddrV4(v, CONNECT_ADDR, 0x0a000001, 80));
  check(CMD_CONNECT, 3, () => writeSockaddrV4(v, CONNECT_ADDR, 0x0a000001, 80));
  // Unknown opcodes, including the next one after the last command and completions.
  check(0x7777, 0);
  check(0, 0);
  check(CMD_WAITER_RELEASE + 1, 0);
  check(D.CPL_RESULT, 0);
  // Socket ids: out of range, or missing where the command needs one.
  check(CMD_CLOSE, 8);
  check(CMD_CLOSE, SOCK_NONE);
  check(CMD_LISTEN, SOCK_NONE);
  check(CMD_DATA, 0xfffffff0);
  check(CMD_CLOSE, 7);
  check(CMD_DATA, 2, () => v.setUint32(DATA_REQ, 0xffffffff, true));
  // Fields out of their domain.
  check(CMD_SHUTDOWN, 1, () => v.setInt32(SHUTDOWN_HOW, 3, true));
  check(CMD_SHUTDOWN, 1, () => v.setInt32(SHUTDOWN_HOW, -1, true));
  check(CMD_SHUTDOWN, 1, () => v.setInt32(SHUTDOWN_HOW, 2, true));
  const opt = (level: number, name: number) => () => {
    v.setInt32(SOCKOPT_LEVEL, level, true);
    v.setInt32(SOCKOPT_NAME, name, true);
  };
  check(CMD_SETSOCKOPT, 1, opt(IPPROTO_TCP, TCP_NODELAY));
  check(CMD_SETSOCKOPT, 1, opt(SOL_SOCKET, SO_LINGER));
  check(CMD_SETSOCKOPT, 1, opt(SOL_SOCKET, SO_ERROR));
  check(CMD_SETSOCKOPT, 1, opt(IPPROTO_TCP, TCP_INFO));
  // Subscriptions name a waiter in range and known flags.
  check(CMD_SUBSCRIBE, 1, () => v.setUint32(SUB_WAITER, 3, true));
  check(CMD_SUBSCRIBE, 1, () => v.setUint32(SUB_WAITER, 4, true));
  check(CMD_SUBSCRIBE, 1, () => v.setUint32(SUB_FLAGS, SUB_ET | SUB_ONESHOT, true));
  check(CMD_SUBSCRIBE, 1, () => v.setUint32(SUB_FLAGS, 8, true));
  check(CMD_WAITER_RELEASE, SOCK_NONE, () => v.setUint32(RELEASE_WAITER, 3, true));
  check(CMD_WAITER_RELEASE, SOCK_NONE, () => v.setUint32(RELEASE_WAITER, 4, true));
  const [OK, OP, SOCK, FIELD] = [DESC_OK, DESC_ERR_OPCODE, DESC_ERR_SOCK, DESC_ERR_FIELD];
  assertEquals(verdicts, [
    ...[OK, FIELD, FIELD, OK, OK],
    ...[OP, OP, OP, OP],
    ...[SOCK, SOCK, SOCK, SOCK, OK, OK],
    ...[FIELD, FIELD, OK],
    ...[OK, OK, FIELD, FIELD],
    ...[OK, SOCK, OK, FIELD, OK, SOCK],
  ]);
  const count = (x: number) => verdicts.filter((y) => y === x).length;
  assertEquals(
    [c.accepted, c.badOpcode, c.badSock, c.badField],
    [count(OK), count(OP), count(SOCK), count(FIELD)],
  );
});

Deno.test("descriptors: the NIC acts on the options it can, the shim keeps the rest", () => {
  assertEquals(isForwardedSockopt(IPPROTO_TCP, TCP_NODELAY), true);
  assertEquals(isForwardedSockopt(SOL_SOCKET, SO_KEEPALIVE), true);
  assertEquals(isForwardedSockopt(SOL_SOCKET, SO_ERROR), false);
  assertEquals(isForwardedSockopt(SOL_SOCKET, TCP_NODELAY), false);
  assertEquals(isForwardedSockopt(99, TCP_NODELAY), false);
  assertEquals(AF_INET, 2);
});

Deno.test("descriptors: EPOLL bits, errno values, options and families are Linux's", async () => {
  // The shim ORs these straight into epoll_event and errno: compare with the system headers.
  const names: Array<[string, number]> = [
    ...(["EPOLLIN", "EPOLLPRI", "EPOLLOUT", "EPOLLERR", "EPOLLHUP", "EPOLLRDHUP"] as const).map((
      n,
    ) => [n, D[n]] as [string, number]),
    ...Object.entries(E).map(([n, x]) => [n, x as number] as [string, number]),
    ...([
      "SOL_SOCKET",
      "IPPROTO_TCP",
      "SO_REUSEADDR",
      "SO_ERROR",
      "SO_SNDBUF",
      "SO_RCVBUF",
    ] as const)
      .map((n) => [n, D[n]] as [string, number]),
    ...(["SO_KEEPALIVE", "SO_LINGER", "SO_REUSEPORT", "TCP_NODELAY", "TCP_MAXSEG"] as const)
      .map((n) => [n, D[n]] as [string, number]),
    ...(["TCP_CORK", "TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_INFO"] as const)
      .map((n) => [n, D[n]] as [string, number]),
    ["AF_INET", D.AF_INET],
    ["AF_INET6", D.AF_INET6],
  ];
  const src = [
    "#include <errno.h>",
    "#include <stdio.h>",
    "#include <sys/epoll.h>",
    "#include <sys/socket.h>",
    "#include <netinet/in.h>",
    "#include <netinet/tcp.h>",
    "int main(void) {",
    ...names.map(([n]) => `\tprintf("%s %ld\\n", "${n}", (long)(${n}));`),
    "\treturn 0;",
    "}",
  ].join("\n");
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/linux.c`, src);
    const cc = await new Deno.Command("cc", {
      args: ["-std=gnu11", "-Wall", "-Werror", `${dir}/linux.c`, "-o", `${dir}/linux`],
    }).output();
    assertEquals(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const run = await new Deno.Command(`${dir}/linux`).output();
    assertEquals(
      new TextDecoder().decode(run.stdout).trim().split("\n"),
      names.map(([n, x]) => `${n} ${x}`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
