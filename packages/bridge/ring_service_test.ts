/**
 * The ring service (protocol v2) on the in-memory wire: a host side driving a region's rings
 * by hand (a thread's command and completion rings, a waiter's event queue, the socket lines,
 * the accept queue and the stream rings), the bridge's engine serving them, and a second engine
 * as the remote peer.
 */
import { assert, assertEquals } from "@std/assert";
import { hostGRings, hostSRings } from "../rings/attach.ts";
import { DescRingConsumer } from "../rings/desc_ring.ts";
import * as D from "../rings/descriptors.ts";
import * as E from "../rings/errno.ts";
import {
  ACCEPT_ENTRY,
  computeLayout,
  DOORBELL_SEQ,
  KIND_BOUND,
  KIND_CONN,
  KIND_LISTENER,
  PROC_PID,
  PROC_REFS,
  procOffset,
  type RegionParams,
  SHUT_RCV,
  SHUT_SEND,
  SOCK_DATA_ACK,
  SOCK_DATA_REQ,
  SOCK_ERR,
  SOCK_GEN,
  SOCK_HOLDERS,
  SOCK_KIND,
  SOCK_LOCAL_PORT,
  SOCK_PEER_IP,
  SOCK_RX_WANT,
  SOCK_SHUTDOWN,
  SOCK_TCP_STATE,
  sockOffset,
  threadOffset,
  WAITER_GEN,
  WAITER_OVERFLOW,
  WAITER_SLEEPING,
  waiterOffset,
  writeRegionHeader,
} from "../rings/layout.ts";
import { AF_UNIX, libc, SOCK_DGRAM, SOCK_NONBLOCK } from "../../ffi/libc.ts";
import type { DmaKnobs } from "./dma.ts";
import { RingService } from "./ring_service.ts";
import { TcpEngine } from "./tcp/engine.ts";
import { MemWire } from "./tcp/mem_wire.ts";
import { CLOSED, ESTABLISHED, LISTEN, SYN_SENT, type TcpSocket } from "./tcp/socket.ts";

const PARAMS: RegionParams = {
  maxThreads: 2,
  maxWaiters: 2,
  maxProcs: 2,
  maxSockets: 8,
  cmdSlots: 16,
  cplSlots: 64,
  evSlots: 64,
  txBytes: 64 * 1024,
  rxBytes: 64 * 1024,
};

function setup(dma: Partial<DmaKnobs> = {}, params: Partial<RegionParams> = {}) {
  const layout = computeLayout({ ...PARAMS, ...params });
  const buffer = new SharedArrayBuffer(layout.totalSize);
  writeRegionHeader(buffer, layout);
  const wire = new MemWire({ delayMs: 1 });
  const nic = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1, mslMs: 100 });
  const peer = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, mslMs: 100 });
  const service = new RingService(nic, wire.ipA, dma);
  // As the bridge's QueueStack: commands, then the engine, then the edges it raised.
  wire.attach({
    input: (b, o, l, s, d, n) => nic.input(b, o, l, s, d, n),
    poll: (now) => {
      service.poll(now);
      nic.poll(now);
      service.flushEvents();
    },
    nextDeadline: () => nic.nextDeadline(),
  }, peer);
  const app = service.attach({ buffer, layout }, 4242);
  const host = new Host(buffer, layout);
  return { wire, nic, peer, service, app, host, layout, buffer };
}

interface Got {
  op: number;
  sock: number;
  gen: number;
  req: number;
  result: number;
  /** CPL_RESULT: the command's opcode; CPL_SOCKET: the local port; EV_NOTIFY: the events. */
  extra: number;
}

/** The application side, by hand: thread 0's rings and waiter 0's event queue. */
class Host {
  readonly g;
  readonly events: DescRingConsumer;
  readonly words: Int32Array;
  private nextReq = 1;
  readonly got: Got[] = [];
  readonly evs: Got[] = [];

  constructor(
    readonly buffer: SharedArrayBuffer,
    readonly layout: ReturnType<typeof computeLayout>,
  ) {
    this.g = hostGRings(buffer, layout, 0);
    const w = waiterOffset(layout, 0);
    this.events = new DescRingConsumer(
      buffer,
      w + layout.evCtrl,
      w + layout.evSlotsOffset,
      layout.params.evSlots,
    );
    this.words = new Int32Array(buffer);
  }

