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
import { liveStatsApp } from "@pno/stats";

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
  --stats-port N     serve the proxy's own counters (GET /stats: admissions, applications)
                     on 127.0.0.1:N, 0 = any, "none" = off     (default: 7082)
  --stats-address HOST:PORT
                     serve the bridge's live stats here (Hono): GET / dashboard, /stats JSON,
                     /metrics Prometheus, /events SSE, /connections; the proxy's own counters
                     at /proxy/stats. PORT 0 = any, "none" = off (default: 127.0.0.1:9464)
  --events-ms N      interval of /events when the client names none (default: 1000)
  -h, --help         show this help

The bridge must run first, as root or as the proxy's user. Stopping the proxy leaves running
applications attached: the bridge frees each region once its processes have exited.`;

/** Runs the proxy CLI with `args`; resolves with the exit code. */
export async function proxyMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["listen", "bridge", "policy", "stats-port", "stats-address", "events-ms"],
    boolean: ["help"],
    alias: { h: "help" },
    default: {
      listen: "/run/pno/proxy.sock",
      bridge: "/run/pno/bridge.sock",
      "stats-port": "7082",
      "stats-address": "127.0.0.1:9464",
      "events-ms": "1000",
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
  const live = flags["stats-address"] === "none" ? null : serveLive(proxy, flags["stats-address"], {
    eventsIntervalMs: Number(flags["events-ms"]),
  });
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
    live: live ? `http://${live.addr.hostname}:${live.addr.port}/` : null,
  });
  const code = await stopped;
  const final = proxy.stats();
  await proxy.close();
  await server?.shutdown();
  await live?.shutdown();
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
  print({ event: "stopped", stats: final });
  return code;
}

/** Starts the live stats server at "HOST:PORT" over the bridge's page. */
function serveLive(
  proxy: Proxy,
  address: string,
  opts: { eventsIntervalMs: number },
): Deno.HttpServer<Deno.NetAddr> {
  const colon = address.lastIndexOf(":");
  const hostname = address.slice(0, colon), port = Number(address.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--stats-address ${address}: HOST:PORT expected`);
  }
  if (!(opts.eventsIntervalMs > 0)) throw new Error(`--events-ms: a positive number of ms`);
  const app = liveStatsApp(() => (proxy.bridge.alive ? proxy.bridge.stats : null), opts);
  app.route("/proxy", proxyStatsApp(proxy));
  return Deno.serve({ hostname, port, onListen: () => {} }, app.fetch);
}

if (import.meta.main) {
  try {
    Deno.exit(await proxyMain(Deno.args));
  } catch (err) {
    console.error(`pno proxy: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
