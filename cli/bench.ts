/**
 * `pno bench`: the benchmarks. Each compares in one run: the rings against memcpy today; the
 * TCP engine and PnO against the kernel path as they land.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { echoSideBySide } from "../bench/echo_side_by_side.ts";
import { formatRedisTable, redisSideBySide } from "../bench/redis_side_by_side.ts";
import { formatNginxTable, nginxSideBySide } from "../bench/nginx_side_by_side.ts";
import { runMicroBench } from "../bench/rings_micro.ts";
import { type Mode, tcpSideBySide } from "../bench/tcp_side_by_side.ts";
import { checkImpairments, type Impairments } from "./wire.ts";
import { wakeSideBySide } from "../bench/wake_side_by_side.ts";
import { statsSideBySide } from "../bench/stats_side_by_side.ts";
import { memorySideBySide } from "../bench/memory_side_by_side.ts";

export const BENCH_HELP = `pno bench: run the benchmarks

Usage: pno bench [--micro] [--engine] [--echo] [--redis [--requests N] [--idle N]]
                 [--nginx [--seconds N] [--connections N]]
                 [--tcp [--mib N] [--lossy-mib N] [--seed N] [--no-profile] [--cpu-prof]
                        [--tcp-parts clean,lossy] [--lossy-modes source,discard,echo]
                        [--lossy-faults loss=1,reorder=25,delay=10] [--linux-cc cubic,bbr]
                        [--repeat N]]
                 [--wake] [--stats [--windows N]] [--memory [--memory-idle N] [--memory-mib N]]

Options:
  --micro     host-NIC ring micro-benchmarks in one process: descriptors per second
              (batched and one at a time), stream-ring bandwidth for 64 B, 1 KiB and 64 KiB
              writes with the ratio to plain memcpy measured in the same run, and one-way
              latency to a polling consumer
  --engine    the TCP engine alone on the in-memory wire, one thread: segments per second
              for 64 B and 1460 B payloads and heap bytes allocated per segment, then bulk
              receive alone (one engine taking in-order data), with the TypeScript checksum
              and with the native one
  --echo      the kernel path and PnO side by side in one run: a kernel client in pno-client
              against an echo server on the host kernel (twin veth), the same echo on the
              rings (TCP in the bridge) and the bridge's echo service; request/response rate
              and latency, bulk bandwidth, host CPU per request, with ratios to the kernel
  --redis     unmodified redis-server under the shim (pno run) and on the host kernel (twin
              veth), redis-benchmark SET/GET with 64-byte values and 50 clients from
              pno-client against each: req/s, p50/p99, host CPU per request (redis-server),
              NIC CPU per request (the bridge), syscalls per request of the busy redis-server
              (strace -f -c for 4 s of each run), and the memory an idle established
              connection costs (10,000 idle clients: the region's resident pages, redis's
              RSS, the kernel's slab); ratios PnO/kernel
    --requests N  redis-benchmark -n for --redis (default 300000 per test)
    --idle N      idle connections for --redis's memory figure (default 10000; 0: skip)
  --nginx     unmodified nginx (master + 1, then 2 workers, sendfile, 1 KiB file) under the
              shim and on the host kernel (twin veth), wrk with keep-alive from pno-client:
              req/s, p50/p99, errors, host CPU per request (master and workers), NIC CPU per
              request (the bridge), host-kernel connections seen; ratios PnO/kernel
    --seconds N      wrk duration per run (default 10)
    --connections N  wrk -c (default 50)
  --tcp       PnO's TCP (the bridge's services) and Linux's (the same services on the host
              kernel, twin link) side by side, each link through a user-space forwarder
              (pno_fwd) with the same faults and seed: what the forwarder costs (direct
              links vs clean forwarders), bulk goodput of one connection on the clean
              forwarded wire (discard and source), then source, discard and echo at 1% loss
              + 25% reordering + 10 ms delay with each sender's retransmissions, RTOs and
              spurious retransmissions; ratios PnO/Linux; a perf profile of the bridge
              during the clean bulk run (top functions)
    --mib N       MiB per clean run (default 256)
    --lossy-mib N MiB per faulty run (default 8)
    --seed N      the forwarders' PRNG seed (default 1)
    --no-profile  skip the perf profile
    --cpu-prof    also a V8 profile (deno --cpu-prof) of a bridge of its own during a clean
                  PnO discard run: self time per function
    --tcp-parts P       which parts to run: clean, lossy or both (default clean,lossy)
    --lossy-modes M     the faulty runs' modes (default source,discard,echo)
    --lossy-faults F    the faulty runs' faults (default loss=1,reorder=25,delay=10; also
                        jitter=MS, duplicate=PCT)
    --repeat N          pairs of clean runs per mode, Linux then PnO (default 3): the table
                        shows each stack's median run, and the pairs' ratios follow it
    --linux-cc LIST     the Linux end's congestion controls (default cubic,bbr): the first,
                        the algorithm PnO's engine runs, is the reference of every ratio and
                        the only one on the clean wire; the faulty runs run each
  --wake      an idle bridge's answer time and cost: ping RTT while busy and after a quiet
              second, and the bridge's CPU while idle, with timer naps only
              (PNO_WIRE_WAKE=0) and with the wire's wakeup armed (net_af_xdp's socket, and
              net_af_packet's wake socket); the host kernel alongside
  --stats     what serving the live stats costs the data path: the bridge's echo service
              driven without pause from a namespace (64 B request/response, then bulk) while
              readers switch on and off in 1 s windows: nobody, a client polling the proxy's
              /stats and /events every 100 ms, the same polling of the bridge's own /live;
              medians, ratios to the quiet window before, the quiet windows' own variation
              (the noise), and the bridge loop's own measure of what publishing costs it
    --windows N   1-second windows per workload (default 32)
  --memory    what an idle connection costs the server and whether buffers that follow the
              flow cost a bulk flow anything: N idle echo connections from a Linux client,
              then a bulk echo on one of them (every byte checked), against the bridge with
              fixed 256 KiB rings (--fixed-buffers, the engine before autotuning), the
              bridge with autotuned rings, and Linux (python3 echo on the host kernel, twin
              link); memory per idle connection (the bridge's RSS; the kernel's slab), bulk
              goodput, the bulk connection's rings; ratios
    --memory-idle N  idle connections per server (default 5000)
    --memory-mib N   MiB of the bulk echo (default 256)
  -h, --help  show this help`;

/** "loss=1,reorder=25,delay=10[,jitter=J,duplicate=D]": the faulty runs' impairments. */
function parseFaults(text: string): Impairments {
  const keys: Record<string, keyof Impairments> = {
    loss: "lossPercent",
    reorder: "reorderPercent",
    delay: "delayMs",
    jitter: "jitterMs",
    duplicate: "duplicatePercent",
  };
  const out: Impairments = {};
  for (const part of text.split(",")) {
    const [k, v] = part.split("=");
    const key = keys[k];
    if (key === undefined || v === undefined) {
      throw new Error(
        `--lossy-faults: ${part}? (loss=PCT,reorder=PCT,delay=MS,jitter=MS,duplicate=PCT)`,
      );
    }
    out[key] = Number(v);
  }
  // The values as the wire checks them, now rather than after the clean runs.
  checkImpairments(out);
  return out;
}

