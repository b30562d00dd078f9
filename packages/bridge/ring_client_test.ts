/**
 * The Deno ring client (packages/rings/client.ts) against the bridge's region server and ring
 * service, in one process: the service's engine on the in-memory wire, a second engine as the
 * remote peer, the client attached over a real control socket with a real region, wake socket
 * and eventfd. The wire runs in real time, stepped by a loop that yields to the event loop.
 */
import { assert, assertEquals, assertRejects } from "@std/assert";
import { RingClient, RingError } from "../rings/client.ts";
import { ECONNREFUSED } from "../rings/errno.ts";
import type { RegionParams } from "../rings/layout.ts";
import type { RingService } from "./ring_service.ts";
import type { TcpEngine } from "./tcp/engine.ts";
import type { MemWire } from "./tcp/mem_wire.ts";
import { withInProcessBridge } from "./testing.ts";
import type { TcpSocket } from "./tcp/socket.ts";

const PARAMS: RegionParams = {
  maxThreads: 4,
  maxWaiters: 4,
  maxProcs: 4,
  maxSockets: 16,
  cmdSlots: 64,
  cplSlots: 64,
  evSlots: 256,
  txBytes: 64 * 1024,
  rxBytes: 64 * 1024,
};

/** A bridge in this process (testing.ts); `tick` adds a step to each round of its loop. */
function withBridge(
  body: (
    ctx: { path: string; wire: MemWire; peer: TcpEngine; service: RingService },
    tick: (f: () => void) => void,
  ) => Promise<void>,
): Promise<void> {
  return withInProcessBridge(PARAMS, (b) => body(b, b.tick));
}

