import { assertEquals } from "@std/assert";
import { checkPolicy } from "./policy.ts";

Deno.test("policy: every directive the shim reads is accepted", () => {
  const text = [
    "# the bridge's subnet and one more",
    "offload 10.88.0.0/24",
    "offload 192.168.7.0/24   # a second network",
    "kernel 10.88.0.9",
    "listen bridge",
    "kernel-port 6380",
    "loopback off",
    "required yes",
    "spin-us 20",
    "",
  ].join("\n");
  assertEquals(checkPolicy(text), []);
});

Deno.test("policy: mistakes are reported with their line", () => {
  const problems = checkPolicy(
    "offload 10.88.0.0/33\nlisten everywhere\nkernel-port 70000\nwhatever 1\nloopback\n",
  );
  assertEquals(problems, [
    "line 1: bad value for offload: 10.88.0.0/33",
    "line 2: bad value for listen: everywhere",
    "line 3: bad value for kernel-port: 70000",
    "line 4: unknown directive whatever",
    "line 5: bad value for loopback: ",
  ]);
});

Deno.test("policy: the shim's table sizes are limits", () => {
  const many = Array.from({ length: 33 }, (_, i) => `kernel-port ${1000 + i}`).join("\n");
  assertEquals(checkPolicy(many), ["line 33: more than 32 ports"]);
});
