/**
 * The wire's forwarder (ffi/fwd/pno_fwd.c, `pno wire up --loss ...`): frames between the kernel
 * ends of the twin link, sent and captured with AF_PACKET sockets, so that what the forwarder
 * did to each frame is seen from outside. Its loss decisions must be the bridge's fault
 * injector's (mulberry32 from the seed, one draw per frame), so that a seed means the same on
 * both; its delay, duplication and reordering are checked with ping; `wire down` must end it.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import {
  forwarderCounters,
  fwdNs,
  inNs,
  sh,
  testWire,
  type WireConfig,
  wireDown,
  wireUp,
} from "../cli/wire.ts";

/** Frames of an experimental EtherType (IEEE 802 local experimental 1), numbered. */
const SEND = String.raw`
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
for i in range(int(sys.argv[2])):
    s.send(b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + struct.pack("!I", i) + b"\0" * 60)
    if i % 16 == 15: time.sleep(0.001)
`;

const CAPTURE = String.raw`
import json, socket, struct, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
s.bind((sys.argv[1], 0)); s.settimeout(1.0)
print("ready", flush=True)
seen = []
try:
    while True:
        f = s.recv(2048)
        if f[12:14] == b"\x88\xb5": seen.append(struct.unpack("!I", f[14:18])[0])
except socket.timeout:
    pass
print(json.dumps(seen), flush=True)
`;

/** mulberry32 as packages/bridge/phy/fault_injector.ts has it: the oracle of loss decisions. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    let t = (state = (state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

async function withWire(
  tag: string,
  subnet: number,
  imp: Parameters<typeof wireUp>[1],
  body: (w: WireConfig) => Promise<void>,
): Promise<void> {
  const w = testWire(tag, subnet, true);
  try {
    await wireUp(w, imp);
    await body(w);
  } finally {
    await wireDown(w);
  }
}

/** ping's summary: replies, duplicates, and the smallest RTT in ms. */
async function ping(w: WireConfig, dst: string, count: number) {
  const out = await sh(inNs(w, "ping", "-c", String(count), "-i", "0.2", "-W", "3", dst), true);
  const received = Number(out.match(/(\d+) received/)?.[1] ?? 0);
  const duplicates = Number(out.match(/\+(\d+) duplicates/)?.[1] ?? 0);
  const min = Number(out.match(/= ([\d.]+)\//)?.[1] ?? NaN);
  return { received, duplicates, min };
}

Deno.test("forwarder drops exactly the frames the injector's PRNG drops, in order", async () => {
  const frames = 400, seed = 7, loss = 0.3;
  await withWire("twbf1", 64, { lossPercent: loss * 100, seed }, async (w) => {
    const capture = new Deno.Command("python3", {
      args: ["-c", CAPTURE, w.twin!.host],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = capture.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    try {
      while (!text.includes("ready")) text += (await reader.read()).value ?? "";
      await sh(inNs(w, "python3", "-c", SEND, w.twin!.client, String(frames)));
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
    } finally {
      await capture.status;
    }
    const seen: number[] = JSON.parse(text.trim().split("\n").pop()!);
    const draw = mulberry32(seed);
    const kept = Array.from({ length: frames }, (_, i) => i).filter(() => draw() >= loss);
    assertEquals(seen, kept);
    const c = await forwarderCounters(w);
    assertEquals(c.twin.ab.dropped, frames - kept.length);
    assertEquals(c.twin.ab.framesOut, kept.length);
  });
});

Deno.test("forwarder delays both directions, duplicates and reorders", async () => {
  await withWire("twbf2", 66, { delayMs: 30 }, async (w) => {
    const r = await ping(w, w.twin!.hostAddress.split("/")[0], 5);
    assertEquals(r.received, 5);
    assert(r.min >= 60, `RTT ${r.min} ms through 30 ms of delay each way`);
  });
  await withWire("twbf3", 68, { duplicatePercent: 100 }, async (w) => {
    await ping(w, w.twin!.hostAddress.split("/")[0], 1); // ARP resolved first
    const r = await ping(w, w.twin!.hostAddress.split("/")[0], 4);
    // Each request arrives twice and each of the two replies arrives twice: 3 duplicates per
    // ping (ping exits at the last first reply, so the last ping's may come too late).
    assertEquals(r.received, 4);
    assert(r.duplicates >= 9 && r.duplicates <= 12, `${r.duplicates} duplicates`);
  });
  await withWire("twbf4", 70, { delayMs: 200, reorderPercent: 50, seed: 3 }, async (w) => {
    // Pings 20 ms apart, each crossing twice: a copy that skips the delay overtakes up to 10
    // pings held for 200 ms, so replies come back out of order and with RTTs of 0, 200 or 400.
    const out = await sh(
      inNs(w, "ping", "-c", "20", "-i", "0.02", "-W", "2", w.twin!.hostAddress.split("/")[0]),
      true,
    );
    const rtts = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
    assertEquals(rtts.length, 20);
    assert(rtts.some((t) => t < 100), `no reply skipped both delays: ${rtts}`);
    assert(rtts.some((t) => t >= 400), `no reply was delayed both ways: ${rtts}`);
    const seqs = [...out.matchAll(/icmp_seq=(\d+)/g)].map((m) => Number(m[1]));
    assert(seqs.some((s, i) => i > 0 && s < seqs[i - 1]), `replies in order: ${seqs}`);
    const c = await forwarderCounters(w);
    assert(c.twin.ab.reordered > 0 && c.twin.ab.delayed > 0);
  });
});

Deno.test("wire down ends the forwarders and removes their namespace", async () => {
  const w = testWire("twbf5", 72, true);
  let pids: number[] = [];
  try {
    await wireUp(w, { lossPercent: 1 });
    pids = (await sh(["ip", "netns", "pids", fwdNs(w)])).trim().split("\n").map(Number);
    assertEquals(pids.length, 2);
  } finally {
    await wireDown(w);
  }
  for (const pid of pids) {
    // Gone, or a zombie waiting for init to reap it: either way it forwards nothing.
    let state = "";
    try {
      state = Deno.readTextFileSync(`/proc/${pid}/stat`).split(") ")[1][0];
    } catch {
      state = "gone";
    }
    assert(state === "gone" || state === "Z", `forwarder ${pid} outlived wire down (${state})`);
  }
  const namespaces = await sh(["ip", "netns", "list"]);
  assert(!namespaces.includes(fwdNs(w)), "forwarder namespace left behind");
});
