/**
 * A bridge in the test's own process, for tests of what attaches to it (the Deno ring client,
 * the proxy): the ring service's engine on the in-memory wire, a second engine as the remote
 * peer, and the region server on a real control socket. The wire runs in real time, stepped
 * by a loop that yields a macrotask each round, so that the client's poller, FFI polls and the
 * control socket get their turn.
 *
 * @module
 */
import type { RegionParams } from "../rings/layout.ts";
import { RegionServer } from "./region_server.ts";
import { RingService } from "./ring_service.ts";
import { TcpEngine } from "./tcp/engine.ts";
import { MemWire } from "./tcp/mem_wire.ts";

/** What a test gets of the bridge it runs in. */
export interface InProcessBridge {
  /** A temporary directory, removed afterwards; the control socket is in it. */
  dir: string;
  /** The region server's control socket. */
  path: string;
  wire: MemWire;
  /** The remote peer's engine, on the other end of the wire. */
  peer: TcpEngine;
  service: RingService;
  server: RegionServer;
  /** Adds work to every round of the loop (a peer application's steps). */
  tick: (f: () => void) => void;
}

/** Runs `body` with a bridge in this process; everything is stopped and removed afterwards. */
export async function withInProcessBridge(
  params: RegionParams,
  body: (bridge: InProcessBridge) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/bridge.sock`;
  const wire = new MemWire({ delayMs: 0.2 });
  const nic = new TcpEngine(wire.a, { localIp: wire.ipA, seed: 1, mslMs: 100 });
  const peer = new TcpEngine(wire.b, { localIp: wire.ipB, seed: 2, mslMs: 100 });
  const service = new RingService(nic, wire.ipA);
  const ticks: Array<() => void> = [];
  wire.attach({
    input: (b, o, l, s, d, n) => nic.input(b, o, l, s, d, n),
    poll: (now) => {
      service.poll(now);
      nic.poll(now);
      service.flushEvents();
    },
    nextDeadline: () => nic.nextDeadline(),
  }, peer);
  const server = new RegionServer(path, service, params, wire.ipA);
  let running = true;
  const channel = new MessageChannel();
  const loop = (async () => {
    while (running) {
      wire.step(performance.now());
      for (const f of ticks) f();
      await new Promise<void>((r) => {
        channel.port1.onmessage = () => r();
        channel.port2.postMessage(0);
      });
    }
  })();
  try {
    await body({ dir, path, wire, peer, service, server, tick: (f) => ticks.push(f) });
  } finally {
    running = false;
    await loop;
    channel.port1.close();
    server.close();
    await Deno.remove(dir, { recursive: true });
  }
}
