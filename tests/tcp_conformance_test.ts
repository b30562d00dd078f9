/**
 * TCP conformance of the bridge against crafted segments. A python3 peer in the namespace sends
 * raw frames from an address the namespace's kernel does not own (10.<subnet>.0.50) through an
 * AF_PACKET socket on the client veth, answers the bridge's ARP for it, and reads the bridge's
 * replies from the same socket (the kernel drops them, as they are not for its address, so it
 * never interferes with RSTs of its own).
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { addressOf, type BridgeProcess, withBridge } from "./_harness.ts";
import { delta, runPy, type TcpCounters, tcpStats } from "./_tcp_peers.ts";

/** `python3 -c RAW_PEER IFACE BRIDGE_MAC MY_IP BRIDGE_IP CASE`: runs one case, prints JSON. */
const RAW_PEER = String.raw`
import json, random, socket, struct, sys, time
iface, bmac, myip, bip, case = sys.argv[1:6]
bmac = bytes.fromhex(bmac.replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((iface, 0))
mymac = s.getsockname()[4]
myip_b, bip_b = socket.inet_aton(myip), socket.inet_aton(bip)
FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
rng = random.Random(99)

def csum(b):
    if len(b) % 2:
        b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff

def arp_reply(req):
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mymac + myip_b + req[22:28] + req[28:32]
    s.send(req[6:12] + mymac + b"\x08\x06" + body)

def send_tcp(sport, dport, seq, ack, flags, win, opts=b"", data=b""):
    while len(opts) % 4:
        opts += b"\x01"
    hl = 20 + len(opts)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xffffffff, ack & 0xffffffff,
                      (hl // 4) << 4, flags, win, 0, 0) + opts + data
    pseudo = myip_b + bip_b + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), rng.randrange(65536), 0x4000, 64,
                     6, 0, myip_b, bip_b)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    s.send(bmac + mymac + b"\x08\x00" + ip + tcp)

def parse_opts(o):
    r, i = {}, 0
    while i < len(o):
        k = o[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        if i + 1 >= len(o):
            break
        n = o[i + 1]
        v = o[i + 2:i + n]
        if k == 2:
            r["mss"] = struct.unpack("!H", v)[0]
        elif k == 3:
            r["ws"] = v[0]
        elif k == 4:
            r["sackOk"] = True
        elif k == 5:
            r["sack"] = [list(struct.unpack("!II", v[j:j + 8])) for j in range(0, len(v), 8)]
        elif k == 8:
            r["ts"] = list(struct.unpack("!II", v))
        i += max(n, 2)
    return r

def recv_tcp(timeout, want=lambda t: True):
    """The next TCP segment from the bridge to us that 'want' accepts; None on timeout."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        s.settimeout(left)
        try:
            f, addr = s.recvfrom(65536)
        except socket.timeout:
            return None
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        if f[12:14] == b"\x08\x06" and f[21] == 1 and f[38:42] == myip_b:
            arp_reply(f)
            continue
        if f[12:14] != b"\x08\x00" or f[23] != 6 or f[26:30] != bip_b or f[30:34] != myip_b:
            continue
        ihl = (f[14] & 15) * 4
        t = f[14 + ihl:14 + struct.unpack("!H", f[16:18])[0]]
        sp, dp, seq, ack, off, fl, win = struct.unpack("!HHIIBBH", t[:16])
        hl = (off >> 4) * 4
        seg = {"sport": sp, "dport": dp, "seq": seq, "ack": ack, "flags": fl, "win": win,
               "opts": parse_opts(t[20:hl]), "data": t[hl:]}
        if want(seg):
            return seg

def segs(timeout, want=lambda t: True):
    out = []
    while True:
        t = recv_tcp(timeout, want)
        if t is None:
            return out
        out.append(t)

def ts_opt(val, ecr):
    return b"\x01\x01\x08\x0a" + struct.pack("!II", val, ecr)

class Conn:
    """A handshake as a client with MSS 1460, SACK-permitted, timestamps, window scale ws."""
    def __init__(self, dport, win=65535, ws=7):
        self.sport = rng.randrange(20000, 60000)
        self.dport = dport
        self.iss = rng.randrange(1 << 32)
        self.tsval = 1000000
        opts = struct.pack("!BBH", 2, 4, 1460) + b"\x04\x02" + b"\x08\x0a" + \
            struct.pack("!II", self.tsval, 0) + b"\x01\x03\x03" + bytes([ws])
        # No ARP first: the bridge asks for us and recv_tcp answers (hence one retry).
        send_tcp(self.sport, dport, self.iss, 0, SYN, win, opts)
        sa = recv_tcp(3, self.mine)
        if sa is None:
            send_tcp(self.sport, dport, self.iss, 0, SYN, win, opts)
            sa = recv_tcp(3, self.mine)
        assert sa is not None, "no SYN-ACK"
        self.synack = sa
        self.snd_nxt = self.iss + 1
        self.rcv_nxt = (sa["seq"] + 1) & 0xffffffff
        self.ts_recent = sa["opts"].get("ts", [0])[0]
        self.win = win
        self.ack()

    def mine(self, t):
        return t["sport"] == self.dport and t["dport"] == self.sport

    def tick(self, d=1):
        self.tsval += d
        return ts_opt(self.tsval, self.ts_recent)

    def send(self, flags, data=b"", seq=None, ts=None, win=None):
        o = ts_opt(ts, self.ts_recent) if ts is not None else self.tick()
        send_tcp(self.sport, self.dport, self.snd_nxt if seq is None else seq, self.rcv_nxt,
                 flags, self.win if win is None else win, o, data)
        if seq is None:
            self.snd_nxt += len(data) + (1 if flags & (SYN | FIN) else 0)

    def ack(self, win=None):
        self.send(ACK, win=win)

    def take(self, t):
        """Accounts for a received segment's data/FIN (in order only)."""
        if t["seq"] == self.rcv_nxt:
            self.rcv_nxt = (self.rcv_nxt + len(t["data"]) + (1 if t["flags"] & FIN else 0)) \
                & 0xffffffff
        if "ts" in t["opts"]:
            self.ts_recent = t["opts"]["ts"][0]

    def echo(self, data, timeout=2):
        """Sends data, collects what comes back in order until len(data) or timeout."""
        self.send(ACK | PSH, data)
        got = b""
        end = time.monotonic() + timeout
        while len(got) < len(data) and time.monotonic() < end:
            t = recv_tcp(end - time.monotonic(), self.mine)
            if t is None:
                break
            if t["data"] and t["seq"] == self.rcv_nxt:
                got += t["data"]
                self.take(t)
                self.ack()
        return got

def brief(t):
    return None if t is None else {k: v for k, v in t.items() if k != "data"} | {"len": len(t["data"])}

out = {"case": case}
if case == "closed-port":
    sport, iss = 40001, 123456789
    send_tcp(sport, 4242, iss, 0, SYN, 65535)
    t = recv_tcp(3, lambda t: t["dport"] == sport)
    if t is None:  # the first SYN may only have started ARP
        send_tcp(sport, 4242, iss, 0, SYN, 65535)
        t = recv_tcp(3, lambda t: t["dport"] == sport)
    out["reply"] = brief(t)
    out["iss"] = iss
elif case == "synack-options":
    c = Conn(7)
    out["synack"] = brief(c.synack)
    out["tsval"] = 1000000
    out["echo"] = c.echo(b"hello").decode()
elif case == "rst-in-window":
    c = Conn(7)
    assert c.echo(b"one") == b"one"
    c.send(RST, seq=c.snd_nxt + 1000)
    out["afterRst"] = brief(recv_tcp(2, c.mine))
    out["rcvNxt"] = c.snd_nxt
    out["echoAfter"] = c.echo(b"still here").decode()
elif case == "out-of-window":
    c = Conn(7)
    assert c.echo(b"one") == b"one"
    c.send(ACK | PSH, b"far away", seq=c.snd_nxt + (1 << 30))
    replies = segs(1.5, c.mine)
    out["replies"] = [brief(t) for t in replies]
    out["echoedBytes"] = sum(len(t["data"]) for t in replies)
    out["sndNxt"] = c.snd_nxt
    out["echoAfter"] = c.echo(b"in window").decode()
elif case == "paws":
    c = Conn(7)
    assert c.echo(b"one") == b"one"
    c.send(ACK | PSH, b"stale", ts=c.tsval - 100000)
    c.snd_nxt -= 5  # the stale segment must not count
    replies = segs(1.5, c.mine)
    out["replies"] = [brief(t) for t in replies]
    out["echoedBytes"] = sum(len(t["data"]) for t in replies)
    out["echoAfter"] = c.echo(b"fresh").decode()
elif case == "zero-window":
    # Window scale 0: the window field is the window. Take everything the bridge sends into
    # 16 KiB (it stops when the window is full), then ACK it all with a zero window, so nothing
    # is outstanding and only the persist timer may send.
    c = Conn(19, win=16384, ws=0)
    got = 0
    for t in segs(0.5, c.mine):
        if t["data"] and t["seq"] == c.rcv_nxt:
            got += len(t["data"])
            c.take(t)
    out["beforeZeroWindow"] = got
    c.ack(win=0)
    probes = segs(7.0, c.mine)
    out["duringZeroWindow"] = [brief(t) for t in probes]
    # Answer the last probe with the window open again: data must flow.
    c.win = 65535
    c.ack()
    flow = 0
    end = time.monotonic() + 3
    while flow < 65535 and time.monotonic() < end:
        t = recv_tcp(end - time.monotonic(), c.mine)
        if t is None:
            break
        if t["data"] and t["seq"] == c.rcv_nxt:
            flow += len(t["data"])
            c.take(t)
            c.ack()
    out["afterUpdate"] = flow
    c.send(RST | ACK)
elif case == "fin":
    c = Conn(7)
    assert c.echo(b"bye") == b"bye"
    c.send(FIN | ACK)
    replies = []
    end = time.monotonic() + 3
    while time.monotonic() < end:
        t = recv_tcp(end - time.monotonic(), c.mine)
        if t is None:
            break
        replies.append(brief(t))
        c.take(t)
        if t["flags"] & FIN:
            c.ack()
            break
    out["replies"] = replies
    out["finSeq"] = c.snd_nxt
print(json.dumps(out), flush=True)
`;

