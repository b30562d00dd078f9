import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import {
  ACCEPT_ENTRY,
  computeLayout,
  HDR_VERSION,
  LAYOUT_VERSION,
  PAGE_SIZE,
  PROC_REFS,
  procOffset,
  readRegionHeader,
  readRegionLocalIp,
  REGION_HEADER,
  type RegionLayout,
  SOCK_ENTRY,
  sockOffset,
  streamOffset,
  threadOffset,
  validateHeader,
  waiterOffset,
  writeRegionHeader,
} from "./layout.ts";
import { fieldSize, offsetOf } from "./_schema.ts";
import { DESCRIPTOR_STRUCTS } from "./descriptors.ts";
import { generateHeader, HEADER_PATH } from "./gen_header.ts";
import { LAYOUT_STRUCTS } from "./layout.ts";

export const TEST_PARAMS = {
  maxThreads: 3,
  maxWaiters: 4,
  maxProcs: 2,
  maxSockets: 5,
  cmdSlots: 64,
  cplSlots: 128,
  evSlots: 32,
  txBytes: 8192,
  rxBytes: 16384,
};

function region(): { mem: ArrayBuffer; layout: RegionLayout } {
  const layout = computeLayout(TEST_PARAMS);
  const mem = new ArrayBuffer(layout.totalSize);
  writeRegionHeader(mem, layout);
  return { mem, layout };
}

Deno.test("layout: tables are page aligned, in order, disjoint, and inside the region", () => {
  const l = computeLayout(TEST_PARAMS);
  const p = TEST_PARAMS;
  const tables = [
    l.doorbellOffset,
    l.threadTable,
    l.waiterTable,
    l.procTable,
    l.sockTable,
    l.streamTable,
  ];
  for (const o of tables) assertEquals(o % PAGE_SIZE, 0);
  assertEquals(tables, [...tables].sort((a, b) => a - b));
  assert(l.doorbellOffset + 64 <= l.threadTable);
  assert(threadOffset(l, p.maxThreads) <= l.waiterTable);
  assert(waiterOffset(l, p.maxWaiters) <= l.procTable);
  assert(procOffset(l, p.maxProcs) <= l.sockTable);
  assert(sockOffset(l, p.maxSockets) <= l.streamTable);
  assertEquals(streamOffset(l, p.maxSockets), l.totalSize);
  assertEquals(l.totalSize % PAGE_SIZE, 0);
  // Inside an entry: the owner line, then the rings, each control block on its own lines.
  assertEquals(l.cmdCtrl, 64);
  assertEquals(l.cplSlotsOffset + p.cplSlots * 64, l.threadStride);
  assertEquals(l.evSlotsOffset + p.evSlots * 64, l.waiterStride);
  assert(PROC_REFS + 2 * p.maxSockets <= l.procStride, "a u16 reference per socket");
  assertEquals(SOCK_ENTRY.size, 128);
  // Stream data areas on page boundaries (drained pages can be punched out).
  for (const o of [l.txData, l.rxData, l.streamStride]) assertEquals(o % PAGE_SIZE, 0);
  assertEquals(l.rxData + p.rxBytes, l.streamStride);
  assertEquals(p.rxBytes % ACCEPT_ENTRY.size, 0, "accept entries never straddle the wrap");
});

Deno.test("layout: bad parameters throw", () => {
  assertThrows(() => computeLayout({ ...TEST_PARAMS, txBytes: 1000 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, cmdSlots: 3 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, maxSockets: 0 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, maxWaiters: 0 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, maxProcs: 1025 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, evSlots: 1000 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, rxBytes: 1024 }), RangeError, "a page");
});

Deno.test("layout: header round trip, with the bridge's address and region id", () => {
  const { mem, layout } = region();
  assertEquals(validateHeader(mem, mem.byteLength), null);
  assertEquals(readRegionHeader(mem, mem.byteLength), layout);
  const named = new ArrayBuffer(layout.totalSize);
  writeRegionHeader(named, layout, { localIp: 0x0a580002, regionId: 7 });
  assertEquals(readRegionLocalIp(named), 0x0a580002);
  assertEquals(new DataView(named).getUint32(offsetOf(REGION_HEADER, "region_id"), true), 7);
});

Deno.test("layout: bad magic, version mismatch and torn headers give clear errors", () => {
  let { mem } = region();
  new DataView(mem).setUint32(0, 0x12345678, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /bad magic/);

  ({ mem } = region());
  new DataView(mem).setUint32(HDR_VERSION, LAYOUT_VERSION + 1, true);
  assertMatch(
    validateHeader(mem, mem.byteLength)!,
    new RegExp(`version ${LAYOUT_VERSION + 1} does not match this build's ${LAYOUT_VERSION}`),
  );

  ({ mem } = region());
  assertMatch(validateHeader(mem, mem.byteLength - PAGE_SIZE)!, /torn header: total_size/);

  ({ mem } = region());
  new DataView(mem).setUint32(offsetOf(REGION_HEADER, "stream_stride"), 64, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /torn header: stream_stride is 64/);

  ({ mem } = region());
  new DataView(mem).setBigUint64(offsetOf(REGION_HEADER, "waiter_table"), 0n, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /torn header: waiter_table is 0/);

  ({ mem } = region());
  new DataView(mem).setUint32(offsetOf(REGION_HEADER, "features"), 1, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /unknown feature bits 0x1/);

  ({ mem } = region());
  new DataView(mem).setUint32(offsetOf(REGION_HEADER, "tx_bytes"), 12345, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /torn header: parameters out of range/);

  ({ mem } = region());
  new DataView(mem).setUint32(offsetOf(REGION_HEADER, "max_sockets"), 6, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /torn header/);

  assertMatch(validateHeader(new ArrayBuffer(16), 16)!, /smaller than its header/);
});

Deno.test("layout: the committed C header equals freshly generated output", async () => {
  const committed = await Deno.readTextFile(new URL("../../" + HEADER_PATH, import.meta.url));
  assertEquals(committed, generateHeader(), "run `deno task gen` and commit the header");
});

Deno.test("layout: cc agrees with layout.ts and descriptors.ts on every size and offset", async () => {
  const structs = [...LAYOUT_STRUCTS, ...DESCRIPTOR_STRUCTS];
  const lines = [`#include <stdio.h>`, `#include "pno_rings.h"`, `int main(void) {`];
  const expected: string[] = [];
  for (const s of structs) {
    lines.push(`\tprintf("%s %zu\\n", "${s.name}", sizeof(struct ${s.name}));`);
    expected.push(`${s.name} ${s.size}`);
    for (const f of s.fields) {
      const probe = `((struct ${s.name} *)0)->${f.name}`;
      lines.push(
        `\tprintf("%s.%s %zu %zu\\n", "${s.name}", "${f.name}", ` +
          `offsetof(struct ${s.name}, ${f.name}), sizeof(${probe}));`,
      );
      expected.push(`${s.name}.${f.name} ${f.offset} ${fieldSize(f)}`);
    }
  }
  lines.push(`\treturn 0;`, `}`);
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/offsets.c`, lines.join("\n"));
    const include = new URL("../../ffi/include", import.meta.url).pathname;
    const cc = await new Deno.Command("cc", {
      args: ["-std=c11", "-Wall", "-Werror", `-I${include}`, `${dir}/offsets.c`, "-o", `${dir}/o`],
    }).output();
    assertEquals(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const run = await new Deno.Command(`${dir}/o`).output();
    assertEquals(new TextDecoder().decode(run.stdout).trim().split("\n"), expected);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
