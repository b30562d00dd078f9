import { assert, assertEquals } from "@std/assert";
import { ARP_REQUEST, ArpPacket } from "./arp.ts";
import { checksumAdd, checksumAddPseudoV4, checksumFinish } from "./checksum.ts";
import { EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, formatMac, parseMac } from "./ethernet.ts";
import { emitEchoReply, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, IcmpMessage } from "./icmp.ts";
import {
  emitIpv4,
  formatIpv4,
  IP_PROTO_ICMP,
  Ipv4Error,
  Ipv4Packet,
  parseCidr,
  parseIpv4,
} from "./ipv4.ts";
import { UdpDatagram } from "./udp.ts";
import { ARP_REQUEST_FRAME, ECHO_REQUEST_FRAME } from "./_frames_test_data.ts";

Deno.test("ethernet view reads a captured ARP frame", () => {
  const eth = new EthernetFrame();
  assert(eth.wrap(ARP_REQUEST_FRAME, 0, ARP_REQUEST_FRAME.length));
  assertEquals(eth.etherType, ETHERTYPE_ARP);
  assertEquals(formatMac(ARP_REQUEST_FRAME, eth.srcOffset), "c2:d3:34:e7:a1:2c");
  assert(eth.isFor(parseMac("02:00:00:00:00:01")), "broadcast is for everyone");
  assert(!eth.wrap(ARP_REQUEST_FRAME, 0, 13), "13 bytes hold no header");
});

Deno.test("ARP view parses the captured request", () => {
  const arp = new ArpPacket();
  assert(arp.wrap(ARP_REQUEST_FRAME, 14, ARP_REQUEST_FRAME.length - 14));
  assertEquals(arp.operation, ARP_REQUEST);
  assertEquals(formatIpv4(arp.senderIp), "10.88.0.1");
  assertEquals(formatIpv4(arp.targetIp), "10.88.0.77");
  const bad = ARP_REQUEST_FRAME.slice();
  bad[14 + 4] = 8; // hardware address length 8
  assert(!arp.wrap(bad, 14, bad.length - 14));
  assert(!arp.wrap(ARP_REQUEST_FRAME, 14, 27), "truncated ARP");
});

Deno.test("IPv4 and ICMP views accept the captured echo request", () => {
  const eth = new EthernetFrame(), ip = new Ipv4Packet(), icmp = new IcmpMessage();
  assert(eth.wrap(ECHO_REQUEST_FRAME, 0, ECHO_REQUEST_FRAME.length));
  assertEquals(eth.etherType, ETHERTYPE_IPV4);
  assertEquals(ip.wrap(ECHO_REQUEST_FRAME, 14, ECHO_REQUEST_FRAME.length - 14), Ipv4Error.Ok);
  assertEquals(ip.protocol, IP_PROTO_ICMP);
  assertEquals(formatIpv4(ip.src), "10.88.0.1");
  assertEquals(formatIpv4(ip.dst), "10.88.0.77");
  assertEquals(ip.payloadLength, 24);
  assert(icmp.wrap(ECHO_REQUEST_FRAME, ip.payloadOffset, ip.payloadLength));
  assertEquals(icmp.type, ICMP_ECHO_REQUEST);
  assertEquals(icmp.echoIdent, 0x1f46);
  assertEquals(icmp.echoSequence, 1);
});

Deno.test("IPv4 view rejects each kind of malformed header with its reason", () => {
  const ip = new Ipv4Packet();
  const at = 14;
  const mutate = (f: (b: Uint8Array) => void, len = ECHO_REQUEST_FRAME.length - at) => {
    const b = ECHO_REQUEST_FRAME.slice();
    f(b);
    return ip.wrap(b, at, len);
  };
  assertEquals(mutate(() => {}, 19), Ipv4Error.Truncated);
  assertEquals(mutate((b) => b[at] = 0x65), Ipv4Error.BadVersion);
  assertEquals(mutate((b) => b[at] = 0x44), Ipv4Error.BadHeaderLength);
  assertEquals(mutate((b) => b[at] = 0x4f), Ipv4Error.BadHeaderLength);
  assertEquals(mutate((b) => b[at + 3] = 0xff), Ipv4Error.BadTotalLength);
  assertEquals(mutate((b) => b[at + 3] = 10), Ipv4Error.BadTotalLength);
  assertEquals(mutate((b) => b[at + 11] ^= 1), Ipv4Error.BadChecksum);
  const fragment = ECHO_REQUEST_FRAME.slice();
  fragment[at + 6] = 0x20; // MF
  reseal(fragment, at);
  assertEquals(ip.wrap(fragment, at, fragment.length - at), Ipv4Error.Fragment);
  const loopSrc = ECHO_REQUEST_FRAME.slice();
  loopSrc[at + 12] = 127;
  reseal(loopSrc, at);
  assertEquals(ip.wrap(loopSrc, at, loopSrc.length - at), Ipv4Error.BadSource);
});

