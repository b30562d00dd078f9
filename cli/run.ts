/**
 * `pno run`: runs an unmodified program under the shim. The program's environment gains
 * LD_PRELOAD (libpno_shim.so) and PNO_CONTROL (and PNO_POLICY, PNO_REQUIRED when asked for);
 * stdio is inherited, SIGINT and SIGTERM are passed on, and its exit status becomes ours.
 *
 * @module
 */
import { parseArgs } from "@std/cli";
import { DEFAULT_CONTROL, SHIM_LIBRARY, shimEnv } from "../packages/shim/launcher.ts";
import { checkPolicy } from "../packages/shim/policy.ts";

export const RUN_HELP = `pno run: run an unmodified program with its TCP offloaded to the bridge

Usage: pno run [--control PATH] [--policy FILE] [--required] -- PROGRAM [ARGS...]

The program runs with libpno_shim.so preloaded. Sockets it binds to INADDR_ANY or to the
bridge's address, and connections it opens to the bridge's subnet, live in the bridge;
everything else (loopback, AF_UNIX, UDP, files) stays in the kernel.

Options:
  --control PATH  the bridge's control socket (pno bridge --control PATH);
                  default ${DEFAULT_CONTROL}
  --policy FILE   offload policy file (PNO_POLICY; checked before the program starts;
                  format in packages/shim/policy.ts: offload/kernel NET/LEN,
                  listen any|bridge|none, kernel-port N, loopback on|off, required yes|no)
  --required      fail at start if the shim cannot attach, instead of falling back to the
                  kernel (PNO_REQUIRED=1)
  -h, --help      show this help

Standard input, output and error are the program's; SIGINT and SIGTERM sent to pno run are
passed on to it (a SIGINT from the terminal already reaches it directly). The exit code is
the program's, or 128 + the signal number when a signal ended it.

Example: pno bridge --control /tmp/pno.sock &
         pno run --control /tmp/pno.sock -- redis-server --port 6379 --save ""`;

/** The signals passed on to the program. */
const FORWARDED: Deno.Signal[] = ["SIGINT", "SIGTERM"];

/**
 * Whether this process is in its terminal's foreground process group, so that a SIGINT
 * typed at the terminal has already reached the program (its child, in the same group):
 * fields 5 (pgrp) and 8 (tpgid) of /proc/self/stat.
 */
function inForegroundGroup(): boolean {
  try {
    const stat = Deno.readTextFileSync("/proc/self/stat");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[2]) === Number(fields[5]);
  } catch {
    return false;
  }
}

/** Everything `pno run` was asked for, parsed. */
export interface RunRequest {
  control: string;
  policy?: string;
  required: boolean;
  program: string;
  args: string[];
}

/** Parses `pno run`'s arguments; throws with a message for the user when they are wrong. */
export function parseRunArgs(args: string[]): RunRequest | "help" {
  const dashes = args.indexOf("--");
  const own = dashes < 0 ? args : args.slice(0, dashes);
  const command = dashes < 0 ? [] : args.slice(dashes + 1);
  const flags = parseArgs(own, {
    string: ["control", "policy"],
    boolean: ["help", "required"],
    alias: { h: "help" },
    stopEarly: true,
    unknown: (arg: string) => {
      if (arg.startsWith("-")) throw new Error(`unknown option ${arg}; see pno run --help`);
      return true;
    },
  });
  if (flags.help) return "help";
  // Without "--", the first word that is not an option starts the program.
  const [program, ...rest] = dashes < 0 ? flags._.map(String) : command;
  if (dashes >= 0 && flags._.length > 0) {
    throw new Error(`unexpected ${flags._[0]} before --; see pno run --help`);
  }
  if (program === undefined) throw new Error("no program to run; see pno run --help");
  return {
    control: flags.control ?? DEFAULT_CONTROL,
    policy: flags.policy,
    required: flags.required,
    program,
    args: rest,
  };
}

/** The environment of the program: ours with the shim's variables merged in. */
export function runEnv(req: RunRequest): Record<string, string> {
  return {
    ...Deno.env.toObject(),
    ...shimEnv({ control: req.control, policyFile: req.policy, required: req.required }),
  };
}

/** Runs the program under the shim; resolves with its exit code. */
export async function runMain(args: string[]): Promise<number> {
  const req = parseRunArgs(args);
  if (req === "help") {
    console.log(RUN_HELP);
    return 0;
  }
  try {
    Deno.statSync(SHIM_LIBRARY);
  } catch {
    throw new Error(`${SHIM_LIBRARY} is missing: build it with make -C ffi`);
  }
  if (req.policy !== undefined) {
    // The shim would only warn about a bad line from inside the program: say it now.
    const problems = checkPolicy(Deno.readTextFileSync(req.policy));
    if (problems.length > 0) {
      throw new Error(`policy ${req.policy}:\n  ${problems.join("\n  ")}`);
    }
    req.policy = Deno.realPathSync(req.policy);
  }
  try {
    Deno.statSync(req.control);
  } catch {
    console.error(
      `pno run: warning: no control socket at ${req.control} (is pno bridge --control running?)` +
        (req.required ? "" : "; the program's sockets stay in the kernel"),
    );
  }
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(req.program, {
      args: req.args,
      env: runEnv(req),
      clearEnv: true,
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      console.error(`pno run: ${req.program}: command not found`);
      return 127;
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      console.error(`pno run: ${req.program}: permission denied`);
      return 126;
    }
    throw err;
  }
  const handlers = FORWARDED.map((signal) => {
    const handler = () => {
      // A terminal's SIGINT goes to the whole foreground group: the program has it already,
      // and a second one makes some programs (redis-server) abandon a clean shutdown.
      if (signal === "SIGINT" && inForegroundGroup()) return;
      try {
        child.kill(signal);
      } catch {
        // already gone
      }
    };
    Deno.addSignalListener(signal, handler);
    return { signal, handler };
  });
  try {
    // Deno reports a program ended by a signal as 128 + the signal's number, as shells do.
    return (await child.status).code;
  } finally {
    for (const { signal, handler } of handlers) Deno.removeSignalListener(signal, handler);
  }
}
