import { assert, assertEquals } from "@std/assert";
import { Interface } from "./iface.ts";
import { MemoryDevice } from "./phy/mem_device.ts";
import { ARP_REPLY, ArpPacket } from "./wire/arp.ts";
import {
  emitEthernet,
  EthernetFrame,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  formatMac,
  parseMac,
} from "./wire/ethernet.ts";
import { ICMP_ECHO_REPLY, IcmpMessage } from "./wire/icmp.ts";
import {
  emitIpv4,
  formatIpv4,
  IP_PROTO_ICMP,
  IP_PROTO_TCP,
  Ipv4Error,
  Ipv4Packet,
  parseIpv4,
} from "./wire/ipv4.ts";
import { checksumAdd, checksumFinish } from "./wire/checksum.ts";
import { ARP_REQUEST_FRAME, ECHO_REQUEST_FRAME } from "./wire/_frames_test_data.ts";

// The captured frames ask for 10.88.0.77 at 02:00:00:00:00:77.
const MY_MAC = parseMac("02:00:00:00:00:77");
const setup = () => {
  const dev = new MemoryDevice();
  const iface = new Interface(dev, { mac: MY_MAC, ip: parseIpv4("10.88.0.77"), prefix: 24 });
  return { dev, iface };
};

Deno.test("interface answers a captured ARP request and learns the asker", () => {
  const { dev, iface } = setup();
  dev.inject(ARP_REQUEST_FRAME);
  assertEquals(iface.poll(0), 1);
  const [reply] = dev.takeSent();
  const eth = new EthernetFrame(), arp = new ArpPacket();
  assert(eth.wrap(reply, 0, reply.length));
  assertEquals(eth.etherType, ETHERTYPE_ARP);
  assertEquals(formatMac(reply, 0), "c2:d3:34:e7:a1:2c");
  assert(arp.wrap(reply, 14, reply.length - 14));
  assertEquals(arp.operation, ARP_REPLY);
  assertEquals(formatMac(reply, arp.senderMacOffset), "02:00:00:00:00:77");
  assertEquals(reply.length, 60, "padded to Ethernet's minimum");
  assert(iface.arp.lookup(parseIpv4("10.88.0.1"), 1) >= 0);
});

Deno.test("interface answers a captured echo request", () => {
  const { dev, iface } = setup();
  dev.inject(ECHO_REQUEST_FRAME);
  iface.poll(0);
  const [reply] = dev.takeSent();
  const ip = new Ipv4Packet(), icmp = new IcmpMessage();
  assertEquals(new EthernetFrame().wrap(reply, 0, reply.length), true);
  assertEquals((reply[12] << 8) | reply[13], ETHERTYPE_IPV4);
  assertEquals(ip.wrap(reply, 14, reply.length - 14), Ipv4Error.Ok);
  assertEquals(formatIpv4(ip.dst), "10.88.0.1");
  assert(icmp.wrap(reply, ip.payloadOffset, ip.payloadLength));
  assertEquals(icmp.type, ICMP_ECHO_REPLY);
  assertEquals(iface.counters.icmpEchoOut, 1);
});

