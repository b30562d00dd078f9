/**
 * Plumbing of the live-stats tests: free ports in the stats range, the proxy as a child with
 * its live stats server, a shimmed echo server that also keeps a loopback listener in the
 * kernel, clients that hold connections open from the namespace, and a real Prometheus.
 * Everything started is ended by PID.
 *
 * @module
 */
import { AppProcess, waitUntil } from "../cli/apps.ts";
import { inNs, type WireConfig } from "../cli/wire.ts";
import { TestChild } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;

/** Where tests leave files worth keeping (screenshots, captures): PNO_TEST_OUT or test-output/. */
export function testOutputDir(): string {
  const dir = Deno.env.get("PNO_TEST_OUT") ?? `${ROOT}test-output`;
  Deno.mkdirSync(dir, { recursive: true });
  return dir;
}

/** A loopback TCP port nobody listens on, from `lo..hi` (the live-stats tests' range). */
export function freePort(lo = 9464, hi = 9499): number {
  const start = lo + Math.floor(Math.random() * (hi - lo + 1));
  for (let i = 0; i <= hi - lo; i++) {
    const port = lo + ((start - lo + i) % (hi - lo + 1));
    try {
      Deno.listen({ hostname: "127.0.0.1", port }).close();
      return port;
    } catch {
      // taken
    }
  }
  throw new Error(`no free port in ${lo}..${hi}`);
}

/** `pno proxy` as a child, its live stats server at `live`. */
export class ProxyProcess {
  private constructor(readonly proc: TestChild, readonly live: string) {}

  static async start(bridgeControl: string, listen: string, port: number): Promise<ProxyProcess> {
    const proc = TestChild.run([
      Deno.execPath(),
      "run",
      "-A",
      "--unstable-ffi",
      `${ROOT}cli/proxy.ts`,
      "--listen",
      listen,
      "--bridge",
      bridgeControl,
      "--stats-port",
      "none",
      "--stats-address",
      `127.0.0.1:${port}`,
      "--events-ms",
      "200",
    ]);
    const line = await proc.nextLine();
    if (!line.startsWith("{")) throw new Error(`pno proxy did not start: ${line}`);
    const ready = JSON.parse(line) as { live: string };
    return new ProxyProcess(proc, ready.live);
  }

  async stop(): Promise<void> {
    await this.proc.kill();
  }
}

const ECHO_SERVER = `
import socket, sys, threading
port = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(64)
k = socket.socket()
k.bind(("127.0.0.1", 0))
k.listen(1)
print("listening", k.getsockname()[1], flush=True)
def serve(c):
    while True:
        d = c.recv(65536)
        if not d:
            break
        c.sendall(d)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
`;

/**
 * A python3 echo server under the shim, on `port` of every address (offloaded), with a
 * listener on 127.0.0.1 that the policy keeps in the kernel; resolves once it listens.
 */
export async function shimmedEchoServer(
  control: string,
  port: number,
): Promise<{ app: AppProcess; kernelPort: number }> {
  const app = AppProcess.start(["python3", "-u", "-c", ECHO_SERVER, String(port)], {
    control,
    name: "echo-server",
  });
  await waitUntil(
    () => /listening \d+/.test(app.output),
    "the shimmed echo server listens",
    15_000,
  );
  return { app, kernelPort: Number(app.output.match(/listening (\d+)/)![1]) };
}

const HOLDING_CLIENT = `
import socket, sys, time
host, port, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
conns = []
for i in range(n):
    c = socket.create_connection((host, port))
    data = bytes((i + j) % 251 for j in range(size))
    c.sendall(data)
    got = b""
    while len(got) < size:
        got += c.recv(65536)
    assert got == data, "echo differs"
    conns.append(c)
print("echoed", n, size, flush=True)
time.sleep(3600)
`;

/**
 * Opens `n` connections from the namespace to host:port, echoes `size` bytes on each and
 * holds them open until stopped.
 */
export async function holdingClients(
  w: WireConfig,
  host: string,
  port: number,
  n: number,
  size: number,
): Promise<TestChild> {
  const child = TestChild.run(
    inNs(w, "python3", "-u", "-c", HOLDING_CLIENT, host, String(port), String(n), String(size)),
  );
  const line = await child.nextLine();
  if (!line.startsWith("echoed")) {
    await child.kill();
    throw new Error(`holding clients: ${line || "exited"}`);
  }
  return child;
}

/** A Prometheus server scraping `target` (host:port) every second, in `dir`. */
export class PrometheusProcess {
  private constructor(readonly child: Deno.ChildProcess, readonly url: string) {}

  static async start(dir: string, target: string): Promise<PrometheusProcess> {
    const port = freePort();
    const config = `${dir}/prometheus.yml`;
    await Deno.writeTextFile(
      config,
      [
        "global:",
        "  scrape_interval: 1s",
        "  scrape_timeout: 1s",
        "scrape_configs:",
        "  - job_name: pno",
        "    static_configs:",
        `      - targets: ["${target}"]`,
        "",
      ].join("\n"),
    );
    const child = new Deno.Command("prometheus", {
      args: [
        `--config.file=${config}`,
        `--storage.tsdb.path=${dir}/tsdb`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
      ],
      stdout: "null",
      stderr: "null",
      stdin: "null",
    }).spawn();
    const p = new PrometheusProcess(child, `http://127.0.0.1:${port}`);
    await waitUntil(
      async () => {
        try {
          return (await fetch(`${p.url}/-/ready`)).ok;
        } catch {
          return false;
        }
      },
      "prometheus is ready",
      30_000,
    );
    return p;
  }

  /** The value of an instant query's single series (NaN if none or several). */
  async value(query: string): Promise<number> {
    const res = await fetch(`${this.url}/api/v1/query?query=${encodeURIComponent(query)}`);
    const body = await res.json() as {
      status: string;
      data: { result: Array<{ value: [number, string] }> };
    };
    if (body.status !== "success" || body.data.result.length !== 1) return NaN;
    return Number(body.data.result[0].value[1]);
  }

  async stop(): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch {
      // gone
    }
    const killer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, 5000);
    await this.child.status;
    clearTimeout(killer);
  }
}

/** Parses a text exposition into "name{labels}" -> value. */
export function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

/** Reads `n` SSE events of type `event` from `url`; returns their data, parsed. */
export async function readEvents(url: string, event: string, n: number): Promise<unknown[]> {
  const res = await fetch(url);
  if (!res.ok || !res.body) throw new Error(`GET ${url}: ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const found: unknown[] = [];
  let text = "";
  try {
    while (found.length < n) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
      let end;
      while ((end = text.indexOf("\n\n")) >= 0) {
        const block = text.slice(0, end);
        text = text.slice(end + 2);
        const lines = block.split("\n");
        if (lines.includes(`event: ${event}`)) {
          const data = lines.filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join(
            "\n",
          );
          found.push(JSON.parse(data));
        }
      }
    }
  } finally {
    await reader.cancel();
  }
  return found;
}
