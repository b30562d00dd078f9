/**
 * `pno`: one entry for every PnO program. Each subcommand lives in its own module and takes
 * --help; this file only dispatches.
 *
 * @module
 */
import { bridgeMain } from "../packages/bridge/main.ts";
import { benchMain } from "./bench.ts";
import { captureMain } from "./capture.ts";
import { demoMain } from "./demo.ts";
import { lsMain } from "./ls.ts";
import { proxyMain } from "./proxy.ts";
import { runMain } from "./run.ts";
import { statsMain } from "./stats.ts";
import { testMain } from "./run_tests.ts";
import { wireMain } from "./wire.ts";

const HELP = `pno: Plug & Offload, the TCP stack of unmodified Linux servers on a SmartNIC

Usage: pno <command> [options]     (pno <command> --help for each)

Commands:
  demo           the end-to-end demo: redis-server under the shim against one on the host
                 kernel, redis-benchmark from the client namespace, a side-by-side table
  wire up|down   create or remove the emulated wire (namespace pno-client, veths, twin link)
  bridge         run the NIC-side bridge (DPDK on pno1, 10.88.0.2) in the foreground
  proxy          run the host proxy: admits applications (policy), creates and maps regions
  run            run an unmodified program under the shim: pno run [--control PATH] -- APP ARGS
  ls [PID]       every socket of the attached applications: offloaded (pno) or kernel
  stats          live figures like top (--json once); from the proxy's :9464 or the bridge's
  capture        record what a running bridge sends and receives: --out FILE.pcapng
  bench          PnO against the kernel path in one run: --redis, --nginx, --echo, --tcp,
                 --wake, --memory, --stats; --micro: rings; --engine: TCP engine
  test           run every test (unit and integration); ends with "N passed, N failed"
  help           this text`;

const commands: Record<string, (args: string[]) => Promise<number>> = {
  demo: demoMain,
  wire: wireMain,
  bridge: bridgeMain,
  proxy: proxyMain,
  run: runMain,
  test: testMain,
  bench: benchMain,
  ls: lsMain,
  stats: statsMain,
  capture: captureMain,
};

async function main(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === "help" || name === "--help" || name === "-h") {
    console.log(HELP);
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    console.error(`pno: unknown command ${name}\n\n${HELP}`);
    return 2;
  }
  return await command(rest);
}

try {
  Deno.exit(await main(Deno.args));
} catch (err) {
  console.error(`pno: ${(err as Error).message}`);
  Deno.exit(1);
}
