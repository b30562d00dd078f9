import { assert, assertEquals } from "@std/assert";
import {
  seqGt,
  seqLt,
  TCP_ACK,
  TCP_ERR_DATA_OFFSET,
  TCP_ERR_SHORT,
  TCP_FIN,
  TCP_OK,
  TCP_SYN,
  tcpChecksum,
  tcpChecksumOk,
  TcpSegment,
  tcpSetChecksum,
} from "./tcp.ts";

function hex(s: string): Uint8Array {
  const h = s.replace(/\s+/g, "");
  const b = new Uint8Array(h.length / 2);
  for (let i = 0; i < b.length; i++) b[i] = parseInt(h.substr(2 * i, 2), 16);
  return b;
}

// A SYN captured with tcpdump from a Linux 6.x kernel (veth, checksum offload off):
// 10.201.0.1.48234 > 10.201.0.2.5555: Flags [S], cksum 0xc627 (correct), seq 1544918971,
// win 64240, options [mss 1460,sackOK,TS val 196255663 ecr 0,nop,wscale 10], length 0
const LINUX_SYN = hex(
  "bc6a 15b3 5c15 97bb 0000 0000 a002 faf0 c627 0000" +
    "0204 05b4 0402 080a 0bb2 9faf 0000 0000 0103 030a",
);
const SRC = 0x0ac90001;
const DST = 0x0ac90002;

Deno.test("wire/tcp: a captured Linux SYN parses and its checksum verifies", () => {
  assert(tcpChecksumOk(LINUX_SYN, 0, LINUX_SYN.length, SRC, DST));
  const s = new TcpSegment();
  assertEquals(s.parse(LINUX_SYN, 0, LINUX_SYN.length), TCP_OK);
  assertEquals(s.srcPort, 48234);
  assertEquals(s.dstPort, 5555);
  assertEquals(s.seq, 1544918971);
  assertEquals(s.ack, 0);
  assertEquals(s.flags, TCP_SYN);
  assertEquals(s.window, 64240);
  assertEquals(s.hdrLen, 40);
  assertEquals(s.payloadLen, 0);
  assertEquals(s.mss, 1460);
  assert(s.sackPermitted);
  assert(s.hasTimestamp);
  assertEquals(s.tsVal, 196255663);
  assertEquals(s.tsEcr, 0);
  assertEquals(s.wscale, 10);
  assertEquals(s.seqLen(), 1);
  // Recomputing the checksum from scratch gives the captured value.
  const copy = LINUX_SYN.slice();
  tcpSetChecksum(copy, 0, copy.length, SRC, DST);
  assertEquals((copy[16] << 8) | copy[17], 0xc627);
  // One flipped bit, or the wrong pseudo-header, fails.
  copy[30] ^= 4;
  assert(!tcpChecksumOk(copy, 0, copy.length, SRC, DST));
  assert(!tcpChecksumOk(LINUX_SYN, 0, LINUX_SYN.length, SRC, DST + 1));
});

Deno.test("wire/tcp: emit then parse round-trips header, options and payload", () => {
  const s = new TcpSegment();
  s.srcPort = 1234;
  s.dstPort = 80;
  s.seq = 0xfffffff0;
  s.ack = 7;
  s.flags = TCP_ACK | TCP_FIN;
  s.window = 501;
  s.hasTimestamp = true;
  s.tsVal = 0xdeadbeef;
  s.tsEcr = 42;
  s.sackCount = 3;
  s.sack.set([10, 20, 30, 40, 0xfffffff0, 5]);
  const buf = new Uint8Array(200);
  const hl = s.emit(buf, 10);
  assertEquals(hl, 20 + 12 + 4 + 24);
  buf.set([1, 2, 3, 4, 5], 10 + hl);
  tcpSetChecksum(buf, 10, hl + 5, 1, 2);
  assert(tcpChecksumOk(buf, 10, hl + 5, 1, 2));
  const p = new TcpSegment();
  assertEquals(p.parse(buf, 10, hl + 5), TCP_OK);
  assertEquals(p.seq, 0xfffffff0);
  assertEquals(p.flags, TCP_ACK | TCP_FIN);
  assertEquals(p.tsVal, 0xdeadbeef);
  assertEquals(p.sackCount, 3);
  assertEquals(Array.from(p.sack.subarray(0, 6)), [10, 20, 30, 40, 0xfffffff0, 5]);
  assertEquals(p.payloadLen, 5);
  assertEquals(buf[p.payloadOff + 4], 5);
  assertEquals(p.seqLen(), 6);
  // MSS and window scale are only meaningful on SYN.
  assertEquals(p.mss, -1);
  assertEquals(p.wscale, -1);
});

Deno.test("wire/tcp: SYN options emit like Linux and parse back", () => {
  const s = new TcpSegment();
  s.flags = TCP_SYN;
  s.mss = 1460;
  s.sackPermitted = true;
  s.hasTimestamp = true;
  s.tsVal = 196255663;
  s.wscale = 10;
  s.srcPort = 48234;
  s.dstPort = 5555;
  s.seq = 1544918971;
  s.window = 64240;
  const buf = new Uint8Array(60);
  const hl = s.emit(buf, 0);
  // Same option layout as the Linux capture (and so the same bytes, checksum included).
  tcpSetChecksum(buf, 0, hl, SRC, DST);
  assertEquals(Array.from(buf.subarray(0, hl)), Array.from(LINUX_SYN));
});

Deno.test("wire/tcp: hostile headers are rejected, never thrown", () => {
  const s = new TcpSegment();
  const b = LINUX_SYN.slice();
  assertEquals(s.parse(b, 0, 19), TCP_ERR_SHORT);
  assertEquals(s.parse(b, 30, 20), TCP_ERR_SHORT);
  b[12] = 0x40; // data offset 4
  assertEquals(s.parse(b, 0, b.length), TCP_ERR_DATA_OFFSET);
  b[12] = 0xf0; // 60 bytes > 40
  assertEquals(s.parse(b, 0, b.length), TCP_ERR_DATA_OFFSET);
  const c = LINUX_SYN.slice();
  c[21] = 0; // MSS option with length 0: the options end there, the segment stays
  assertEquals(s.parse(c, 0, c.length), TCP_OK);
  assert(s.badOptions);
  assertEquals(s.mss, -1);
  const d = LINUX_SYN.slice();
  d[39] = 30; // wscale 30: clamped to 14 (RFC 7323 §2.3)
  assertEquals(s.parse(d, 0, d.length), TCP_OK);
  assertEquals(s.wscale, 14);
  const e = LINUX_SYN.slice();
  e[37] = 9; // NOP then an option running past the header
  e[38] = 9;
  assertEquals(s.parse(e, 0, e.length), TCP_OK);
  assert(s.badOptions);
  const f = LINUX_SYN.slice();
  assertEquals(s.parse(f, 0, f.length), TCP_OK);
  assert(!s.badOptions);
  // Random garbage: any result, no exception.
  let x = 12345;
  const r = new Uint8Array(80);
  for (let k = 0; k < 20000; k++) {
    for (let i = 0; i < r.length; i++) r[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
    if (k & 1) r[12] = (5 + (k % 11)) << 4;
    const rc = s.parse(r, 0, 20 + (k % 60));
    assert(rc >= 0 && rc <= 3);
    tcpChecksum(r, 0, 20 + (k % 60), k, ~k);
  }
});

Deno.test("wire/tcp: sequence comparisons wrap", () => {
  assert(seqLt(0xfffffff0, 5));
  assert(seqGt(5, 0xfffffff0));
  assert(!seqLt(5, 5));
});