  post(op: number, sock: number, gen: number, fill?: (v: DataView, at: number) => void): number {
    const req = this.nextReq++;
    assertEquals(this.g.commands.reserve(1), 1);
    const at = this.g.commands.slotOffset(0);
    D.writeHeader(this.g.commands.view, at, op, sock, gen, req);
    fill?.(this.g.commands.view, at);
    this.g.commands.publish(1);
    this.ringDoorbell();
    return req;
  }

  /** As the shim does after publishing: the bridge reads command rings when this moves. */
  ringDoorbell(): void {
    Atomics.add(this.words, (this.layout.doorbellOffset + DOORBELL_SEQ) >> 2, 1);
  }

  bind(port: number, ip = 0): number {
    return this.post(
      D.CMD_BIND,
      D.SOCK_NONE,
      0,
      (v, at) => D.writeSockaddrV4(v, at + D.BIND_ADDR, ip, port),
    );
  }

  subscribe(sock: number, gen: number, mask = D.EPOLLIN | D.EPOLLOUT | D.EPOLLRDHUP, waiter = 0) {
    this.post(D.CMD_SUBSCRIBE, sock, gen, (v, at) => {
      v.setUint32(at + D.SUB_WAITER, waiter, true);
      v.setUint32(at + D.SUB_WAITER_GEN, 1, true);
      v.setUint32(at + D.SUB_MASK, mask, true);
    });
  }

  /** The coalesced data doorbell, as the shim rings it. */
  data(sock: number, gen: number): boolean {
    const req = this.line(sock, SOCK_DATA_REQ);
    if (this.line(sock, SOCK_DATA_ACK) !== req) return false;
    this.setLine(sock, SOCK_DATA_REQ, req + 1);
    this.post(D.CMD_DATA, sock, gen, (v, at) => v.setUint32(at + D.DATA_REQ, req + 1, true));
    return true;
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
        gen: D.readGen(c.view, at),
        req: D.readReqId(c.view, at),
        result: D.readResult(c.view, at),
        extra: op === D.CPL_RESULT
          ? c.view.getUint16(at + D.RESULT_CMD_OPCODE, true)
          : op === D.CPL_SOCKET
          ? D.readSockaddrPort(c.view, at + D.SOCKET_LOCAL)
          : 0,
      });
    }
    c.release(n);
    const e = this.events;
    const m = e.peek(64);
    for (let i = 0; i < m; i++) {
      const at = e.slotOffset(i);
      this.evs.push({
        op: D.readOpcode(e.view, at),
        sock: D.readSock(e.view, at),
        gen: D.readGen(e.view, at),
        req: D.readReqId(e.view, at),
        result: D.readResult(e.view, at),
        extra: e.view.getUint32(at + D.NOTIFY_EVENTS, true),
      });
    }
    e.release(m);
  }

  /**
   * Steps the wire once and forgets the events so far: a subscription is answered with one
   * notification of the socket's current state, which the tests below do not look for.
   */
  settle(wire: MemWire): void {
    wire.step(wire.now + 1);
    this.drain();
    this.evs.length = 0;
  }

  take(req: number): Got | undefined {
    this.drain();
    const i = this.got.findIndex((e) => e.req === req);
    return i < 0 ? undefined : this.got.splice(i, 1)[0];
  }

  /** Takes the first event of `sock` with any of `bits`. */
  event(sock: number, bits: number): Got | undefined {
    this.drain();
    const i = this.evs.findIndex((e) => e.sock === sock && (e.extra & bits) !== 0);
    return i < 0 ? undefined : this.evs.splice(i, 1)[0];
  }

  line(sock: number, off: number): number {
    return Atomics.load(this.words, (sockOffset(this.layout, sock) + off) >> 2);
  }

  setLine(sock: number, off: number, value: number): void {
    Atomics.store(this.words, (sockOffset(this.layout, sock) + off) >> 2, value);
  }

  /** Pops one accept entry from listener `sock`'s RX ring. */
  accept(sock: number): { sock: number; gen: number; peerIp: number; peerPort: number } | null {
    const rx = hostSRings(this.buffer, this.layout, sock).rx;
    if (rx.readable() < ACCEPT_ENTRY.size) return null;
    const e = new Uint8Array(ACCEPT_ENTRY.size);
    assertEquals(rx.read(e, 0, e.length), e.length);
    const v = new DataView(e.buffer);
    return {
      sock: v.getUint32(0, true),
      gen: v.getUint32(4, true),
      peerIp: v.getUint32(8, true),
      peerPort: v.getUint16(16, true),
    };
  }
}

