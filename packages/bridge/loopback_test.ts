import { assert, assertEquals } from "@std/assert";
import { Interface } from "./iface.ts";
import { MemoryDevice } from "./phy/mem_device.ts";
import { TcpEngine } from "./tcp/engine.ts";
import { ESTABLISHED, type TcpSocket } from "./tcp/socket.ts";
import { InterfaceTcpLink } from "./tcp_link.ts";
import { parseIpv4 } from "./wire/ipv4.ts";
import { parseMac } from "./wire/ethernet.ts";
import { ECHO_REQUEST_FRAME } from "./wire/_frames_test_data.ts";

const MY_IP = parseIpv4("10.88.0.77");

function stack() {
  const dev = new MemoryDevice();
  const iface = new Interface(dev, { mac: parseMac("02:00:00:00:00:77"), ip: MY_IP, prefix: 24 });
  const engine = new TcpEngine(new InterfaceTcpLink(iface), { localIp: MY_IP });
  iface.tcpHandler = (buf, off, len, src, dst, now) => engine.input(buf, off, len, src, dst, now);
  let now = 0;
  const round = () => {
    now += 1;
    const n = iface.poll(now);
    engine.poll(now);
    dev.flush();
    return n + iface.loopbackPending;
  };
  return { dev, iface, engine, round };
}

Deno.test("a connection to the bridge's own address runs through the loopback, not the wire", () => {
  const { dev, iface, engine, round } = stack();
  const listener = engine.listen(8080, 8, { localIp: MY_IP });
  const client = engine.connect(MY_IP, 8080, { srcIp: MY_IP });
  let accepted: TcpSocket | null = null;
  for (let i = 0; i < 20 && accepted === null; i++) {
    round();
    accepted = engine.accept(listener);
  }
  const server = accepted as TcpSocket | null;
  if (server === null) throw new Error("the listener accepted no looped-back connection");
  assertEquals(client.state, ESTABLISHED);
  const data = new Uint8Array(100_000).map((_, i) => (i * 7) % 251);
  const got = new Uint8Array(data.length);
  let sent = 0, received = 0;
  for (let i = 0; i < 2000 && received < data.length; i++) {
    // Both return a negative errno (EAGAIN) when there is no room or nothing to read.
    if (sent < data.length) {
      sent += Math.max(0, engine.send(client, data, sent, data.length - sent));
    }
    received += Math.max(0, engine.recv(server, got, received, got.length - received));
    round();
  }
  assertEquals(received, data.length);
  assertEquals(got, data);
  assertEquals(dev.takeSent().length, 0, "nothing went out on the wire");
  assert(iface.counters.loopbackFrames > 0);
  assertEquals(iface.counters.dropLoopbackFull, 0);
});

Deno.test("a frame from the wire claiming the bridge's own address as source is dropped", () => {
  const { dev, iface } = stack();
  const frame = ECHO_REQUEST_FRAME.slice();
  // The IPv4 source (bytes 26..29) becomes our address; the header checksum is made again.
  frame.set([10, 88, 0, 77], 26);
  frame[24] = frame[25] = 0;
  let sum = 0;
  for (let i = 14; i < 34; i += 2) sum += (frame[i] << 8) | frame[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  const check = ~sum & 0xffff;
  frame[24] = check >> 8;
  frame[25] = check & 0xff;
  dev.inject(frame);
  iface.poll(0);
  assertEquals(iface.counters.dropSpoofedSource, 1);
  assertEquals(iface.counters.icmpEchoIn, 0);
  assertEquals(dev.takeSent().length, 0);
});
