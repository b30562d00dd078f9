/**
 * memcached (Debian's), unmodified, with 4 worker threads under the shim, driven from the
 * client namespace by Debian's libmemcached-tools: memcaslap (memaslap) with every get
 * verified (`--verify=1.0`) over the ASCII and the binary protocol reports no miss and no
 * failed verification, completes exactly the operations asked, and memcached's own `stats`
 * count exactly the gets and sets memcaslap sent (each request reached the server once);
 * memccp stores 300 values and memccat returns every one byte for byte. The host kernel holds
 * none of memcached's connections.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { type AppProcess, kernelEstablished, runInNs, tcpOpen, waitUntil } from "../cli/apps.ts";
import { type AppWire, withAppWire } from "./_app_harness.ts";

const TAG = "tmpmc";
const SUBNET = 236; // and 237 for the twin link
const PORT = 22990;

interface Memcached extends AppWire {
  memcached: AppProcess;
  server: string;
  /** memcached's `stats` as numbers, asked from the namespace. */
  stats(): Promise<Record<string, number>>;
}

/**
 * memcached under the shim as `user` (-u). As root it must name a user; `-u root` keeps it
 * root, `-u nobody` is Debian's way (its service runs `-u memcache`): memcached drops its
 * privileges before it opens its first socket, so the shim attaches as that user.
 */
async function withMemcached(
  user: string,
  body: (m: Memcached) => Promise<void>,
): Promise<void> {
  await withAppWire(TAG, SUBNET, async (ctx) => {
    // The control socket's directory is reachable by every user; the socket's own mode and
    // the bridge's admission decide.
    await Deno.chmod(ctx.dir, 0o755);
    const memcached = ctx.shimmed([
      "memcached",
      "-p",
      String(PORT),
      "-l",
      "0.0.0.0",
      "-U",
      "0",
      "-t",
      "4",
      "-c",
      "4096",
      "-m",
      "256",
      "-u",
      user,
    ], { name: "memcached" });
    await waitUntil(async () => {
      if (!memcached.alive()) throw new Error(`memcached exited:\n${memcached.output}`);
      return await tcpOpen(ctx.w, ctx.bridgeIp, PORT);
    }, "memcached accepts connections through the bridge");
    const stats = async () => {
      const r = await runInNs(ctx.w, [
        "sh",
        "-c",
        `printf 'stats\\r\\nquit\\r\\n' | nc -N ${ctx.bridgeIp} ${PORT}`,
      ], 30);
      const out: Record<string, number> = {};
      for (const m of r.stdout.matchAll(/^STAT (\S+) (\d+)\r?$/gm)) out[m[1]] = Number(m[2]);
      if (out.threads === undefined) throw new Error(`stats: ${r.stdout} ${r.stderr}`);
      return out;
    };
    await body({ ...ctx, memcached, server: `${ctx.bridgeIp}:${PORT}`, stats });
  });
}

/** memcaslap's summary counters ("cmd_get: N", ...) and its "Ops: N". */
function parseMemaslap(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (
    const m of text.matchAll(
      /^(cmd_get|cmd_set|get_misses|verify_misses|verify_failed|expired_get|unexpired_unget): (\d+)/gm,
    )
  ) {
    out[m[1]] = Number(m[2]);
  }
  const ops = text.match(/Ops: (\d+)/);
  if (ops) out.ops = Number(ops[1]);
  return out;
}

