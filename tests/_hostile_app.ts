/**
 * Broken or hostile applications for tests/hostile_region_test.ts. Each attaches a region like
 * any other, prints "attached" (or "ready") when its misbehaviour starts and "done" when it
 * stops, then exits without closing anything: the bridge must clean up after a process that
 * just dies.
 *
 * - `scribble SECONDS`: opens a listener through the ring client, then scribbles random bytes
 *   over its region (ring indices, descriptors, thread, waiter, process and socket lines,
 *   stream data, and random words across the tables and the first sockets' rings).
 * - `flip SECONDS [PORT]`: speaks the protocol by hand; a worker thread rewrites every slot of
 *   a command ring in a tight loop (opcode CMD_BIND <-> CMD_LISTEN, socket id <-> 0xffffffff)
 *   while the main thread keeps publishing those slots, so the bridge reads slots that change
 *   under it. Prints `{"published":N,"flips":M}` before "done".
 * - `wake SECONDS PORT`: registers a wake socket for its waiter (2,000 times, never reading the
 *   acknowledgements), fills that socket's receive queue, clears O_NONBLOCK on both ends (the
 *   bridge's end shares the file description), and keeps its waiter "sleeping" while a listener
 *   subscribed to it takes connections: every kick the bridge sends would block. It also offers
 *   an eventfd as a wake fd, which must be refused.
 *
 * @module
 */
import { hostGRings } from "../packages/rings/attach.ts";
import { RingClient } from "../packages/rings/client.ts";
import {
  connectControl,
  type ControlConn,
  MSG_HELLO,
  MSG_REGION,
  MSG_WAIT_FD,
  MSG_WAKER,
} from "../packages/rings/control.ts";
import type { DescRingConsumer, DescRingProducer } from "../packages/rings/desc_ring.ts";
import * as D from "../packages/rings/descriptors.ts";
import {
  DOORBELL_SEQ,
  DOORBELL_SLEEPING,
  LAYOUT_VERSION,
  procOffset,
  SOCK_HOLDERS,
  sockOffset,
  streamOffset,
  THREAD_OWNER_TID,
  threadOffset,
  WAITER_GEN,
  WAITER_OWNER,
  WAITER_SLEEPING,
  waiterOffset,
} from "../packages/rings/layout.ts";
import { mapRegionFd, type Region } from "../packages/rings/region.ts";
import { kickFd } from "../packages/rings/waker.ts";
import {
  AF_UNIX,
  EFD_CLOEXEC,
  F_GETFL,
  F_SETFL,
  libc,
  MSG_DONTWAIT,
  O_NONBLOCK,
  SOCK_DGRAM,
  SOCK_NONBLOCK,
} from "../ffi/libc.ts";

// Misbehaving breaks this process's own view of the rings too; it is meant to keep going.
globalThis.addEventListener("unhandledrejection", (e) => e.preventDefault());
const control = Deno.env.get("PNO_CONTROL") ?? "/run/pno/bridge.sock";
const [mode, secondsArg, portArg] = Deno.args;
const seconds = Number(secondsArg ?? "2");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An application that speaks the protocol by hand (no ring client). */
class HandApp {
  readonly words: Int32Array;
  private readonly rings = new Map<
    number,
    { commands: DescRingProducer; completions: DescRingConsumer }
  >();
  private nextReq = 1;

  private constructor(
    readonly conn: ControlConn,
    readonly region: Region,
    readonly bridgeFd: number,
  ) {
    this.words = new Int32Array(region.buffer);
  }

  static async attach(path: string): Promise<HandApp> {
    const conn = connectControl(path);
    const hello = new Uint8Array(12);
    new DataView(hello.buffer).setUint32(0, LAYOUT_VERSION, true);
    conn.send(MSG_HELLO, hello);
    const reply = await conn.recv();
    if (reply.type !== MSG_REGION || reply.fd < 0) throw new Error(`no region: ${reply.type}`);
    const region = mapRegionFd(reply.fd);
    const waker = await conn.recv();
    if (waker.type !== MSG_WAKER) throw new Error(`no waker: ${waker.type}`);
    return new HandApp(conn, region, waker.fd);
  }

  /** Claims an entry of a table by a compare-and-swap of its owner word. */
  claim(n: number, at: (i: number) => number): number {
    for (let i = 0; i < n; i++) {
      if (Atomics.compareExchange(this.words, at(i) >> 2, 0, Deno.pid) === 0) return i;
    }
    throw new Error("table full");
  }

  thread(t: number): { commands: DescRingProducer; completions: DescRingConsumer } {
    let g = this.rings.get(t);
    if (!g) this.rings.set(t, g = hostGRings(this.region.buffer, this.region.layout, t));
    return g;
  }

