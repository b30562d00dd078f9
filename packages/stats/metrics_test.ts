import { assertEquals, assertThrows } from "@std/assert";
import { Exposition, snake } from "./metrics.ts";

Deno.test("metrics: families printed once with every sample, labels escaped", () => {
  const e = new Exposition();
  e.counter("pno_x_total", "X", 1, { worker: 0 });
  e.gauge("pno_g", "G", 2.5);
  e.counter("pno_x_total", "X", 3, { worker: 1, name: 'a"b\\c' });
  assertEquals(
    e.toString(),
    [
      "# HELP pno_x_total X",
      "# TYPE pno_x_total counter",
      'pno_x_total{worker="0"} 1',
      'pno_x_total{worker="1",name="a\\"b\\\\c"} 3',
      "# HELP pno_g G",
      "# TYPE pno_g gauge",
      "pno_g 2.5",
      "",
    ].join("\n"),
  );
  assertThrows(() => e.counter("pno_y", "Y", 1), Error, "must end in _total");
  assertEquals(snake("icmpEchoIn"), "icmp_echo_in");
});
