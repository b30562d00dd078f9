/**
 * lighttpd, the Debian binary, unmodified, under the shim: wrk from the client namespace with
 * keep-alive and with a new connection per request gets only 2xx answers and no socket
 * errors; curl fetches a 10 MiB file whose SHA-256 matches; the host kernel holds none of its
 * connections.
 *
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import {
  type AppProcess,
  appStats,
  kernelEstablished,
  runInNs,
  sha256File,
  tcpOpen,
  waitUntil,
} from "../cli/apps.ts";
import { type AppWire, withAppWire } from "./_app_harness.ts";

const TAG = "alight";
const SUBNET = 212; // and 213 for the twin link
const PORT = 8080;

/** The documents served, by name and size. */
const FILES: [string, number][] = [["1k.bin", 1024], ["64k.bin", 64 * 1024], [
  "10m.bin",
  10 << 20,
]];

interface Lighttpd extends AppWire {
  lighttpd: AppProcess;
  url(file: string): string;
  rstAtStart: number;
}

/** A wire, a bridge and lighttpd -D under the shim serving FILES from a temporary root. */
async function withLighttpd(body: (l: Lighttpd) => Promise<void>): Promise<void> {
  await withAppWire(TAG, SUBNET, async (ctx) => {
    const root = `${ctx.dir}/www`;
    await Deno.mkdir(root);
    for (const [name, size] of FILES) {
      const data = new Uint8Array(size);
      for (let o = 0; o < size; o += 65536) crypto.getRandomValues(data.subarray(o, o + 65536));
      await Deno.writeFile(`${root}/${name}`, data);
    }
    const conf = `${ctx.dir}/lighttpd.conf`;
    await Deno.writeTextFile(
      conf,
      [
        `server.bind = "0.0.0.0"`,
        `server.port = ${PORT}`,
        `server.document-root = "${root}"`,
        `server.errorlog = "${ctx.dir}/error.log"`,
        `server.max-connections = 4096`,
        `server.max-fds = 8192`,
        `mimetype.assign = (".bin" => "application/octet-stream")`,
        "",
      ].join("\n"),
    );
    const lighttpd = ctx.shimmed(["lighttpd", "-D", "-f", conf], { name: "lighttpd" });
    await waitUntil(async () => {
      if (!lighttpd.alive()) {
        const log = await Deno.readTextFile(`${ctx.dir}/error.log`).catch(() => "");
        throw new Error(`lighttpd exited:\n${lighttpd.output}\n${log}`);
      }
      return await tcpOpen(ctx.w, ctx.bridgeIp, PORT);
    }, "lighttpd accepts connections through the bridge");
    const tcp = (await ctx.bridge.stats() as unknown as { tcp: Record<string, number> }).tcp;
    await body({
      ...ctx,
      lighttpd,
      url: (file) => `http://${ctx.bridgeIp}:${PORT}/${file}`,
      rstAtStart: tcp.rstOut,
    });
  });
}

/** What wrk reported. */
interface WrkResult {
  requests: number;
  seconds: number;
  socketErrors: string | null;
  non2xx: number;
  text: string;
}

/** wrk's summary: "N requests in Ts", "Socket errors: ...", "Non-2xx or 3xx responses: N". */
function parseWrk(text: string): WrkResult {
  const m = text.match(/(\d+) requests in ([\d.]+)(ms|s|m)/);
  const unit = m?.[3] === "ms" ? 1e-3 : m?.[3] === "m" ? 60 : 1;
  return {
    requests: m ? Number(m[1]) : 0,
    seconds: m ? Number(m[2]) * unit : 0,
    socketErrors: text.match(/Socket errors:.*/)?.[0] ?? null,
    non2xx: Number(text.match(/Non-2xx or 3xx responses: (\d+)/)?.[1] ?? 0),
    text,
  };
}

