/**
 * `pno bench`: the benchmarks. Each compares in one run: the rings against memcpy today; the
 * TCP engine and PnO against the kernel path as they land.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { runMicroBench } from "../bench/rings_micro.ts";

export const BENCH_HELP = `pno bench: run the benchmarks

Usage: pno bench [--micro] [--engine]

Options:
  --micro     host-NIC ring micro-benchmarks in one process: descriptors per second
              (batched and one at a time), stream-ring bandwidth for 64 B, 1 KiB and 64 KiB
              writes with the ratio to plain memcpy measured in the same run, and one-way
              latency to a polling consumer
  --engine    the TCP engine alone on the in-memory wire, one thread: segments per second
              for 64 B and 1460 B payloads and heap bytes allocated per segment
  -h, --help  show this help`;

/** Runs the benchmarks the flags select. */
export async function benchMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    boolean: ["help", "micro", "engine"],
    alias: { h: "help" },
    unknown: (arg: string) => {
      throw new Error(`unknown option ${arg}; see pno bench --help`);
    },
  });
  if (flags.help || !(flags.micro || flags.engine)) {
    console.log(BENCH_HELP);
    return flags.help ? 0 : 2;
  }
  if (flags.micro) await runMicroBench();
  if (flags.engine) {
    // The engine benchmark measures allocation with V8 flags of its own: it runs as a child.
    const bench = new URL("../bench/tcp_engine.ts", import.meta.url).pathname;
    const status = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", bench],
      stdout: "inherit",
      stderr: "inherit",
    }).spawn().status;
    if (!status.success) return 1;
  }
  return 0;
}
