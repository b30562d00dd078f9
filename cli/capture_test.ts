import { assertEquals, assertThrows } from "@std/assert";
import { BlockAssembler } from "./capture.ts";

function block(len: number, fill: number): Uint8Array {
  const b = new Uint8Array(len).fill(fill);
  new DataView(b.buffer).setUint32(4, len, true);
  return b;
}

Deno.test("capture: only whole pcapng blocks are written, however the stream was cut", () => {
  const a = block(28, 1), b = block(44, 2);
  const stream = new Uint8Array([...a, ...b]);
  const asm = new BlockAssembler();
  assertEquals(asm.push(stream.subarray(0, 5)).length, 0);
  assertEquals([...asm.push(stream.subarray(5, 40))], [...a]);
  assertEquals([...asm.push(stream.subarray(40))], [...b]);
  assertThrows(() => new BlockAssembler().push(block(10, 0)), Error, "block of length 10");
});