/** One memcaslap run of `ops` operations, every get verified; counts checked on both sides. */
async function memcaslap(m: Memcached, ops: number, binary: boolean): Promise<void> {
  const before = await m.stats();
  const running = runInNs(
    m.w,
    [
      "memcaslap",
      "-s",
      m.server,
      "-T",
      "2",
      "-c",
      "64",
      "-x",
      String(ops),
      "--verify=1.0",
      ...(binary ? ["-B"] : []),
    ],
    300,
  );
  let finished = false;
  void running.finally(() => finished = true);
  const seen: string[] = [];
  while (!finished) {
    seen.push(...await kernelEstablished(PORT));
    await new Promise((r) => setTimeout(r, 250));
  }
  const r = await running;
  const label = binary ? "binary" : "ASCII";
  const why = async () =>
    `${label}: exit ${r.code}\n${r.stdout}\n${r.stderr}\n${await m.evidence()}`;
  assertEquals(r.code, 0, await why());
  const got = parseMemaslap(r.stdout);
  assertEquals(got.ops, ops, await why());
  assertEquals(got.get_misses, 0, await why());
  assertEquals(got.verify_misses, 0, await why());
  assertEquals(got.verify_failed, 0, await why());
  assert(got.cmd_get > 0 && got.cmd_set > 0, await why());
  const after = await m.stats();
  // Every request memcaslap made reached memcached once (the stats request is not counted).
  assertEquals(after.cmd_get - before.cmd_get, got.cmd_get, await why());
  assertEquals(after.cmd_set - before.cmd_set, got.cmd_set, await why());
  assertEquals(seen, [], "the host kernel held memcached connections");
  console.log(
    `   ${label}: ${got.cmd_get} gets, ${got.cmd_set} sets, all verified (${
      r.stdout.match(/TPS: \d+/)?.[0]
    })`,
  );
}

Deno.test("memcached -t 4 under the shim: memcaslap ASCII and binary, every get verified, server counts match", async () => {
  await withMemcached("root", async (m) => {
    assertEquals((await m.stats()).threads, 4);
    for (const binary of [false, true]) await memcaslap(m, 200_000, binary);
  });
});

Deno.test("memcached as Debian runs it (-u nobody: privileges dropped before its first socket) under the shim: memcaslap verified", async () => {
  await withMemcached("nobody", async (m) => {
    assertEquals((await m.stats()).threads, 4);
    // A multiple of memcaslap's concurrency (64): it runs execute_number / concurrency
    // operations per connection, so 50,000 would be 49,984 operations.
    await memcaslap(m, 64_000, false);
  });
});

Deno.test("memcached -t 4 under the shim: memccp stores 300 values, memccat returns each byte for byte", async () => {
  await withMemcached("root", async (m) => {
    const dir = `${m.dir}/values`;
    await Deno.mkdir(dir);
    const names: string[] = [];
    const values: string[] = [];
    for (let i = 0; i < 300; i++) {
      // Text values (hex), 1 byte to about 200 KiB: memccat's output is read as text.
      const size = i === 0 ? 1 : (i * 7919) % (100 * 1024) + 1;
      const raw = new Uint8Array(Math.ceil(size / 2));
      for (let o = 0; o < raw.length; o += 65536) {
        crypto.getRandomValues(raw.subarray(o, o + 65536));
      }
      const hex = Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("").slice(0, size);
      names.push(`key-${i}`);
      values.push(hex);
      await Deno.writeTextFile(`${dir}/key-${i}`, hex);
    }
    const cp = await runInNs(
      m.w,
      ["memccp", "-s", m.server, "--basename", ...names.map((n) => `${dir}/${n}`)],
      120,
    );
    assertEquals(cp.code, 0, `memccp: ${cp.stdout} ${cp.stderr}\n${await m.evidence()}`);
    // memccat prints each value followed by a newline.
    for (let from = 0; from < names.length; from += 100) {
      const batch = names.slice(from, from + 100);
      const cat = await runInNs(m.w, ["memccat", "-s", m.server, ...batch], 120);
      assertEquals(cat.code, 0, `memccat: ${cat.stderr}\n${await m.evidence()}`);
      const want = values.slice(from, from + 100).map((v) => `${v}\n`).join("");
      assert(
        cat.stdout === want,
        `memccat keys ${from}..${from + 99}: ${cat.stdout.length} chars, want ${want.length}`,
      );
    }
    const missing = await runInNs(m.w, ["memccat", "-s", m.server, "no-such-key"], 30);
    assertEquals(missing.code, 1, "memccat of a missing key");
    const s = await m.stats();
    assert(s.curr_items >= 300, `curr_items ${s.curr_items}`);
  });
});
