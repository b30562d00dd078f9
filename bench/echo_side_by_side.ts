/**
 * The kernel path and PnO side by side, in one run, with the same client and the same kind of
 * link: a Linux client in the namespace talks to
 *   - an echo server on the host kernel, reached over the twin veth (the baseline),
 *   - the same echo written against the ring client: its TCP runs in the bridge (PnO),
 *   - the bridge's own echo service (the NIC-side stack alone, no host application).
 * For each: request/response rate and latency with 64-byte messages, bulk echo bandwidth, and
 * the host CPU the server process spent per request (user + system time from /proc; for PnO
 * that is the application alone: the bridge stands in for the NIC's cores).
 *
 * Run: ./pno bench --echo   (or deno run -A --unstable-ffi bench/echo_side_by_side.ts)
 *
 * @module
 */
import { BridgeProcess } from "../cli/bridge_process.ts";
import { cpuSeconds, firstLine, startRingEchoServer } from "../cli/processes.ts";
import { DEFAULT_WIRE, inNs, sh, wireDown, wireUp } from "../cli/wire.ts";

const CLIENT = `
import socket, sys, time, threading, json
host, port, rr, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c = socket.create_connection((host, port)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
msg = b"x" * 64; lat = []
t0 = time.time()
for i in range(rr):
    s = time.perf_counter(); c.sendall(msg); got = 0
    while got < 64:
        b = c.recv(64 - got)
        if not b: raise SystemExit("eof")
        got += len(b)
    lat.append(time.perf_counter() - s)
rr_s = time.time() - t0
data = b"y" * (1 << 20); total = mib << 20; got = [0]
def rd():
    while got[0] < total:
        b = c.recv(1 << 16)
        if not b: break
        got[0] += len(b)
t = threading.Thread(target=rd); t1 = time.time(); t.start()
for i in range(mib): c.sendall(data)
t.join(); bulk_s = time.time() - t1
lat.sort()
print(json.dumps({"rrPerSec": rr / rr_s, "p50us": lat[len(lat) // 2] * 1e6, "p99us": lat[int(len(lat) * 0.99)] * 1e6, "bulkMiBs": mib / bulk_s, "rrSeconds": rr_s}))
`;

const KERNEL_ECHO = `
const l = Deno.listen({ hostname: Deno.args[0], port: Number(Deno.args[1]) });
console.log("listening");
for await (const conn of l) {
  conn.setNoDelay(true);
  (async () => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (let n; (n = await conn.read(buf)) !== null;) {
        for (let o = 0; o < n;) o += await conn.write(buf.subarray(o, n));
      }
    } catch { /* peer went away */ }
    try { conn.close(); } catch { /* closed */ }
  })();
}
`;

interface Row {
  name: string;
  rrPerSec: number;
  p50us: number;
  p99us: number;
  bulkMiBs: number;
  cpuUsPerReq: number | null;
}

async function measure(
  name: string,
  host: string,
  port: number,
  serverPid: number | null,
  rr: number,
  mib: number,
): Promise<Row> {
  const before = serverPid ? cpuSeconds(serverPid) : 0;
  const out = await sh(
    inNs(DEFAULT_WIRE, "python3", "-c", CLIENT, host, String(port), String(rr), String(mib)),
  );
  const after = serverPid ? cpuSeconds(serverPid) : 0;
  const r = JSON.parse(out.trim().split("\n").pop()!);
  // CPU per request over the whole run (request/response and bulk), per 64-byte request.
  const cpuUsPerReq = serverPid ? ((after - before) * 1e6) / (rr + (mib << 20) / 64) : null;
  return { name, ...r, cpuUsPerReq };
}

/** Runs the comparison; returns the report text. */
export async function echoSideBySide(rr = 20000, mib = 64): Promise<string> {
  const w = DEFAULT_WIRE;
  const control = `/tmp/pno-bench-echo-${Deno.pid}.sock`;
  let bridge: BridgeProcess | null = null;
  const kids: Deno.ChildProcess[] = [];
  try {
    await wireUp(w);
    bridge = await BridgeProcess.start(w, ["--control", control]);
    const kernelHost = w.twin!.hostAddress.split("/")[0];
    const kernel = new Deno.Command(Deno.execPath(), {
      args: ["eval", KERNEL_ECHO, kernelHost, "7007"],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    kids.push(kernel);
    const ring = startRingEchoServer(control);
    kids.push(ring);
    await firstLine(kernel);
    await firstLine(ring);
    const bridgeIp = w.bridgeAddress.split("/")[0];
    const rows = [
      await measure("kernel (host TCP, twin veth)", kernelHost, 7007, kernel.pid, rr, mib),
      await measure("PnO (host app on rings)", bridgeIp, 8007, ring.pid, rr, mib),
      await measure("bridge echo service", bridgeIp, 7, null, rr, mib),
    ];
    const base = rows[0];
    const lines = [
      `echo, one connection, client in ${w.ns}: ${rr} x 64 B request/response, then ${mib} MiB bulk`,
      "target                        |   req/s | ratio | p50 us | p99 us | bulk MiB/s | ratio | host CPU us/req",
    ];
    for (const r of rows) {
      lines.push(
        `${r.name.padEnd(29)} | ${r.rrPerSec.toFixed(0).padStart(7)} | ${
          (r.rrPerSec / base.rrPerSec).toFixed(2).padStart(5)
        } | ` +
          `${r.p50us.toFixed(0).padStart(6)} | ${r.p99us.toFixed(0).padStart(6)} | ${
            r.bulkMiBs.toFixed(1).padStart(10)
          } | ` +
          `${(r.bulkMiBs / base.bulkMiBs).toFixed(2).padStart(5)} | ` +
          `${r.cpuUsPerReq === null ? "n/a (no host app)" : r.cpuUsPerReq.toFixed(2)}`,
      );
    }
    lines.push(
      "host CPU: the server process's user+system time per 64-byte request over the whole run",
      "(bulk counted as 64-byte requests); for PnO the bridge's own CPU stands for the NIC cores.",
    );
    return lines.join("\n");
  } finally {
    for (const k of kids) {
      try {
        k.kill("SIGKILL");
      } catch {
        // already gone
      }
      await k.status;
    }
    if (bridge) await bridge.stop();
    await wireDown(w);
  }
}

if (import.meta.main) console.log(await echoSideBySide());
