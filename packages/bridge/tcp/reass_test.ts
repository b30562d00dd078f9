import { assert, assertEquals } from "@std/assert";
import { OFO_MAX, ReassemblyRanges } from "./reass.ts";

function ranges(r: ReassemblyRanges): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < r.count; i++) out.push([r.left(i), r.right(i)]);
  return out;
}

Deno.test("reassembly ranges: merge, sort, and drain from the front", () => {
  const r = new ReassemblyRanges();
  assert(r.add(3000, 4000));
  assert(r.add(1000, 2000));
  assert(r.add(2000, 2500));
  assertEquals(ranges(r), [[1000, 2500], [3000, 4000]]);
  r.removeFirst();
  assertEquals(ranges(r), [[3000, 4000]]);
  r.clear();
  assertEquals(r.count, 0);
});

Deno.test("reassembly ranges: a full set refuses a new range but still merges into old ones", () => {
  const r = new ReassemblyRanges();
  for (let i = 0; i < OFO_MAX; i++) assert(r.add(1000 * (i + 1), 1000 * (i + 1) + 100));
  assert(!r.add(100000, 100100), "a ninth disjoint range is refused");
  assertEquals(r.count, OFO_MAX);
  assert(r.add(1100, 1200), "a range that touches one is merged");
  assertEquals(r.left(0), 1000);
  assertEquals(r.right(0), 1200);
});

Deno.test("reassembly ranges: SACK blocks name the most recently changed range first (RFC 2018 §4)", () => {
  const r = new ReassemblyRanges();
  r.add(1000, 1100);
  r.add(3000, 3100);
  r.add(5000, 5100);
  r.add(7000, 7100);
  r.add(3100, 3200); // changes the second range last
  const out = new Uint32Array(8);
  assertEquals(r.sackBlocks(out, 3), 3);
  assertEquals(Array.from(out.slice(0, 6)), [3000, 3200, 7000, 7100, 5000, 5100]);
  assertEquals(r.sackBlocks(out, 4), 4);
  assertEquals(out[6], 1000);
});

Deno.test("reassembly ranges: sequence wrap-around", () => {
  const r = new ReassemblyRanges();
  r.add(0xfffffff0, 0x10);
  r.add(0x10, 0x20);
  assertEquals(ranges(r), [[0xfffffff0, 0x20]]);
});