/** wrk from the namespace for `seconds` with `extra` options; samples the host kernel meanwhile. */
async function wrk(
  l: Lighttpd,
  file: string,
  seconds: number,
  extra: string[],
): Promise<WrkResult & { kernelConnections: string[] }> {
  const running = runInNs(
    l.w,
    ["wrk", "-t", "2", "-c", "50", "-d", `${seconds}s`, "--timeout", "5s", ...extra, l.url(file)],
    seconds + 60,
  );
  let finished = false;
  void running.finally(() => finished = true);
  const seen: string[] = [];
  while (!finished) {
    seen.push(...await kernelEstablished(PORT));
    await new Promise((r) => setTimeout(r, 250));
  }
  const r = await running;
  if (r.code !== 0) {
    throw new Error(
      `wrk exit ${r.code}: ${r.stdout}\n${r.stderr}\n${await l.evidence(l.lighttpd)}`,
    );
  }
  return { ...parseWrk(r.stdout), kernelConnections: seen };
}

async function assertClean(l: Lighttpd, label: string, r: WrkResult): Promise<void> {
  const why = async () => `${label}:\n${r.text}\n${await l.evidence()}`;
  assert(r.requests > 0, `no requests completed: ${await why()}`);
  assertEquals(r.socketErrors, null, await why());
  assertEquals(r.non2xx, 0, await why());
  console.log(`   ${label}: ${(r.requests / r.seconds).toFixed(0)} requests/s (${r.requests})`);
}

Deno.test("lighttpd under the shim: wrk with keep-alive, only 2xx, no socket errors", async () => {
  await withLighttpd(async (l) => {
    for (const file of ["1k.bin", "64k.bin"]) {
      const r = await wrk(l, file, 4, []);
      await assertClean(l, `keep-alive ${file}`, r);
      assertEquals(r.kernelConnections, [], "the host kernel held lighttpd connections");
    }
    const app = appStats(await l.bridge.stats(), l.lighttpd.pid);
    assert(app && app.commands > 0 && app.events > 0, `bridge counters: ${JSON.stringify(app)}`);
    const tcp = (await l.bridge.stats() as unknown as { tcp: Record<string, number> }).tcp;
    assertEquals(tcp.rstOut, l.rstAtStart, "the bridge reset connections");
  });
});

Deno.test("lighttpd under the shim: wrk with Connection: close, a connection per request", async () => {
  await withLighttpd(async (l) => {
    const opensBefore =
      (await l.bridge.stats() as unknown as { tcp: Record<string, number> }).tcp.passiveOpens;
    for (const file of ["1k.bin", "64k.bin"]) {
      const r = await wrk(l, file, 4, ["-H", "Connection: close"]);
      await assertClean(l, `Connection: close ${file}`, r);
      assertEquals(r.kernelConnections, [], "the host kernel held lighttpd connections");
    }
    const tcp = (await l.bridge.stats() as unknown as { tcp: Record<string, number> }).tcp;
    assert(tcp.passiveOpens - opensBefore > 100, `passive opens: ${tcp.passiveOpens}`);
    assertEquals(tcp.rstOut, l.rstAtStart, "the bridge reset connections");
  });
});

Deno.test("lighttpd under the shim: curl fetches 10 MiB, SHA-256 matches", async () => {
  await withLighttpd(async (l) => {
    const want = await sha256File(`${l.dir}/www/10m.bin`);
    for (let i = 0; i < 3; i++) {
      const out = `${l.dir}/got-${i}.bin`;
      const r = await runInNs(
        l.w,
        [
          "curl",
          "-sS",
          "--fail",
          "-o",
          out,
          "-w",
          "%{http_code} %{size_download}",
          l.url("10m.bin"),
        ],
        120,
      );
      assertEquals(r.code, 0, `curl: ${r.stdout} ${r.stderr}\n${await l.evidence(l.lighttpd)}`);
      assertEquals(r.stdout.trim(), `200 ${10 << 20}`);
      assertEquals(await sha256File(out), want, `fetch ${i}: SHA-256 differs`);
    }
  });
});
