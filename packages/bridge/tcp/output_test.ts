import { assert, assertEquals } from "@std/assert";
import { dataSent, passiveOpen, peerSend } from "./_test_util.ts";

Deno.test("Nagle, Minshall's variant: a small tail goes out while only full segments are unACKed", () => {
  const c = passiveOpen();
  const e = c.p.engine;
  const mss = c.s.sndMss;
  e.send(c.s, new Uint8Array(mss + 100), 0, mss + 100);
  e.poll(c.p.now);
  // Classic Nagle would hold the 100-byte tail until the full segment is ACKed.
  assertEquals(dataSent(c).map(([, n]) => n), [mss, 100]);
  // A second small write waits: a small segment is unACKed (Linux's tcp_minshall_check).
  e.send(c.s, new Uint8Array(50), 0, 50);
  e.poll(c.p.now);
  assertEquals(dataSent(c).length, 0);
  peerSend(c, 0, undefined, { ack: (c.ack + mss + 100) >>> 0 });
  assertEquals(dataSent(c).map(([, n]) => n), [50]);
});

Deno.test("cwnd restart after idle: a window unused for an RTO shrinks toward the initial one (RFC 5681 §4.1)", () => {
  const c = passiveOpen({ rcvBuf: 1 << 20, sndBuf: 1 << 20 });
  const e = c.p.engine;
  const mss = c.s.sndMss;
  c.s.cwnd = 100 * mss; // grown by an earlier transfer
  c.s.srtt = 20;
  c.s.rto = 220;
  c.p.advance(10_000); // idle for far longer than the RTO
  e.send(c.s, new Uint8Array(60 * mss), 0, 60 * mss);
  e.poll(c.p.now);
  const sent = dataSent(c).length;
  assertEquals(sent, 10, `${sent} segments in the first burst after idle`);
});

/**
 * Heap bytes per ACK that `output` emits, measured in a child (--expose-gc) once V8 has
 * optimized the path: the median of 9 windows of 20,000 ACKs, each after a forced GC. The
 * sequence numbers, timestamps and addresses are all at or above 2^30, where a number passed
 * to a call V8 does not inline becomes a heap number.
 */
async function ackHeapBytes(): Promise<{ median: number; seq: number; ack: number }> {
  const url = (p: string) => new URL(p, import.meta.url).href;
  const script = `
    import { TcpEngine } from "${url("./engine.ts")}";
    import { output } from "${url("./output.ts")}";
    import { ESTABLISHED } from "${url("./socket.ts")}";
    import { TCP_ACK, TCP_SYN, TcpSegment, tcpSeq, tcpSetChecksum } from "${url("../wire/tcp.ts")}";
    const PEER = 0xc0a80001, LOCAL = 0xc0a80002, PEER_ISN = 0xf0000000;
    function open(seed) {
      const link = {
        buf: new Uint8Array(2048), mtu: 1500, lastSeq: 0, lastAck: 0,
        reserve() { return 64; },
        send() { this.lastSeq = tcpSeq(this.buf, 64); this.lastAck = tcpSeq(this.buf, 68); },
      };
      const e = new TcpEngine(link, { localIp: LOCAL, seed, clock: () => 1000 });
      const l = e.listen(5001, 4);
      const seg = new TcpSegment(), frame = new Uint8Array(1500);
      const put = (flags, seq, ack) => {
        seg.srcPort = 40000; seg.dstPort = 5001; seg.seq = seq; seg.ack = ack; seg.flags = flags;
        seg.window = 65535; seg.hasTimestamp = true; seg.tsVal = 0xf0000001; seg.tsEcr = 0;
        seg.mss = flags & TCP_SYN ? 1448 : 0; seg.wscale = flags & TCP_SYN ? 7 : -1;
        seg.sackPermitted = (flags & TCP_SYN) !== 0;
        const hl = seg.emit(frame, 0);
        tcpSetChecksum(frame, 0, hl, PEER, LOCAL);
        return hl;
      };
      e.input(frame, 0, put(TCP_SYN, PEER_ISN, 0), PEER, LOCAL, 1000);
      e.poll(1000);
      const iss = link.lastSeq;
      e.input(frame, 0, put(TCP_ACK, PEER_ISN + 1, (iss + 1) >>> 0), PEER, LOCAL, 1000);
      return { e, s: e.accept(l), link, iss };
    }
    let c = open(1);
    for (let seed = 2; c.iss < 2 ** 30; seed++) c = open(seed);
    const { e, s, link } = c;
    if (s === null || s.state !== ESTABLISHED) throw new Error("no connection");
    const acks = (n) => {
      for (let i = 0; i < n; i++) {
        e.now += 0.25;
        s.ackNow = true;
        output(e, s);
      }
    };
    acks(100000);
    const per = [];
    for (let w = 0; w < 9; w++) {
      gc();
      const h0 = Deno.memoryUsage().heapUsed;
      acks(20000);
      per.push((Deno.memoryUsage().heapUsed - h0) / 20000);
    }
    per.sort((x, y) => x - y);
    console.log(JSON.stringify({ median: per[4], seq: link.lastSeq - c.iss, ack: link.lastAck }));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    // Synchronous optimization: the windows measure optimized code on a loaded machine too.
    args: ["eval", "--v8-flags=--expose-gc,--no-concurrent-recompilation", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
}

Deno.test("an ACK is emitted without allocating, with sequence numbers, timestamps and addresses at or above 2^30", async () => {
  const r = await ackHeapBytes();
  // The ACKs are the right ones: SND.NXT (ISS + 1) and RCV.NXT (the peer's ISN + 1).
  assertEquals([r.seq, r.ack], [1, 0xf0000001]);
  // Before: 48 bytes per ACK (the sequence number passed to emit and to tcpWriteHeader, the
  // timestamp to optWriteTs, the addresses to the checksum, each boxed as a heap number).
  assert(r.median < 1, `${r.median} heap bytes per ACK`);
});
