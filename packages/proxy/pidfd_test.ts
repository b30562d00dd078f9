import { assert, assertEquals } from "@std/assert";
import { pidfdOpen, ProcessWatcher } from "./pidfd.ts";
import { libc } from "../../ffi/libc.ts";

function sleeper(seconds: number): Deno.ChildProcess {
  return new Deno.Command("sleep", { args: [String(seconds)], stdout: "null" }).spawn();
}

Deno.test("pidfd: opens a live process, says null for a pid that does not exist", () => {
  const fd = pidfdOpen(Deno.pid);
  if (fd === null) throw new Error("no pidfd for this process");
  assert(fd >= 0);
  assert(Deno.readLinkSync(`/proc/self/fd/${fd}`).includes("pidfd"));
  libc().close(fd);
  // Above pid_max (at most 2^22): no such process.
  assertEquals(pidfdOpen(1 << 23), null);
});

Deno.test("pidfd: the watcher reports each exit once, only for pids still watched", async () => {
  const exits: number[] = [];
  let seen = () => {};
  const watcher = new ProcessWatcher((pid) => {
    exits.push(pid);
    seen();
  });
  const a = sleeper(0.2), b = sleeper(30), c = sleeper(30);
  try {
    assert(watcher.watch(a.pid));
    assert(watcher.watch(b.pid));
    assert(watcher.watch(c.pid));
    assert(watcher.watch(a.pid)); // twice: one pidfd
    assertEquals(watcher.size, 3);
    const first = new Promise<void>((r) => seen = r);
    await a.status;
    await first;
    assertEquals(exits, [a.pid]);
    assert(!watcher.has(a.pid));
    // Unwatched before it dies: no report.
    watcher.unwatch(b.pid);
    b.kill("SIGKILL");
    await b.status;
    const second = new Promise<void>((r) => seen = r);
    c.kill("SIGKILL");
    await c.status;
    await second;
    assertEquals(exits, [a.pid, c.pid]);
    assertEquals(watcher.size, 0);
    // A process that is gone already cannot be watched.
    assert(!watcher.watch(1 << 23));
  } finally {
    for (const p of [a, b, c]) {
      try {
        p.kill("SIGKILL");
      } catch {
        // exited
      }
      await p.status;
    }
    await watcher.close();
  }
});