const text = (s: string) => new TextEncoder().encode(s);

/** Binds, subscribes and listens on `port`; returns the listener's slot and generation. */
function listenOn(wire: MemWire, host: Host, port: number, backlog = 8) {
  const bind = host.bind(port);
  wire.step(wire.now + 1);
  const b = host.take(bind)!;
  assertEquals([b.op, b.result, b.extra], [D.CPL_SOCKET, 0, port]);
  assertEquals(host.line(b.sock, SOCK_KIND), KIND_BOUND);
  assertEquals(host.line(b.sock, SOCK_GEN), b.gen);
  assertEquals(host.line(b.sock, SOCK_LOCAL_PORT) & 0xffff, port);
  host.subscribe(b.sock, b.gen);
  const listen = host.post(
    D.CMD_LISTEN,
    b.sock,
    b.gen,
    (v, at) => v.setInt32(at + D.LISTEN_BACKLOG, backlog, true),
  );
  wire.step(wire.now + 1);
  const l = host.take(listen)!;
  assertEquals([l.op, l.result, l.extra], [D.CPL_RESULT, 0, D.CMD_LISTEN]);
  assertEquals(host.line(b.sock, SOCK_KIND), KIND_LISTENER);
  assertEquals(host.line(b.sock, SOCK_TCP_STATE), LISTEN);
  host.settle(wire);
  return { sock: b.sock, gen: b.gen };
}

Deno.test("ring service: bind, listen, accept queue, data both ways, peer FIN, close", () => {
  const { wire, peer, host, app } = setup();
  const l = listenOn(wire, host, 7000);

  let peerEvents = 0;
  const c: TcpSocket = peer.connect(wire.ipA, 7000, { onEvent: (_s, ev) => peerEvents |= ev });
  wire.runUntil(() => host.event(l.sock, D.EPOLLIN) !== undefined, 100);
  const child = host.accept(l.sock)!;
  assert(child !== null && child.sock !== l.sock);
  assertEquals(host.accept(l.sock), null, "one entry per connection");
  assertEquals([child.peerIp, child.peerPort], [wire.ipB, c.localPort]);
  assertEquals(child.gen, host.line(child.sock, SOCK_GEN));
  assertEquals(host.line(child.sock, SOCK_KIND), KIND_CONN);
  assertEquals(host.line(child.sock, SOCK_TCP_STATE), ESTABLISHED);
  assertEquals(host.line(child.sock, SOCK_PEER_IP), wire.ipB);
  assertEquals(host.line(child.sock, SOCK_HOLDERS), 0, "nobody holds it until it is popped");
  host.setLine(child.sock, SOCK_HOLDERS, 1);
  host.subscribe(child.sock, child.gen);
  host.settle(wire);

  const hello = text("hello from the peer");
  assertEquals(peer.send(c, hello, 0, hello.length), hello.length);
  peer.shutdown(c);
  wire.runUntil(() => host.event(child.sock, D.EPOLLRDHUP) !== undefined, 500);
  assertEquals(host.line(child.sock, SOCK_SHUTDOWN) & SHUT_RCV, SHUT_RCV, "FIN in the line");
  const s = hostSRings(host.buffer, host.layout, child.sock);
  const got = new Uint8Array(64);
  const n = s.rx.read(got, 0, 64);
  assertEquals(new TextDecoder().decode(got.subarray(0, n)), "hello from the peer");

  const reply = text("and back");
  assertEquals(s.tx.write(reply, 0, reply.length), reply.length);
  assert(host.data(child.sock, child.gen), "no doorbell in flight: ring it");
  assert(!host.data(child.sock, child.gen), "one in flight: coalesced");
  wire.step(wire.now + 1);
  assertEquals(host.line(child.sock, SOCK_DATA_ACK), 1, "served");
  host.post(
    D.CMD_CLOSE,
    child.sock,
    child.gen,
    (v, at) => v.setInt32(at + D.CLOSE_LINGER, -1, true),
  );
  const back = new Uint8Array(64);
  let received = 0, eof = false;
  wire.runUntil(() => {
    const r = peer.recv(c, back, received, 64 - received);
    if (r > 0) received += r;
    if (r === 0) eof = true;
    return eof;
  }, 1000);
  assertEquals(new TextDecoder().decode(back.subarray(0, received)), "and back");
  wire.runUntil(() => app.counters.socketsOpen === 1, 1000);
  assertEquals(app.counters.socketsOpen, 1, "the child's slot is free once its FIN is acked");
  assert(peerEvents !== 0);
  assertEquals(app.counters.rejected, 0);

  // The closed socket's generation is stale: commands naming it are refused.
  const rejected = app.counters.rejected;
  host.post(D.CMD_DATA, child.sock, child.gen);
  wire.step(wire.now + 1);
  assertEquals(app.counters.rejected, rejected + 1);
});

