import { assert, assertEquals, assertThrows } from "@std/assert";
import { F_GET_SEALS, F_SEAL_GROW, F_SEAL_SHRINK, libc } from "../../ffi/libc.ts";
import { hostSRings, nicSRings } from "./attach.ts";
import { HDR_VERSION, validateHeader } from "./layout.ts";
import { closeRegion, createRegion, mapRegionFd, openRegionPath } from "./region.ts";

const PARAMS = {
  maxThreads: 2,
  maxWaiters: 2,
  maxProcs: 2,
  maxSockets: 4,
  cmdSlots: 64,
  cplSlots: 64,
  evSlots: 64,
  txBytes: 4096,
  rxBytes: 4096,
};

Deno.test("region: memfd is sealed, header valid, a second mapping sees the same bytes", () => {
  const a = createRegion(PARAMS);
  try {
    const seals = libc().fcntl(a.fd, F_GET_SEALS, 0);
    assertEquals(seals & (F_SEAL_SHRINK | F_SEAL_GROW), F_SEAL_SHRINK | F_SEAL_GROW);
    assertEquals(libc().ftruncate(a.fd, 4096n), -1, "shrinking a sealed region fails");
    assertEquals(validateHeader(a.buffer, a.size), null);
    const b = openRegionPath(`/proc/self/fd/${a.fd}`);
    try {
      assertEquals(b.layout, a.layout);
      const host = hostSRings(a.buffer, a.layout, 3);
      const nic = nicSRings(b.buffer, b.layout, 3);
      assertEquals(host.tx.write(new Uint8Array([9, 8, 7]), 0, 3), 3);
      const out = new Uint8Array(3);
      nic.tx.copyOut(0, out, 0, nic.tx.readable());
      assertEquals([...out], [9, 8, 7]);
    } finally {
      closeRegion(b);
    }
  } finally {
    closeRegion(a);
  }
});

Deno.test("region: mapping a region with a bad header is refused with the reason", () => {
  const a = createRegion(PARAMS);
  try {
    new DataView(a.buffer).setUint32(HDR_VERSION, 77, true);
    const fd = libc().open(new TextEncoder().encode(`/proc/self/fd/${a.fd}\0`), 2, 0);
    assert(fd >= 0);
    assertThrows(() => mapRegionFd(fd), Error, "layout version 77 does not match");
  } finally {
    closeRegion(a);
  }
});

Deno.test("region: sparse: a region sized for thousands of sockets costs only what is touched", () => {
  const a = createRegion({ ...PARAMS, maxSockets: 16384, txBytes: 262144, rxBytes: 262144 });
  try {
    assert(a.size > 8 * 2 ** 30, `${a.size} bytes mapped`);
    const host = hostSRings(a.buffer, a.layout, 9000);
    assertEquals(host.tx.write(new Uint8Array(100).fill(1), 0, 100), 100);
    const blocks = Deno.statSync(`/proc/self/fd/${a.fd}`).blocks ?? 0;
    assert(blocks * 512 < 4 << 20, `${blocks * 512} bytes backed`);
  } finally {
    closeRegion(a);
  }
});
