/**
 * `pno proxy`: runs the host proxy in the foreground until SIGINT or SIGTERM (also
 * `deno task proxy` and `deno run proxy`).
 *
 * Prints one JSON line when ready ({"event":"ready",...}), one per application admitted,
 * refused or gone, and one with the final counters when stopped.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { loadPolicy, OPEN_POLICY, Proxy, proxyStatsApp } from "@pno/proxy";

export const PROXY_HELP = `pno proxy: the host control plane between applications and the bridge

Usage: pno proxy [options]

Applications attach to the proxy's socket (PNO_CONTROL, or pno run --control) exactly as they
would to the bridge's. The proxy admits each by its uid under the policy, creates its region,
has the bridge map it, passes the waiters' wake sockets on, and when the application's last
process exits has the bridge finish its connections and free the region. Wakeups and data go
between the application and the bridge directly, never through the proxy.

Options:
  --listen PATH      the socket applications attach to       (default: /run/pno/proxy.sock)
  --bridge PATH      the bridge's control socket (pno bridge --control)
                                                              (default: /run/pno/bridge.sock)
  --policy FILE      admission policy, JSON (default: every uid, the bridge's limits):
                       {"uids": [0, 1000], "sockets": 4096, "memory": "1GiB",
                        "perUid": {"1000": {"sockets": 64, "memory": "64MiB"}}}
                     uids: users admitted; sockets: offloaded sockets per application (0
                     refuses); memory: bytes of region per application (fewer sockets fit)
  --stats-port N     serve GET /stats on 127.0.0.1:N, 0 = any, "none" = off (default: 7082)
  -h, --help         show this help

The bridge must run first, as root or as the proxy's user. Stopping the proxy leaves running
applications attached: the bridge frees each region once its processes have exited.`;

/** Runs the proxy CLI with `args`; resolves with the exit code. */
export async function proxyMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["listen", "bridge", "policy", "stats-port"],
    boolean: ["help"],
    alias: { h: "help" },
    default: {
      listen: "/run/pno/proxy.sock",
      bridge: "/run/pno/bridge.sock",
      "stats-port": "7082",
    },
    unknown: (arg: string) => {
      throw new Error(`unknown option ${arg}; see pno proxy --help`);
    },
  });
  if (flags.help) {
    console.log(PROXY_HELP);
    return 0;
  }
  const policy = flags.policy ? await loadPolicy(flags.policy) : OPEN_POLICY;
  const print = (e: Record<string, unknown>) => console.log(JSON.stringify(e));
  const proxy = await Proxy.start({
    listen: flags.listen,
    bridge: flags.bridge,
    policy,
    onEvent: print,
  });
  const statsPort = flags["stats-port"];
  const server = statsPort === "none" ? null : Deno.serve({
    hostname: "127.0.0.1",
    port: Number(statsPort),
    onListen: () => {},
  }, proxyStatsApp(proxy).fetch);
  let stop = (_code: number) => {};
  const stopped = new Promise<number>((resolve) => stop = resolve);
  const onSignal = () => stop(0);
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  void proxy.bridge.closed.then((why) => {
    console.error(`pno proxy: ${why}`);
    stop(1);
  });
  print({
    event: "ready",
    pid: Deno.pid,
    listen: flags.listen,
    bridge: flags.bridge,
    policy: flags.policy ?? null,
    stats: server ? `http://127.0.0.1:${server.addr.port}/stats` : null,
  });
  const code = await stopped;
  const final = proxy.stats();
  await proxy.close();
  await server?.shutdown();
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  print({ event: "stopped", stats: final });
  return code;
}

if (import.meta.main) {
  try {
    Deno.exit(await proxyMain(Deno.args));
  } catch (err) {
    console.error(`pno proxy: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
