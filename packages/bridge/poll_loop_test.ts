import { assert, assertEquals } from "@std/assert";
import { DEFAULT_BACKOFF, PollLoop } from "./poll_loop.ts";

/**
 * A loop that always has work never naps, so only its I/O turns (every `ioEveryMs`) let the
 * runtime poll its sockets: a short sleep on a pool thread most of the time, a zero-delay timer
 * every tenth turn. A local HTTP server asked by a child process (curl, whose exit the runtime
 * also learns through its I/O driver) must still be answered, several times over.
 */
Deno.test("poll loop: a loop with work on every round still lets the runtime serve sockets", async () => {
  let rounds = 0;
  const loop = new PollLoop(
    () => {
      rounds++;
      return 1;
    },
    () => Infinity,
    DEFAULT_BACKOFF,
  );
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => {
    return new Response("served");
  });
  const running = loop.run();
  try {
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const took: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const out = await new Deno.Command("curl", {
        args: ["-s", "--max-time", "5", url],
        stdout: "piped",
        stderr: "null",
      }).output();
      took.push(performance.now() - t0);
      assertEquals(new TextDecoder().decode(out.stdout), "served", `request ${i}`);
    }
    // Starved, a request waited 1 to 8 s (the loop's turns ran the event loop, not the I/O
    // driver); a few turns of 100 ms are the expected wait.
    assert(Math.max(...took) < 2_000, `requests took ${took.map((t) => t.toFixed(0))} ms`);
    assert(loop.counters.ioYields > 0, "no I/O turn was taken");
    assertEquals(loop.counters.sleeps, 0, "a loop with work never naps");
  } finally {
    loop.stop();
    await running;
    await server.shutdown();
  }
  assert(rounds > 1000, `only ${rounds} rounds`);
});

Deno.test("poll loop: stop() ends a loop that is in its I/O turn", async () => {
  const loop = new PollLoop(() => 1, () => Infinity, { ...DEFAULT_BACKOFF, ioEveryMs: 0 });
  const running = loop.run();
  await new Promise((r) => setTimeout(r, 50));
  loop.stop();
  await running;
  assert(loop.counters.ioYields > 0);
});