  /** Rings the bridge's doorbell; kicks it if it sleeps. */
  kickBridge(): void {
    const db = this.region.layout.doorbellOffset;
    Atomics.add(this.words, (db + DOORBELL_SEQ) >> 2, 1);
    if (Atomics.exchange(this.words, (db + DOORBELL_SLEEPING) >> 2, 0) !== 0) {
      kickFd(this.bridgeFd);
    }
  }

  post(t: number, op: number, sock: number, gen: number, fill?: (v: DataView, at: number) => void) {
    const { commands } = this.thread(t);
    if (commands.reserve(1) < 1) throw new Error("command ring full");
    const req = this.nextReq++;
    D.writeHeader(commands.view, commands.slotOffset(0), op, sock, gen, req);
    fill?.(commands.view, commands.slotOffset(0));
    commands.publish(1);
    this.kickBridge();
    return req;
  }

  /** Posts a command and polls for its completion. */
  async call(
    t: number,
    op: number,
    sock: number,
    gen: number,
    fill?: (v: DataView, at: number) => void,
  ): Promise<{ result: number; sock: number; gen: number }> {
    const req = this.post(t, op, sock, gen, fill);
    const { completions } = this.thread(t);
    for (let i = 0; i < 5000; i++) {
      const n = completions.peek(1);
      if (n === 1) {
        const at = completions.slotOffset(0);
        const c = {
          req: D.readReqId(completions.view, at),
          result: D.readResult(completions.view, at),
          sock: D.readSock(completions.view, at),
          gen: D.readGen(completions.view, at),
        };
        completions.release(1);
        if (c.req === req) return c;
        continue;
      }
      this.kickBridge();
      await sleep(1);
    }
    throw new Error(`no completion for opcode ${op}`);
  }

  /** bind(0.0.0.0:port) and listen on thread `t`; returns the socket. */
  async listen(t: number, port: number): Promise<{ sock: number; gen: number }> {
    const b = await this.call(
      t,
      D.CMD_BIND,
      D.SOCK_NONE,
      0,
      (v, at) => D.writeSockaddrV4(v, at + D.BIND_ADDR, 0, port),
    );
    if (b.result < 0) throw new Error(`bind ${port}: ${b.result}`);
    Atomics.store(this.words, (sockOffset(this.region.layout, b.sock) + SOCK_HOLDERS) >> 2, 1);
    const l = await this.call(
      t,
      D.CMD_LISTEN,
      b.sock,
      b.gen,
      (v, at) => v.setInt32(at + D.LISTEN_BACKLOG, 16, true),
    );
    if (l.result < 0) throw new Error(`listen ${port}: ${l.result}`);
    return { sock: b.sock, gen: b.gen };
  }

  /** Sends `fd` as waiter `w`'s wake fd. */
  sendWaitFd(w: number, fd: number): void {
    const p = new Uint8Array(4);
    new DataView(p.buffer).setUint32(0, w, true);
    this.conn.send(MSG_WAIT_FD, p, fd);
  }
}

function clearNonblock(fd: number): void {
  const flags = libc().fcntl(fd, F_GETFL, 0);
  if (flags < 0 || libc().fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) !== 0) {
    throw new Error(`fcntl on fd ${fd}`);
  }
}

async function scribble(): Promise<void> {
  const client = await RingClient.attach(control);
  await client.listen({ port: 8099 });
  console.log("attached");
  const bytes = new Uint8Array(client.region.buffer);
  const words = new Uint32Array(client.region.buffer);
  let seed = 0x9e3779b9;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return seed >>> 0;
  };
  const end = performance.now() + seconds * 1000;
  const layout = client.region.layout;
  const p = layout.params;
  // The places a consumer trusts most: ring indices, descriptor slots, owner lines, state
  // lines; plus random words and bytes across the tables and the first sockets' rings (the
  // region is sparse and sized for thousands of sockets: scribbling all of it would make the
  // memfd as large as it is).
  const targets: Array<[number, number]> = [[layout.doorbellOffset, 64]];
  for (let t = 0; t < p.maxThreads; t++) {
    const g = threadOffset(layout, t);
    targets.push([g, 64], [g + layout.cmdCtrl, 128], [g + layout.cplCtrl + 64, 64]);
    targets.push([g + layout.cmdSlotsOffset, p.cmdSlots * 64]);
  }
  for (let w = 0; w < Math.min(8, p.maxWaiters); w++) {
    const at = waiterOffset(layout, w);
    targets.push([at, 64], [at + layout.evCtrl, 128]);
  }
  for (let i = 0; i < Math.min(4, p.maxProcs); i++) targets.push([procOffset(layout, i), 4096]);
  for (let s = 0; s < 8; s++) {
    targets.push([streamOffset(layout, s) + layout.txCtrl, 128]);
    targets.push([streamOffset(layout, s) + layout.rxCtrl, 128]);
    targets.push([sockOffset(layout, s), 128]);
  }
  const limit = Math.min(streamOffset(layout, 16), client.region.size);
  while (performance.now() < end) {
    for (const [at, len] of targets) {
      for (let i = 0; i < 16; i++) words[(at + (rand() % len)) >> 2] = rand();
    }
    for (let i = 0; i < 1024; i++) words[(4096 + (rand() % (limit - 4096))) >> 2] = rand();
    for (let i = 0; i < 1024; i++) bytes[4096 + (rand() % (limit - 4096))] = rand() & 0xff;
    await sleep(1);
  }
}

