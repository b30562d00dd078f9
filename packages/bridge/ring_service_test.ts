/**
 * The ring service on the in-memory wire: a host side driving a region's rings by hand, the
 * bridge's engine serving them, and a second engine as the remote peer.
 */
import { assert, assertEquals } from "@std/assert";
import { hostGRings, hostSRings } from "../rings/attach.ts";
import * as D from "../rings/descriptors.ts";
import {
  computeLayout,
  STATE_HUP,
  STATE_READABLE,
  stateOffset,
  writeRegionHeader,
} from "../rings/layout.ts";
import type { DmaKnobs } from "./dma.ts";
import { RingService } from "./ring_service.ts";
import { TcpEngine } from "./tcp/engine.ts";
import { MemWire } from "./tcp/mem_wire.ts";
import type { TcpSocket } from "./tcp/socket.ts";

function setup(dma: Partial<DmaKnobs> = {}) {
  const layout = computeLayout({
    maxThreads: 2,
    maxSockets: 8,
    cmdSlots: 16,
    cplSlots: 64,
    txBytes: 64 * 1024,
    rxBytes: 64 * 1024,
  });
  const buffer = new SharedArrayBuffer(layout.totalSize);
  writeRegionHeader(buffer, layout);
  const wire = new MemWire({ delayMs: 1 });
  const nic = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1, mslMs: 100 });
  const peer = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, mslMs: 100 });
  const service = new RingService(nic, wire.ipA, dma);
  // The service polls before the engine, as the bridge's QueueStack does.
  wire.attach({
    input: (b, o, l, s, d, n) => nic.input(b, o, l, s, d, n),
    poll: (now) => {
      service.poll(now);
      nic.poll(now);
    },
    nextDeadline: () => nic.nextDeadline(),
  }, peer);
  const app = service.attach({ buffer, layout }, 4242);
  const host = new Host(buffer, layout);
  return { wire, nic, peer, service, app, host, layout, buffer };
}

/** The application side, by hand: commands out, completions and events in. */
class Host {
  readonly g;
  private nextReq = 1;
  readonly got: Array<{ op: number; sock: number; req: number; result: number; extra: number }> =
    [];

  constructor(
    readonly buffer: SharedArrayBuffer,
    readonly layout: ReturnType<typeof computeLayout>,
  ) {
    this.g = hostGRings(buffer, layout, 0);
  }

  post(op: number, sock: number, fill?: (v: DataView, at: number) => void, reqId?: number): number {
    const req = reqId ?? this.nextReq++;
    assertEquals(this.g.commands.reserve(1), 1);
    const at = this.g.commands.slotOffset(0);
    D.writeHeader(this.g.commands.view, at, op, sock, req);
    fill?.(this.g.commands.view, at);
    this.g.commands.publish(1);
    return req;
  }

  drain(): void {
    const c = this.g.completions;
    const n = c.peek(64);
    for (let i = 0; i < n; i++) {
      const at = c.slotOffset(i);
      const op = D.readOpcode(c.view, at);
      this.got.push({
        op,
        sock: D.readSock(c.view, at),
        req: D.readReqId(c.view, at),
        result: D.readResult(c.view, at),
        extra: op === D.CPL_ACCEPT ? c.view.getUint32(at + D.ACCEPT_NEW_SOCK, true) : 0,
      });
    }
    c.release(n);
  }

  take(pred: (e: Host["got"][number]) => boolean) {
    this.drain();
    const i = this.got.findIndex(pred);
    return i < 0 ? undefined : this.got.splice(i, 1)[0];
  }

  state(sock: number): number {
    return Atomics.load(new Int32Array(this.buffer), stateOffset(this.layout, sock) >> 2);
  }
}

const text = (s: string) => new TextEncoder().encode(s);

