import { assert, assertEquals } from "@std/assert";
import { ConnTable, type TableEntry } from "./conn_table.ts";
import { mulberry32 } from "./isn.ts";

function entry(lip: number, lport: number, rip: number, rport: number): TableEntry {
  return { localIp: lip, localPort: lport, remoteIp: rip, remotePort: rport, slot: -1 };
}

Deno.test("conn table: random inserts and removes agree with a Map, through growth", () => {
  const t = new ConnTable<TableEntry>(16, 1, 2);
  const ref = new Map<string, TableEntry>();
  const rnd = mulberry32(7);
  const key = (e: TableEntry) => `${e.localIp}:${e.localPort}:${e.remoteIp}:${e.remotePort}`;
  for (let i = 0; i < 20000; i++) {
    const e = entry(0x0a000001, 80, 0x0a000100 + (rnd() % 64), 1024 + (rnd() % 64));
    const have = t.lookup(e.localIp, e.localPort, e.remoteIp, e.remotePort);
    assertEquals(have, ref.get(key(e)) ?? null);
    if (have === null) {
      t.insert(e);
      ref.set(key(e), e);
    } else if (rnd() & 1) {
      t.remove(have);
      assertEquals(have.slot, -1);
      ref.delete(key(e));
    }
    assertEquals(t.count, ref.size);
  }
  for (const e of ref.values()) {
    assertEquals(t.lookup(e.localIp, e.localPort, e.remoteIp, e.remotePort), e);
    assertEquals(t.at(e.slot), e);
  }
  assert(t.capacity >= 2 * t.count, "the table grows at half full");
});

Deno.test("conn table: the hash is keyed (tuples that share a slot under one key spread under another)", () => {
  const a = new ConnTable<TableEntry>(4096, 0x1234, 0x5678);
  const b = new ConnTable<TableEntry>(4096, 0x9abc, 0xdef0);
  // An attacker that learned which of its ports land in one slot under key A...
  const target = a.hash(0x0a000001, 80, 0x0a000063, 1);
  const colliding: number[] = [];
  for (let p = 1; p < 65536 && colliding.length < 16; p++) {
    if (a.hash(0x0a000001, 80, 0x0a000063, p) === target) colliding.push(p);
  }
  assertEquals(colliding.length, 16);
  // ...finds them spread over many slots under key B.
  const slots = new Set(colliding.map((p) => b.hash(0x0a000001, 80, 0x0a000063, p)));
  assert(slots.size >= 13, `${slots.size} distinct slots`);
});

Deno.test("conn table: the last-found entry answers its tuple only, and never once removed", () => {
  const t = new ConnTable<TableEntry>(16, 1, 2);
  const a = entry(0x0a000001, 80, 0x0a000002, 5000);
  const b = entry(0x0a000001, 80, 0x0a000002, 5001);
  t.insert(a);
  t.insert(b);
  assertEquals(t.lookup(0x0a000001, 80, 0x0a000002, 5000), a);
  assertEquals(t.lookup(0x0a000001, 80, 0x0a000002, 5000), a);
  assertEquals(t.lookup(0x0a000001, 80, 0x0a000002, 5001), b);
  assertEquals(t.lookup(0x0a000001, 80, 0x0a000003, 5001), null);
  assertEquals(t.lookup(0x0a000001, 81, 0x0a000002, 5001), null);
  t.remove(b);
  assertEquals(t.lookup(0x0a000001, 80, 0x0a000002, 5001), null);
  // A new connection on the same 4-tuple (the old one gone): the new entry, not the old.
  const b2 = entry(0x0a000001, 80, 0x0a000002, 5001);
  t.insert(b2);
  assertEquals(t.lookup(0x0a000001, 80, 0x0a000002, 5001), b2);
  assertEquals(t.lookup(0x0a000001, 80, 0x0a000002, 5000), a);
});