Deno.test("ring service: connect out, OUT edge; a refused connect sets ECONNREFUSED and HUP", () => {
  const { wire, peer, host } = setup();
  const l = peer.listen(9000, 4);
  const conn = host.post(
    D.CMD_CONNECT,
    D.SOCK_NONE,
    0,
    (v, at) => D.writeSockaddrV4(v, at + D.CONNECT_ADDR, wire.ipB, 9000),
  );
  wire.step(wire.now + 0.5);
  const c = host.take(conn)!;
  assertEquals([c.op, c.result], [D.CPL_SOCKET, 0]);
  assert(c.extra >= 32768, `ephemeral local port ${c.extra}`);
  assertEquals(host.line(c.sock, SOCK_TCP_STATE), SYN_SENT);
  host.subscribe(c.sock, c.gen);
  host.settle(wire); // the handshake takes longer than this step
  assertEquals(host.line(c.sock, SOCK_TCP_STATE), SYN_SENT);
  wire.runUntil(() => host.event(c.sock, D.EPOLLOUT) !== undefined, 200);
  assertEquals(host.line(c.sock, SOCK_TCP_STATE), ESTABLISHED);
  wire.step(wire.now + 2); // our ACK reaches the peer
  assert(peer.accept(l) !== null);

  const conn2 = host.post(
    D.CMD_CONNECT,
    D.SOCK_NONE,
    0,
    (v, at) => D.writeSockaddrV4(v, at + D.CONNECT_ADDR, wire.ipB, 9001),
  );
  wire.step(wire.now + 0.5);
  const c2 = host.take(conn2)!;
  host.subscribe(c2.sock, c2.gen);
  host.settle(wire);
  wire.runUntil(() => host.event(c2.sock, D.EPOLLHUP) !== undefined, 500);
  assertEquals(host.line(c2.sock, SOCK_ERR), E.ECONNREFUSED);
  assertEquals(host.line(c2.sock, SOCK_SHUTDOWN), SHUT_RCV | SHUT_SEND);
  assertEquals(host.line(c2.sock, SOCK_TCP_STATE), CLOSED);
});

