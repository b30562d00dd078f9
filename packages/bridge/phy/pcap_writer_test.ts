import { assertEquals } from "@std/assert";
import { MemoryDevice } from "./mem_device.ts";
import { PcapWriter } from "./pcap_writer.ts";
import { ARP_REQUEST_FRAME } from "../wire/_frames_test_data.ts";

Deno.test("pcap writer records received and sent frames in a file tshark reads", async () => {
  const path = await Deno.makeTempFile({ suffix: ".pcap" });
  try {
    const mem = new MemoryDevice();
    const dev = PcapWriter.open(mem, path);
    mem.inject(ARP_REQUEST_FRAME);
    assertEquals(dev.receive(), 1);
    const at = dev.reserve();
    dev.txBuf.set(ARP_REQUEST_FRAME, at);
    dev.commit(ARP_REQUEST_FRAME.length);
    dev.flush();
    dev.close();
    const bytes = await Deno.readFile(path);
    assertEquals(bytes.length, 24 + 2 * (16 + ARP_REQUEST_FRAME.length));
    const view = new DataView(bytes.buffer);
    assertEquals(view.getUint32(0, true), 0xa1b2c3d4);
    assertEquals(view.getUint32(24 + 8, true), ARP_REQUEST_FRAME.length);
    assertEquals(bytes.subarray(40, 40 + ARP_REQUEST_FRAME.length), ARP_REQUEST_FRAME);
    const tshark = await new Deno.Command("tshark", {
      args: ["-r", path],
      stdout: "piped",
      stderr: "null",
    }).output();
    const text = new TextDecoder().decode(tshark.stdout);
    assertEquals(text.trim().split("\n").length, 2, text);
    assertEquals(text.match(/ARP/g)?.length, 2, text);
  } finally {
    await Deno.remove(path);
  }
});
