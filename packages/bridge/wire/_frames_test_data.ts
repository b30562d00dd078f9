/**
 * Frames captured with `tcpdump -xx` on pno1 from a Linux 6.x kernel in the client namespace.
 * @module
 */

/** Parses tcpdump's hex words. */
export function hex(text: string): Uint8Array {
  const digits = text.replace(/[^0-9a-f]/gi, "");
  const out = new Uint8Array(digits.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(digits.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** ARP request: who-has 10.88.0.77 tell 10.88.0.1 (from c2:d3:34:e7:a1:2c). */
export const ARP_REQUEST_FRAME = hex(`
  ffff ffff ffff c2d3 34e7 a12c 0806 0001
  0800 0604 0001 c2d3 34e7 a12c 0a58 0001
  0000 0000 0000 0a58 004d`);

/** ICMP echo request 10.88.0.1 > 10.88.0.77, id 8006, seq 1, 16 data bytes. */
export const ECHO_REQUEST_FRAME = hex(`
  0200 0000 0077 7edf 4bbf 0506 0800 4500
  002c e607 4000 4001 3fcc 0a58 0001 0a58
  004d 0800 ac50 1f46 0001 9a39 076b 0000
  0000 88c3 0200 0000 0000`);
