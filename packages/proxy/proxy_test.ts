/**
 * The proxy between applications and a bridge in this process: the bridge's ring service on
 * the in-memory wire with its region server (as packages/bridge/ring_client_test.ts runs it),
 * the proxy connected to it as its proxy, and applications attaching through the proxy: the
 * Deno ring client in this process, raw control connections, and a ring echo server in a child
 * process that is killed.
 */
import { assert, assertEquals, assertMatch, assertRejects } from "@std/assert";
import {
  connectControl,
  createRegion,
  HELLO_JOIN,
  HELLO_PROXY,
  LAYOUT_VERSION,
  MSG_ERROR,
  MSG_HELLO,
  MSG_MAP_REGION,
  MSG_REGION,
  MSG_WAIT_FD,
  MSG_WAKER,
  payloadU32,
  type RegionParams,
  u32Payload,
} from "@pno/rings";
import { RingClient } from "../rings/client.ts";
import type { RegionServer } from "../bridge/region_server.ts";
import type { RingService } from "../bridge/ring_service.ts";
import type { TcpEngine } from "../bridge/tcp/engine.ts";
import type { MemWire } from "../bridge/tcp/mem_wire.ts";
import { withInProcessBridge } from "../bridge/testing.ts";
import { libc } from "../../ffi/libc.ts";
import { Proxy } from "./proxy.ts";
import { parsePolicy, type Policy } from "./policy.ts";

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

const ROOT = new URL("../..", import.meta.url).pathname;
const UID = Deno.uid() ?? 0;

interface Ctx {
  dir: string;
  proxyPath: string;
  bridgePath: string;
  wire: MemWire;
  peer: TcpEngine;
  service: RingService;
  server: RegionServer;
  proxy: Proxy;
  events: Record<string, unknown>[];
  tick: (f: () => void) => void;
}

/** A bridge in this process (packages/bridge/testing.ts) and a proxy in front of it. */
async function withProxy(policy: Policy | undefined, body: (ctx: Ctx) => Promise<void>) {
  await withInProcessBridge(PARAMS, async (bridge) => {
    const proxyPath = `${bridge.dir}/proxy.sock`;
    const events: Record<string, unknown>[] = [];
    const proxy = await Proxy.start({
      listen: proxyPath,
      bridge: bridge.path,
      policy,
      onEvent: (e) => events.push(e),
    });
    try {
      await body({ ...bridge, proxyPath, bridgePath: bridge.path, proxy, events });
    } finally {
      await proxy.close();
    }
  });
}

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = performance.now() + ms;
  while (!cond()) {
    if (performance.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** Pending FFI calls (accepts, receives) outlive a test by design here. */
const OPTS = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  name: "proxy: an application attaches through the proxy; the bridge serves the proxy's region",
  ...OPTS,
  fn: () =>
    withProxy(undefined, async ({ proxyPath, wire, peer, service, proxy, events, tick }) => {
      const client = await RingClient.attach(proxyPath);
      const listener = await client.listen({ port: 7100 });
      // The bridge serves the region the proxy created, in this process's name.
      const [app] = service.snapshot();
      assertEquals(app.pid, Deno.pid);
      const stats = proxy.stats();
      assertEquals(stats.admitted, 1);
      assertEquals(stats.apps.length, 1);
      assertEquals(stats.apps[0].region, app.app);
      assertEquals(stats.apps[0].pids, [Deno.pid]);
      assertEquals(stats.apps[0].sockets, PARAMS.maxSockets);
      await until(() => proxy.stats().waitFds === 1, 2000, "the wake socket forwarded");
      assertEquals(events[0].event, "admit");
      // Data flows between the peer and the application through the bridge only.
      const c = peer.connect(wire.ipA, 7100);
      const hello = new TextEncoder().encode("through the bridge");
      let sent = false;
      const back = new Uint8Array(64);
      let got = 0;
      tick(() => {
        if (!sent && peer.send(c, hello, 0, hello.length) > 0) sent = true;
        const n = peer.recv(c, back, got, back.length - got);
        if (n > 0) got += n;
      });
      const conn = await listener.accept();
      const buf = new Uint8Array(64);
      let n = 0;
      while (n < hello.length) {
        const k = await conn.read(buf.subarray(n));
        if (k === null) break;
        n += k;
      }
      assertEquals(buf.subarray(0, n), hello);
      await conn.write(buf.subarray(0, n));
      await until(() => got === hello.length, 5000, "the echo back at the peer");
      conn.close();
      listener.close();
      // The client unmaps its region and hangs up: nothing of the application is left.
      await client.close();
      await until(() => service.apps.size === 0, 2000, "the bridge let the region go");
      await until(() => proxy.stats().ended === 1, 2000, "the proxy ended the application");
      assertEquals(proxy.stats().apps, []);
      assertEquals(events.at(-1)?.event, "gone");
    }),
});

