import { assert, assertEquals } from "@std/assert";
import { openCopy } from "../../../ffi/copy.ts";
import { MemStream } from "../tcp/_mem_stream.ts";
import {
  checksumAdd,
  checksumAddPseudoV4,
  checksumAddTs,
  checksumFinish,
  NATIVE_MIN_BYTES,
} from "./checksum.ts";
import { tcpChecksumOk, tcpSetChecksum, tcpSetChecksumSummed } from "./tcp.ts";

/** A seeded byte source (xorshift32), so a failure can be replayed. */
function bytes(seed: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

Deno.test("native checksum: libpno_copy is there (make -C ffi), so the tests below use it", () => {
  assert(openCopy()?.pno_csum !== undefined);
});

Deno.test("native checksum equals the TypeScript sum: random data, odd lengths, offsets", () => {
  const buf = bytes(7, 9000);
  let x = 12345;
  const next = (m: number) => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    return x % m;
  };
  for (let k = 0; k < 3000; k++) {
    const len = k < 200 ? k : next(4000);
    const off = next(buf.length - len + 1);
    // Running sums as callers pass them (pseudo-headers, earlier pieces: far below 2^31).
    const sum = [0, 1, 0xffff, 0x1fffe, next(1 << 20), 0x7fffffff][k % 6];
    const native = checksumFinish(checksumAdd(sum, buf, off, len));
    const ts = checksumFinish(checksumAddTs(sum, buf, off, len));
    assertEquals(native, ts, `len ${len} off ${off} sum ${sum}`);
  }
});

Deno.test("native checksum edge inputs: zeros, all ones, a sum of zero, one byte", () => {
  const zeros = new Uint8Array(1500), ones = new Uint8Array(1501).fill(0xff);
  for (const [buf, off, len] of [[zeros, 0, 1500], [ones, 0, 1501], [ones, 1, 64], [zeros, 3, 1]]) {
    for (const sum of [0, 0xffff, 0x10000]) {
      assertEquals(
        checksumFinish(checksumAdd(sum, buf as Uint8Array, off as number, len as number)),
        checksumFinish(checksumAddTs(sum, buf as Uint8Array, off as number, len as number)),
      );
    }
  }
  // Data that sums to 0xffff (one's complement zero): 0x1234 + 0xedcb, repeated.
  const neg = new Uint8Array(128);
  for (let i = 0; i < 128; i += 4) neg.set([0x12, 0x34, 0xed, 0xcb], i);
  assertEquals(checksumAdd(0, neg, 0, 128), 0xffff);
  assertEquals(checksumFinish(checksumAdd(0, neg, 0, 128)), 0);
  assertEquals(checksumFinish(checksumAddTs(0, neg, 0, 128)), 0);
  // A range past the end of the array is never handed to native code (the TypeScript sum reads
  // the missing bytes as zeros).
  const short = bytes(3, NATIVE_MIN_BYTES);
  assertEquals(
    checksumAdd(0, short, 1, NATIVE_MIN_BYTES),
    checksumAddTs(0, short, 1, NATIVE_MIN_BYTES),
  );
});

Deno.test("fused copy and sum out of a ring: bytes and sum as copy then checksum, across the wrap", () => {
  const lib = openCopy()!;
  const cap = 4096, ring = bytes(11, cap);
  for (const [pos, len] of [[0, 1460], [4000, 1460], [4095, 1], [4095, 2], [4001, 1461], [3, 0]]) {
    const dst = new Uint8Array(2000).fill(0xaa), want = new Uint8Array(len);
    for (let i = 0; i < len; i++) want[i] = ring[(pos + i) % cap];
    const sum = lib.pno_copy_from_ring_csum_arrays(dst, 100, ring, cap, pos + cap * 3, len);
    assertEquals(dst.subarray(100, 100 + len), want, `pos ${pos} len ${len}`);
    assertEquals(dst[99], 0xaa);
    assertEquals(dst[100 + len], 0xaa);
    assertEquals(checksumFinish(sum), checksumFinish(checksumAddTs(0, want, 0, len)));
  }
});

Deno.test("fused copy and sum into a ring: bytes land wrapped, the sum is the segment's", () => {
  const lib = openCopy()!;
  const cap = 4096, src = bytes(13, 3000);
  // [ring position, payload offset in src, payload length, header bytes before it (summed only)]
  const cases = [
    [0, 40, 1460, 32],
    [4000, 41, 1460, 0],
    [4095, 42, 1, 20],
    [4095, 45, 2, 40],
    [4001, 40, 1461, 32],
    [3, 60, 0, 60],
    [2048, 47, 2048, 2],
  ];
  for (const [pos, off, len, head] of cases) {
    const ring = new Uint8Array(cap).fill(0x5c), want = new Uint8Array(cap).fill(0x5c);
    for (let i = 0; i < len; i++) want[(pos + i) % cap] = src[off + i];
    const sum = lib.pno_copy_to_ring_csum_arrays(ring, cap, pos + cap * 5, src, off, len, head);
    const at = `pos ${pos} off ${off} len ${len} head ${head}`;
    assertEquals(ring, want, `${at}: only the payload is written`);
    assertEquals(
      checksumFinish(sum),
      checksumFinish(checksumAddTs(0, src, off - head, head + len)),
      at,
    );
  }
});

Deno.test("a segment whose payload was summed in the copy has the checksum of one summed whole", () => {
  const src = 0x0a000001, dst = 0x0a000002;
  const ring = new MemStream(8192);
  const payload = bytes(5, 3001);
  for (let o = 0; o < 3; o++) {
    ring.copyIn(0, payload, 0, payload.length);
    ring.publish(payload.length);
    ring.release(payload.length - 1000); // the data wraps for the later rounds
  }
  for (const len of [1, 1460, 999]) {
    const frame = new Uint8Array(60 + len), whole = new Uint8Array(60 + len);
    frame.set(bytes(9, 32), 0);
    frame[12] = 0x80; // data offset: 32 bytes
    const sum = ring.copyOutSum(7, frame, 32, len);
    assert(sum >= 0, "MemStream sums natively");
    tcpSetChecksumSummed(frame, 0, 32, len, sum, src, dst);
    whole.set(frame.subarray(0, 32 + len));
    tcpSetChecksum(whole, 0, 32 + len, src, dst);
    assertEquals(frame.subarray(16, 18), whole.subarray(16, 18));
    assert(tcpChecksumOk(frame, 0, 32 + len, src, dst));
    const s = checksumAddPseudoV4(0, src, dst, 6, 32 + len);
    assertEquals(checksumFinish(checksumAddTs(s, frame, 0, 32 + len)), 0);
  }
});
