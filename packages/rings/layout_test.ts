import { assert, assertEquals, assertMatch, assertThrows } from "@std/assert";
import {
  computeLayout,
  gPairOffset,
  HDR_VERSION,
  LAYOUT_VERSION,
  PAGE_SIZE,
  readRegionHeader,
  REGION_HEADER,
  type RegionLayout,
  sPairOffset,
  stateOffset,
  threadDoorbellOffset,
  validateHeader,
  writeRegionHeader,
} from "./layout.ts";
import { fieldSize, offsetOf } from "./_schema.ts";
import { DESCRIPTOR_STRUCTS } from "./descriptors.ts";
import { generateHeader, HEADER_PATH } from "./gen_header.ts";
import { LAYOUT_STRUCTS } from "./layout.ts";

export const TEST_PARAMS = {
  maxThreads: 3,
  maxSockets: 5,
  cmdSlots: 64,
  cplSlots: 128,
  txBytes: 8192,
  rxBytes: 16384,
};

function region(): { mem: ArrayBuffer; layout: RegionLayout } {
  const layout = computeLayout(TEST_PARAMS);
  const mem = new ArrayBuffer(layout.totalSize);
  writeRegionHeader(mem, layout);
  return { mem, layout };
}

Deno.test("layout: tables are page aligned, disjoint, and inside the region", () => {
  const l = computeLayout(TEST_PARAMS);
  for (const o of [l.doorbellOffset, l.gTableOffset, l.sTableOffset, l.stateTableOffset]) {
    assertEquals(o % PAGE_SIZE, 0);
  }
  assert(threadDoorbellOffset(l, 2) + 64 <= l.gTableOffset);
  assert(gPairOffset(l, 3) <= l.sTableOffset);
  assert(sPairOffset(l, 5) <= l.stateTableOffset);
  assert(stateOffset(l, 5) <= l.totalSize);
  assertEquals(l.totalSize % PAGE_SIZE, 0);
  assertEquals(l.rxData + TEST_PARAMS.rxBytes, l.sPairStride);
  assertEquals(l.cplSlotsOffset + 128 * 64, l.gPairStride);
});

Deno.test("layout: bad parameters throw", () => {
  assertThrows(() => computeLayout({ ...TEST_PARAMS, txBytes: 1000 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, cmdSlots: 3 }), RangeError);
  assertThrows(() => computeLayout({ ...TEST_PARAMS, maxSockets: 0 }), RangeError);
});

Deno.test("layout: header round trip", () => {
  const { mem, layout } = region();
  assertEquals(validateHeader(mem, mem.byteLength), null);
  assertEquals(readRegionHeader(mem, mem.byteLength), layout);
});

Deno.test("layout: bad magic, version mismatch and torn headers give clear errors", () => {
  let { mem } = region();
  new DataView(mem).setUint32(0, 0x12345678, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /bad magic/);

  ({ mem } = region());
  new DataView(mem).setUint32(HDR_VERSION, LAYOUT_VERSION + 1, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /version 2 does not match/);

  ({ mem } = region());
  assertMatch(validateHeader(mem, mem.byteLength - PAGE_SIZE)!, /torn header: total_size/);

  ({ mem } = region());
  new DataView(mem).setUint32(offsetOf(REGION_HEADER, "s_pair_stride"), 64, true);
  assertMatch(validateHeader(mem, mem.byteLength)!, /torn header: s_pair_stride is 64/);

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
