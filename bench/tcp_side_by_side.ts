/**
 * `pno bench --tcp`: PnO's TCP and Linux's side by side in one run, each reached through the
 * same kind of forwarder (ffi/fwd/pno_fwd.c) with the same settings and seed, so every figure
 * under faults is a ratio to Linux under the same faults.
 *
 * A Linux client (python3) in the bench's namespace talks to
 *   - PnO: the bridge's services on its DPDK port (discard 9, source 19, echo 7),
 *   - Linux: the same three services written in python3 on the host kernel, over the twin link.
 * Runs, each one connection:
 *   1. the forwarder's own cost: bulk discard and source on the links joined directly, then
 *      through clean forwarders (PnO and Linux alike);
 *   2. bulk goodput on the clean forwarded wire, with a perf profile of the bridge meanwhile
 *      (top functions: JIT frames named through V8's --perf-basic-prof);
 *   3. source, discard and echo of 8 MiB at 1% loss + 25% reordering + 10 ms delay (both
 *      directions: a 20 ms RTT), every byte checked, with each sender's retransmitted segments,
 *      RTOs and spurious retransmissions.
 * Before each run the forwarders restart, so each PRNG begins at the seed.
 *
 * Where the figures come from: a Linux sender's from its own TCP_INFO (tcpi_total_retrans,
 * tcpi_total_rto, tcpi_dsack_dups: the spurious retransmissions its receiver reported with
 * D-SACK); the bridge's from /stats (retransSegs, rtoEvents) and, for spurious ones, the
 * D-SACKs the Linux client sent about the bridge's data (nstat in the client's namespace:
 * TcpExtTCPDSACKOldSent + TcpExtTCPDSACKOfoSent), since the receiver is the one who sees a
 * duplicate.
 *
 * Run: ./pno bench --tcp [--mib N] [--lossy-mib N] [--seed N] [--no-profile]
 *
 * @module
 */
import { BridgeProcess } from "../cli/bridge_process.ts";
import { summariseCpuProfile } from "./_cpu_profile.ts";
import {
  bridgeReceiveThread,
  forwarderCounters,
  type Impairments,
  inNs,
  restartForwarders,
  sh,
  testWire,
  type WireConfig,
  wireDown,
  wireUp,
} from "../cli/wire.ts";

/** tcp_info fields a Linux endpoint reports (offsets of struct tcp_info, Linux 6.7+). */
const TCP_INFO_PY = String.raw`
import socket, struct
def tcp_info(s):
    b = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    u32 = lambda o: struct.unpack_from("I", b, o)[0] if len(b) >= o + 4 else None
    u16 = lambda o: struct.unpack_from("H", b, o)[0] if len(b) >= o + 2 else None
    return {"retrans": u32(100), "rto": u16(240), "spurious": u32(216),
            "dataSegsOut": u32(156), "rttUs": u32(68), "reordering": u32(88)}
PATTERN = bytes(i % 251 for i in range(251 * 263))  # any offset mod 251 + 64 KiB
`;

/** The Linux services on the host kernel: discard, source (i mod 251), echo; one JSON per end. */
const KERNEL_SERVICES = TCP_INFO_PY + String.raw`
import json, sys, threading
host = sys.argv[1]
ccs = sys.argv[2].split(",")
def serve(mode, c, cc):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    try:
        if mode == "discard":
            while c.recv(1 << 16): pass
        elif mode == "echo":
            while True:
                b = c.recv(1 << 16)
                if not b: break
                c.sendall(b)
        else:
            mv, off = memoryview(PATTERN), 0
            while True:
                off += c.send(mv[off % 251:off % 251 + 65536])
    except OSError:
        pass
    print(json.dumps({"mode": mode, "info": tcp_info(c)}), flush=True)
    c.close()
def listen(mode, port, cc):
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    l.bind((host, port)); l.listen(16)
    while True:
        c, _ = l.accept()
        threading.Thread(target=serve, args=(mode, c, cc), daemon=True).start()
for i, cc in enumerate(ccs):
    for mode, port in (("echo", 7), ("discard", 9), ("source", 19)):
        threading.Thread(target=listen, args=(mode, port + 1000 * i, cc), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
`;