interface Seg {
  sport: number;
  dport: number;
  seq: number;
  ack: number;
  flags: number;
  win: number;
  len: number;
  opts: { mss?: number; ws?: number; sackOk?: boolean; ts?: [number, number] };
}
const FIN = 1, SYN = 2, RST = 4, ACK = 16;

/** Runs one case against a fresh bridge; returns the peer's JSON and the counter deltas. */
async function raw(
  tag: string,
  subnet: number,
  c: string,
  check: (out: Record<string, unknown>, d: TcpCounters, bridge: BridgeProcess) => void,
): Promise<void> {
  await withBridge(tag, subnet, async (w, bridge) => {
    const before = await tcpStats(bridge);
    const fake = `10.${subnet}.0.50`;
    const out = await runPy(
      w,
      RAW_PEER,
      [w.client, bridge.ready.mac, fake, addressOf(w.bridgeAddress), c],
      30_000,
    );
    const after = await tcpStats(bridge);
    const d = delta(before, after, Object.keys(after));
    console.log(`${c}: ${JSON.stringify(out)}\ncounters: ${JSON.stringify(nonZero(d))}`);
    check(out, d, bridge);
  });
}

function nonZero(d: TcpCounters): TcpCounters {
  return Object.fromEntries(Object.entries(d).filter(([, v]) => v !== 0));
}

