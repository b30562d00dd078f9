import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import { computeLayout, type RegionParams } from "@pno/rings";
import { type Admission, admit, OPEN_POLICY, parseBytes, parsePolicy } from "./policy.ts";

const BRIDGE: RegionParams = {
  maxThreads: 64,
  maxWaiters: 256,
  maxProcs: 64,
  maxSockets: 16384,
  cmdSlots: 256,
  cplSlots: 64,
  evSlots: 4096,
  txBytes: 256 * 1024,
  rxBytes: 256 * 1024,
};

function admitted(a: Admission | string): Admission {
  if (typeof a === "string") throw new Error(`refused: ${a}`);
  return a;
}

function refused(a: Admission | string): string {
  if (typeof a !== "string") throw new Error(`admitted with ${a.sockets} sockets`);
  return a;
}

Deno.test("policy: the open policy admits every uid with the bridge's region", () => {
  for (const uid of [0, 1000, 65534]) {
    const a = admitted(admit(OPEN_POLICY, uid, BRIDGE));
    assertEquals(a.params, BRIDGE);
    assertEquals(a.sockets, BRIDGE.maxSockets);
    assertEquals(a.memory, computeLayout(BRIDGE).totalSize);
  }
});

Deno.test("policy: only the listed uids are admitted, the refusal names the uid", () => {
  const p = parsePolicy({ uids: [0, 1000] });
  admitted(admit(p, 0, BRIDGE));
  admitted(admit(p, 1000, BRIDGE));
  const why = refused(admit(p, 1001, BRIDGE));
  assertMatch(why, /uid 1001 is not allowed/);
  assertMatch(why, /allowed: 0, 1000/);
  assertMatch(refused(admit(parsePolicy({ uids: [] }), 0, BRIDGE)), /allowed: nobody/);
});

Deno.test("policy: a socket limit sizes the region; 0 sockets refuses; never above the bridge", () => {
  const p = parsePolicy({
    sockets: 100,
    perUid: { "1000": { sockets: 0 }, "7": { sockets: 1e6 } },
  });
  const a = admitted(admit(p, 0, BRIDGE));
  assertEquals(a.sockets, 100);
  assertEquals(a.params, { ...BRIDGE, maxSockets: 100 });
  assert(a.memory < computeLayout(BRIDGE).totalSize);
  assertMatch(refused(admit(p, 1000, BRIDGE)), /allows uid 1000 no offloaded sockets/);
  assertEquals(admitted(admit(p, 7, BRIDGE)).sockets, BRIDGE.maxSockets);
});

Deno.test("policy: a memory limit lowers the socket count to the largest region that fits", () => {
  // The bridge's region costs 66 MiB of tables (waiters' event queues) and 0.5 MiB a socket.
  const limit = 128 * 1024 * 1024;
  const a = admitted(admit(parsePolicy({ memory: "128MiB" }), 0, BRIDGE));
  assert(a.memory <= limit, `${a.memory} > ${limit}`);
  assert(a.sockets >= 1 && a.sockets < BRIDGE.maxSockets);
  // One more socket would not fit.
  assert(computeLayout({ ...a.params, maxSockets: a.sockets + 1 }).totalSize > limit);
  // Below the smallest region: refused, saying so.
  const why = refused(admit(parsePolicy({ memory: 4096 }), 0, BRIDGE));
  assertMatch(why, /less than the smallest region/);
  // The smaller of both limits wins; a per-uid memory limit overrides the default one.
  const p = parsePolicy({ sockets: 8, memory: "1GiB", perUid: { "5": { memory: "70MiB" } } });
  assertEquals(admitted(admit(p, 0, BRIDGE)).sockets, 8);
  assertEquals(admitted(admit(p, 5, BRIDGE)).sockets, 8);
  const tight = parsePolicy({ memory: "1GiB", perUid: { "5": { memory: "70MiB" } } });
  assert(admitted(admit(tight, 5, BRIDGE)).sockets < admitted(admit(tight, 0, BRIDGE)).sockets);
});

Deno.test("policy: sizes and mistakes in a policy file are named", () => {
  assertEquals(parseBytes(4096), 4096);
  assertEquals(parseBytes("4096"), 4096);
  assertEquals(parseBytes("2 KiB"), 2048);
  assertEquals(parseBytes("1g"), 1024 ** 3);
  assertThrows(() => parseBytes("12 parsecs"), Error, "not a size");
  assertThrows(() => parseBytes(-1), Error, "not a size");
  assertThrows(() => parsePolicy("{"), Error, "not JSON");
  assertThrows(() => parsePolicy({ socket: 1 }), Error, 'unknown key "socket"');
  assertThrows(() => parsePolicy({ uids: "0" }), Error, "policy.uids");
  assertThrows(() => parsePolicy({ uids: [-1] }), Error, "policy.uids[0]");
  assertThrows(() => parsePolicy({ sockets: 1.5 }), Error, "policy.sockets");
  assertThrows(() => parsePolicy({ perUid: { root: {} } }), Error, "not a user id");
  assertThrows(() => parsePolicy({ perUid: { "0": { uids: [] } } }), Error, 'unknown key "uids"');
  assertThrows(() => parsePolicy([]), Error, "expected an object");
});