Deno.test({
  name: "proxy: the policy refuses a uid, or an application allowed no sockets, with a reason",
  ...OPTS,
  fn: async () => {
    const other = UID === 4242 ? 4243 : 4242;
    await withProxy(parsePolicy({ uids: [other] }), async ({ proxyPath, service, proxy }) => {
      await assertRejects(
        () => RingClient.attach(proxyPath),
        Error,
        `uid ${UID} is not allowed to offload by the proxy's policy (allowed: ${other})`,
      );
      assertEquals(service.apps.size, 0);
      assertEquals(proxy.stats().refused, 1);
    });
    await withProxy(parsePolicy({ sockets: 0 }), async ({ proxyPath, service }) => {
      await assertRejects(() => RingClient.attach(proxyPath), Error, "no offloaded sockets");
      assertEquals(service.apps.size, 0);
    });
    const limited = parsePolicy({ perUid: { [String(UID)]: { sockets: 3 } } });
    await withProxy(limited, async ({ proxyPath, service, proxy }) => {
      const client = await RingClient.attach(proxyPath);
      try {
        assertEquals(proxy.stats().apps[0].sockets, 3);
        const [app] = service.apps.values();
        assertEquals(app.slots.length, 3);
      } finally {
        await client.close();
      }
    });
  },
});

/** Says HELLO on a raw control connection; returns the first reply. */
async function hello(path: string, flags = 0, regionId = 0) {
  const conn = connectControl(path);
  conn.send(MSG_HELLO, u32Payload(LAYOUT_VERSION, flags, regionId));
  return { conn, reply: await conn.recv() };
}

Deno.test({
  name: "proxy: a child joins only a region it maps; WAIT_FD is acknowledged after the bridge",
  ...OPTS,
  fn: () =>
    withProxy(undefined, async ({ proxyPath, proxy }) => {
      const client = await RingClient.attach(proxyPath);
      try {
        const id = proxy.stats().apps[0].region;
        // This process maps region `id` (the client's): it may join it, and gets no new fd.
        const joined = await hello(proxyPath, HELLO_JOIN, id);
        assertEquals(joined.reply.type, MSG_REGION);
        assertEquals(joined.reply.fd, -1);
        assertEquals(payloadU32(joined.reply.payload, 1), id);
        const waker = await joined.conn.recv();
        assertEquals(waker.type, MSG_WAKER);
        assert(waker.fd >= 0);
        libc().close(waker.fd);
        assertEquals(proxy.stats().joined, 1);
        assertEquals(proxy.stats().apps[0].connections, 2);
        // A wake socket for waiter 1: acknowledged once the bridge has registered it.
        const pair = new Uint8Array(128);
        assertEquals(libc().socketpair(1, 2, /* SOCK_DGRAM */ 0, pair), 0);
        const [mine, theirs] = [0, 4].map((o) => new DataView(pair.buffer).getInt32(o, true));
        joined.conn.send(MSG_WAIT_FD, u32Payload(1), theirs);
        const ack = await joined.conn.recv();
        assertEquals([ack.type, payloadU32(ack.payload, 0)], [MSG_WAIT_FD, 1]);
        // Not a socket: the bridge's check refuses it, and the proxy says so.
        const efd = libc().eventfd(0, 0);
        joined.conn.send(MSG_WAIT_FD, u32Payload(2), efd);
        const no = await joined.conn.recv();
        assertEquals(no.type, MSG_ERROR);
        assertMatch(new TextDecoder().decode(no.payload), /not a socket/);
        for (const fd of [mine, theirs, efd]) libc().close(fd);
        joined.conn.close();
        // A region nobody here maps, and one that does not exist: refused.
        const stranger = await hello(proxyPath, HELLO_JOIN, id + 1000);
        assertEquals(stranger.reply.type, MSG_ERROR);
        assertMatch(new TextDecoder().decode(stranger.reply.payload), /no region/);
        stranger.conn.close();
      } finally {
        await client.close();
      }
    }),
});