/** The client: one connection, one mode, every byte checked; prints one JSON line. */
const CLIENT = TCP_INFO_PY + String.raw`
import json, sys, threading, time
mode, host, port, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = socket.socket()
if len(sys.argv) > 5: c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, sys.argv[5].encode())
c.settimeout(600)
c.connect((host, port))
mv = memoryview(PATTERN)
def send_all():
    off = 0
    while off < total:
        n = min(65536, total - off)
        c.sendall(mv[off % 251:off % 251 + n]); off += n
def receive_checked():
    got, bad = 0, 0
    while got < total:
        b = c.recv(min(1 << 16, total - got))
        if not b: break
        if b != PATTERN[got % 251:got % 251 + len(b)]: bad += 1
        got += len(b)
    return got, bad
t0 = time.perf_counter(); got, bad = total, 0
if mode == "discard":
    send_all(); c.shutdown(socket.SHUT_WR)
    while c.recv(1 << 16): pass
elif mode == "source":
    got, bad = receive_checked()
else:
    t = threading.Thread(target=send_all); t.start()
    got, bad = receive_checked(); t.join(); c.shutdown(socket.SHUT_WR)
    while c.recv(1 << 16): pass
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "bytes": got, "badChunks": bad, "info": tcp_info(c)}))
`;

export type Mode = "discard" | "source" | "echo";
const PORTS: Record<Mode, number> = { echo: 7, discard: 9, source: 19 };

/** A sender's repair work in one run. */
interface Repairs {
  retrans: number;
  rtos: number;
  /** Spurious retransmissions; null where nothing could tell. */
  spurious: number | null;
}

/** One run of one stack. */
interface Run {
  stack: "PnO" | "Linux";
  /** The Linux end's congestion control (TCP_CONGESTION on both of its sockets). */
  cc?: string;
  mode: Mode;
  bytes: number;
  seconds: number;
  /** Data sent by the server (source, echo) and by the client (discard, echo). */
  server: Repairs;
  client: Repairs;
  /** The bridge's loss-recovery counters over the run (PnO only). */
  recovery?: Record<string, number>;
}

/** The bridge's counters that say how it recovered, reported per PnO run under faults. */
const RECOVERY_COUNTERS = [
  "sackRecoveries",
  "rackLosses",
  "undoRecoveries",
  "dsacksIn",
  "tlpProbes",
  "tlpRecoveries",
] as const;

/** Options of the benchmark. */
export interface TcpBenchOptions {
  /** MiB per clean bulk run (default 256). */
  mib: number;
  /** MiB per lossy run (default 8). */
  lossyMib: number;
  seed: number;
  /** Pairs of clean runs per mode (default 3); the table shows the median of each stack. */
  repeat?: number;
  /** Record a perf profile of the bridge during the clean bulk runs. */
  profile: boolean;
  /** Also run the clean PnO discard on a bridge under `deno --cpu-prof` and summarise it. */
  cpuProf?: boolean;
  /** The parts to run (default both): the clean wire, the faulty one. */
  parts?: ReadonlySet<"clean" | "lossy">;
  /** The faulty runs' modes (default source, discard, echo). */
  lossyModes?: readonly Mode[];
  /** The faulty runs' impairments (default LOSSY: the issue's 1% + 25% + 10 ms). */
  faults?: Impairments;
  /**
   * The Linux end's congestion controls (default ["cubic"], the engine's): the first is the
   * reference of every ratio and the only one on the clean wire; the faulty runs run each.
   */
  linuxCcs?: string[];
  log: (line: string) => void;
}

export const LOSSY: Impairments = { lossPercent: 1, reorderPercent: 25, delayMs: 10 };

/** The bench's own wire: namespace pno-twbench, 10.76.0.0/24 and the twin on 10.77.0.0/24. */
const WIRE = testWire("twbench", 76, true);

