/**
 * 5,000 concurrent kernel connections to the bridge's echo service: all open at once, each
 * echoes its own message, then all close; the bridge's connection table must empty and its
 * memory come back.
 *
 * Who holds TIME-WAIT: the client closes first (FIN from the kernel), the echo service reads
 * end of stream and closes, so the bridge goes CLOSE-WAIT -> LAST-ACK -> CLOSED on the
 * client's last ACK, and TIME-WAIT stays in the client's kernel. The bridge's table therefore
 * empties within a few round trips; only an active close by the bridge would park entries for
 * 2*MSL = 60 s (TcpEngineOptions.mslMs, default 30 s, which `pno bridge` does not expose).
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import type { WireConfig } from "../cli/wire.ts";
import { addressOf, type BridgeProcess, withBridge } from "./_harness.ts";
import { PyProcess, tcpStats, waitFor } from "./_tcp_peers.ts";

const N = 5000;

/**
 * `python3 -c SCALE_CLIENT HOST PORT N MARKER`: opens N connections (at most 256 handshakes in
 * flight, so the listener's backlog of 128 is not the subject), sends "msg <i> <pad>\n" on each
 * and checks the echo, writes MARKER when all N are open and verified, waits for SIGUSR1, then
 * closes them all and prints a JSON summary.
 */
const SCALE_CLIENT = String.raw`
import json, os, resource, selectors, signal, socket, sys, time
host, port, n, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1000, n + 1000))
sel = selectors.DefaultSelector()
t0 = time.monotonic()
msgs, got, done = {}, {}, 0
pending = list(range(n))
inflight = 0
errors = []
socks = {}

def on_term(*_):
    print(json.dumps({"killed": True, "done": done, "inflight": inflight, "errors": errors[:20]}),
          flush=True)
    os._exit(3)
signal.signal(signal.SIGTERM, on_term)

def start(i):
    global inflight
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.connect_ex((host, port))
    socks[i] = s
    msgs[i] = ("msg %d %s\n" % (i, "x" * (i % 200))).encode()
    got[i] = b""
    sel.register(s, selectors.EVENT_WRITE, (i, "connect"))
    inflight += 1

while done < n:
    while pending and inflight < 256:
        start(pending.pop())
    if time.monotonic() - t0 > 120:
        errors.append("timeout with %d of %d done" % (done, n))
        break
    for key, ev in sel.select(1.0):
        i, st = key.data
        s = key.fileobj
        if st == "connect":
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                errors.append("connect %d: errno %d" % (i, err))
                sel.unregister(s)
                inflight -= 1
                done += 1
                continue
            s.send(msgs[i])
            sel.modify(s, selectors.EVENT_READ, (i, "read"))
        else:
            data = s.recv(4096)
            if not data:
                errors.append("EOF on %d" % i)
                sel.unregister(s)
                inflight -= 1
                done += 1
                continue
            got[i] += data
            if len(got[i]) >= len(msgs[i]):
                if got[i] != msgs[i]:
                    errors.append("bad echo on %d" % i)
                sel.unregister(s)
                inflight -= 1
                done += 1
        if len(errors) > 20:
            break
opened = time.monotonic() - t0
open(marker, "w").write(json.dumps({"errors": len(errors)}))
go = []
signal.signal(signal.SIGUSR1, lambda *_: go.append(1))
deadline = time.monotonic() + 120
while not go and time.monotonic() < deadline:
    time.sleep(0.05)
t1 = time.monotonic()
for s in socks.values():
    s.close()
print(json.dumps({"n": n, "ok": n - len(errors), "errors": errors[:20], "openSeconds": opened,
                  "closeSeconds": time.monotonic() - t1, "signalled": bool(go)}), flush=True)
`;

/** Resident set size of a process in KiB (VmRSS of /proc/PID/status). */
function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** Sleeps `ms`. */
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Round {
  openMs: number;
  tableDuring: number;
  rssPeak: number;
  emptyMs: number;
  rssAfter: number;
}

/** One round: N connections opened, echoed, held, closed; the table must empty. */
async function round(
  w: WireConfig,
  bridge: BridgeProcess,
  n: number,
  label: string,
): Promise<Round> {
  const pid = bridge.ready.pid;
  const marker = await Deno.makeTempFile({ prefix: `${w.ns}-` });
  const client = PyProcess.start(
    w,
    SCALE_CLIENT,
    [addressOf(w.bridgeAddress), "7", String(n), marker],
    300_000,
  );
  try {
    const t0 = performance.now();
    const opened = await waitFor(() => Deno.statSync(marker).size > 0, 150_000, 100);
    if (!opened) {
      const stats = await tcpStats(bridge);
      client.kill("SIGTERM");
      const out = await client.result().catch((e) => (e as Error).message);
      throw new Error(
        `${label}: the client did not get through ${n} connections in 150 s; bridge: ${
          JSON.stringify(stats)
        }; client: ${JSON.stringify(out)}`,
      );
    }
    const openMs = performance.now() - t0;
    const during = await tcpStats(bridge);
    const rssPeak = rssKiB(pid);
    client.kill("SIGUSR1");
    const res = await client.json<{ ok: number; errors: string[] }>();
    assertEquals(res.errors, [], `${label}: client-side errors`);
    assertEquals(res.ok, n);
    assertEquals(during.connections, n, `${label}: bridge table while all are open`);
    const tc = performance.now();
    const emptied = await waitFor(async () => (await tcpStats(bridge)).connections === 0, 30_000);
    const emptyMs = performance.now() - tc;
    const after = await tcpStats(bridge);
    assert(emptied, `${label}: bridge still holds ${after.connections} connections 30 s after`);
    // V8 gives freed memory back lazily: let idle GCs run before measuring.
    await sleep(5000);
    const r = { openMs, tableDuring: during.connections, rssPeak, emptyMs, rssAfter: rssKiB(pid) };
    console.log(
      `${label}: ${n} connections open and echoed in ${(openMs / 1000).toFixed(1)} s ` +
        `(synCookiesSent ${during.synCookiesSent}, dropBacklog ${during.dropBacklog}); ` +
        `table emptied ${(emptyMs / 1000).toFixed(2)} s after close; RSS with them ` +
        `${mib(rssPeak)}, 5 s after ${mib(r.rssAfter)}`,
    );
    return r;
  } finally {
    await client.end();
    await Deno.remove(marker).catch(() => {});
  }
}

const mib = (kib: number) => `${(kib / 1024).toFixed(1)} MiB`;

Deno.test(`${N} concurrent kernel connections to echo: all echo, all close, table and RSS recover`, async () => {
  await withBridge("tcps1", 160, async (w, bridge) => {
    // Warm-up, so JIT and pools are in the baseline.
    await round(w, bridge, 20, "warm-up");
    const baseline = rssKiB(bridge.ready.pid);
    const first = await round(w, bridge, N, "round 1");
    const second = await round(w, bridge, N, "round 2");
    console.log(
      `bridge RSS: baseline ${mib(baseline)}; round 1 peak ${mib(first.rssPeak)}, after ` +
        `${mib(first.rssAfter)}; round 2 peak ${mib(second.rssPeak)}, after ${
          mib(second.rssAfter)
        }`,
    );
    // A second round must reuse what the first freed: growth here is a leak.
    assert(
      second.rssAfter - first.rssAfter < 64 * 1024,
      `RSS grew by ${mib(second.rssAfter - first.rssAfter)} from round 1 to round 2`,
    );
    assert(
      first.rssAfter - baseline < 64 * 1024,
      `RSS ${mib(first.rssAfter)} after close vs baseline ${mib(baseline)}`,
    );
  });
});
