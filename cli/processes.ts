/**
 * Helpers for the processes the demo, the benchmarks and the tests start: CPU accounting from
 * /proc, a ready line read from stdout, and the host ring echo server.
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url).pathname;

/** CPU time (user + system) of a process in seconds, from /proc/PID/stat. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 of stat(5) (utime, stime) are at 11 and 12 after the command name.
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * The first line a child prints on stdout; the rest is drained in the background so the
 * child never blocks on a full pipe.
 */
export async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  while (!buf.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
  }
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  return buf.split("\n")[0];
}

/**
 * Starts examples/ring_echo_server.ts attached to the bridge at `control` (port 8007);
 * `denoArgs` go to `deno run` (e.g. --cpu-prof). Read its first line to know it listens.
 */
export function startRingEchoServer(control: string, denoArgs: string[] = []): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--unstable-ffi",
      ...denoArgs,
      `${ROOT}examples/ring_echo_server.ts`,
      "--control",
      control,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
}