/** Runs the benchmarks the flags select. */
export async function benchMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    boolean: [
      "help",
      "micro",
      "engine",
      "echo",
      "redis",
      "tcp",
      "profile",
      "nginx",
      "wake",
      "stats",
      "cpu-prof",
      "memory",
    ],
    string: [
      "requests",
      "idle",
      "mib",
      "lossy-mib",
      "seed",
      "seconds",
      "connections",
      "windows",
      "memory-idle",
      "memory-mib",
      "tcp-parts",
      "lossy-modes",
      "lossy-faults",
      "linux-cc",
      "repeat",
    ],
    alias: { h: "help" },
    default: {
      requests: "300000",
      idle: "10000",
      mib: "256",
      "lossy-mib": "8",
      seed: "1",
      seconds: "10",
      connections: "50",
      windows: "32",
      "memory-idle": "5000",
      "memory-mib": "256",
      "tcp-parts": "clean,lossy",
      "lossy-modes": "source,discard,echo",
      "linux-cc": "cubic,bbr",
      repeat: "3",
      profile: true,
    },
    negatable: ["profile"],
    unknown: (arg: string) => {
      throw new Error(`unknown option ${arg}; see pno bench --help`);
    },
  });
  if (
    flags.help ||
    !(flags.micro || flags.engine || flags.echo || flags.redis || flags.tcp || flags.nginx ||
      flags.wake || flags.stats || flags.memory)
  ) {
    console.log(BENCH_HELP);
    return flags.help ? 0 : 2;
  }
  if (flags.micro) await runMicroBench();
  if (flags.echo) console.log(await echoSideBySide());
  if (flags.redis) {
    const requests = Number(flags.requests), idle = Number(flags.idle);
    if (!(requests > 0) || !(idle >= 0)) throw new Error("--requests and --idle take numbers");
    const c = await redisSideBySide({
      requests,
      clients: 50,
      valueBytes: 64,
      straceSeconds: 4,
      idleConnections: idle,
      log: (line) => console.log(line),
    });
    console.log(formatRedisTable(c));
  }
  if (flags.nginx) {
    const seconds = Number(flags.seconds), connections = Number(flags.connections);
    if (!(seconds > 0) || !(connections > 0)) {
      throw new Error("--seconds and --connections take numbers");
    }
    const runs = await nginxSideBySide({
      workers: [1, 2],
      seconds,
      connections,
      log: (line) => console.log(line),
    });
    console.log(formatNginxTable(runs));
  }
  if (flags.tcp) {
    const mib = Number(flags.mib), lossyMib = Number(flags["lossy-mib"]), seed = Number(flags.seed);
    if (!(mib > 0) || !(lossyMib > 0) || !Number.isInteger(seed)) {
      throw new Error("--mib and --lossy-mib take sizes in MiB, --seed an integer");
    }
    const parts: string[] = String(flags["tcp-parts"]).split(",");
    const modes: string[] = String(flags["lossy-modes"]).split(",");
    if (
      parts.some((p) => p !== "clean" && p !== "lossy") ||
      modes.some((m) => m !== "source" && m !== "discard" && m !== "echo")
    ) {
      throw new Error("--tcp-parts takes clean,lossy; --lossy-modes source,discard,echo");
    }
    if (!(Number.isInteger(Number(flags.repeat)) && Number(flags.repeat) >= 1)) {
      throw new Error("--repeat takes a count of at least 1");
    }
    const lines = await tcpSideBySide({
      mib,
      lossyMib,
      seed,
      profile: flags.profile,
      cpuProf: flags["cpu-prof"],
      parts: new Set(parts as ("clean" | "lossy")[]),
      linuxCcs: String(flags["linux-cc"]).split(","),
      repeat: Number(flags.repeat),
      faults: flags["lossy-faults"] === undefined ? undefined : parseFaults(flags["lossy-faults"]),
      lossyModes: modes as Mode[],
      log: (line) => console.error(line),
    });
    console.log(lines.join("\n"));
  }
  if (flags.wake) console.log((await wakeSideBySide()).join("\n"));
  if (flags.stats) {
    const windows = Number(flags.windows);
    if (!(Number.isInteger(windows) && windows >= 4)) throw new Error("--windows: at least 4");
    const lines = await statsSideBySide({ windows, log: (line) => console.error(line) });
    console.log(lines.join("\n"));
  }
  if (flags.memory) {
    const idle = Number(flags["memory-idle"]), mib = Number(flags["memory-mib"]);
    if (!(Number.isInteger(idle) && idle >= 1) || !(mib > 0)) {
      throw new Error("--memory-idle takes a count, --memory-mib a size in MiB");
    }
    const lines = await memorySideBySide({ idle, mib, log: (line) => console.error(line) });
    console.log(lines.join("\n"));
  }
  if (flags.engine) {
    // The engine benchmark measures allocation with V8 flags of its own: it runs as a child.
    // Twice: with the TypeScript checksum (PNO_NATIVE_CSUM=0), then with libpno_copy's.
    const bench = new URL("../bench/tcp_engine.ts", import.meta.url).pathname;
    for (const native of [false, true]) {
      console.log(
        `checksum: ${native ? "native (libpno_copy)" : "TypeScript (PNO_NATIVE_CSUM=0)"}`,
      );
      const status = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-ffi", bench],
        env: { PNO_NATIVE_CSUM: native ? "1" : "0" },
        stdout: "inherit",
        stderr: "inherit",
      }).spawn().status;
      if (!status.success) return 1;
    }
  }
  return 0;
}