Deno.test("ring service: hostile commands are refused and counted, the service stays up", () => {
  const { wire, host, app } = setup();
  const bad = [
    host.post(999, 0, 0),
    host.post(D.CMD_LISTEN, 7, 1), // not open
    host.post(D.CMD_LISTEN, 0xfffffff0, 0),
    host.post(D.CMD_LISTEN, D.SOCK_NONE, 0),
    host.post(D.CMD_TCP_INFO, 3, 0, (v, at) => v.setInt32(at + D.SHUTDOWN_HOW, 7, true)),
    host.post(
      D.CMD_BIND,
      D.SOCK_NONE,
      0,
      (v, at) => v.setUint16(at + D.BIND_ADDR, D.AF_INET6, true),
    ),
    host.bind(80, 0x01020304), // not the bridge's address
  ];
  wire.step(1);
  // An unknown opcode cannot say whether it wanted an answer: it gets none.
  assertEquals(host.take(bad[0]), undefined);
  const results = bad.slice(1).map((req) => host.take(req)!.result);
  assertEquals(results, [
    -E.EBADF,
    -E.EINVAL,
    -E.EINVAL,
    -E.EBADF,
    -E.EINVAL,
    -E.EADDRNOTAVAIL,
  ]);
  assertEquals(app.counters.rejected, 6);
  assertEquals([app.checker.badOpcode, app.checker.badSock, app.checker.badField], [1, 2, 1]);
  const ok = host.bind(81);
  wire.step(2);
  const b = host.take(ok)!;
  assertEquals([b.op, b.result], [D.CPL_SOCKET, 0], "still serves good commands");
  // The same port again, and a stale generation of the bound socket.
  const again = host.bind(81);
  const stale = host.post(
    D.CMD_LISTEN,
    b.sock,
    b.gen + 1,
    (v, at) => v.setInt32(at + D.LISTEN_BACKLOG, 1, true),
  );
  wire.step(3);
  assertEquals(host.take(again)!.result, -E.EADDRINUSE);
  assertEquals(host.take(stale)!.result, -E.EBADF);
  // A scribbled command-ring index is a ring fault, not a crash.
  new Uint32Array(host.buffer)[(threadOffset(host.layout, 0) + host.layout.cmdCtrl) >> 2] =
    0x7fffffff;
  host.ringDoorbell();
  wire.step(4);
  assert(app.counters.ringFaults > 0);
  // Another thread's ring of the same region still works.
  const g1 = hostGRings(host.buffer, host.layout, 1);
  g1.commands.reserve(1);
  D.writeHeader(g1.commands.view, g1.commands.slotOffset(0), D.CMD_BIND, D.SOCK_NONE, 0, 77);
  D.writeSockaddrV4(g1.commands.view, g1.commands.slotOffset(0) + D.BIND_ADDR, 0, 82);
  g1.commands.publish(1);
  host.ringDoorbell();
  wire.step(5);
  assertEquals(g1.completions.peek(1), 1);
  assertEquals(D.readReqId(g1.completions.view, g1.completions.slotOffset(0)), 77);
  assertEquals(D.readOpcode(g1.completions.view, g1.completions.slotOffset(0)), D.CPL_SOCKET);
});

Deno.test("ring service: a full accept queue holds connections back until the host pops (rx_want)", () => {
  const { wire, peer, host, app } = setup({}, { rxBytes: 4096, maxSockets: 160 });
  const perQueue = 4096 / ACCEPT_ENTRY.size; // 128 entries
  const l = listenOn(wire, host, 7100, 256);
  const clients: TcpSocket[] = [];
  for (let i = 0; i < perQueue + 5; i++) clients.push(peer.connect(wire.ipA, 7100));
  wire.runUntil(() => host.line(l.sock, SOCK_RX_WANT) === 1, 500);
  assertEquals(host.line(l.sock, SOCK_RX_WANT), 1, "the queue is full and the NIC says so");
  const popped = [];
  for (let e; (e = host.accept(l.sock)) !== null;) popped.push(e);
  assertEquals(popped.length, perQueue);
  // The host read what the NIC wanted to hear of: one doorbell refills the queue.
  assert(host.data(l.sock, l.gen));
  wire.step(wire.now + 1);
  for (let e; (e = host.accept(l.sock)) !== null;) popped.push(e);
  assertEquals(popped.length, perQueue + 5);
  assertEquals(host.line(l.sock, SOCK_RX_WANT), 0);
  assertEquals(new Set(popped.map((e) => e.sock)).size, popped.length, "distinct slots");
  assertEquals(app.counters.socketsOpen, perQueue + 6);
  // Closing the listener with entries still queued resets them (none here: all popped).
  assert(clients.every((c) => c.state === ESTABLISHED));
});