/** The bridge's tcp counters (summed over queues). */
async function bridgeTcp(bridge: BridgeProcess): Promise<Record<string, number>> {
  return ((await bridge.stats()) as unknown as { tcp: Record<string, number> }).tcp;
}

/** D-SACKs Linux in the client namespace has sent (its peers' duplicates it received). */
async function clientDsacksSent(w: WireConfig): Promise<number> {
  const out = await sh(inNs(w, "nstat", "-az", "TcpExtTCPDSACKOldSent", "TcpExtTCPDSACKOfoSent"));
  let n = 0;
  for (const line of out.split("\n")) {
    const m = line.match(/^TcpExtTCPDSACK(?:Old|Ofo)Sent\s+(\d+)/);
    if (m) n += Number(m[1]);
  }
  return n;
}

/** Spurious retransmissions the bridge's engine counts itself, once it does (D-SACK). */
const BRIDGE_SPURIOUS = ["spuriousRetrans", "dsackDups", "dsackIn"];

interface Endpoints {
  bridge: BridgeProcess;
  /** The congestion controls the kernel services listen with (ports 1000 apart). */
  linuxCcs: string[];
  /** The kernel services' output lines, one JSON per connection that ended. */
  kernelLines: () => Promise<string>;
}

/**
 * Where frames for PnO were lost before its engine saw them, over the bridge's life so far:
 * the port's counters (DPDK's imissed; with net_af_xdp, the AF_XDP socket's full RX ring and
 * empty fill ring) and the drops the kernel counted on the bridge's veth (with an XDP program
 * a veth queues at most 256 frames for its NAPI).
 */
async function portDropCounters(w: WireConfig, bridge: BridgeProcess): Promise<string> {
  const port = (await bridge.stats()).port;
  const parts = (["imissed", "rxRingFull", "rxFillEmpty", "rxNoMbuf", "txDropped"] as const)
    .map((k) => `${k} ${port[k]}`);
  const ethtool = await sh(["ethtool", "-S", w.bridge], true).catch(() => "");
  for (const m of ethtool.matchAll(/^\s*(\S*(?:drop|err|full)\S*): (\d+)$/gm)) {
    if (m[2] !== "0") parts.push(`${w.bridge} ${m[1]} ${m[2]}`);
  }
  const link = await sh(inNs(w, "ip", "-s", "-j", "link", "show"), true).catch(() => "[]");
  for (
    const l of JSON.parse(link) as { ifname: string; stats64?: { tx?: { dropped: number } } }[]
  ) {
    const dropped = l.stats64?.tx?.dropped ?? 0;
    if (dropped > 0) parts.push(`${w.ns}/${l.ifname} tx dropped ${dropped}`);
  }
  return parts.join(", ");
}

/** One run against one stack: client in the namespace; repair counters from both ends. */
async function runOnce(
  w: WireConfig,
  ep: Endpoints,
  stack: Run["stack"],
  mode: Mode,
  bytes: number,
  cc: string,
): Promise<Run> {
  const host = (stack === "PnO" ? w.bridgeAddress : w.twin!.hostAddress).split("/")[0];
  // The kernel services listen for each congestion control on ports 1000 apart.
  const port = PORTS[mode] + (stack === "PnO" ? 0 : 1000 * ep.linuxCcs.indexOf(cc));
  const tcpBefore = await bridgeTcp(ep.bridge);
  const dsacksBefore = await clientDsacksSent(w);
  const out = await sh(
    inNs(w, "timeout", "600", "python3", "-c", CLIENT, mode, host, `${port}`, `${bytes}`, cc),
  );
  const r = JSON.parse(out.trim().split("\n").pop()!);
  if (r.bytes !== bytes || r.badChunks !== 0) {
    throw new Error(`${stack} ${mode}: ${r.bytes} of ${bytes} bytes, ${r.badChunks} bad chunks`);
  }
  const dsacks = (await clientDsacksSent(w)) - dsacksBefore;
  const client: Repairs = {
    retrans: r.info.retrans,
    rtos: r.info.rto ?? NaN,
    spurious: r.info.spurious,
  };
  let server: Repairs;
  let recovery: Record<string, number> | undefined;
  if (stack === "PnO") {
    // The service's socket may still be closing: its counters are the engine's totals.
    await new Promise((res) => setTimeout(res, 200));
    const after = await bridgeTcp(ep.bridge);
    const d = (k: string) => (after[k] ?? 0) - (tcpBefore[k] ?? 0);
    const own = BRIDGE_SPURIOUS.find((k) => k in after);
    server = {
      retrans: d("retransSegs"),
      rtos: d("rtoEvents"),
      spurious: own !== undefined ? d(own) : dsacks,
    };
    recovery = Object.fromEntries(RECOVERY_COUNTERS.map((k) => [k, d(k)]));
  } else {
    const line = await waitKernelLine(ep, mode);
    server = { retrans: line.info.retrans, rtos: line.info.rto ?? NaN, spurious: dsacks };
  }
  return {
    stack,
    cc: stack === "Linux" ? cc : undefined,
    mode,
    bytes,
    seconds: r.seconds,
    server,
    client,
    recovery,
  };
}