Deno.test("ring service: listen, accept, data both ways, peer FIN, close", () => {
  const { wire, peer, host, app } = setup();
  const reqSocket = host.post(D.CMD_SOCKET, D.SOCK_NONE, (v, at) => {
    v.setInt32(at + D.SOCKET_DOMAIN, D.AF_INET, true);
    v.setInt32(at + D.SOCKET_TYPE, 1, true);
  });
  wire.step(1);
  const sock = host.take((e) => e.req === reqSocket)!.result;
  assert(sock >= 0);
  const bind = host.post(
    D.CMD_BIND,
    sock,
    (v, at) => D.writeSockaddrV4(v, at + D.BIND_ADDR, 0, 7000),
  );
  const listen = host.post(
    D.CMD_LISTEN,
    sock,
    (v, at) => v.setInt32(at + D.LISTEN_BACKLOG, 8, true),
  );
  wire.step(2);
  assertEquals(host.take((e) => e.req === bind)!.result, 0);
  assertEquals(host.take((e) => e.req === listen)!.result, 0);

  let peerEvents = 0;
  const c: TcpSocket = peer.connect(wire.ipA, 7000, { onEvent: (_s, ev) => peerEvents |= ev });
  wire.runUntil(
    () => host.take((e) => e.op === D.EV_READABLE && e.sock === sock) !== undefined,
    100,
  );
  const acc = host.post(D.CMD_ACCEPT, sock);
  wire.step(wire.now + 1);
  const accepted = host.take((e) => e.req === acc)!;
  assertEquals(accepted.op, D.CPL_ACCEPT);
  assertEquals(accepted.result, 0);
  const child = accepted.extra;
  assert(child !== sock);

  const hello = text("hello from the peer");
  assertEquals(peer.send(c, hello, 0, hello.length), hello.length);
  peer.shutdown(c);
  const s = hostSRings(host.buffer, host.layout, child);
  wire.runUntil(
    () => host.take((e) => e.op === D.EV_PEER_CLOSED && e.sock === child) !== undefined,
    500,
  );
  assert(host.state(child) & STATE_HUP, "HUP in the state word");
  assert(host.state(child) & STATE_READABLE);
  const got = new Uint8Array(64);
  const n = s.rx.read(got, 0, 64);
  assertEquals(new TextDecoder().decode(got.subarray(0, n)), "hello from the peer");
  host.post(D.CMD_RX_FREED, child, undefined, 0);

  const reply = text("and back");
  assertEquals(s.tx.write(reply, 0, reply.length), reply.length);
  host.post(D.CMD_TX_AVAIL, child, undefined, 0);
  const close = host.post(D.CMD_CLOSE, child);
  const back = new Uint8Array(64);
  let received = 0, eof = false;
  wire.runUntil(() => {
    const r = peer.recv(c, back, received, 64 - received);
    if (r > 0) received += r;
    if (r === 0) eof = true;
    return eof;
  }, 1000);
  assertEquals(new TextDecoder().decode(back.subarray(0, received)), "and back");
  assertEquals(host.take((e) => e.req === close)!.result, 0);
  wire.runUntil(() => app.counters.socketsOpen === 1, 1000);
  assertEquals(app.counters.socketsOpen, 1, "the child's slot is free once its FIN is acked");
  assert(peerEvents !== 0);
});

Deno.test("ring service: connect out, EV_CONNECTED, refused connect reports ECONNREFUSED", () => {
  const { wire, peer, host } = setup();
  const l = peer.listen(9000, 4);
  const mk = () => {
    const r = host.post(D.CMD_SOCKET, D.SOCK_NONE, (v, at) => {
      v.setInt32(at + D.SOCKET_DOMAIN, D.AF_INET, true);
      v.setInt32(at + D.SOCKET_TYPE, 1, true);
    });
    wire.step(wire.now + 1);
    return host.take((e) => e.req === r)!.result;
  };
  const sock = mk();
  const conn = host.post(
    D.CMD_CONNECT,
    sock,
    (v, at) => D.writeSockaddrV4(v, at + D.CONNECT_ADDR, wire.ipB, 9000),
  );
  // The engine has no deadline for commands it has not read: step once so the service reads.
  wire.step(wire.now + 1);
  wire.runUntil(() => host.got.some((e) => e.op === D.EV_CONNECTED) || (host.drain(), false), 200);
  assertEquals(host.take((e) => e.req === conn)!.result, -115, "EINPROGRESS first");
  assert(host.take((e) => e.op === D.EV_CONNECTED && e.sock === sock));
  assert(peer.accept(l) !== null);

  const sock2 = mk();
  host.post(
    D.CMD_CONNECT,
    sock2,
    (v, at) => D.writeSockaddrV4(v, at + D.CONNECT_ADDR, wire.ipB, 9001),
  );
  wire.step(wire.now + 1);
  wire.runUntil(() => host.got.some((e) => e.op === D.EV_RESET) || (host.drain(), false), 500);
  const reset = host.take((e) => e.op === D.EV_RESET && e.sock === sock2);
  assertEquals(reset?.result, -111);
});