Deno.test("ring service: subscriptions: masks, unsubscribe, waiter release, overflow, kicks", () => {
  const { wire, peer, host, app, layout, buffer } = setup({}, { evSlots: 4 });
  const l = listenOn(wire, host, 7200);
  const c = peer.connect(wire.ipA, 7200);
  wire.runUntil(() => host.event(l.sock, D.EPOLLIN) !== undefined, 100);
  const child = host.accept(l.sock)!;
  // Waiter 1 wants only OUT: data arriving is none of its business.
  host.subscribe(child.sock, child.gen, D.EPOLLOUT, 1);
  wire.step(wire.now + 1);
  const w1 = waiterOffset(layout, 1);
  const ev1 = new DescRingConsumer(buffer, w1 + layout.evCtrl, w1 + layout.evSlotsOffset, 4);
  // Subscribing is answered with the socket's state: connected, so writable.
  assertEquals(ev1.peek(4), 1);
  assertEquals(ev1.view.getUint32(ev1.slotOffset(0) + D.NOTIFY_EVENTS, true), D.EPOLLOUT);
  ev1.release(1);
  assertEquals(peer.send(c, text("x"), 0, 1), 1);
  wire.runUntil(() => hostSRings(buffer, layout, child.sock).rx.readable() === 1, 100);
  wire.step(wire.now + 1);
  assertEquals(ev1.peek(4), 0, "no IN edge for an OUT-only subscription");
  // Waiter 0 subscribes; a sleeping waiter with a wake socket is kicked, once per round.
  host.subscribe(child.sock, child.gen);
  host.settle(wire);
  ev1.release(ev1.peek(4)); // the OUT of that answer went to waiter 1 too
  const sv = new Int32Array(2);
  const flags = SOCK_DGRAM | SOCK_NONBLOCK;
  assertEquals(libc().socketpair(AF_UNIX, flags, 0, new Uint8Array(sv.buffer)), 0);
  try {
    app.waiters[0].wakeFd = sv[1];
    const words = new Int32Array(buffer);
    const sleeping = (waiterOffset(layout, 0) + WAITER_SLEEPING) >> 2;
    Atomics.store(words, sleeping, 1);
    assertEquals(peer.send(c, text("yz"), 0, 2), 2);
    const rx = hostSRings(buffer, layout, child.sock).rx;
    wire.runUntil(() => rx.readable() === 3 && app.counters.kicks > 0, 100);
    wire.step(wire.now + 1);
    assertEquals(app.counters.kicks, 1);
    assertEquals(Atomics.load(words, sleeping), 0, "the NIC took the flag");
    const one = new Uint8Array(128);
    assertEquals(Number(libc().read(sv[0], one, 128n)), 1, "one datagram on the wake socket");
    host.drain();
    assertEquals(host.evs.filter((e) => e.sock === child.sock).length, 1);
    host.evs.length = 0;
    // Nobody drains waiter 0 now: its 4-slot queue fills and the NIC flags the overflow.
    for (let i = 0; i < 8; i++) {
      const before = rx.readable();
      assertEquals(peer.send(c, text("a"), 0, 1), 1);
      wire.runUntil(() => rx.readable() > before, 500);
    }
    assertEquals(Atomics.load(words, (waiterOffset(layout, 0) + WAITER_OVERFLOW) >> 2), 1);
    assert(app.counters.overflows > 0);
    assertEquals(app.counters.kicks, 1, "a waiter that is not sleeping is not kicked");
    // Release waiter 0: its subscriptions go; unsubscribe waiter 1 with mask 0.
    host.drain();
    host.evs.length = 0;
    host.post(D.CMD_WAITER_RELEASE, D.SOCK_NONE, 0, (v, at) => {
      v.setUint32(at + D.RELEASE_WAITER, 0, true);
      v.setUint32(
        at + D.RELEASE_WAITER_GEN,
        Atomics.load(words, (waiterOffset(layout, 0) + WAITER_GEN) >> 2),
        true,
      );
    });
    host.subscribe(child.sock, child.gen, 0, 1);
    wire.step(wire.now + 1);
    assertEquals(app.slots[child.sock].subs.length, 0);
    peer.shutdown(c);
    wire.runUntil(() => (host.line(child.sock, SOCK_SHUTDOWN) & SHUT_RCV) !== 0, 100);
    wire.step(wire.now + 1);
    host.drain();
    assertEquals(host.evs.length, 0);
    assertEquals(ev1.peek(4), 0);
  } finally {
    app.waiters[0].wakeFd = -1;
    libc().close(sv[0]);
    libc().close(sv[1]);
  }
});