Deno.test("a SYN to a closed port is answered by RST+ACK acknowledging the SYN", async () => {
  await raw("tcpc1", 170, "closed-port", (out, d) => {
    const r = out.reply as Seg;
    assert(r !== null, "no reply to a SYN on a closed port");
    assertEquals(r.flags & (RST | ACK), RST | ACK, `flags ${r.flags}`);
    assertEquals(r.seq, 0);
    assertEquals(r.ack, ((out.iss as number) + 1) >>> 0);
    assert(d.rstOut >= 1);
  });
});

Deno.test("the SYN-ACK carries MSS, window scale, SACK-permitted and an echoed timestamp", async () => {
  await raw("tcpc2", 172, "synack-options", (out) => {
    const sa = out.synack as Seg;
    assertEquals(sa.flags & (SYN | ACK), SYN | ACK);
    assert(sa.opts.mss !== undefined && sa.opts.mss >= 536 && sa.opts.mss <= 1460, "MSS");
    assert(sa.opts.ws !== undefined && sa.opts.ws <= 14, "window scale");
    assertEquals(sa.opts.sackOk, true, "SACK-permitted");
    assert(sa.opts.ts !== undefined, "timestamps");
    assertEquals(sa.opts.ts![1], out.tsval, "TSecr echoes the SYN's TSval");
    assertEquals(out.echo, "hello", "the connection works");
  });
});

