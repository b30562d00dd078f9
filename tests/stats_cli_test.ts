/**
 * `pno ls`, `pno stats` and `pno capture` against a running bridge with no proxy (they read
 * the bridge's own /live stats and /capture): ls tells the shimmed server's offloaded sockets
 * (listener and held connections, with the bytes the clients echoed) from the one the policy
 * kept in the kernel (a loopback listener); the same server run without the shim shows every
 * socket in the kernel. stats prints the figures (JSON valid against the schema); tshark
 * reads a capture taken during the test and finds the handshake and the bytes, and nothing
 * the filter excluded.
 */
import { assert, assertEquals } from "@std/assert";
import { type JsonSchema, validateJson } from "@pno/stats";
import { AppProcess, runCaptured, waitUntil } from "../cli/apps.ts";
import { inNs, sh, testWire, wireDown, wireUp } from "../cli/wire.ts";
import { BridgeProcess, ping, TestChild } from "./_harness.ts";
import { holdingClients, shimmedEchoServer, testOutputDir } from "./_stats_harness.ts";

const ROOT = new URL("..", import.meta.url).pathname;
/** A listener on every address, run without the shim: the kernel holds it. */
const PLAIN_SERVER = `
import socket, time
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(1)
print("listening", flush=True)
time.sleep(60)
`;
/** Segments sent for the first time (a loaded host may see retransmissions). */
const FIRST_SENT = "!tcp.analysis.retransmission && !tcp.analysis.spurious_retransmission";
/** A listener in the namespace (kernel TCP) that keeps what it accepts. */
const NS_LISTENER = `
import socket, sys, time
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", int(sys.argv[1])))
l.listen(4)
print("listening", flush=True)
c, _ = l.accept()
time.sleep(60)
`;
/** Connects to argv[1]:argv[2], says hello, and holds the connection. */
const CONNECTING_CLIENT = `
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])))
c.sendall(b"hello")
print("connected", flush=True)
time.sleep(60)
`;
const NS_PORT = 8413;
const APP_PORT = 8411, HELD = 3, HELD_BYTES = 12_345, CAPTURE_BYTES = 5000;

async function pno(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const r = await runCaptured([
    Deno.execPath(),
    "run",
    "-A",
    "--unstable-ffi",
    `${ROOT}cli/main.ts`,
    ...args,
  ]);
  return r;
}

interface LsLine {
  pid: number;
  fd: number;
  where: string;
  proto: string;
  local: string;
  remote: string;
  state: string;
  bytesIn: number | null;
  bytesOut: number | null;
}