Deno.test("emitIpv4 writes a header that the view accepts", () => {
  const buf = new Uint8Array(64);
  const payload = emitIpv4(buf, 0, parseIpv4("10.88.0.2"), parseIpv4("10.88.0.1"), 6, 20, 7);
  assertEquals(payload, 20);
  const ip = new Ipv4Packet();
  assertEquals(ip.wrap(buf, 0, 40), Ipv4Error.Ok);
  assertEquals(formatIpv4(ip.src), "10.88.0.2");
  assertEquals(ip.totalLength, 40);
  assertEquals(ip.ttl, 64);
});

Deno.test("echo reply mirrors the request with a valid checksum", () => {
  const req = new IcmpMessage();
  assert(req.wrap(ECHO_REQUEST_FRAME, 34, 24));
  const out = new Uint8Array(64);
  const len = emitEchoReply(out, 8, req);
  assertEquals(len, 24);
  const reply = new IcmpMessage();
  assert(reply.wrap(out, 8, len));
  assertEquals(reply.type, ICMP_ECHO_REPLY);
  assertEquals(reply.echoIdent, req.echoIdent);
  assertEquals(out.subarray(16, 32), ECHO_REQUEST_FRAME.subarray(42, 58));
  const corrupt = ECHO_REQUEST_FRAME.slice();
  corrupt[50] ^= 0xff;
  assert(!req.wrap(corrupt, 34, 24), "a corrupted payload fails the checksum");
});

Deno.test("checksum: RFC 1071 example and piecewise sums agree", () => {
  // RFC 1071 section 3: 0001 f203 f4f5 f6f7 sums to ddf2 (one's complement 220d).
  const data = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assertEquals(checksumFinish(checksumAdd(0, data, 0, 8)), 0x220d);
  assertEquals(checksumFinish(checksumAdd(checksumAdd(0, data, 0, 4), data, 4, 4)), 0x220d);
  const odd = new Uint8Array([1, 2, 3]);
  assertEquals(checksumFinish(checksumAdd(0, odd, 0, 3)), ~(0x0102 + 0x0300) & 0xffff);
  const big = new Uint8Array(70000).fill(0xff);
  assertEquals(checksumFinish(checksumAdd(0, big, 0, big.length)), 0);
});

Deno.test("UDP view checks length and pseudo-header checksum", () => {
  const src = parseIpv4("10.88.0.1"), dst = parseIpv4("10.88.0.2");
  const d = new Uint8Array([0x30, 0x39, 0x00, 0x07, 0x00, 0x0a, 0, 0, 0x68, 0x69]);
  const sum = checksumFinish(checksumAdd(checksumAddPseudoV4(0, src, dst, 17, 10), d, 0, 10));
  d[6] = sum >> 8;
  d[7] = sum & 0xff;
  const udp = new UdpDatagram();
  assert(udp.wrap(d, 0, 10, src, dst));
  assertEquals(udp.dstPort, 7);
  assertEquals(udp.payloadLength, 2);
  assert(!udp.wrap(d, 0, 10, src, dst + 1), "wrong pseudo-header");
  d[5] = 40;
  assert(!udp.wrap(d, 0, 10, src, dst), "length beyond the packet");
});

Deno.test("address parsing rejects junk", () => {
  assertEquals(parseCidr("10.88.0.2/24"), { addr: 0x0a580002, prefix: 24 });
  for (const bad of ["10.88.0", "10.88.0.256", "a.b.c.d", ""]) {
    let threw = false;
    try {
      parseIpv4(bad);
    } catch {
      threw = true;
    }
    assert(threw, bad);
  }
});

function reseal(frame: Uint8Array, at: number): void {
  frame[at + 10] = 0;
  frame[at + 11] = 0;
  const sum = checksumFinish(checksumAdd(0, frame, at, 20));
  frame[at + 10] = sum >> 8;
  frame[at + 11] = sum & 0xff;
}