Deno.test("an in-window RST not at RCV.NXT gets a challenge ACK and no reset (RFC 5961)", async () => {
  await raw("tcpc3", 174, "rst-in-window", (out, d) => {
    const a = out.afterRst as Seg;
    assert(a !== null, "no challenge ACK");
    assertEquals(a.flags & (RST | ACK), ACK);
    assertEquals(a.ack, out.rcvNxt, "challenge ACK acknowledges RCV.NXT");
    assertEquals(d.challengeAcks, 1);
    assertEquals(d.connResets, 0);
    assertEquals(out.echoAfter, "still here", "the connection survived");
  });
});

Deno.test("an out-of-window data segment is answered by an ACK and not delivered", async () => {
  await raw("tcpc4", 176, "out-of-window", (out, d) => {
    const replies = out.replies as Seg[];
    assert(replies.length >= 1, "no ACK for an out-of-window segment");
    assertEquals(replies[0].flags & (RST | ACK), ACK);
    assertEquals(replies[0].ack, out.sndNxt, "the ACK names RCV.NXT");
    assertEquals(out.echoedBytes, 0, "out-of-window bytes were echoed");
    assert(d.dropOutOfWindow >= 1);
    assertEquals(out.echoAfter, "in window");
  });
});

Deno.test("PAWS: a segment with an old timestamp is dropped and counted", async () => {
  await raw("tcpc5", 178, "paws", (out, d) => {
    assertEquals(out.echoedBytes, 0, "the stale segment's bytes were echoed");
    assertEquals(d.dropPaws, 1);
    const replies = out.replies as Seg[];
    assert(replies.length >= 1 && (replies[0].flags & ACK) !== 0, "PAWS drop is ACKed");
    assertEquals(out.echoAfter, "fresh");
  });
});

Deno.test("zero window: the source service probes, and data flows after a window update", async () => {
  await raw("tcpc6", 180, "zero-window", (out, d) => {
    const during = out.duringZeroWindow as Seg[];
    // While the window is zero the bridge may only probe (at most 1 byte of new data each).
    for (const t of during) assert(t.len <= 1, `${t.len} bytes sent into a zero window`);
    assert(during.length >= 2, `only ${during.length} probes in 7 s of zero window`);
    assert(d.windowProbes >= 2, `windowProbes ${d.windowProbes}`);
    assert((out.afterUpdate as number) > 0, "no data after the window opened");
  });
});

Deno.test("FIN in ESTABLISHED: the echo service ACKs it and closes with its own FIN", async () => {
  await raw("tcpc7", 182, "fin", (out, d, _bridge) => {
    const replies = out.replies as Seg[];
    const fin = replies.find((t) => (t.flags & FIN) !== 0);
    assert(fin !== undefined, `no FIN back: ${JSON.stringify(replies)}`);
    assertEquals(fin!.ack, out.finSeq, "the bridge's FIN acknowledges ours");
    assertEquals(d.rstOut, 0);
  });
});
