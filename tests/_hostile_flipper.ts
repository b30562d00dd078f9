/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * The second thread of tests/_hostile_app.ts `flip`: rewrites every slot of a command ring in
 * a tight loop while the main thread publishes them. The opcode flips between CMD_BIND and
 * CMD_LISTEN on every pass and the socket id between a live socket and 0xffffffff on every
 * other pass, so a reader that looked at a slot twice could see any mix of them. Posts the
 * number of passes when the time is up.
 *
 * @module
 */
import {
  AF_INET,
  BIND_ADDR,
  CMD_BIND,
  CMD_LISTEN,
  DESC_GEN,
  DESC_OPCODE,
  DESC_SOCK,
  SA_FAMILY,
  SA_PORT,
  SOCK_NONE,
} from "../packages/rings/descriptors.ts";

interface Job {
  addr: bigint;
  bytes: number;
  seconds: number;
  sock: number;
  gen: number;
}

self.onmessage = (e: MessageEvent<Job>) => {
  const { addr, bytes, seconds, sock, gen } = e.data;
  const ptr = Deno.UnsafePointer.create(addr);
  if (ptr === null) throw new Error("null ring address");
  const v = new DataView(Deno.UnsafePointerView.getArrayBuffer(ptr, bytes));
  const slots = bytes / 64;
  for (let i = 0; i < slots; i++) {
    v.setUint16(i * 64 + BIND_ADDR + SA_FAMILY, AF_INET, true);
    v.setUint16(i * 64 + BIND_ADDR + SA_PORT, 8096, true);
  }
  const end = performance.now() + seconds * 1000;
  let passes = 0;
  while (performance.now() < end) {
    for (let r = 0; r < 256; r++, passes++) {
      const op = passes & 1 ? CMD_LISTEN : CMD_BIND;
      const id = passes & 2 ? SOCK_NONE : sock;
      for (let at = 0; at < bytes; at += 64) {
        v.setUint16(at + DESC_OPCODE, op, true);
        v.setUint32(at + DESC_SOCK, id, true);
        v.setUint32(at + DESC_GEN, gen, true);
      }
    }
  }
  self.postMessage(passes);
};
