/**
 * `pno test`: runs every test file with `deno test` and ends with one line of its own,
 * `N passed, N failed`, counted from the JUnit report deno writes (not from its summary).
 *
 * @module
 */
import { parseArgs } from "@std/cli";

export const TEST_HELP =
  `pno test: run the tests (unit tests, then integration tests on the veth wire)

Usage: pno test [--unit | --integration] [--filter TEXT] [PATH...]

Options:
  --unit          only the unit tests (packages/, ffi/; no root or network needed)
  --integration   only the integration tests (tests/; root, namespaces, DPDK)
  --filter TEXT   only tests whose name contains TEXT
  -h, --help      show this help

The last line is "N passed, N failed", counted from the test results.`;

/** Counts test cases and failures in a JUnit XML report. */
export function countJunit(xml: string): { passed: number; failed: number } {
  let passed = 0, failed = 0;
  for (const m of xml.matchAll(/<testcase\b[^>]*?(\/>|>([\s\S]*?)<\/testcase>)/g)) {
    const body = m[2] ?? "";
    if (/<(failure|error)\b/.test(body)) failed++;
    else if (!/<skipped\b/.test(body)) passed++;
  }
  return { passed, failed };
}

/** Runs the tests; resolves with deno test's exit code (non-zero if anything failed). */
export async function testMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["filter"],
    boolean: ["help", "unit", "integration"],
    alias: { h: "help" },
  });
  if (flags.help) {
    console.log(TEST_HELP);
    return 0;
  }
  const root = new URL("..", import.meta.url).pathname;
  let paths = flags._.map(String);
  if (paths.length === 0) {
    if (!flags.integration) paths.push("packages/", "ffi/", "cli/");
    if (!flags.unit) paths.push("tests/");
    paths = paths.filter((p: string) => {
      try {
        Deno.statSync(root + p);
        return true;
      } catch {
        return false;
      }
    });
  }
  const junit = await Deno.makeTempFile({ prefix: "pno-junit-", suffix: ".xml" });
  const testArgs = [
    "test",
    "-A",
    "--unstable-ffi",
    // JSDoc examples are tests too (deno std's rule: public functions show a working example).
    "--doc",
    `--junit-path=${junit}`,
    ...(flags.filter ? ["--filter", flags.filter] : []),
    ...paths,
  ];
  const status = await new Deno.Command(Deno.execPath(), {
    args: testArgs,
    cwd: root,
    stdin: "null",
  }).spawn().status;
  let counts = { passed: 0, failed: 0 };
  try {
    counts = countJunit(await Deno.readTextFile(junit));
  } catch {
    // No report: deno test failed before running anything (a type error, say).
  }
  await Deno.remove(junit).catch(() => {});
  if (!status.success && counts.failed === 0) counts.failed = 1;
  console.log(`${counts.passed} passed, ${counts.failed} failed`);
  return status.success ? 0 : 1;
}