Deno.test({
  name: "proxy: only a proxy connection may map a region in the bridge",
  ...OPTS,
  fn: () =>
    withProxy(undefined, async ({ bridgePath, service, server }) => {
      // An application attached to the bridge directly offers a region of its own: ignored.
      const direct = await hello(bridgePath);
      assertEquals(direct.reply.type, MSG_REGION);
      libc().close(direct.reply.fd);
      const waker = await direct.conn.recv();
      libc().close(waker.fd);
      assertEquals(service.apps.size, 1);
      const forged = createRegion(PARAMS, "forged", { localIp: 0, regionId: 77 });
      direct.conn.send(MSG_MAP_REGION, u32Payload(1, 77, Deno.pid), forged.fd);
      direct.conn.send(MSG_MAP_REGION, u32Payload(2, 0, 0)); // nor may it reserve ids
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(service.apps.size, 1);
      assert(!service.apps.has(77));
      direct.conn.close();
      await until(() => service.apps.size === 0, 2000, "the direct application detached");
      // A MAP_REGION as the first frame is no HELLO.
      const raw = connectControl(bridgePath);
      raw.send(MSG_MAP_REGION, u32Payload(1, 77, Deno.pid), forged.fd);
      const refused = await raw.recv();
      assertEquals(refused.type, MSG_ERROR);
      raw.close();
      // The proxy's own id space: a region id it did not reserve is refused.
      const proxy = await hello(bridgePath, HELLO_PROXY);
      await proxy.conn.recv(); // WAKER
      await proxy.conn.recv(); // STATS_PAGE (none: the in-process bridge has no page)
      proxy.conn.send(MSG_MAP_REGION, u32Payload(9, 77, Deno.pid), forged.fd);
      const reply = await proxy.conn.recv();
      assertEquals(payloadU32(reply.payload, 0), 9);
      assertEquals(payloadU32(reply.payload, 1) | 0, -1);
      assertMatch(new TextDecoder().decode(reply.payload.subarray(8)), /not reserved/);
      proxy.conn.close();
      assertEquals(service.apps.size, 0);
      // Anyone but root or the bridge's own uid is refused as a proxy.
      const stranger = { peer: { pid: 1, uid: UID + 1, gid: 0 } };
      assertMatch(
        server.proxies.refusal(stranger as Parameters<typeof server.proxies.refusal>[0]) ?? "",
        /may not act as a proxy/,
      );
      libc().close(forged.fd);
    }),
});

Deno.test({
  name: "proxy: an application killed is unmapped from the bridge at once (pidfd)",
  ...OPTS,
  fn: () =>
    withProxy(undefined, async ({ proxyPath, service, proxy, events }) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--unstable-ffi",
          `${ROOT}examples/ring_echo_server.ts`,
          "--control",
          proxyPath,
          "--port",
          "7200",
        ],
        stdout: "piped",
        stderr: "inherit",
      }).spawn();
      try {
        const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
        let line = "";
        while (!line.includes("\n")) {
          const { value, done } = await reader.read();
          if (done) break;
          line += value;
        }
        assertMatch(line, /listening/);
        void reader.cancel().catch(() => {});
        assertEquals(service.apps.size, 1);
        assertEquals(proxy.stats().apps[0].pids, [child.pid]);
        child.kill("SIGKILL");
        const t0 = performance.now();
        await until(() => service.apps.size === 0, 1000, "the bridge dropped the region");
        await until(() => proxy.stats().apps.length === 0, 1000, "the proxy let it go");
        assert(performance.now() - t0 < 1000);
        assertEquals(events.at(-1)?.event, "gone");
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // gone
        }
        await child.status;
      }
    }),
});
