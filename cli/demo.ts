/**
 * `pno demo`: the end-to-end demonstration on a fresh machine. It brings up the wire, starts
 * the bridge on its DPDK port with a control socket, runs the unmodified Debian redis-server
 * under the shim (`pno run`) so that its TCP runs in the bridge, and drives it with
 * redis-benchmark from the client namespace; then the same benchmark against a plain
 * redis-server on the host kernel over the twin link. It prints requests per second, latency
 * and CPU per request side by side, checks that every request was answered and that the host
 * kernel held no connection of the offloaded redis, and takes everything down again.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { formatRedisTable, redisSideBySide } from "../bench/redis_side_by_side.ts";

export const DEMO_HELP =
  `pno demo: unmodified redis-server with its TCP offloaded, next to the kernel

Usage: pno demo [--requests N]

1. creates the wire (pno wire up): namespace pno-client (10.88.0.1) <-> pno1 (DPDK), and the
   kernel twin pnok0 (10.89.0.1) <-> pnok1 (10.89.0.2)
2. starts the bridge on pno1 (10.88.0.2) with a control socket
3. pno run -- redis-server (the Debian binary, under the shim): its TCP is in the bridge
4. redis-benchmark -t set,get -d 64 -c 50 -n N (default 100000) from pno-client against it;
   checks every request was executed and that the host kernel held none of its connections
5. the same benchmark against a plain redis-server on the host kernel (pnok1)
6. prints req/s, p50/p99 latency, host CPU per request (redis-server's utime+stime) and NIC
   CPU per request (the bridge's), stops everything and removes the wire`;

/** Runs the demo; resolves with 0 when every check held. */
export async function demoMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["requests"],
    boolean: ["help"],
    alias: { h: "help" },
    default: { requests: "100000" },
    unknown: (arg: string) => {
      throw new Error(`unknown option ${arg}; see pno demo --help`);
    },
  });
  if (flags.help) {
    console.log(DEMO_HELP);
    return 0;
  }
  const requests = Number(flags.requests);
  if (!Number.isInteger(requests) || requests < 1000) {
    throw new Error(`--requests ${flags.requests}: at least 1000`);
  }
  const c = await redisSideBySide({
    requests,
    clients: 50,
    valueBytes: 64,
    straceSeconds: 0,
    idleConnections: 0,
    log: (line) => console.log(line),
  });
  console.log("");
  console.log(formatRedisTable(c));
  console.log("");
  let failures = 0;
  const check = (ok: boolean, what: string) => {
    console.log(`   ${ok ? "ok" : "FAILED"}: ${what}`);
    if (!ok) failures++;
  };
  // redisSideBySide throws unless redis executed exactly -n SETs and -n GETs on each side.
  check(true, `each redis-server executed all ${requests} SETs and ${requests} GETs`);
  check(
    c.pno.kernelConnections === 0,
    "the host kernel held no established connection of the offloaded redis during its run",
  );
  check(
    (c.pno.app?.commands ?? 0) > 0 && (c.pno.app?.events ?? 0) > 0,
    `the bridge served redis's sockets (${c.pno.app?.commands ?? 0} ring commands)`,
  );
  console.log(failures === 0 ? "== demo ok" : `== demo FAILED: ${failures} check(s)`);
  return failures === 0 ? 0 : 1;
}
