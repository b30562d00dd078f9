import { assert, assertEquals } from "@std/assert";
import { COOKIE_MSS, COOKIE_PERIOD_MS, cookieCheck, cookieMake } from "./syncache.ts";

const K0 = 0x01234567, K1 = 0x89abcdef;
const L = 0x0a000001, R = 0x0a000063;

Deno.test("syn cookies: a cookie verifies for its tuple and ISN, with the MSS rounded down", () => {
  const now = 5 * COOKIE_PERIOD_MS + 123;
  const c = cookieMake(K0, K1, L, 80, R, 40000, 777, 1400, now);
  assertEquals(cookieCheck(K0, K1, L, 80, R, 40000, 777, c, now), 1220);
  assertEquals(cookieCheck(K0, K1, L, 80, R, 40000, 777, c, now + COOKIE_PERIOD_MS), 1220);
  assertEquals(cookieCheck(K0, K1, L, 80, R, 40000, 777, c, now + 2 * COOKIE_PERIOD_MS), 0);
  assertEquals(cookieCheck(K0, K1, L, 80, R, 40001, 777, c, now), 0, "another port");
  assertEquals(cookieCheck(K0, K1, L, 80, R, 40000, 778, c, now), 0, "another ISN");
  assertEquals(cookieCheck(K0 ^ 1, K1, L, 80, R, 40000, 777, c, now), 0, "another key");
  for (const mss of COOKIE_MSS) {
    const m = cookieMake(K0, K1, L, 80, R, 40000, 1, mss + 1, now);
    assertEquals(cookieCheck(K0, K1, L, 80, R, 40000, 1, m, now), mss);
  }
  assertEquals(
    cookieCheck(K0, K1, L, 80, R, 40000, 1, cookieMake(K0, K1, L, 80, R, 40000, 1, 100, now), now),
    536,
  );
});

Deno.test("syn cookies: forged cookies fail (1 in 2^24 per guess)", () => {
  const now = 1000;
  let ok = 0;
  for (let i = 0; i < 100000; i++) {
    if (cookieCheck(K0, K1, L, 80, R, 40000, 1, (i * 2654435761) >>> 0, now) !== 0) ok++;
  }
  assert(ok <= 1, `${ok} forged cookies accepted`);
});
