import { assert, assertEquals, assertThrows } from "@std/assert";
import { parseRunArgs, runEnv, type RunRequest } from "./run.ts";
import { SHIM_LIBRARY } from "../packages/shim/launcher.ts";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

/** The request parsed from `args`, which must not be a call for help. */
function request(args: string[]): RunRequest {
  const r = parseRunArgs(args);
  if (r === "help") throw new Error("parsed as --help");
  return r;
}

/** `pno run ARGS` as a child, with the output and exit code. */
async function pnoRun(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", MAIN, "run", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, out: d.decode(out.stdout), err: d.decode(out.stderr) };
}

Deno.test("pno run: arguments before and after --", () => {
  const r = request(["--control", "/tmp/c.sock", "--required", "--", "app", "--port", "1"]);
  assertEquals(r.control, "/tmp/c.sock");
  assertEquals(r.required, true);
  assertEquals(r.program, "app");
  assertEquals(r.args, ["--port", "1"]);
  // Without --, the program's own options are not ours.
  const s = request(["--policy", "p.json", "app", "--port", "1"]);
  assertEquals([s.policy, s.program, s.args], ["p.json", "app", ["--port", "1"]]);
  assertEquals(parseRunArgs(["--help"]), "help");
  assertThrows(() => parseRunArgs(["--bogus", "--", "app"]), Error, "unknown option");
  assertThrows(() => parseRunArgs(["--control", "x"]), Error, "no program");
});

Deno.test("pno run: the program's environment has the shim merged into ours", () => {
  const env = runEnv({ control: "/tmp/c.sock", required: true, program: "x", args: [] });
  assert(env.LD_PRELOAD.startsWith(SHIM_LIBRARY));
  assertEquals(env.PNO_CONTROL, "/tmp/c.sock");
  assertEquals(env.PNO_REQUIRED, "1");
  assertEquals(env.PATH, Deno.env.get("PATH"));
  const plain = runEnv({ control: "/c", required: false, program: "x", args: [] });
  assertEquals(plain.PNO_REQUIRED, undefined);
  assertEquals(plain.PNO_POLICY, undefined);
});

Deno.test("pno run: exit code, environment and stdio of the program", async () => {
  const r = await pnoRun([
    "--control",
    "/nonexistent/pno.sock",
    "--",
    "sh",
    "-c",
    'echo "$PNO_CONTROL $LD_PRELOAD"; exit 7',
  ]);
  assertEquals(r.code, 7);
  assertEquals(r.out.trim(), `/nonexistent/pno.sock ${SHIM_LIBRARY}`);
  assert(r.err.includes("no control socket"), r.err);
  assertEquals((await pnoRun(["--", "/nonexistent/program"])).code, 127);
  assertEquals((await pnoRun([])).code, 1);
});

Deno.test("pno run: SIGTERM is passed on, and a signal's exit status comes back", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      MAIN,
      "run",
      "--control",
      "/nonexistent/pno.sock",
      "--",
      "sh",
      "-c",
      'trap "echo term; exit 3" TERM; echo ready; while :; do sleep 0.05; done',
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  child.kill("SIGTERM");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const status = await child.status;
  assertEquals(out, "ready\nterm\n");
  assertEquals(status.code, 3);

  // A program that a signal ends: 128 + the signal, as shells report it.
  const killed = await pnoRun([
    "--control",
    "/nonexistent/pno.sock",
    "--",
    "sh",
    "-c",
    "kill -KILL $$",
  ]);
  assertEquals(killed.code, 137);
});
