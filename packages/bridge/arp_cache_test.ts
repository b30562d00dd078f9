import { assert, assertEquals } from "@std/assert";
import { ArpCache } from "./arp_cache.ts";

const mac = (last: number) => new Uint8Array([2, 0, 0, 0, 0, last]);

Deno.test("ARP cache: hit, refresh and expiry", () => {
  const cache = new ArpCache(4, 1000);
  assertEquals(cache.lookup(1, 0), -1);
  cache.update(1, mac(1), 0, 0);
  const at = cache.lookup(1, 999);
  assert(at >= 0);
  assertEquals(cache.macs[at + 5], 1);
  assertEquals(cache.lookup(1, 1000), -1, "expired after ttl");
  cache.update(1, mac(9), 0, 1500);
  assertEquals(cache.macs[cache.lookup(1, 2000) + 5], 9, "a new MAC replaces the old one");
});

Deno.test("ARP cache: a full table replaces the entry that expires first", () => {
  const cache = new ArpCache(2, 1000);
  cache.update(1, mac(1), 0, 0);
  cache.update(2, mac(2), 0, 100);
  cache.update(3, mac(3), 0, 200);
  assertEquals(cache.lookup(1, 300), -1);
  assert(cache.lookup(2, 300) >= 0);
  assert(cache.lookup(3, 300) >= 0);
  assertEquals(cache.size(300), 2);
});

Deno.test("ARP cache: requests for one address are rate-limited", () => {
  const cache = new ArpCache(4, 1000, 500);
  assert(cache.shouldRequest(7, 0));
  assert(!cache.shouldRequest(7, 100));
  assert(cache.shouldRequest(8, 100), "another address is independent");
  assert(cache.shouldRequest(7, 600));
  cache.update(7, mac(7), 0, 650);
  assert(cache.shouldRequest(7, 700), "an answer clears the pending request");
});

Deno.test("ARP cache: a frame from a known neighbour refreshes it; a new MAC for a live entry replaces the old", () => {
  const cache = new ArpCache(4, 1000);
  cache.update(1, mac(1), 0, 0);
  cache.update(2, mac(2), 0, 0);
  for (let t = 100; t <= 900; t += 100) cache.update(1, mac(1), 0, t);
  assertEquals(cache.macs[cache.lookup(1, 1500) + 5], 1, "refreshed past its first lifetime");
  assertEquals(cache.lookup(2, 1500), -1, "the other entry expired on time");
  cache.update(1, mac(7), 0, 1600);
  assertEquals(cache.macs[cache.lookup(1, 1700) + 5], 7, "the MAC moved while the entry lived");
  assertEquals(cache.size(1700), 1);
});
