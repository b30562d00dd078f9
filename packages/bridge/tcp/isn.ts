/**
 * Keyed hashing for the engine: initial sequence numbers (RFC 6528), SYN cookies, timestamp
 * offsets, ephemeral port offsets (RFC 6056) and the connection table's hash. HalfSipHash-2-4
 * (32-bit words, 64-bit key): cheap in JavaScript and keyed, so that a remote peer can neither
 * predict ISNs nor aim collisions at the table.
 *
 * @module
 */

let v0 = 0;
let v1 = 0;
let v2 = 0;
let v3 = 0;

function rounds(n: number): void {
  for (let i = 0; i < n; i++) {
    v0 = (v0 + v1) | 0;
    v1 = (v1 << 5) | (v1 >>> 27);
    v1 ^= v0;
    v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0;
    v3 = (v3 << 8) | (v3 >>> 24);
    v3 ^= v2;
    v0 = (v0 + v3) | 0;
    v3 = (v3 << 7) | (v3 >>> 25);
    v3 ^= v0;
    v2 = (v2 + v1) | 0;
    v1 = (v1 << 13) | (v1 >>> 19);
    v1 ^= v2;
    v2 = (v2 << 16) | (v2 >>> 16);
  }
}

function word(m: number): void {
  v3 ^= m;
  rounds(2);
  v0 ^= m;
}

/** HalfSipHash-2-4 of four 32-bit words under the key (k0, k1), left in v0..v3. */
function sip4(k0: number, k1: number, a: number, b: number, c: number, d: number): void {
  v0 = k0 | 0;
  v1 = k1 | 0;
  v2 = 0x6c796765 ^ k0;
  v3 = 0x74656462 ^ k1;
  word(a | 0);
  word(b | 0);
  word(c | 0);
  word(d | 0);
  const fin = 16 << 24;
  v3 ^= fin;
  rounds(2);
  v0 ^= fin;
  v2 ^= 0xff;
  rounds(4);
}

/** HalfSipHash-2-4 of four 32-bit words under the key (k0, k1); returns an unsigned 32-bit. */
export function hash4(k0: number, k1: number, a: number, b: number, c: number, d: number): number {
  sip4(k0, k1, a, b, c, d);
  return (v1 ^ v3) >>> 0;
}

/**
 * `hash4(...) & mask` for a mask below 2^30, masked before it is returned: a small integer,
 * where an unsigned 32-bit result is a heap number (16 bytes allocated per call, measured: the
 * connection table's lookup of every received segment).
 */
export function hash4Masked(
  k0: number,
  k1: number,
  a: number,
  b: number,
  c: number,
  d: number,
  mask: number,
): number {
  sip4(k0, k1, a, b, c, d);
  return (v1 ^ v3) & mask;
}

/** A small deterministic PRNG (mulberry32) for keys when a seed is given. */
export function mulberry32(seed: number): () => number {
  let a = seed | 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return (t ^ (t >>> 14)) >>> 0;
  };
}