let kernelSeen = 0;

/** The next line the kernel services printed for a connection of `mode`. */
async function waitKernelLine(
  ep: Endpoints,
  mode: Mode,
): Promise<{ info: { retrans: number; rto: number | null } }> {
  const end = performance.now() + 10_000;
  for (;;) {
    const lines = (await ep.kernelLines()).split("\n").filter((l) => l.startsWith("{"));
    for (; kernelSeen < lines.length; kernelSeen++) {
      const l = JSON.parse(lines[kernelSeen]);
      if (l.mode === mode) {
        kernelSeen++;
        return l;
      }
    }
    if (performance.now() > end) throw new Error(`the kernel ${mode} server did not report`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

/** Samples the bridge with perf while `body` runs; returns the top symbols. */
async function profiled(pid: number, body: () => Promise<void>): Promise<string[]> {
  const data = `/tmp/pno-bench-tcp-${Deno.pid}.perf`;
  const perf = new Deno.Command("perf", {
    args: ["record", "-F", "999", "-p", String(pid), "-o", data],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  await new Promise((res) => setTimeout(res, 300)); // perf attaches
  try {
    await body();
  } finally {
    perf.kill("SIGINT");
    await perf.output();
  }
  const report = await sh([
    "perf",
    "report",
    "-i",
    data,
    "--no-children",
    "--sort",
    "sym",
    "--stdio",
    "--percent-limit",
    "1",
  ]);
  await Deno.remove(data).catch(() => {});

  return report.split("\n").filter((l) => /^\s+\d/.test(l)).slice(0, 20).map((l) =>
    l.trim().replace(/\s+/g, " ")
  );
}

const mbps = (r: Run) => r.bytes / r.seconds / 1e6;

/** The run with the median goodput (the lower middle one of an even count). */
function medianRun(runs: Run[]): Run {
  const sorted = [...runs].sort((a, b) => mbps(a) - mbps(b));
  return sorted[(sorted.length - 1) >> 1];
}
const fmtRepairs = (x: Repairs) =>
  `${x.retrans}/${Number.isNaN(x.rtos) ? "?" : x.rtos}/${x.spurious ?? "-"}`;

/** "PnO", or "Linux cubic": the Linux rows name their congestion control. */
const label = (r: Run) => r.stack === "Linux" ? `Linux ${r.cc}` : r.stack;

/** Rows per run; each ratio is to the first Linux row of its mode. */
function table(title: string, runs: Run[]): string[] {
  const lines = [
    title,
    "mode    | stack       |      MB/s | ratio |       s | server retr/RTO/spur | client retr/RTO/spur",
  ];
  for (const r of runs) {
    const linux = runs.find((x) => x.stack === "Linux" && x.mode === r.mode)!;
    lines.push(
      `${r.mode.padEnd(7)} | ${label(r).padEnd(11)} | ${mbps(r).toFixed(2).padStart(9)} | ${
        (mbps(r) / mbps(linux)).toFixed(2).padStart(5)
      } | ${r.seconds.toFixed(2).padStart(7)} | ${fmtRepairs(r.server).padStart(20)} | ${
        fmtRepairs(r.client).padStart(20)
      }`,
    );
  }
  return lines;
}

/** Runs the benchmark; returns the report's lines. */
export async function tcpSideBySide(o: TcpBenchOptions): Promise<string[]> {
  const w = WIRE;
  const MiB = 1 << 20;
  const report: string[] = [];
  let bridge: BridgeProcess | null = null;
  let pnoDriver = "?";
  let kernel: Deno.ChildProcess | null = null;
  let kernelText = "";
  /** Whether the bridge's veth end had a NAPI thread of its own in the forwarded runs. */
  let bridgeNapiThread: boolean | null = null;
  const startEndpoints = async (
    denoFlags: string[] = [],
    forwarded = true,
  ): Promise<Endpoints> => {
    // net_af_xdp: one copy per frame where af_packet makes two (README, the bridge's driver).
    bridge = await BridgeProcess.start(w, ["--driver", "af_xdp"], {
      denoFlags,
      // perf names JIT frames from /tmp/perf-PID.map (V8 also writes a log in the working
      // directory, removed with the map).
      v8Flags: o.profile ? ["--perf-basic-prof"] : [],
    });
    pnoDriver = bridge.ready.driver;
    // Both links' host ends receive in a NAPI thread of their own, as the kernel's end does.
    if (forwarded) bridgeNapiThread = await bridgeReceiveThread(w);
    if (kernel === null) {
      kernel = new Deno.Command("python3", {
        args: ["-c", KERNEL_SERVICES, w.twin!.hostAddress.split("/")[0], ccs.join(",")],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      const reader = kernel.stdout.pipeThrough(new TextDecoderStream()).getReader();
      (async () => {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return;
          kernelText += value;
        }
      })();
      const end = performance.now() + 10_000;
      while (!kernelText.includes("ready")) {
        if (performance.now() > end) throw new Error("kernel services did not start");
        await new Promise((res) => setTimeout(res, 20));
      }
    }
    return {
      bridge: bridge!,
      linuxCcs: ccs,
      kernelLines: () => Promise.resolve(kernelText),
    };
  };
  const stopBridge = async () => {
    if (bridge === null) return;
    const pid = (bridge as BridgeProcess).ready.pid;
    await (bridge as BridgeProcess).stop();
    bridge = null;
    await Deno.remove(`/tmp/perf-${pid}.map`).catch(() => {});
    for (const f of Deno.readDirSync(".")) {
      if (f.name.startsWith("isolate-") && f.name.endsWith(`-${pid}-v8.log`)) {
        Deno.removeSync(f.name);
      }
    }
  };
  const ccs = o.linuxCcs ?? ["cubic"];
  /** Linux (with each congestion control in `withCcs`), then PnO, the forwarders restarted. */
  const both = async (
    ep: Endpoints,
    mode: Mode,
    bytes: number,
    imp: Impairments | null,
    withCcs: string[] = [ccs[0]],
  ) => {
    const out: Run[] = [];
    for (const cc of withCcs) {
      if (imp !== null) await restartForwarders(w, imp);
      o.log(`  Linux (${cc}) ${mode} ${bytes / MiB} MiB...`);
      out.push(await runOnce(w, ep, "Linux", mode, bytes, cc));
    }
    if (imp !== null) await restartForwarders(w, imp);
    o.log(`  PnO ${mode} ${bytes / MiB} MiB...`);
    out.push(await runOnce(w, ep, "PnO", mode, bytes, ccs[0]));
    return out;
  };
  const parts = o.parts ?? new Set(["clean", "lossy"]);
  try {
    let ep: Endpoints | null = null;
    const forwarded: Run[] = [];
    const pairRatios: string[] = [];
    let direct: Run[] = [], profile: string[] = [], cpuProfile: string[] = [];
    let fwd: Awaited<ReturnType<typeof forwarderCounters>> = {};
    let portDrops = "";
    if (parts.has("clean")) {
      // 1. The links joined directly: what the forwarder costs.
      o.log("direct links (no forwarder)");
      await wireUp(w);
      ep = await startEndpoints([], false);
      direct = [
        ...await both(ep, "discard", o.mib * MiB, null),
        ...await both(ep, "source", o.mib * MiB, null),
      ];
      await stopBridge();
      // 2. Clean forwarders.
      const clean: Impairments = { seed: o.seed };
      o.log("clean forwarders");
      await wireUp(w, clean);
      ep = await startEndpoints();
      // Pairs of runs, Linux then PnO, `repeat` times: this VM's throughput moves with its
      // neighbours' load (Linux's own figure by 1.7x between two runs), so each table row is
      // the median run and the pairs' ratios are printed too.
      const repeat = o.repeat ?? 3;
      for (const mode of ["discard", "source"] as const) {
        const linuxRuns: Run[] = [], pnoRuns: Run[] = [];
        for (let k = 0; k < repeat; k++) {
          await restartForwarders(w, clean);
          o.log(`  Linux ${mode} ${o.mib} MiB...`);
          linuxRuns.push(await runOnce(w, ep, "Linux", mode, o.mib * MiB, ccs[0]));
          await restartForwarders(w, clean);
          const perf = o.profile && mode === "discard" && k === 0;
          o.log(`  PnO ${mode} ${o.mib} MiB${perf ? " (perf)" : ""}...`);
          let pno: Run | null = null;
          const run = async () => {
            pno = await runOnce(w, ep!, "PnO", mode, o.mib * MiB, ccs[0]);
          };
          if (perf) profile = await profiled(ep.bridge.ready.pid, run);
          else await run();
          pnoRuns.push(pno!);
        }
        forwarded.push(medianRun(linuxRuns), medianRun(pnoRuns));
        pairRatios.push(
          `  ${mode} PnO/Linux per pair: ${
            pnoRuns.map((r, k) => (mbps(r) / mbps(linuxRuns[k])).toFixed(2)).join(", ")
          }`,
        );
      }
      fwd = await forwarderCounters(w);
      portDrops = await portDropCounters(w, ep.bridge);
      if (o.cpuProf) {
        // A bridge of its own, so the profile holds its start, this run and its stop only.
        await stopBridge();
        const dir = await Deno.makeTempDir({ prefix: "pno-cpu-prof-" });
        try {
          ep = await startEndpoints(["--cpu-prof", `--cpu-prof-dir=${dir}`]);
          await restartForwarders(w, clean);
          o.log(`  PnO discard ${o.mib} MiB (deno --cpu-prof)...`);
          await runOnce(w, ep, "PnO", "discard", o.mib * MiB, ccs[0]);
          await stopBridge();
          const file = [...Deno.readDirSync(dir)].find((f) => f.name.endsWith(".cpuprofile"));
          cpuProfile = file
            ? summariseCpuProfile(await Deno.readTextFile(`${dir}/${file.name}`))
            : ["(no profile written)"];
        } finally {
          await Deno.remove(dir, { recursive: true });
        }
        ep = await startEndpoints();
      }
    }
    // 3. Faults.
    const faults = o.faults ?? LOSSY;
    const lossy: Impairments = { ...faults, seed: o.seed };
    const faulty: Run[] = [];
    let faultCounts: Awaited<ReturnType<typeof forwarderCounters>> = {};
    if (parts.has("lossy")) {
      if (ep === null) {
        await wireUp(w, lossy);
        ep = await startEndpoints();
      }
      o.log(`faults: ${JSON.stringify(lossy)}`);
      for (const mode of o.lossyModes ?? ["source", "discard", "echo"] as const) {
        faulty.push(...await both(ep, mode, o.lossyMib * MiB, lossy, ccs));
      }
      faultCounts = await forwarderCounters(w);
    }

    const hostCc = (await Deno.readTextFile("/proc/sys/net/ipv4/tcp_congestion_control")).trim();
    report.push(
      `TCP, one connection, PnO (the bridge's services on its DPDK port, ` +
        `net_${pnoDriver}) and Linux (python3 ` +
        `services on the host kernel, twin link), client: python3 in ${w.ns}`,
      `through the forwarders both host ends receive in a NAPI thread of their own: the ` +
        `kernel's with GRO, the bridge's ${
          bridgeNapiThread ? "behind its XDP program" : "NOT (its veth has no NAPI)"
        }`,
      `Linux's congestion control: ${ccs.join(", ")} (TCP_CONGESTION on both of its sockets; ` +
        `this host's default is ${hostCc}); PnO's engine runs CUBIC. Ratios are to Linux ` +
        `${ccs[0]}.`,
      "",
    );
    if (parts.has("clean")) {
      const overhead = ["forwarder cost on a clean wire (MB/s: direct link / through pno_fwd)"];
      for (const r of direct) {
        const f = forwarded.find((x) => x.stack === r.stack && x.mode === r.mode)!;
        overhead.push(
          `  ${r.stack.padEnd(5)} ${r.mode.padEnd(7)} ${mbps(r).toFixed(1)} / ${
            mbps(f).toFixed(1)
          } (${(mbps(f) / mbps(r)).toFixed(2)}x)`,
        );
      }
      report.push(...overhead, "");
      report.push(
        ...table(`clean wire through the forwarders, ${o.mib} MiB, seed ${o.seed}`, forwarded),
      );
      report.push(...pairRatios);
      report.push(`  forwarder frames: ${summariseFwd(fwd)}`);
      report.push(`  frames lost on the way into PnO, clean forwarded runs: ${portDrops}`, "");
    }
    if (parts.has("lossy")) {
      report.push(
        ...table(
          `${o.lossyMib} MiB at ${faults.lossPercent ?? 0}% loss + ${
            faults.reorderPercent ?? 0
          }% ` +
            `reordering + ${
              faults.delayMs ?? 0
            } ms delay, each direction (seed ${o.seed}, forwarders restarted ` +
            `per run)`,
          faulty,
        ),
      );
      for (const r of faulty) {
        if (r.recovery === undefined) continue;
        report.push(
          `  PnO ${r.mode} recovery: ` +
            Object.entries(r.recovery).map(([k, v]) => `${k} ${v}`).join(", "),
        );
      }
      report.push(`  forwarder (last run): ${summariseFwd(faultCounts)}`);
      report.push(
        "  retr/RTO/spur: segments retransmitted / RTOs / spurious retransmissions of the data " +
          "sender at that end (Linux: TCP_INFO; bridge: /stats; spurious where the bridge " +
          "sends or the Linux server: D-SACKs the client sent)",
      );
    }
    if (o.profile && parts.has("clean")) {
      report.push(
        "",
        `bridge profile during the clean PnO discard run (perf, ${o.mib} MiB, self time):`,
        ...profile.map((l) => `  ${l}`),
      );
    }
    if (o.cpuProf && parts.has("clean")) {
      report.push(
        "",
        `bridge CPU profile during a clean PnO discard run (deno --cpu-prof, ${o.mib} MiB):`,
        ...cpuProfile.map((l) => `  ${l}`),
      );
    }
    return report;
  } finally {
    await stopBridge();
    if (kernel !== null) {
      const k = kernel as Deno.ChildProcess;
      try {
        k.kill("SIGKILL");
      } catch {
        // already gone
      }
      await k.status;
    }
    await wireDown(w);
  }
}

function summariseFwd(c: Awaited<ReturnType<typeof forwarderCounters>>): string {
  return Object.entries(c).map(([link, d]) =>
    `${link}: in ${d.ab.framesIn + d.ba.framesIn}, dropped ${d.ab.dropped + d.ba.dropped}, ` +
    `reordered ${d.ab.reordered + d.ba.reordered}, pool full ${d.ab.poolFull + d.ba.poolFull}, ` +
    `tx failed ${d.ab.txFailed + d.ba.txFailed}`
  ).join("; ");
}

if (import.meta.main) {
  const lines = await tcpSideBySide({
    mib: 256,
    lossyMib: 8,
    seed: 1,
    profile: true,
    log: (l) => console.error(l),
  });
  console.log(lines.join("\n"));
}
