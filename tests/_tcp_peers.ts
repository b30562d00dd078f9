/**
 * Linux peers for the TCP integration tests: python3 clients run in the client namespace, a
 * user-space impairment relay (this kernel has no sch_netem, so `impair()` of cli/wire.ts
 * cannot be used here), and small helpers around the bridge's TCP counters. Every process
 * started here is ended by PID by whoever started it.
 *
 * @module
 */
import { inNs, sh, type WireConfig } from "../cli/wire.ts";
import type { BridgeProcess } from "./_harness.ts";

/** The bridge's TCP counters (summed over queues) plus `connections`. */
export type TcpCounters = Record<string, number>;

/** GET /stats, the `tcp` part (BridgeStatsJson does not declare it yet). */
export async function tcpStats(bridge: BridgeProcess): Promise<TcpCounters> {
  const all = (await bridge.stats()) as unknown as { tcp: TcpCounters };
  return all.tcp;
}

/** Counter deltas b - a for the named counters. */
export function delta(a: TcpCounters, b: TcpCounters, names: string[]): TcpCounters {
  const out: TcpCounters = {};
  for (const n of names) out[n] = (b[n] ?? 0) - (a[n] ?? 0);
  return out;
}

/** Polls `cond` every `everyMs` until it is true; false when `timeoutMs` passed first. */
export async function waitFor(
  cond: () => Promise<boolean> | boolean,
  timeoutMs: number,
  everyMs = 100,
): Promise<boolean> {
  const end = performance.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (performance.now() > end) return false;
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A python3 process in the client namespace. */
export class PyProcess {
  private timedOut = false;
  private readonly timer: ReturnType<typeof setTimeout>;
  private killTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly out: Promise<Deno.CommandOutput>;

  private constructor(readonly child: Deno.ChildProcess, readonly timeoutMs: number) {
    // SIGTERM first (the scripts print their progress on it), SIGKILL 2 s later.
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.kill("SIGTERM");
      this.killTimer = setTimeout(() => this.kill(), 2000);
    }, timeoutMs);
    this.out = child.output();
  }

  /** Starts `python3 -c script args...` in the namespace; SIGKILLed after `timeoutMs`. */
  static start(w: WireConfig, script: string, args: string[], timeoutMs: number): PyProcess {
    const cmd = inNs(w, "python3", "-c", script, ...args);
    const child = new Deno.Command(cmd[0], {
      args: cmd.slice(1),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new PyProcess(child, timeoutMs);
  }

  get pid(): number {
    return this.child.pid;
  }

  /** Sends `signal` to the process by PID; quiet when it is gone. */
  kill(signal: Deno.Signal = "SIGKILL"): void {
    try {
      this.child.kill(signal);
    } catch {
      // already exited
    }
  }

  /** Waits for the exit; throws with the output when it failed or ran out of time. */
  async result(): Promise<{ stdout: string; stderr: string }> {
    try {
      const out = await this.out;
      const stdout = new TextDecoder().decode(out.stdout);
      const stderr = new TextDecoder().decode(out.stderr);
      if (this.timedOut) {
        throw new Error(`python peer timed out after ${this.timeoutMs} ms: ${stdout}${stderr}`);
      }
      if (!out.success) throw new Error(`python peer failed (${out.code}): ${stdout}${stderr}`);
      return { stdout, stderr };
    } finally {
      clearTimeout(this.timer);
      clearTimeout(this.killTimer);
    }
  }

  /** Waits for the exit and parses the last stdout line as JSON. */
  async json<T = Record<string, unknown>>(): Promise<T> {
    const { stdout } = await this.result();
    const lines = stdout.trim().split("\n");
    return JSON.parse(lines[lines.length - 1]) as T;
  }

  /** Kills the process (if still running) and waits for it; for `finally` blocks. */
  async end(): Promise<void> {
    this.kill();
    try {
      await this.out;
    } catch {
      // nothing to report
    }
    clearTimeout(this.timer);
    clearTimeout(this.killTimer);
  }
}

/** Runs a python script in the namespace to completion and returns its last line as JSON. */
export async function runPy<T = Record<string, unknown>>(
  w: WireConfig,
  script: string,
  args: string[],
  timeoutMs: number,
): Promise<T> {
  const p = PyProcess.start(w, script, args, timeoutMs);
  try {
    return await p.json<T>();
  } finally {
    await p.end();
  }
}

/**
 * The stream client. `python3 -c STREAM_CLIENT MODE HOST PORT TOTAL STALL_S`:
 * - echo: a sender thread writes TOTAL bytes of a deterministic pseudo-random pattern (period
 *   1 MiB + 13, aligned to nothing), then shuts down its write side; the main thread reads the
 *   echo until EOF. Prints the byte counts and SHA-256 of both directions.
 * - source: reads TOTAL bytes, checks byte i == i mod 251 for every i, then closes.
 * - discard: writes TOTAL bytes, shuts down the write side, then waits for EOF (the peer's FIN).
 * Every socket operation is bounded by STALL_S seconds (a stall fails with "stall"); the last
 * stdout line is JSON. Also reports the namespace's kernel TCP RetransSegs delta.
 */
export const STREAM_CLIENT = String.raw`
import hashlib, json, os, random, signal, socket, sys, threading, time
mode, host, port, total, stall = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
CH = 65536

def kernel_retrans():
    lines = [l.split() for l in open("/proc/net/snmp") if l.startswith("Tcp:")]
    return int(lines[1][lines[0].index("RetransSegs")])

def fail(msg, **kw):
    kw.update(error=msg, mode=mode)
    print(json.dumps(kw), flush=True)
    sys.exit(1)

progress = {"sent": 0, "received": 0}
def on_term(*_):
    progress.update(error="killed (timeout) after %.1f s" % (time.monotonic() - t0), mode=mode)
    print(json.dumps(progress), flush=True)
    os._exit(3)
signal.signal(signal.SIGTERM, on_term)

r0 = kernel_retrans()
t0 = time.monotonic()
try:
    s = socket.create_connection((host, port), timeout=stall)
except OSError as e:
    fail("connect: %r" % e)
s.settimeout(stall)
out = {"mode": mode}

def send_pattern(h, state):
    pat = random.Random(20240611).randbytes(1048576 + 13)
    n = len(pat)
    view = memoryview(pat + pat[:CH])
    off = sent = 0
    try:
        while sent < total:
            k = min(CH, total - sent)
            s.sendall(view[off:off + k])
            if h is not None:
                h.update(view[off:off + k])
            off = (off + k) % n
            sent += k
            progress["sent"] = sent
        s.shutdown(socket.SHUT_WR)
    except Exception as e:
        state["error"] = "send after %d bytes: %r" % (sent, e)
    state["sent"] = sent
    state["sendSeconds"] = time.monotonic() - t0

if mode == "echo":
    hs, hr, st = hashlib.sha256(), hashlib.sha256(), {}
    th = threading.Thread(target=send_pattern, args=(hs, st))
    th.start()
    got = 0
    buf = bytearray(CH)
    try:
        while True:
            k = s.recv_into(buf)
            if k == 0:
                break
            hr.update(memoryview(buf)[:k])
            got += k
            progress["received"] = got
    except Exception as e:
        th.join()
        fail("recv after %d bytes: %r" % (got, e), received=got, sent=st.get("sent"))
    th.join()
    if "error" in st:
        fail(st["error"], received=got)
    out.update(sent=st["sent"], received=got, shaSent=hs.hexdigest(), shaRecv=hr.hexdigest())
elif mode == "source":
    pat = bytes(i % 251 for i in range(251 * 300))
    got = 0
    try:
        while got < total:
            data = s.recv(min(CH, total - got))
            if not data:
                fail("EOF after %d bytes" % got, received=got)
            a = got % 251
            if data != pat[a:a + len(data)]:
                bad = next(i for i in range(len(data)) if data[i] != (got + i) % 251)
                fail("byte %d is %d, expected %d" % (got + bad, data[bad], (got + bad) % 251))
            got += len(data)
            progress["received"] = got
    except socket.timeout:
        fail("stall after %d bytes" % got, received=got)
    out.update(received=got)
elif mode == "discard":
    st = {}
    send_pattern(None, st)
    if "error" in st:
        fail(st["error"])
    try:
        eof = s.recv(1) == b""
    except Exception as e:
        fail("waiting for FIN: %r" % e, sent=st["sent"])
    out.update(sent=st["sent"], eof=eof)
s.close()
out.update(seconds=time.monotonic() - t0, kernelRetrans=kernel_retrans() - r0)
print(json.dumps(out), flush=True)
`;

/** What one STREAM_CLIENT run reports. */
export interface StreamResult {
  mode: string;
  sent?: number;
  received?: number;
  shaSent?: string;
  shaRecv?: string;
  eof?: boolean;
  seconds: number;
  kernelRetrans: number;
}

/** Impairments the relay applies to TCP frames, in each direction independently. */
export interface RelayImpairments {
  lossPercent?: number;
  delayMs?: number;
  /** netem's meaning: this share of the frames skips the delay (so overtakes delayed ones). */
  reorderPercent?: number;
  duplicatePercent?: number;
}

/**
 * The user-space netem: an AF_PACKET relay between two devices that forwards every frame and,
 * for IPv4 TCP frames, drops, duplicates, delays and reorders them at random (seeded), in both
 * directions. Prints its counters as JSON on SIGTERM.
 */
export const RELAY = String.raw`
import heapq, json, random, select, signal, socket, sys, time
inner, outer = sys.argv[1], sys.argv[2]
loss, delay, reorder, dup = [float(x) / 100 for x in sys.argv[3:7]]
delay = float(sys.argv[4]) / 1000
rng = random.Random(7)
counts = {"frames": 0, "tcp": 0, "dropped": 0, "duplicated": 0, "delayed": 0, "sendErrors": 0}

def done(*_):
    print(json.dumps(counts), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)

def open_dev(dev):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
    s.setsockopt(263, 23, 1)  # SOL_PACKET, PACKET_IGNORE_OUTGOING
    s.bind((dev, 0))
    s.setblocking(False)
    return s

a, b = open_dev(inner), open_dev(outer)
peer = {a.fileno(): b, b.fileno(): a}
src = {a.fileno(): a, b.fileno(): b}
heap, seq = [], 0
ep = select.epoll()
ep.register(a.fileno(), select.EPOLLIN)
ep.register(b.fileno(), select.EPOLLIN)
print("ready", flush=True)

def emit(s, f):
    try:
        s.send(f)
    except OSError:
        counts["sendErrors"] += 1

while True:
    timeout = max(0.0, heap[0][0] - time.monotonic()) if heap else 1.0
    for fd, _ in ep.poll(timeout):
        s, out = src[fd], peer[fd]
        while True:
            try:
                f = s.recv(65536)
            except BlockingIOError:
                break
            counts["frames"] += 1
            if len(f) < 34 or f[12:14] != b"\x08\x00" or f[23] != 6:
                emit(out, f)
                continue
            counts["tcp"] += 1
            if loss and rng.random() < loss:
                counts["dropped"] += 1
                continue
            n = 1
            if dup and rng.random() < dup:
                counts["duplicated"] += 1
                n = 2
            for _ in range(n):
                if delay and not (reorder and rng.random() < reorder):
                    counts["delayed"] += 1
                    seq += 1
                    heapq.heappush(heap, (time.monotonic() + delay, seq, out, f))
                else:
                    emit(out, f)
    now = time.monotonic()
    while heap and heap[0][0] <= now:
        _, _, out, f = heapq.heappop(heap)
        emit(out, f)
`;

/** A running relay and the devices it joined. */
export interface Relay {
  proc: PyProcess;
  /** Stops the relay (SIGTERM) and returns its counters. */
  stop(): Promise<Record<string, number>>;
}

/**
 * Puts the relay between the client's IP stack and the wire: the client address moves to a new
 * veth pair `<tag>i` (kernel) / `<tag>j` (relay) inside the namespace, and the relay joins
 * `<tag>j` to the original client end, which keeps no address and answers no ARP. Everything
 * lives in the namespace, so the wire's teardown removes it.
 */
export async function startRelay(w: WireConfig, imp: RelayImpairments): Promise<Relay> {
  const tag = w.client.slice(0, -1);
  const inner = `${tag}i`, relayEnd = `${tag}j`;
  const ns = (...cmd: string[]) => sh(inNs(w, ...cmd));
  await ns("ip", "link", "add", inner, "type", "veth", "peer", "name", relayEnd);
  for (const dev of [inner, relayEnd]) {
    await ns("sysctl", "-qw", `net.ipv6.conf.${dev}.disable_ipv6=1`);
    await ns("ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off");
  }
  await ns("ip", "addr", "del", w.clientAddress, "dev", w.client);
  await ns("ip", "link", "set", w.client, "arp", "off", "promisc", "on");
  await ns("ip", "link", "set", relayEnd, "arp", "off", "promisc", "on", "up");
  await ns("ip", "addr", "add", w.clientAddress, "dev", inner);
  await ns("ip", "link", "set", inner, "up");
  const proc = PyProcess.start(w, RELAY, [
    relayEnd,
    w.client,
    String(imp.lossPercent ?? 0),
    String(imp.delayMs ?? 0),
    String(imp.reorderPercent ?? 0),
    String(imp.duplicatePercent ?? 0),
  ], 30 * 60_000);
  // Ready once both packet sockets exist (they are bound right after), plus a margin.
  const ready = await waitFor(async () => (await relaySockets(proc.pid)) >= 2, 10_000, 50);
  if (!ready) {
    await proc.end();
    throw new Error("impairment relay did not start");
  }
  await new Promise((r) => setTimeout(r, 300));
  return {
    proc,
    async stop() {
      proc.kill("SIGTERM");
      try {
        const { stdout } = await proc.result();
        const lines = stdout.trim().split("\n");
        return JSON.parse(lines[lines.length - 1]);
      } finally {
        await proc.end();
      }
    },
  };
}

/** Number of sockets the process has open (the relay is ready with its two). */
async function relaySockets(pid: number): Promise<number> {
  let n = 0;
  for await (const e of Deno.readDir(`/proc/${pid}/fd`)) {
    try {
      if (Deno.readLinkSync(`/proc/${pid}/fd/${e.name}`).startsWith("socket:")) n++;
    } catch {
      // fd closed meanwhile
    }
  }
  return n;
}
