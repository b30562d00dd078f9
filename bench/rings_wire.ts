/**
 * The ring path end to end on a veth wire, beside the bridge's in-process services in the same
 * run: a kernel client in a namespace sends a file through `nc` to (1) the bridge's discard
 * service, (2) a host echo server on the ring client (examples/ring_echo_server.ts), and reads
 * the echo back. Prints MiB/s, the CPU seconds of the bridge and of the host application, and
 * the bridge's loop and application counters. Needs root (namespaces, DPDK).
 *
 * Usage: deno run -A --unstable-ffi bench/rings_wire.ts [--mib 64] [--discard-mib 256]
 *          [--tag rwb] [--subnet 150] [--prof DIR]   (--prof: --cpu-prof of bridge and app)
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { cpuSeconds, firstLine, startRingEchoServer } from "../cli/processes.ts";
import { inNs, sh, testWire, wireDown, wireUp } from "../cli/wire.ts";

const ROOT = new URL("..", import.meta.url).pathname;

const flags = parseArgs(Deno.args, {
  string: ["mib", "discard-mib", "tag", "subnet", "prof", "runs"],
  default: { mib: "64", "discard-mib": "256", tag: "rwb", subnet: "171", runs: "1" },
});
const MiB = 1 << 20;
const mib = Number(flags.mib), discardMib = Number(flags["discard-mib"]);
const prof = flags.prof ? [`--cpu-prof`, `--cpu-prof-dir=${flags.prof}`] : [];

async function stopChild(child: Deno.ChildProcess, signal: Deno.Signal): Promise<void> {
  try {
    child.kill(signal);
  } catch {
    // already gone
  }
  const t = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, 10_000);
  await child.status;
  clearTimeout(t);
}

const w = testWire(flags.tag, Number(flags.subnet));
const addr = w.bridgeAddress.split("/")[0];
const control = `/tmp/pno-bench-${Deno.pid}.sock`;
let bridge: Deno.ChildProcess | null = null, app: Deno.ChildProcess | null = null;
const file = await Deno.makeTempFile();
try {
  await sh(["sh", "-c", `head -c ${Math.max(mib, discardMib) * MiB} /dev/urandom > ${file}`]);
  await wireUp(w);
  bridge = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-ffi",
      ...prof,
      `${ROOT}packages/bridge/main.ts`,
      "--iface",
      w.bridge,
      "--address",
      w.bridgeAddress,
      "--stats-port",
      "0",
      "--file-prefix",
      `pno-bench-${w.bridge}`,
      "--control",
      control,
    ],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const ready = JSON.parse(await firstLine(bridge)) as { stats: string };
  app = startRingEchoServer(control, prof);
  await firstLine(app);
  const stats = async () => (await (await fetch(ready.stats)).json()) as Record<string, unknown>;

  for (let run = 0; run < Number(flags.runs); run++) {
    // (1) the bridge's own discard service: the engine alone, no rings.
    let b0 = cpuSeconds(bridge.pid), t0 = performance.now();
    await sh(inNs(w, "sh", "-c", `head -c ${discardMib * MiB} ${file} | nc -N ${addr} 9`));
    let secs = (performance.now() - t0) / 1000;
    console.log(
      `discard (in-bridge service): ${discardMib} MiB in ${secs.toFixed(2)} s = ` +
        `${(discardMib / secs).toFixed(0)} MiB/s; bridge CPU ${
          (cpuSeconds(bridge.pid) - b0).toFixed(2)
        } s`,
    );

    // (2) the host echo server on the rings.
    const before = await stats();
    b0 = cpuSeconds(bridge.pid);
    const a0 = cpuSeconds(app.pid);
    t0 = performance.now();
    const out = await sh(
      inNs(w, "sh", "-c", `head -c ${mib * MiB} ${file} | timeout 15 nc -N ${addr} 8007 | wc -c`),
    );
    secs = (performance.now() - t0) / 1000;
    const after = await stats();
    const got = Number(out.trim());
    console.log(
      `ring echo: ${mib} MiB each way in ${secs.toFixed(2)} s = ${(mib / secs).toFixed(1)} ` +
        `MiB/s each way${got === mib * MiB ? "" : ` (SHORT: ${got} bytes)`}; CPU bridge ${
          (cpuSeconds(bridge.pid) - b0).toFixed(2)
        } s, app ${(cpuSeconds(app.pid) - a0).toFixed(2)} s`,
    );
    const q0 = (before.queues as Array<Record<string, Record<string, number>>>)[0];
    const q1 = (after.queues as Array<Record<string, Record<string, number>>>)[0];
    const delta = (a: Record<string, number>, b: Record<string, number>) =>
      Object.fromEntries(
        Object.entries(b).filter(([k, v]) => typeof v === "number" && v !== (a[k] ?? 0)).map((
          [k, v],
        ) => [k, v - (a[k] ?? 0)]),
      );
    console.log("  loop", JSON.stringify(delta(q0.loop, q1.loop)));
    const pick = (o: Record<string, number>, keys: string[]) =>
      Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
    const tcpKeys = [
      "retransSegs",
      "rtoEvents",
      "sackRecoveries",
      "windowProbes",
      "ofoBytes",
      "noBuffer",
    ];
    console.log(
      "  tcp",
      JSON.stringify(pick(
        delta(
          (q0.tcp as unknown as { counters: Record<string, number> }).counters,
          (q1.tcp as unknown as { counters: Record<string, number> }).counters,
        ),
        tcpKeys,
      )),
      "port",
      JSON.stringify(
        pick(
          delta(before.port as Record<string, number>, after.port as Record<string, number>),
          ["imissed", "rxNoMbuf", "txDropped", "oerrors"],
        ),
      ),
    );
    const apps0 = q0.apps as unknown as Array<Record<string, number>>;
    const apps1 = q1.apps as unknown as Array<Record<string, number>>;
    console.log("  app", JSON.stringify(delta(apps0[0] ?? {}, apps1[0] ?? {})));
  }
} finally {
  if (app) await stopChild(app, "SIGINT");
  if (bridge) await stopChild(bridge, "SIGINT");
  await wireDown(w);
  await Deno.remove(file);
  try {
    Deno.removeSync(control);
  } catch { /* gone */ }
}