Deno.test("ring service: hostile commands are refused and counted, the service stays up", () => {
  const { wire, host, app } = setup();
  const bad = [
    host.post(999, 0),
    host.post(D.CMD_BIND, 7, (v, at) => D.writeSockaddrV4(v, at + D.BIND_ADDR, 0, 80)), // not open
    host.post(D.CMD_LISTEN, 0xfffffff0),
    host.post(D.CMD_SHUTDOWN, 0, (v, at) => v.setInt32(at + D.SHUTDOWN_HOW, 7, true)),
    host.post(D.CMD_SOCKET, D.SOCK_NONE, (v, at) => v.setInt32(at + D.SOCKET_DOMAIN, 99, true)),
  ];
  wire.step(1);
  for (const req of bad) assert(host.take((e) => e.req === req)!.result < 0);
  assertEquals(app.counters.rejected, bad.length);
  const ok = host.post(D.CMD_SOCKET, D.SOCK_NONE, (v, at) => {
    v.setInt32(at + D.SOCKET_DOMAIN, D.AF_INET, true);
    v.setInt32(at + D.SOCKET_TYPE, 1, true);
  });
  wire.step(2);
  assert(host.take((e) => e.req === ok)!.result >= 0, "still serves good commands");
  // A scribbled command-ring index is a ring fault, not a crash.
  new Uint32Array(host.buffer)[(host.layout.gTableOffset + host.layout.cmdCtrl) >> 2] = 0x7fffffff;
  wire.step(3);
  assert(app.counters.ringFaults > 0);
});

Deno.test("ring service: with DMA knobs set, every ring copy is a charged transfer", () => {
  const { wire, peer, host, app } = setup({ latencyNs: 20_000 });
  const mk = host.post(D.CMD_SOCKET, D.SOCK_NONE, (v, at) => {
    v.setInt32(at + D.SOCKET_DOMAIN, D.AF_INET, true);
    v.setInt32(at + D.SOCKET_TYPE, 1, true);
  });
  wire.step(1);
  const sock = host.take((e) => e.req === mk)!.result;
  host.post(D.CMD_BIND, sock, (v, at) => D.writeSockaddrV4(v, at + D.BIND_ADDR, 0, 7100));
  host.post(D.CMD_LISTEN, sock, (v, at) => v.setInt32(at + D.LISTEN_BACKLOG, 4, true));
  wire.step(2);
  const c = peer.connect(wire.ipA, 7100);
  wire.runUntil(
    () => host.take((e) => e.op === D.EV_READABLE && e.sock === sock) !== undefined,
    100,
  );
  const acc = host.post(D.CMD_ACCEPT, sock);
  wire.step(wire.now + 1);
  const child = host.take((e) => e.req === acc)!.extra;
  const payload = new Uint8Array(5000).fill(7);
  assertEquals(peer.send(c, payload, 0, payload.length), payload.length);
  wire.runUntil(() => app.dma.counters.bytesWritten >= 5000, 200);
  assertEquals(app.dma.counters.bytesWritten, 5000, "payload written into the RX ring over DMA");
  const s = hostSRings(host.buffer, host.layout, child);
  assertEquals(s.tx.write(payload, 0, 3000), 3000);
  host.post(D.CMD_TX_AVAIL, child, undefined, 0);
  const t0 = performance.now();
  wire.runUntil(() => app.dma.counters.bytesRead >= 3000, 200);
  assertEquals(app.dma.counters.bytesRead, 3000, "TX ring read into mbufs over DMA");
  const transfers = app.dma.counters.transfers;
  assert(transfers >= 6, `one transfer per segment copy: ${transfers}`);
  // Each transfer busy-waits its 20 µs of latency.
  assert(performance.now() - t0 >= 0.02 * 2, "the latency was paid");
});