async function flip(): Promise<void> {
  const app = await HandApp.attach(control);
  const layout = app.region.layout;
  const t = app.claim(layout.params.maxThreads, (i) => threadOffset(layout, i) + THREAD_OWNER_TID);
  const l = await app.listen(t, Number(portArg ?? "8097"));
  const { commands, completions } = app.thread(t);
  // The slots of the command ring, rewritten by another thread for as long as we publish.
  const slots = threadOffset(layout, t) + layout.cmdSlotsOffset;
  const worker = new Worker(new URL("./_hostile_flipper.ts", import.meta.url).href, {
    type: "module",
  });
  const flips = new Promise<number>((resolve) => worker.onmessage = (e) => resolve(e.data));
  worker.postMessage({
    addr: Deno.UnsafePointer.value(app.region.ptr) + BigInt(slots),
    bytes: layout.params.cmdSlots * 64,
    seconds,
    sock: l.sock,
    gen: l.gen,
  });
  await sleep(20); // the worker is flipping
  console.log("attached");
  let published = 0;
  const end = performance.now() + seconds * 1000;
  for (let now = performance.now(), turn = now; now < end; now = performance.now()) {
    const k = commands.reserve(16);
    if (k > 0) {
      commands.publish(k);
      published += k;
      app.kickBridge();
    }
    const n = completions.peek(64);
    if (n > 0) completions.release(n);
    if (now - turn > 5) {
      await sleep(0); // now and then a turn of the event loop
      turn = now;
    }
  }
  console.log(JSON.stringify({ published, flips: await flips }));
  worker.terminate();
}

async function wake(): Promise<void> {
  const app = await HandApp.attach(control);
  const layout = app.region.layout;
  const words = app.words;
  const t = app.claim(layout.params.maxThreads, (i) => threadOffset(layout, i) + THREAD_OWNER_TID);
  const w = app.claim(layout.params.maxWaiters, (i) => waiterOffset(layout, i) + WAITER_OWNER);
  const wgen = Atomics.add(words, (waiterOffset(layout, w) + WAITER_GEN) >> 2, 1) + 1;
  // The wake socket: a datagram pair; the bridge gets one end.
  const sv = new Int32Array(2);
  if (libc().socketpair(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0, new Uint8Array(sv.buffer)) !== 0) {
    throw new Error("socketpair");
  }
  const [mine, theirs] = sv;
  // The bridge acknowledges each wake fd; we never read the acknowledgements: after a few
  // hundred, a blocking send of the bridge's would wait for us forever.
  for (let i = 0; i < 2000; i++) app.sendWaitFd(w, theirs);
  // An eventfd is no wake socket: the bridge must refuse it.
  const efd = libc().eventfd(0, EFD_CLOEXEC);
  app.sendWaitFd((w + 1) % layout.params.maxWaiters, efd);
  // Fill our end's receive queue from the bridge's end (the same file), then make both ends
  // blocking: a plain send() on the bridge's copy would now sleep until we read, forever.
  const one = new Uint8Array(128);
  let queued = 0;
  while (Number(libc().send(theirs, one, 1n, MSG_DONTWAIT)) === 1) queued++;
  clearNonblock(theirs);
  clearNonblock(mine);
  // A listener subscribed to the waiter: each connection is an IN edge, so a kick.
  const l = await app.listen(t, Number(portArg ?? "8094"));
  app.post(t, D.CMD_SUBSCRIBE, l.sock, l.gen, (v, at) => {
    v.setUint32(at + D.SUB_WAITER, w, true);
    v.setUint32(at + D.SUB_WAITER_GEN, wgen, true);
    v.setUint32(at + D.SUB_MASK, D.EPOLLIN, true);
  });
  await sleep(50);
  console.log(JSON.stringify({ event: "ready", queued }));
  const sleeping = (waiterOffset(layout, w) + WAITER_SLEEPING) >> 2;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    Atomics.store(words, sleeping, 1); // always "asleep": every edge is a kick
    await sleep(1);
  }
}

if (mode === "scribble") await scribble();
else if (mode === "flip") await flip();
else if (mode === "wake") await wake();
else throw new Error(`unknown mode ${mode}`);
console.log("done");
// Exit without closing anything: the bridge must clean up after a process that just dies.
Deno.exit(0);