Deno.test("ring service: a dead process's references are dropped; its last sockets close", async () => {
  const { wire, peer, host, app, layout, buffer, service } = setup();
  const l = listenOn(wire, host, 7300);
  const c = peer.connect(wire.ipA, 7300);
  wire.runUntil(() => host.event(l.sock, D.EPOLLIN) !== undefined, 100);
  const child = host.accept(l.sock)!;
  // Two processes hold the connection (a fork); only the child holds the listener.
  const dead = new Deno.Command("true").spawn();
  await dead.status;
  const words = new Int32Array(buffer);
  const halves = new Uint16Array(buffer);
  const ref = (p: number, s: number) => (procOffset(layout, p) + PROC_REFS + 2 * s) >> 1;
  Atomics.store(words, (procOffset(layout, 0) + PROC_PID) >> 2, Deno.pid);
  Atomics.store(words, (procOffset(layout, 1) + PROC_PID) >> 2, dead.pid);
  halves[ref(0, child.sock)] = 1;
  halves[ref(1, child.sock)] = 1;
  halves[ref(1, l.sock)] = 1;
  host.setLine(child.sock, SOCK_HOLDERS, 2);
  host.setLine(l.sock, SOCK_HOLDERS, 1);
  assertEquals(service.reapDeadProcesses(app), 1, "the dead process is found");
  assertEquals(service.reapDeadProcesses(app), 0, "and dropped once");
  assertEquals(app.counters.processesReaped, 1);
  assertEquals(Atomics.load(words, (procOffset(layout, 1) + PROC_PID) >> 2), 0, "entry freed");
  assertEquals(host.line(child.sock, SOCK_HOLDERS), 1, "the parent still holds it");
  assertEquals(host.line(l.sock, SOCK_HOLDERS), 0);
  assertEquals(app.slots[l.sock].inUse, false, "the listener its last holder left is closed");
  assertEquals(app.slots[child.sock].hostOpen, true);
  assertEquals(c.state, ESTABLISHED);
});

Deno.test("ring service: a reused slot starts over: new generation, both lines cleared", () => {
  const { wire, host, app } = setup();
  const first = host.take((() => {
    const r = host.bind(7400);
    wire.step(1);
    return r;
  })())!;
  host.setLine(first.sock, SOCK_HOLDERS, 1);
  host.setLine(first.sock, SOCK_DATA_REQ, 5);
  host.post(
    D.CMD_CLOSE,
    first.sock,
    first.gen,
    (v, at) => v.setInt32(at + D.CLOSE_LINGER, -1, true),
  );
  wire.step(2);
  assertEquals(app.counters.socketsOpen, 0);
  const r = host.bind(7400);
  wire.step(3);
  const second = host.take(r)!;
  assertEquals(second.sock, first.sock, "the freed slot is reused");
  assert(second.gen !== first.gen, "with a new generation");
  assertEquals(host.line(second.sock, SOCK_GEN), second.gen);
  // The host's coalesced doorbell must work on the new socket: data_req == data_ack.
  assertEquals(host.line(second.sock, SOCK_DATA_REQ), host.line(second.sock, SOCK_DATA_ACK));
  assertEquals(host.line(second.sock, SOCK_HOLDERS), 0);
});

Deno.test("ring service: with DMA knobs set, every ring copy is a charged transfer", () => {
  const { wire, peer, host, app } = setup({ latencyNs: 20_000 });
  const l = listenOn(wire, host, 7500, 4);
  const c = peer.connect(wire.ipA, 7500);
  wire.runUntil(() => host.event(l.sock, D.EPOLLIN) !== undefined, 100);
  const child = host.accept(l.sock)!;
  const payload = new Uint8Array(5000).fill(7);
  assertEquals(peer.send(c, payload, 0, payload.length), payload.length);
  wire.runUntil(() => app.dma.counters.bytesWritten >= 5000, 200);
  assertEquals(app.dma.counters.bytesWritten, 5000, "payload written into the RX ring over DMA");
  const s = hostSRings(host.buffer, host.layout, child.sock);
  assertEquals(s.tx.write(payload, 0, 3000), 3000);
  host.data(child.sock, child.gen);
  const t0 = performance.now();
  wire.runUntil(() => app.dma.counters.bytesRead >= 3000, 200);
  assertEquals(app.dma.counters.bytesRead, 3000, "TX ring read into mbufs over DMA");
  const transfers = app.dma.counters.transfers;
  assert(transfers >= 6, `one transfer per segment copy: ${transfers}`);
  // Each transfer busy-waits its 20 µs of latency.
  assert(performance.now() - t0 >= 0.02 * 2, "the latency was paid");
});
