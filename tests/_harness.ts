/**
 * Integration-test plumbing: a bridge process on a test wire, raw frame injection from the
 * client namespace, CPU accounting from /proc. Everything a test starts it ends by PID, and
 * `finally` blocks remove the namespaces even when an assertion fails.
 *
 * @module
 */
import { BridgeProcess } from "../cli/bridge_process.ts";
export { cpuSeconds } from "../cli/processes.ts";
import { inNs, sh, testWire, type WireConfig, wireDown, wireUp } from "../cli/wire.ts";

export { BridgeProcess };

/** Runs `body` with a fresh wire and a bridge on it; tears both down whatever happens. */
export async function withBridge(
  tag: string,
  subnet: number,
  body: (w: WireConfig, bridge: BridgeProcess) => Promise<void>,
  bridgeArgs: string[] = [],
): Promise<void> {
  const w = testWire(tag, subnet);
  let bridge: BridgeProcess | null = null;
  try {
    await wireUp(w);
    bridge = await BridgeProcess.start(w, bridgeArgs);
    await body(w, bridge);
  } finally {
    if (bridge) await bridge.stop();
    await wireDown(w);
  }
}

/** Sends raw Ethernet frames out of the client's veth end (an AF_PACKET socket via python3). */
export async function sendRawFrames(w: WireConfig, frames: Uint8Array[]): Promise<void> {
  const hexFrames = frames.map((f) =>
    Array.from(f, (b) => b.toString(16).padStart(2, "0")).join("")
  );
  const script = [
    "import socket, sys",
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)",
    `s.bind((${JSON.stringify(w.client)}, 0))`,
    "for line in sys.stdin.read().split():",
    "    s.send(bytes.fromhex(line))",
  ].join("\n");
  const child = new Deno.Command("ip", {
    args: inNs(w, "python3", "-c", script).slice(1),
    stdin: "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(hexFrames.join("\n")));
  await writer.close();
  const out = await child.output();
  if (!out.success) throw new Error(`raw send failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** Pings from the client namespace; returns the number of replies. */
export async function ping(w: WireConfig, dst: string, count: number): Promise<number> {
  const out = await sh(inNs(w, "ping", "-c", String(count), "-i", "0.05", "-W", "2", dst), true);
  const m = out.match(/(\d+) received/);
  return m ? Number(m[1]) : 0;
}

/** The host-order address of "a.b.c.d/len". */
export function addressOf(cidr: string): string {
  return cidr.split("/")[0];
}

const ROOT_DIR = new URL("..", import.meta.url).pathname;

/** A child process of a test, read line by line and ended by PID. */
export class TestChild {
  private readonly reader: ReadableStreamDefaultReader<string>;
  private buffered = "";

  private constructor(readonly child: Deno.ChildProcess) {
    this.reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** A host application: `tests/<script>` attached to the bridge at `control`. */
  static ringApp(script: string, control: string, args: string[]): TestChild {
    return new TestChild(
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--unstable-ffi", `${ROOT_DIR}tests/${script}`, ...args],
        env: { PNO_CONTROL: control },
        stdout: "piped",
        stderr: "inherit",
      }).spawn(),
    );
  }

  /** Any command, e.g. a python3 peer in the client namespace (`inNs(...)`). */
  static run(argv: string[]): TestChild {
    return new TestChild(
      new Deno.Command(argv[0], { args: argv.slice(1), stdout: "piped", stderr: "null" }).spawn(),
    );
  }

  get pid(): number {
    return this.child.pid;
  }

  /** The next line the application prints ("" once it has exited). */
  async nextLine(): Promise<string> {
    while (!this.buffered.includes("\n")) {
      const { value, done } = await this.reader.read();
      if (done) break;
      this.buffered += value;
    }
    const i = this.buffered.indexOf("\n");
    const line = i < 0 ? this.buffered : this.buffered.slice(0, i);
    this.buffered = i < 0 ? "" : this.buffered.slice(i + 1);
    return line;
  }

  /** Kills it (SIGKILL, by PID) and waits for it to be gone. */
  async kill(): Promise<Deno.CommandStatus> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await this.reader.cancel().catch(() => {});
    return await this.child.status;
  }
}