function pattern(n: number, seed: number): Uint8Array {
  const p = new Uint8Array(n);
  for (let i = 0; i < n; i++) p[i] = (i * 31 + seed + (i >> 11)) & 0xff;
  return p;
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** Test options: the region server's accept stays pending on its closed socket. */
const OPTS = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "ring client: listen, accept, 1 MiB echoed to a peer, byte-exact; peer FIN is EOF",
  ...OPTS,
  fn: () =>
    withBridge(async ({ path, wire, peer, service }, tick) => {
      const client = await RingClient.attach(path);
      try {
        const listener = await client.listen({ port: 7000 });
        assertEquals(listener.port, 7000);
        const total = 1 << 20;
        const data = pattern(total, 5);
        const back = new Uint8Array(total);
        let sent = 0, got = 0, finSent = false, eof = false;
        const c: TcpSocket = peer.connect(wire.ipA, 7000);
        tick(() => {
          if (sent < total) {
            const n = peer.send(c, data, sent, Math.min(16384, total - sent));
            if (n > 0) sent += n;
          } else if (!finSent) {
            peer.shutdown(c);
            finSent = true;
          }
          for (;;) {
            const n = peer.recv(c, back, got, total - got);
            if (n > 0) got += n;
            else {
              if (n === 0 && got === total) eof = true;
              break;
            }
          }
        });
        const conn = await listener.accept();
        assertEquals(conn.remoteAddr.hostname, "10.0.0.2");
        const buf = new Uint8Array(20000);
        let echoed = 0;
        for (let n; (n = await conn.read(buf)) !== null;) {
          await conn.write(buf.subarray(0, n));
          echoed += n;
        }
        assertEquals(echoed, total, "EOF only after every byte");
        conn.close();
        await until(() => eof, 10_000, "the peer sees the echo and our FIN");
        assertEquals(back, data);
        const [app] = service.snapshot();
        assertEquals(app.rejected, 0);
        assertEquals(app.ringFaults, 0);
        assert(client.doorbells > 0);
        // Coalesced doorbells: far fewer than one per write.
        assert(client.doorbells < app.commands, `${client.doorbells} of ${app.commands}`);
        listener.close();
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name: "ring client: a reader that never writes keeps the window open (rx_want doorbells)",
  ...OPTS,
  fn: () =>
    withBridge(async ({ path, wire, peer }, tick) => {
      const client = await RingClient.attach(path);
      try {
        const listener = await client.listen({ port: 7001 });
        const total = 4 << 20; // 64 times the receive ring
        const data = pattern(total, 9);
        let sent = 0;
        const c = peer.connect(wire.ipA, 7001);
        tick(() => {
          if (sent < total) {
            const n = peer.send(c, data, sent, total - sent);
            if (n > 0) sent += n;
            if (sent === total) peer.shutdown(c);
          }
        });
        const conn = await listener.accept();
        const buf = new Uint8Array(3000);
        const got = new Uint8Array(total);
        let n = 0;
        const t0 = performance.now();
        for (let k; (k = await conn.read(buf)) !== null;) {
          got.set(buf.subarray(0, k), n);
          n += k;
        }
        const ms = performance.now() - t0;
        assertEquals(n, total);
        assertEquals(got, data);
        // The reader never writes: every doorbell it posted answered the NIC's rx_want. Without
        // them the window reopens only when the peer's timers fire (here 2.7 s, not 0.2).
        assert(client.doorbells > 0);
        assert(ms < 1500, `4 MiB through a 64 KiB ring in ${ms.toFixed(0)} ms`);
        conn.close();
        listener.close();
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name: "ring client: reads smaller than a segment still reopen a closed window",
  ...OPTS,
  fn: () =>
    withBridge(async ({ path, wire, peer }, tick) => {
      const client = await RingClient.attach(path);
      try {
        const listener = await client.listen({ port: 7002 });
        const total = 512 * 1024; // 8 times the receive ring
        const data = pattern(total, 11);
        let sent = 0;
        const c = peer.connect(wire.ipA, 7002);
        tick(() => {
          if (sent < total) {
            const n = peer.send(c, data, sent, total - sent);
            if (n > 0) sent += n;
            if (sent === total) peer.shutdown(c);
          }
        });
        const conn = await listener.accept();
        const buf = new Uint8Array(100);
        let n = 0, bad = -1, stalls = 0;
        let last = performance.now();
        for (let k; (k = await conn.read(buf)) !== null;) {
          for (let i = 0; i < k && bad < 0; i++) if (buf[i] !== data[n + i]) bad = n + i;
          n += k;
          // A read that waited for a timer of the peer's or the NIC's, not for the wire.
          const now = performance.now();
          if (now - last > 40) stalls++;
          last = now;
        }
        assertEquals([n, bad], [total, -1]);
        assert(stalls <= 1, `${stalls} reads waited more than 40 ms for the window to reopen`);
        conn.close();
        listener.close();
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name: "ring client: connect out, exchange, half-close; a refused connect is ECONNREFUSED",
  ...OPTS,
  fn: () =>
    withBridge(async ({ path, wire, peer }, tick) => {
      const client = await RingClient.attach(path);
      try {
        const l = peer.listen(9000, 4);
        let accepted: TcpSocket | null = null;
        const echo = new Uint8Array(65536);
        let peerEof = false;
        tick(() => {
          if (accepted === null) accepted = peer.accept(l);
          if (accepted === null) return;
          for (;;) {
            // Echo no more than the send ring takes now (it grows with the flow, from small).
            const room = peer.sendSpace(accepted);
            if (room === 0) break;
            const n = peer.recv(accepted, echo, 0, Math.min(echo.length, room));
            if (n === 0 && !peerEof) {
              peerEof = true;
              peer.shutdown(accepted);
            }
            if (n <= 0) break;
            assertEquals(peer.send(accepted, echo, 0, n), n);
          }
        });
        const conn = await client.connect({ hostname: "10.0.0.2", port: 9000 });
        assertEquals(conn.localAddr.hostname, "10.0.0.1");
        const data = pattern(200_000, 3);
        const back = new Uint8Array(data.length);
        const reader = (async () => {
          let got = 0;
          const buf = new Uint8Array(8192);
          for (let n; (n = await conn.read(buf)) !== null;) {
            back.set(buf.subarray(0, n), got);
            got += n;
          }
          return got;
        })();
        for (let off = 0; off < data.length; off += 10_000) {
          await conn.write(data.subarray(off, off + 10_000));
        }
        await conn.closeWrite();
        assertEquals(await reader, data.length);
        assertEquals(back, data);
        assert(peerEof);
        conn.close();

        const err = await assertRejects(
          () => client.connect({ hostname: "10.0.0.2", port: 9001 }),
          RingError,
        );
        assertEquals(err.errno, ECONNREFUSED);
        assertEquals(wire.ipB, 0x0a000002);
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name: "ring client: holders, process references and subscriptions follow the sockets",
  ...OPTS,
  fn: () =>
    withBridge(async ({ path, wire, peer, service }) => {
      const client = await RingClient.attach(path);
      try {
        const app = [...service.apps.values()][0];
        const listener = await client.listen({ port: 0 });
        assert(listener.port >= 32768, `ephemeral port ${listener.port}`);
        peer.connect(wire.ipA, listener.port);
        const conn = await listener.accept();
        const words = client.words;
        const layout = client.region.layout;
        const { SOCK_HOLDERS, sockOffset, procOffset, PROC_REFS, PROC_PID } = await import(
          "../rings/layout.ts"
        );
        const holders = (s: number) =>
          Atomics.load(words, (sockOffset(layout, s) + SOCK_HOLDERS) >> 2);
        const refs = (s: number) =>
          new Uint16Array(client.region.buffer)[
            (procOffset(layout, client.proc) + PROC_REFS + 2 * s) >> 1
          ];
        assertEquals(
          Atomics.load(words, (procOffset(layout, client.proc) + PROC_PID) >> 2),
          Deno.pid,
        );
        assertEquals([holders(listener.sock), refs(listener.sock)], [1, 1]);
        assertEquals([holders(conn.sock), refs(conn.sock)], [1, 1]);
        await until(() => app.slots[conn.sock].subs.length === 1, 2000, "subscribed");
        assertEquals(app.slots[conn.sock].subs[0].waiter, client.waiter);
        assertEquals(app.counters.socketsOpen, 2);
        conn.close();
        assertEquals([holders(conn.sock), refs(conn.sock)], [0, 0]);
        listener.close();
        await until(() => app.counters.socketsOpen === 0, 5000, "both sockets closed");
        assertEquals(app.counters.rejected, 0);
      } finally {
        await client.close();
      }
    }),
});
