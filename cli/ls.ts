/**
 * `pno ls [PID]`: every socket of every attached application (or of PID), offloaded or kept
 * in the kernel. An offloaded socket's fd is its placeholder, a kernel socket the shim made
 * at socket(); the shim records the placeholder's inode in the region when the socket is
 * offloaded, and the bridge reports it with each connection. So: /proc/PID/fd gives
 * socket:[INODE] per fd; an inode the bridge reports is offloaded (its 4-tuple, state and
 * bytes from the bridge), any other is the kernel's (TCP ones described by `ss -tinae`,
 * matched on the same inode).
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import type { ConnectionRow } from "@pno/stats";
import { descendants } from "./apps.ts";
import { findStats } from "./stats_client.ts";

export const LS_HELP =
  `pno ls: every socket of the attached applications, offloaded or kept in the kernel

Usage: pno ls [PID] [--stats URL] [--json]

Without PID: every application attached to the bridge and the processes it forked.
  --stats URL   the live stats server (default: the proxy's http://127.0.0.1:9464/, else the
                bridge's http://127.0.0.1:7081/live/)
  --json        one JSON array instead of the table

Columns: PID FD WHERE (pno: offloaded to the bridge; kernel: kept by the policy, or not TCP)
PROTO LOCAL REMOTE STATE BYTES-IN BYTES-OUT (payload received in order and payload the peer
acknowledged, as Linux's tcpi_bytes_received and tcpi_bytes_acked).`;

/** One socket fd of a process. */
export interface SocketLine {
  pid: number;
  fd: number;
  where: "pno" | "kernel";
  proto: string;
  local: string;
  remote: string;
  state: string;
  bytesIn: number | null;
  bytesOut: number | null;
  inode: number;
}

/** ss's state names in RFC 9293's spelling, the one the bridge reports. */
const SS_STATES: Record<string, string> = {
  ESTAB: "ESTABLISHED",
  "SYN-RECV": "SYN-RECEIVED",
  UNCONN: "CLOSED",
};

/** Kernel TCP sockets by inode, from `ss -tinae` (host network namespace). */
async function kernelTcp(): Promise<Map<number, Omit<SocketLine, "pid" | "fd" | "where">>> {
  const out = await new Deno.Command("ss", { args: ["-tinaeH"], stdout: "piped", stderr: "null" })
    .output();
  const text = new TextDecoder().decode(out.stdout);
  const map = new Map<number, Omit<SocketLine, "pid" | "fd" | "where">>();
  let last: Omit<SocketLine, "pid" | "fd" | "where"> | null = null;
  for (const line of text.split("\n")) {
    if (line.startsWith("\t") || line.startsWith(" ")) {
      if (last === null) continue;
      const num = (key: string) => {
        const m = line.match(new RegExp(`\\b${key}:(\\d+)`));
        return m ? Number(m[1]) : null;
      };
      last.bytesIn = num("bytes_received") ?? 0;
      last.bytesOut = num("bytes_acked") ?? 0;
      continue;
    }
    const f = line.trim().split(/\s+/);
    const ino = line.match(/\bino:(\d+)/);
    if (f.length < 5 || !ino) {
      last = null;
      continue;
    }
    last = {
      proto: "tcp",
      state: SS_STATES[f[0]] ?? f[0],
      local: f[3],
      remote: f[4],
      bytesIn: null,
      bytesOut: null,
      inode: Number(ino[1]),
    };
    map.set(last.inode, last);
  }
  return map;
}

/** What /proc/net says of a non-TCP socket inode: "udp", "unix", "tcp6"... or "socket". */
function otherProto(pid: number, inode: number): string {
  for (const proto of ["udp", "udp6", "unix", "tcp6", "raw", "netlink", "packet"]) {
    try {
      const text = Deno.readTextFileSync(`/proc/${pid}/net/${proto}`);
      if (new RegExp(`\\s${inode}(\\s|$)`, "m").test(text)) return proto;
    } catch {
      // not there
    }
  }
  return "socket";
}

/** Every socket fd of `pids`, classified. */
export async function listSockets(
  pids: number[],
  offloaded: ConnectionRow[],
): Promise<SocketLine[]> {
  const byIno = new Map<number, ConnectionRow>();
  for (const r of offloaded) if (r.ino > 0) byIno.set(r.ino, r);
  const kernel = await kernelTcp();
  const lines: SocketLine[] = [];
  for (const pid of pids) {
    let fds: number[];
    try {
      fds = [...Deno.readDirSync(`/proc/${pid}/fd`)].map((e) => Number(e.name)).sort((a, b) =>
        a - b
      );
    } catch {
      continue; // gone, or not ours to read
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = Deno.readLinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = target.match(/^socket:\[(\d+)\]$/);
      if (!m) continue;
      const inode = Number(m[1]);
      const row = byIno.get(inode);
      if (row) {
        lines.push({
          pid,
          fd,
          where: "pno",
          proto: "tcp",
          local: row.local,
          remote: row.state === "LISTEN" || row.state === "CLOSED" ? "*:*" : row.remote,
          state: row.state,
          bytesIn: row.bytesReceived,
          bytesOut: row.bytesAcked,
          inode,
        });
        continue;
      }
      const k = kernel.get(inode);
      if (k) lines.push({ pid, fd, where: "kernel", ...k });
      else {
        lines.push({
          pid,
          fd,
          where: "kernel",
          proto: otherProto(pid, inode),
          local: "",
          remote: "",
          state: "",
          bytesIn: null,
          bytesOut: null,
          inode,
        });
      }
    }
  }
  return lines;
}

/** Runs `pno ls`. */
export async function lsMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["stats"],
    boolean: ["help", "json"],
    alias: { h: "help" },
    unknown: (arg: string) => {
      if (arg.startsWith("-")) throw new Error(`unknown option ${arg}; see pno ls --help`);
      return true;
    },
  });
  if (flags.help) {
    console.log(LS_HELP);
    return 0;
  }
  const only = flags._.length > 0 ? Number(flags._[0]) : null;
  if (only !== null && !(Number.isInteger(only) && only > 0)) {
    throw new Error(`${flags._[0]}: a process id`);
  }
  const stats = await findStats(flags.stats);
  const snap = await stats.snapshot();
  const pids = only !== null
    ? [only]
    : [...new Set(snap.apps.flatMap((a) => [a.pid, ...descendants(a.pid)]))];
  const lines = await listSockets(pids, await stats.connections());
  if (flags.json) {
    console.log(JSON.stringify(lines));
    return 0;
  }
  const n = (x: number | null) => x === null ? "-" : String(x);
  const table = [
    ["PID", "FD", "WHERE", "PROTO", "LOCAL", "REMOTE", "STATE", "BYTES-IN", "BYTES-OUT"],
    ...lines.map((l) => [
      String(l.pid),
      String(l.fd),
      l.where,
      l.proto,
      l.local || "-",
      l.remote || "-",
      l.state || "-",
      n(l.bytesIn),
      n(l.bytesOut),
    ]),
  ];
  const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
  for (const r of table) console.log(r.map((x, c) => x.padEnd(widths[c])).join("  ").trimEnd());
  console.error(`(stats from ${stats.base}; ${pids.length} process(es))`);
  return 0;
}
