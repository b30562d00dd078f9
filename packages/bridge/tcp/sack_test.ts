import { assertEquals } from "@std/assert";
import { SackScoreboard, SB_MAX } from "./sack.ts";

function blocks(sb: SackScoreboard): number[][] {
  const r: number[][] = [];
  for (let i = 0; i < sb.count; i++) r.push([sb.left(i), sb.right(i)]);
  return r;
}

Deno.test("sack scoreboard: blocks merge when they overlap or touch, stay sorted, sum bytes", () => {
  const sb = new SackScoreboard();
  sb.add(3000, 4000);
  sb.add(1000, 2000);
  sb.add(5000, 6000);
  assertEquals(blocks(sb), [[1000, 2000], [3000, 4000], [5000, 6000]]);
  assertEquals(sb.bytes, 3000);
  sb.add(2000, 3000); // touches both neighbours
  assertEquals(blocks(sb), [[1000, 4000], [5000, 6000]]);
  sb.add(3500, 5500); // overlaps both
  assertEquals(blocks(sb), [[1000, 6000]]);
  assertEquals(sb.bytes, 5000);
  assertEquals(sb.bytesFrom(0), 5000);
});

Deno.test("sack scoreboard: trim at SND.UNA, across sequence wrap-around", () => {
  const sb = new SackScoreboard();
  const base = 0xffffff00;
  sb.add(base + 100, (base + 300) >>> 0); // wraps
  sb.add((base + 500) >>> 0, (base + 600) >>> 0);
  assertEquals(sb.count, 2);
  assertEquals(sb.bytes, 300);
  sb.trim((base + 200) >>> 0);
  assertEquals(blocks(sb), [[(base + 200) >>> 0, (base + 300) >>> 0], [
    (base + 500) >>> 0,
    (base + 600) >>> 0,
  ]]);
  sb.trim((base + 550) >>> 0);
  assertEquals(blocks(sb), [[(base + 550) >>> 0, (base + 600) >>> 0]]);
  assertEquals(sb.bytes, 50);
  sb.clear();
  assertEquals(sb.count, 0);
  assertEquals(sb.bytes, 0);
});

Deno.test("sack scoreboard: overflow forgets the highest block, never a lower one", () => {
  const sb = new SackScoreboard();
  for (let i = 0; i < SB_MAX; i++) sb.add(1000 + i * 200, 1100 + i * 200);
  assertEquals(sb.count, SB_MAX);
  const top = sb.left(SB_MAX - 1);
  sb.add(1000 + SB_MAX * 200, 1100 + SB_MAX * 200); // above everything: forgotten
  assertEquals(sb.count, SB_MAX);
  assertEquals(sb.left(SB_MAX - 1), top);
  sb.add(500, 600); // below everything: kept, the highest goes
  assertEquals(sb.count, SB_MAX);
  assertEquals(sb.left(0), 500);
  assertEquals(sb.left(SB_MAX - 1), top - 200);
  assertEquals(sb.bytes, SB_MAX * 100);
});
