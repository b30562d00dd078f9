/**
 * The bridge on a real wire: a Linux kernel in the client namespace pings it, learns its MAC,
 * throws malformed frames at it, and the bridge idles cheaply.
 */
import { assert, assertEquals } from "@std/assert";
import { inNs, sh } from "../cli/wire.ts";
import { parseMac } from "../packages/bridge/wire/ethernet.ts";
import { checksumAdd, checksumFinish } from "../packages/bridge/wire/checksum.ts";
import { addressOf, cpuSeconds, ping, sendRawFrames, withBridge } from "./_harness.ts";

Deno.test("bridge answers 20 pings from a kernel client and shows in its neighbour table", async () => {
  await withBridge("tping", 120, async (w, bridge) => {
    const replies = await ping(w, addressOf(w.bridgeAddress), 20);
    assertEquals(replies, 20);
    const neigh = await sh(inNs(w, "ip", "neigh", "show", addressOf(w.bridgeAddress)));
    assert(neigh.includes(bridge.ready.mac), `neighbour table: ${neigh}`);
    const stats = await bridge.stats();
    assert(stats.iface.icmpEchoIn >= 20, `echo requests counted: ${stats.iface.icmpEchoIn}`);
    assert(stats.iface.icmpEchoOut >= 20);
    assert(stats.iface.arpRepliesOut >= 1);
    assert(stats.port.ipackets >= 21, `port rx: ${stats.port.ipackets}`);
    assert(stats.port.opackets >= 21, `port tx: ${stats.port.opackets}`);
  });
});

Deno.test("bridge counts and drops malformed frames from the wire and still answers", async () => {
  await withBridge("tbad", 122, async (w, bridge) => {
    assertEquals(await ping(w, addressOf(w.bridgeAddress), 2), 2);
    const mac = parseMac(bridge.ready.mac);
    const clientMac = parseMac(
      (await sh(inNs(w, "cat", `/sys/class/net/${w.client}/address`))).trim(),
    );
    const good = echoFrame(mac, clientMac, w.clientAddress, w.bridgeAddress);
    const frames = [
      good.slice(0, 16), // truncated IPv4 header
      patch(good, 14, 0x43), // IHL 3
      patch(good, 14, 0x4f), // IHL 15, beyond the packet
      patch(good, 16, 0x7f), // total length beyond the frame
      patch(good, 24, good[24] ^ 0x55), // bad header checksum
      patch(good, 14, 0x65), // version 6 in an IPv4 EtherType
      patch(good, 12, 0x12), // garbage EtherType 0x1200
      patch(good, 40, good[40] ^ 0xff), // bad ICMP checksum
      patch(good, 23, 99), // unknown IP protocol (checksum fixed below)
    ];
    fixIpChecksum(frames[8]);
    await sendRawFrames(w, frames);
    await new Promise((r) => setTimeout(r, 300));
    const s = (await bridge.stats()).iface;
    assertEquals(s.dropIpv4["truncated"], 1, JSON.stringify(s));
    assertEquals(s.dropIpv4["bad-header-length"], 2);
    assertEquals(s.dropIpv4["bad-total-length"], 1);
    assertEquals(s.dropIpv4["bad-checksum"], 1);
    assertEquals(s.dropIpv4["bad-version"], 1);
    assertEquals(s.dropUnknownEtherType, 1);
    assertEquals(s.dropBadIcmp, 1);
    assertEquals(s.dropUnknownProtocol, 1);
    assertEquals(await ping(w, addressOf(w.bridgeAddress), 5), 5, "still answers ping");
    // A well-formed frame sent the same raw way is answered: the injection path itself works.
    await sendRawFrames(w, [good]);
    await new Promise((r) => setTimeout(r, 200));
    assert((await bridge.stats()).iface.icmpEchoIn >= 8);
  });
});

Deno.test("an idle bridge uses well under 10% of a core", async () => {
  await withBridge("tidle", 124, async (w, bridge) => {
    assertEquals(await ping(w, addressOf(w.bridgeAddress), 1), 1);
    await new Promise((r) => setTimeout(r, 500));
    const pid = bridge.ready.pid;
    const before = cpuSeconds(pid), t0 = performance.now();
    await new Promise((r) => setTimeout(r, 3000));
    const share = (cpuSeconds(pid) - before) / ((performance.now() - t0) / 1000);
    console.log(`idle bridge CPU: ${(share * 100).toFixed(2)}% of a core`);
    assert(share < 0.05, `idle bridge used ${(share * 100).toFixed(1)}% of a core`);
  });
});

/** An Ethernet + IPv4 + ICMP echo request from the client to the bridge. */
function echoFrame(dst: Uint8Array, src: Uint8Array, from: string, to: string): Uint8Array {
  const f = new Uint8Array(14 + 20 + 16);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x08;
  const ip = 14;
  f.set([0x45, 0, 0, 36, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0], ip);
  f.set(addressOf(from).split(".").map(Number), ip + 12);
  f.set(addressOf(to).split(".").map(Number), ip + 16);
  fixIpChecksum(f);
  const icmp = ip + 20;
  f.set([8, 0, 0, 0, 0xbe, 0xef, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8], icmp);
  const sum = checksumFinish(checksumAdd(0, f, icmp, 16));
  f[icmp + 2] = sum >> 8;
  f[icmp + 3] = sum & 0xff;
  return f;
}

function fixIpChecksum(f: Uint8Array): void {
  f[24] = 0;
  f[25] = 0;
  const sum = checksumFinish(checksumAdd(0, f, 14, 20));
  f[24] = sum >> 8;
  f[25] = sum & 0xff;
}

function patch(frame: Uint8Array, at: number, value: number): Uint8Array {
  const copy = frame.slice();
  copy[at] = value;
  return copy;
}
