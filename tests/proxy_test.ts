/**
 * The host proxy between unmodified applications and the bridge: a wire, a bridge with a
 * control socket, `pno proxy` in front of it, and redis-server under the shim attached through
 * the proxy (PNO_CONTROL = the proxy's socket), served to redis-cli in the client namespace.
 * A refused application hears why and keeps running on the kernel; an application killed by
 * PID has its region dropped by the bridge within a second (the proxy's pidfd); and the bridge
 * maps a region only for a proxy it admits (root or its own uid), never for an application.
 *
 * @module
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { AppProcess, kernelEstablished, redisCli, runCaptured, waitUntil } from "../cli/apps.ts";
import { inNs, type WireConfig } from "../cli/wire.ts";
import { shimEnv } from "../packages/shim/launcher.ts";
import { addressOf, type BridgeProcess, TestChild, withBridge } from "./_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PORT = 6379;
/** The system's python (a user's pyenv shim under /root is out of reach of uid 65534). */
const PYTHON = "/usr/bin/python3";

/** A `pno proxy` process; its ready line read, its later lines kept. */
class ProxyChild {
  private constructor(
    readonly proc: TestChild,
    readonly ready: { pid: number; listen: string; stats: string },
  ) {}

  static async start(listen: string, bridge: string, policy?: string): Promise<ProxyChild> {
    const proc = TestChild.run([
      Deno.execPath(),
      "run",
      "-A",
      "--unstable-ffi",
      `${ROOT}cli/proxy.ts`,
      "--listen",
      listen,
      "--bridge",
      bridge,
      "--stats-port",
      "0",
      "--stats-address",
      "127.0.0.1:0",
      ...(policy ? ["--policy", policy] : []),
    ]);
    const line = await proc.nextLine();
    if (!line.startsWith("{")) throw new Error(`pno proxy did not start: ${line}`);
    return new ProxyChild(proc, JSON.parse(line));
  }

  async stats(): Promise<{ admitted: number; refused: number; ended: number; apps: ProxyApp[] }> {
    return await (await fetch(this.ready.stats)).json();
  }

  async stop(): Promise<void> {
    await this.proc.kill();
  }
}

interface ProxyApp {
  region: number;
  pid: number;
  pids: number[];
  sockets: number;
}

/** The applications the bridge serves (every queue), from /stats. */
async function bridgeApps(bridge: BridgeProcess): Promise<{ app: number; pid: number }[]> {
  const stats = await bridge.stats() as unknown as {
    queues: { apps: { app: number; pid: number }[] }[];
  };
  return stats.queues.flatMap((q) => q.apps);
}

function redisArgs(dir: string, port = PORT): string[] {
  return [
    "redis-server",
    "--port",
    String(port),
    "--bind",
    "0.0.0.0",
    "--save",
    "",
    "--appendonly",
    "no",
    "--protected-mode",
    "no",
    "--dir",
    dir,
    "--logfile",
    "",
  ];
}

