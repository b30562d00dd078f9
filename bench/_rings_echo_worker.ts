/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * Echo side of the ring latency benchmark (bench/rings_micro.ts): polls ring A and copies every
 * message back into ring B, busy-polling like a NIC core.
 *
 * @module
 */

import { HostRxConsumer, NicRxProducer } from "../packages/rings/mod.ts";

interface Setup {
  mem: SharedArrayBuffer;
  ringA: [number, number, number];
  ringB: [number, number, number];
  messages: number;
  size: number;
}

self.onmessage = (e: MessageEvent<Setup>) => {
  const { mem, ringA, ringB, messages, size } = e.data;
  const inbox = new HostRxConsumer(mem, ...ringA);
  const outbox = new NicRxProducer(mem, ...ringB);
  const msg = new Uint8Array(size);
  for (let i = 0; i < messages; i++) {
    let got = 0;
    while (got < size) got += Math.max(0, inbox.read(msg, got, size - got));
    while (outbox.writable() < size) { /* spin: the main thread is reading */ }
    outbox.copyIn(0, msg, 0, size);
    outbox.publish(size);
  }
  self.postMessage("done");
};
