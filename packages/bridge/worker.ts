/**
 * A bridge worker: one Deno worker serving one queue of the port the main thread started.
 *
 * Messages in: {type:"start", config}, {type:"stats"}, {type:"stop"}.
 * Messages out: {type:"started"}, {type:"stats", stats}, {type:"stopped"}, {type:"error", message}.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { openDp } from "../../ffi/dp.ts";
import { poolView, QueueStack, type QueueStackConfig } from "./queue_stack.ts";

let stack: QueueStack | null = null;
let running: Promise<void> | null = null;

self.onmessage = async (e: MessageEvent) => {
  const msg = e.data as { type: string; config?: QueueStackConfig };
  try {
    if (msg.type === "start" && msg.config) {
      const dp = openDp();
      stack = new QueueStack(dp, poolView(dp), msg.config);
      running = stack.loop.run();
      self.postMessage({ type: "started" });
    } else if (msg.type === "connections" && stack) {
      self.postMessage({ type: "connections", list: stack.connections() });
    } else if (msg.type === "stats" && stack) {
      self.postMessage({ type: "stats", stats: stack.stats() });
    } else if (msg.type === "stop") {
      stack?.loop.stop();
      await running;
      stack?.finish();
      self.postMessage({ type: "stopped" });
    }
  } catch (err) {
    self.postMessage({ type: "error", message: (err as Error).message });
  }
};