Deno.test({
  name: "pno ls / stats / capture on a running bridge without a proxy",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const w = testWire("tstcli", 244);
    const dir = await Deno.makeTempDir({ prefix: "pno-tstcli-" });
    const ip = w.bridgeAddress.split("/")[0];
    const control = `${dir}/bridge.sock`;
    let bridge: BridgeProcess | null = null;
    const stops: Array<() => Promise<unknown>> = [];
    try {
      await wireUp(w);
      bridge = await BridgeProcess.start(w, ["--control", control]);
      const base = bridge.ready.stats.replace(/\/stats$/, "");
      const live = `${base}/live/`;

      // ---- pno capture: a filtered capture while an echo runs, read by tshark.
      const out = `${testOutputDir()}/stats_capture.pcapng`;
      const capture = TestChild.run([
        Deno.execPath(),
        "run",
        "-A",
        "--unstable-ffi",
        `${ROOT}cli/main.ts`,
        "capture",
        "--bridge",
        base,
        "--out",
        out,
        "--filter",
        "tcp port 7",
        "--seconds",
        "5",
      ]);
      stops.push(() => capture.kill());
      await new Promise((r) => setTimeout(r, 1500)); // the filter compiled, the session running
      assertEquals(await ping(w, ip, 3), 3); // not port 7: the filter must leave it out
      const echoed = await sh(
        inNs(w, "sh", "-c", `head -c ${CAPTURE_BYTES} /dev/urandom | nc -N ${ip} 7 | wc -c`),
      );
      assertEquals(Number(echoed.trim()), CAPTURE_BYTES);
      await capture.child.status;
      const tshark = async (filter: string, field: string) =>
        (await runCaptured(["tshark", "-2", "-r", out, "-Y", filter, "-T", "fields", "-e", field]))
          .stdout.trim().split("\n").filter((l) => l !== "");
      // Stopped by --seconds mid-stream, the file still reads to its end.
      const whole = await runCaptured(["tshark", "-r", out]);
      assertEquals(whole.code, 0, whole.stderr);
      const syns = await tshark("tcp.flags.syn == 1", "tcp.flags.ack");
      assertEquals(syns.length, 2, `SYN and SYN-ACK: ${syns}`);
      const sum = (xs: string[]) => xs.reduce((t, x) => t + Number(x), 0);
      assertEquals(
        sum(await tshark(`tcp.dstport == 7 && ${FIRST_SENT}`, "tcp.len")),
        CAPTURE_BYTES,
      );
      assertEquals(
        sum(await tshark(`tcp.srcport == 7 && ${FIRST_SENT}`, "tcp.len")),
        CAPTURE_BYTES,
      );
      assertEquals((await tshark("tcp.flags.fin == 1", "tcp.srcport")).length >= 2, true);
      assertEquals(await tshark("icmp", "frame.number"), []);
      console.log(`capture: ${out}`);

      // --count: the capture ends by itself after N frames, whatever they are.
      const counted = `${dir}/counted.pcapng`;
      const byCount = TestChild.run([
        Deno.execPath(),
        "run",
        "-A",
        "--unstable-ffi",
        `${ROOT}cli/main.ts`,
        "capture",
        "--bridge",
        base,
        "--out",
        counted,
        "--count",
        "4",
        "--seconds",
        "20",
      ]);
      stops.push(() => byCount.kill());
      await new Promise((r) => setTimeout(r, 1000));
      await ping(w, ip, 5);
      assertEquals((await byCount.child.status).code, 0);
      const frames = await runCaptured([
        "tshark",
        "-r",
        counted,
        "-T",
        "fields",
        "-e",
        "frame.number",
      ]);
      assertEquals(frames.stdout.trim().split("\n").length, 4);
      // A bad filter is refused with tcpdump's reason.
      const bad = await pno([
        "capture",
        "--bridge",
        base,
        "--out",
        `${dir}/x.pcapng`,
        "--filter",
        "tcp portt 7",
      ]);
      assertEquals(bad.code, 1);
      assert(bad.stderr.includes("refused the capture"), bad.stderr);

      // ---- pno ls: offloaded and kernel sockets of a shimmed server.
      const { app, kernelPort } = await shimmedEchoServer(control, APP_PORT);
      stops.push(() => app.stop());
      const clients = await holdingClients(w, ip, APP_PORT, HELD, HELD_BYTES);
      stops.push(() => clients.kill());
      let lines: LsLine[] = [];
      await waitUntil(
        async () => {
          const r = await pno(["ls", String(app.pid), "--stats", live, "--json"]);
          lines = r.code === 0 ? JSON.parse(r.stdout) : [];
          return lines.filter((l) => l.where === "pno" && l.state === "ESTABLISHED").length ===
            HELD;
        },
        "pno ls shows the held connections",
        10_000,
      ).catch((err) => {
        throw new Error(`${err.message}: ${JSON.stringify(lines)}`);
      });
      const tcp = lines.filter((l) => l.proto === "tcp");
      const est = tcp.filter((l) => l.state === "ESTABLISHED");
      for (const l of est) {
        assertEquals(l.where, "pno");
        assertEquals(l.local, `${ip}:${APP_PORT}`);
        assertEquals([l.bytesIn, l.bytesOut], [HELD_BYTES, HELD_BYTES]);
      }
      const listeners = tcp.filter((l) => l.state === "LISTEN");
      assertEquals(
        listeners.map((l) => `${l.where} ${l.local}`).sort(),
        [`kernel 127.0.0.1:${kernelPort}`, `pno 0.0.0.0:${APP_PORT}`].sort(),
      );
      // Every fd is distinct and belongs to the pid asked for.
      assertEquals(new Set(lines.map((l) => l.fd)).size, lines.length);
      assert(lines.every((l) => l.pid === app.pid));
      // The table form says the same.
      const table = await pno(["ls", "--stats", live]);
      assertEquals(table.code, 0, table.stderr);
      assert(
        table.stdout.split("\n").filter((l) => /\bpno\b.*ESTABLISHED/.test(l)).length === HELD,
      );

      // An offloaded client: connect() records its placeholder too.
      const nsIp = w.clientAddress.split("/")[0];
      const peer = TestChild.run(inNs(w, "python3", "-u", "-c", NS_LISTENER, String(NS_PORT)));
      stops.push(() => peer.kill());
      assertEquals(await peer.nextLine(), "listening");
      const client = AppProcess.start([
        "python3",
        "-u",
        "-c",
        CONNECTING_CLIENT,
        nsIp,
        String(NS_PORT),
      ], {
        control,
        name: "client",
      });
      stops.push(() => client.stop());
      await waitUntil(() => client.output.includes("connected"), "the shimmed client connects");
      let mine: string[] = [];
      await waitUntil(
        async () => {
          const r = await pno(["ls", String(client.pid), "--stats", live, "--json"]);
          mine = (JSON.parse(r.stdout) as LsLine[]).filter((l) => l.proto === "tcp")
            .map((l) => `${l.where} ${l.remote} ${l.state} ${l.bytesOut}`);
          return mine.join() === `pno ${nsIp}:${NS_PORT} ESTABLISHED 5`;
        },
        "pno ls shows the client's offloaded connection",
        10_000,
      ).catch((err) => {
        throw new Error(`${err.message}: ${JSON.stringify(mine)}`);
      });

      // The kernel as the oracle: the same server without the shim has every socket in the kernel.
      const plain = AppProcess.start(["python3", "-u", "-c", PLAIN_SERVER], { name: "plain" });
      stops.push(() => plain.stop());
      await waitUntil(() => plain.output.includes("listening"), "the plain server listens");
      const kernelOnly = JSON.parse(
        (await pno(["ls", String(plain.pid), "--stats", live, "--json"])).stdout,
      ) as LsLine[];
      assertEquals(kernelOnly.map((l) => `${l.where} ${l.proto} ${l.state}`), [
        "kernel tcp LISTEN",
      ]);

      // ---- pno stats: JSON valid against the schema; the screen names the application.
      const schema = JSON.parse(
        await Deno.readTextFile(`${ROOT}packages/stats/stats.schema.json`),
      ) as JsonSchema;
      const json = await pno(["stats", "--json", "--stats", live]);
      assertEquals(json.code, 0, json.stderr);
      const snap = JSON.parse(json.stdout);
      assertEquals(validateJson(snap, schema), []);
      assertEquals(snap.apps[0].pid, app.pid);
      const screens = await pno(["stats", "--count", "2", "--interval", "0.3", "--stats", live]);
      assertEquals(screens.code, 0, screens.stderr);
      assertEquals(screens.stdout.split("pno bridge pid").length - 1, 2);
      assert(
        new RegExp(`\\n${app.pid}\\s+python3\\s+${HELD}\\s+1\\b`).test(screens.stdout),
        screens.stdout,
      );
    } finally {
      for (const stop of stops.reverse()) await stop().catch(() => {});
      await bridge?.stop();
      await wireDown(w);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
