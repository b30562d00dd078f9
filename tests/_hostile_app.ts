/**
 * A broken or hostile application: it attaches a region like any other, opens a listener and
 * a few sockets, then scribbles random bytes over its whole region (ring indices, descriptors,
 * state words, stream data) for the given number of seconds, posting the command-ring index
 * at random too. Prints "attached" when it starts and "done" when it stops.
 */
import { RingClient } from "../packages/rings/client.ts";
import { gPairOffset, sPairOffset, stateOffset } from "../packages/rings/layout.ts";

// The scribbling breaks this process's own ring client too; it is meant to keep going.
globalThis.addEventListener("unhandledrejection", (e) => e.preventDefault());
const control = Deno.env.get("PNO_CONTROL") ?? "/run/pno/bridge.sock";
const seconds = Number(Deno.args[0] ?? "2");
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
// The places a consumer trusts most: ring indices, descriptor slots, state words, and the
// stream rings of the first sockets; plus random bytes anywhere past the header.
const targets: Array<[number, number]> = [
  [layout.doorbellOffset, (1 + layout.params.maxThreads) * 64],
];
for (let t = 0; t < layout.params.maxThreads; t++) {
  const g = gPairOffset(layout, t);
  // The completion ring's consumer index is the application's to write (the bridge must
  // distrust it); its producer index and slots are left alone so that this process's own
  // ring client keeps its control connection open while it misbehaves.
  targets.push([g + layout.cmdCtrl, 128], [g + layout.cplCtrl + 64, 64]);
  targets.push([g + layout.cmdSlotsOffset, layout.params.cmdSlots * 64]);
}
for (let s = 0; s < 8; s++) {
  targets.push([sPairOffset(layout, s) + layout.txCtrl, 128]);
  targets.push([sPairOffset(layout, s) + layout.rxCtrl, 128]);
  targets.push([stateOffset(layout, s), 16]);
}
while (performance.now() < end) {
  for (const [at, len] of targets) {
    for (let i = 0; i < 16; i++) words[(at + (rand() % len)) >> 2] = rand();
  }
  for (let i = 0; i < 1024; i++) words[1024 + (rand() % (words.length - 1024))] = rand();
  for (let i = 0; i < 1024; i++) bytes[4096 + (rand() % (bytes.length - 4096))] = rand() & 0xff;
  await new Promise((r) => setTimeout(r, 1));
}
console.log("done");
// Exit without closing anything: the bridge must clean up after a process that just dies.
Deno.exit(0);