Deno.test("interface counts and drops malformed frames without throwing", () => {
  const { dev, iface } = setup();
  const frames: Uint8Array[] = [
    ECHO_REQUEST_FRAME.slice(0, 10), // truncated Ethernet
    ECHO_REQUEST_FRAME.slice(0, 20), // truncated IPv4
    withByte(ECHO_REQUEST_FRAME, 14, 0x4f), // IHL beyond the packet
    withByte(ECHO_REQUEST_FRAME, 17, 0xff), // total length beyond the frame
    withByte(ECHO_REQUEST_FRAME, 25, 0), // bad header checksum
    withByte(ECHO_REQUEST_FRAME, 12, 0x88), // unknown EtherType
    withByte(ECHO_REQUEST_FRAME, 42, 0), // bad ICMP checksum
    withByte(ARP_REQUEST_FRAME, 19, 9), // bad ARP protocol length
    withByte(ECHO_REQUEST_FRAME, 0, 0x04), // another host's MAC
    new Uint8Array(0),
    new Uint8Array(3000).fill(0xff),
  ];
  for (const f of frames) dev.inject(f);
  assertEquals(iface.poll(0), frames.length);
  assertEquals(dev.takeSent().length, 0, "nothing answered");
  assertEquals(iface.counters.dropped, frames.length);
  const c = iface.counters;
  assertEquals(c.dropTruncatedFrame, 2);
  assertEquals(c.dropIpv4[Ipv4Error.Truncated], 1);
  assertEquals(c.dropIpv4[Ipv4Error.BadHeaderLength], 1);
  assertEquals(c.dropIpv4[Ipv4Error.BadTotalLength], 1);
  assertEquals(c.dropIpv4[Ipv4Error.BadChecksum], 1);
  assertEquals(c.dropUnknownEtherType, 2);
  assertEquals(c.dropBadIcmp, 1);
  assertEquals(c.dropBadArp, 1);
  assertEquals(c.dropNotForUs, 1);
  dev.inject(ECHO_REQUEST_FRAME);
  iface.poll(1);
  assertEquals(dev.takeSent().length, 1, "still answers afterwards");
});

Deno.test("sending to an unknown neighbour asks for it once and drops the packet", () => {
  const { dev, iface } = setup();
  const dst = parseIpv4("10.88.0.9");
  for (let i = 0; i < 3; i++) {
    assert(iface.reserveIp() > 0);
    assertEquals(iface.sendIp(iface.config.ip, dst, 6, 20, 10 * i), false);
  }
  const sent = dev.takeSent();
  assertEquals(sent.length, 1, "one ARP request per interval");
  assertEquals((sent[0][12] << 8) | sent[0][13], ETHERTYPE_ARP);
  assertEquals(iface.counters.dropArpUnresolved, 3);
  assertEquals(iface.sendIp(iface.config.ip, parseIpv4("10.1.0.1"), 6, 20, 0), false);
});

function withByte(frame: Uint8Array, at: number, value: number): Uint8Array {
  const copy = frame.slice();
  copy[at] = value;
  return copy;
}

Deno.test("interface passes ICMP fragmentation-needed about our TCP segments to TCP", () => {
  const { dev, iface } = setup();
  const seen: number[][] = [];
  iface.tcpPmtuHandler = (lip, lport, rip, rport, seq, mtu) =>
    seen.push([lip, lport, rip, rport, seq, mtu]);
  const me = parseIpv4("10.88.0.77"), router = parseIpv4("10.88.0.1");
  const far = parseIpv4("10.88.0.5");
  const frame = (quotedSrc: number) => {
    const f = new Uint8Array(14 + 20 + 8 + 20 + 8);
    emitEthernet(f, 0, MY_MAC, 0, parseMac("02:00:00:00:00:01"), ETHERTYPE_IPV4);
    const icmp = emitIpv4(f, 14, router, me, IP_PROTO_ICMP, 36, 1);
    f.set([3, 4, 0, 0, 0, 0, 1000 >> 8, 1000 & 255], icmp); // type 3 code 4, MTU 1000
    emitIpv4(f, icmp + 8, quotedSrc, far, IP_PROTO_TCP, 8 + 20, 2);
    f.set([0, 80, 0x9c, 0x40, 0, 0, 0x30, 0x39], icmp + 28); // 80 -> 40000, seq 12345
    const sum = checksumFinish(checksumAdd(0, f, icmp, 36));
    f[icmp + 2] = sum >> 8;
    f[icmp + 3] = sum & 255;
    return f;
  };
  dev.inject(frame(me));
  dev.inject(frame(far)); // quotes a packet we did not send: ignored
  iface.poll(0);
  assertEquals(seen, [[me, 80, far, 40000, 12345, 1000]]);
  assertEquals(iface.counters.icmpFragNeeded, 1);
  assertEquals(iface.counters.dropIcmpUnhandled, 1);
});
