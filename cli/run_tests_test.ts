import { assertEquals } from "@std/assert";
import { countJunit } from "./run_tests.ts";

Deno.test("countJunit counts passes, failures and skips from deno's report", () => {
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="deno test" tests="4" failures="1" errors="0" time="0.1">
  <testsuite name="./a_test.ts" tests="4" disabled="0" errors="0" failures="1">
    <testcase name="one" classname="./a_test.ts" time="0.001"></testcase>
    <testcase name="two" classname="./a_test.ts" time="0.001"/>
    <testcase name="three" classname="./a_test.ts" time="0.001">
      <failure message="boom">AssertionError</failure>
    </testcase>
    <testcase name="four" classname="./a_test.ts" time="0"><skipped/></testcase>
  </testsuite>
</testsuites>`;
  assertEquals(countJunit(xml), { passed: 2, failed: 1 });
  assertEquals(countJunit(""), { passed: 0, failed: 0 });
});
