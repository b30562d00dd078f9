/**
 * Idle connections and one bulk flow among them, for `pno bench --memory` and
 * tests/tcp_memory_test.ts: a python3 client in the client namespace, and the resident memory
 * of a process.
 *
 * @module
 */

/**
 * `python3 -c IDLE_CLIENT HOST PORT N MARKER BULK_BYTES SIGNALS`: opens N connections to an
 * echo service (at most 256 handshakes in flight, so a listener's backlog of 128 is not the
 * subject) and sends nothing on them; appends `{"opened", "errors", "address"}` to MARKER.
 * With SIGNALS=1 it then waits for SIGUSR1. A bulk echo of BULK_BYTES on the first connection
 * follows (a sender thread writes byte i = i mod 251, the main thread reads and checks every
 * byte): `{"bulk": {"ok", "received", "seconds", "port"}}` is appended to MARKER. With
 * SIGNALS=1 it waits for SIGUSR2, then closes them all and prints `{"closed", "bulk"}`.
 */
export const IDLE_CLIENT = String.raw`
import json, os, resource, selectors, signal, socket, sys, threading, time
host, port, n, marker, bulk_bytes, signals = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                               sys.argv[4], int(sys.argv[5]), sys.argv[6] == "1")
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 1000, n + 1000))
got = {"usr1": False, "usr2": False}
signal.signal(signal.SIGUSR1, lambda *_: got.__setitem__("usr1", True))
signal.signal(signal.SIGUSR2, lambda *_: got.__setitem__("usr2", True))
def note(obj):
    with open(marker, "a") as f:
        f.write(json.dumps(obj) + "\n")
def wait(name, seconds):
    end = time.monotonic() + seconds
    while not got[name] and time.monotonic() < end:
        time.sleep(0.05)

sel = selectors.DefaultSelector()
socks, errors, pending, inflight, opened = [], [], n, 0, 0
t0 = time.monotonic()
while opened + len(errors) < n and time.monotonic() - t0 < 120 and len(errors) <= 20:
    while pending and inflight < 256:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
        pending -= 1
        inflight += 1
    for key, _ in sel.select(1.0):
        s = key.fileobj
        sel.unregister(s)
        inflight -= 1
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            errors.append("connect: errno %d" % err)
        else:
            opened += 1
if opened + len(errors) < n:
    errors.append("timeout: %d of %d open" % (opened, n))
note({"opened": opened, "errors": errors[:20], "address": socks[0].getsockname()[0],
      "seconds": time.monotonic() - t0})
if signals:
    wait("usr1", 240)

bulk = None
if bulk_bytes > 0 and not errors:
    PATTERN = bytes(i % 251 for i in range(251 * 263))
    s = socks[0]
    s.setblocking(True)
    def send():
        off = 0
        while off < bulk_bytes:
            k = min(65536, bulk_bytes - off)
            s.sendall(PATTERN[off % 251:off % 251 + k])
            off += k
    t1 = time.monotonic()
    th = threading.Thread(target=send)
    th.start()
    received, ok = 0, True
    while received < bulk_bytes:
        b = s.recv(65536)
        if not b:
            break
        if b != PATTERN[received % 251:received % 251 + len(b)]:
            ok = False
        received += len(b)
    th.join()
    bulk = {"ok": ok and received == bulk_bytes, "received": received,
            "seconds": time.monotonic() - t1, "port": s.getsockname()[1]}
    note({"bulk": bulk})
if signals:
    wait("usr2", 240)
for s in socks:
    s.close()
print(json.dumps({"closed": len(socks), "bulk": bulk}), flush=True)
`;

/** Resident set size of a process in KiB (VmRSS of /proc/PID/status). */
export function rssKiB(pid: number): number {
  const m = Deno.readTextFileSync(`/proc/${pid}/status`).match(/VmRSS:\s+(\d+) kB/);
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** GET /connections of a bridge whose /stats is at `statsUrl`: one row per connection. */
export async function bridgeConnections(
  statsUrl: string,
): Promise<Array<Record<string, number | string>>> {
  const res = await fetch(statsUrl.replace(/\/stats$/, "/connections"));
  if (!res.ok) throw new Error(`GET /connections: ${res.status}`);
  return await res.json();
}