/** A wire, a bridge with a control socket and a temporary directory for sockets and files. */
async function withProxyWire(
  tag: string,
  subnet: number,
  body: (w: WireConfig, bridge: BridgeProcess, dir: string, control: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: `pno-${tag}-` });
  const control = `${dir}/bridge.sock`;
  try {
    await withBridge(tag, subnet, (w, bridge) => body(w, bridge, dir, control), [
      "--control",
      control,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("proxy: redis-server attaches through the proxy; killed, its region is dropped", async () => {
  await withProxyWire("tproxa", 220, async (w, bridge, dir, control) => {
    const bridgeIp = addressOf(w.bridgeAddress);
    const policy = `${dir}/policy.json`;
    await Deno.writeTextFile(policy, JSON.stringify({ uids: [0], sockets: 1024 }));
    const proxy = await ProxyChild.start(`${dir}/proxy.sock`, control, policy);
    let redis: AppProcess | null = null;
    try {
      redis = AppProcess.start(redisArgs(dir), {
        env: shimEnv({ control: proxy.ready.listen, required: true }),
        name: "redis-server",
      });
      const r = redis;
      await waitUntil(async () => {
        if (!r.alive()) throw new Error(`redis-server exited:\n${r.output}`);
        return (await redisCli(w, bridgeIp, PORT, ["PING"]).catch(() => "")).trim() === "PONG";
      }, "redis-server answers PING through the bridge");
      assertEquals(
        (await redisCli(w, bridgeIp, PORT, ["SET", "pno", "through the proxy"])).trim(),
        "OK",
      );
      assertEquals(
        (await redisCli(w, bridgeIp, PORT, ["GET", "pno"])).trim(),
        "through the proxy",
      );
      // The bridge serves the region the proxy created for redis, sized by the policy.
      const apps = await bridgeApps(bridge);
      assertEquals(apps.map((a) => a.pid), [r.pid]);
      const ps = await proxy.stats();
      assertEquals(ps.admitted, 1);
      assertEquals(ps.apps.length, 1);
      assertEquals(ps.apps[0].region, apps[0].app);
      assertEquals(ps.apps[0].pids, [r.pid]);
      assertEquals(ps.apps[0].sockets, 1024);
      // Its TCP is in the bridge: the host kernel holds no connection on the port.
      assertEquals(await kernelEstablished(PORT), []);
      // Killed by PID: the proxy's pidfd fires, the bridge drops the region.
      const t0 = performance.now();
      Deno.kill(r.pid, "SIGKILL");
      await waitUntil(async () => (await bridgeApps(bridge)).length === 0, "apps list empty", 2000);
      const ms = performance.now() - t0;
      assert(ms < 1000, `the bridge still served the region ${ms.toFixed(0)} ms after the kill`);
      await r.wait(5000);
      await waitUntil(async () => (await proxy.stats()).ended === 1, "proxy ended it", 2000);
      assertEquals((await proxy.stats()).apps, []);
      // The port is free again in the bridge: nothing answers there.
      assert((await redisCli(w, bridgeIp, PORT, ["PING"]).catch(() => "")).trim() !== "PONG");
    } finally {
      await redis?.stop("SIGKILL");
      await proxy.stop();
    }
  });
});

Deno.test("proxy: a refused application hears why and keeps running on the kernel", async () => {
  await withProxyWire("tproxb", 222, async (w, bridge, dir, control) => {
    const bridgeIp = addressOf(w.bridgeAddress);
    const cases = [
      { policy: { uids: [4242] }, reason: "uid 0 is not allowed to offload by the proxy's policy" },
      { policy: { sockets: 0 }, reason: "the proxy's policy allows uid 0 no offloaded sockets" },
    ];
    for (const [i, c] of cases.entries()) {
      const policy = `${dir}/policy${i}.json`;
      await Deno.writeTextFile(policy, JSON.stringify(c.policy));
      const proxy = await ProxyChild.start(`${dir}/proxy${i}.sock`, control, policy);
      const port = PORT + 1 + i;
      const redis = AppProcess.start(redisArgs(dir, port), {
        env: shimEnv({ control: proxy.ready.listen }),
        name: "redis-server",
      });
      try {
        // On the kernel: reachable from the host over loopback.
        await waitUntil(async () => {
          if (!redis.alive()) throw new Error(`redis-server exited:\n${redis.output}`);
          const r = await runCaptured(["redis-cli", "-p", String(port), "PING"]);
          return r.stdout.trim() === "PONG";
        }, "redis-server answers on the kernel");
        await waitUntil(
          () => redis.output.includes("sockets stay in the kernel"),
          "the shim's word",
        );
        assertMatch(redis.output, /pno: cannot attach to the bridge \(refused: /);
        assert(redis.output.includes(c.reason), redis.output);
        const set = await runCaptured(["redis-cli", "-p", String(port), "SET", "k", "kernel"]);
        assertEquals(set.stdout.trim(), "OK");
        const get = await runCaptured(["redis-cli", "-p", String(port), "GET", "k"]);
        assertEquals(get.stdout.trim(), "kernel");
        // Not offloaded: the bridge serves nothing and does not answer on the port.
        assertEquals(await bridgeApps(bridge), []);
        const viaBridge = await runCaptured(
          inNs(w, "timeout", "5", "redis-cli", "-h", bridgeIp, "-p", String(port), "PING"),
        );
        assert(viaBridge.stdout.trim() !== "PONG");
        const ps = await proxy.stats();
        assertEquals([ps.admitted, ps.refused], [0, 1]);
        // With PNO_REQUIRED the same refusal ends the program, saying so.
        const required = AppProcess.start(redisArgs(dir, port + 10), {
          env: shimEnv({ control: proxy.ready.listen, required: true }),
          name: "redis-server",
        });
        const out = await required.wait(20_000);
        assertEquals(out.code, 111, out.output);
        assert(out.output.includes(c.reason), out.output);
        assertMatch(out.output, /exiting/);
      } finally {
        await redis.stop("SIGKILL");
        await proxy.stop();
      }
    }
  });
});

/** A raw control peer in python (any uid): HELLO with `flags`, prints each reply as JSON. */
const CONTROL_PEER = String.raw`
import json, os, socket, struct, sys
path, flags, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
def send(t, payload, fds=()):
    data = struct.pack('<IB', 1 + len(payload), t) + payload
    socket.send_fds(s, [data], list(fds))
def recv():
    head, fds, _, _ = socket.recv_fds(s, 5, 1)
    if len(head) < 5:
        return None
    n, t = struct.unpack('<IB', head)
    body = b''
    while len(body) < n - 1:
        body += s.recv(n - 1 - len(body))
    return t, body, fds
def say(**kv):
    print(json.dumps(kv), flush=True)
send(1, struct.pack('<III', 2, flags, 0))
t, body, fds = recv()
say(type=t, text=body.decode(errors='replace') if t == 3 else '', fds=len(fds))
if mode == 'map' and t == 2:
    recv()  # WAKER
    fd = os.memfd_create('forged')
    os.ftruncate(fd, 1 << 20)
    send(7, struct.pack('<III', 1, 77, os.getpid()), [fd])  # MAP_REGION
    send(7, struct.pack('<III', 2, 0, 0))  # a reservation
    say(sent='map')
    sys.stdin.read()
`;

Deno.test("proxy: the bridge maps regions only for a proxy it admits, never for an application", async () => {
  await withProxyWire("tproxc", 224, async (_w, bridge, dir, control) => {
    // The socket open to every user, as a deployment might leave it: SO_PEERCRED decides.
    await Deno.chmod(dir, 0o755);
    await Deno.chmod(control, 0o777);
    // A process of another user saying HELLO_PROXY is refused, with the reason.
    const nobody = await new Deno.Command(PYTHON, {
      args: ["-c", CONTROL_PEER, control, "2", "hello"],
      uid: 65534,
      gid: 65534,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = JSON.parse(new TextDecoder().decode(nobody.stdout).split("\n")[0]);
    assertEquals(said.type, 3, new TextDecoder().decode(nobody.stderr));
    assertMatch(said.text, /\(uid 65534\) may not act as a proxy: only root or uid 0/);
    // An application attached directly offers the bridge a region of its own: ignored.
    const app = new Deno.Command(PYTHON, {
      args: ["-c", CONTROL_PEER, control, "0", "map"],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = app.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    try {
      while (!text.includes('"sent"')) {
        const { value, done } = await lines.read();
        if (done) break;
        text += value;
      }
      assertEquals(JSON.parse(text.split("\n")[0]).type, 2); // its own REGION
      await new Promise((r) => setTimeout(r, 300));
      const apps = await bridgeApps(bridge);
      assertEquals(apps.map((a) => a.pid), [app.pid], "only the region the bridge created");
      assert(!apps.some((a) => a.app === 77));
    } finally {
      await app.stdin.close().catch(() => {});
      await lines.cancel().catch(() => {});
      await app.status;
    }
    await waitUntil(async () => (await bridgeApps(bridge)).length === 0, "detached", 2000);
    // A proxy as root is admitted, and what it maps is served.
    const proxy = await ProxyChild.start(`${dir}/proxy.sock`, control);
    try {
      const client = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          "--unstable-ffi",
          `import { RingClient } from "${ROOT}packages/rings/client.ts";
           const c = await RingClient.attach(${JSON.stringify(proxy.ready.listen)});
           const l = await c.listen({ port: 7300 });
           console.log(l.port);
           await c.close();`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assertEquals(
        new TextDecoder().decode(client.stdout).trim(),
        "7300",
        new TextDecoder().decode(client.stderr),
      );
      await waitUntil(
        async () => (await proxy.stats()).ended === 1,
        "the client's region ended",
        3000,
      );
      assertEquals(await bridgeApps(bridge), []);
    } finally {
      await proxy.stop();
    }
  });
});

/** A server under the shim that forks: the parent exits, the child serves (python, unmodified). */
const FORKING_SERVER = String.raw`
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', int(sys.argv[1])))
s.listen(16)
child = os.fork()
if child:
    print(child, flush=True)
    os._exit(0)
# Off the test's pipes, so that they close with the parent.
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
while True:
    c, _ = s.accept()
    c.sendall(b'from the child\n')
    c.close()
`;

Deno.test("proxy: a forked child keeps the region after its parent exits; its exit ends it", async () => {
  await withProxyWire("tproxd", 226, async (w, bridge, dir, control) => {
    const bridgeIp = addressOf(w.bridgeAddress);
    const proxy = await ProxyChild.start(`${dir}/proxy.sock`, control);
    const port = 7400;
    const parent = AppProcess.start([PYTHON, "-c", FORKING_SERVER, String(port)], {
      env: shimEnv({ control: proxy.ready.listen, required: true }),
      name: "python3",
    });
    let child = 0;
    try {
      const out = await parent.wait(20_000);
      assertEquals(out.code, 0, out.output);
      child = Number(out.output.trim().split("\n").at(-1));
      assert(child > 0, out.output);
      const fetchLine = async () =>
        (await runCaptured(inNs(w, "timeout", "5", "nc", "-w", "2", bridgeIp, String(port))))
          .stdout;
      await waitUntil(
        async () => (await fetchLine()).includes("from the child"),
        "the child serves",
        10_000,
      );
      // The parent is gone; the proxy found the child in the region's process table.
      await waitUntil(
        async () => (await proxy.stats()).apps[0]?.pids.join() === String(child),
        "the proxy watches the child",
        3000,
      );
      assertEquals((await bridgeApps(bridge)).length, 1);
      Deno.kill(child, "SIGKILL");
      await waitUntil(async () => (await bridgeApps(bridge)).length === 0, "apps list empty", 2000);
      // The proxy counts the end when its pidfd fires, which may come a moment after the
      // bridge has let the region go: wait for it rather than read it once.
      await waitUntil(async () => (await proxy.stats()).ended === 1, "the proxy ends it", 2000);
      assertEquals((await proxy.stats()).ended, 1);
    } finally {
      if (child > 0) {
        try {
          Deno.kill(child, "SIGKILL");
        } catch {
          // gone
        }
      }
      await parent.stop("SIGKILL");
      await proxy.stop();
    }
  });
});
