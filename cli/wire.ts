/**
 * The emulated wire: a client network namespace on one end of a veth pair whose other end the
 * bridge's DPDK port drives, and the kernel path's twin link to the host, the baseline of
 * every comparison. `pno wire up|down` and the integration tests share this code; tests pass
 * their own names and subnets so parallel runs do not collide.
 *
 * This kernel has no sch_netem, so an impaired wire puts a user-space forwarder (ffi/fwd/
 * pno_fwd.c) in the middle of each link, the PnO link and the twin alike, with the same faults
 * and seed: every figure under faults is then a ratio to Linux under the same faults.
 *
 * @module
 */
import { parseArgs } from "@std/cli";

/** Names and addresses of one wire. */
export interface WireConfig {
  /** Client network namespace. */
  ns: string;
  /** veth end in the namespace, the kernel client's NIC. */
  client: string;
  /** veth end left address-less in the host namespace for DPDK. */
  bridge: string;
  /** Client address on `client`, with prefix. */
  clientAddress: string;
  /** The bridge's address (configured in the bridge, not the kernel). */
  bridgeAddress: string;
  /** Twin link for the kernel path; null to leave it out. */
  twin: { client: string; host: string; clientAddress: string; hostAddress: string } | null;
}

/**
 * Faults the forwarder applies to both links, in both directions (ffi/fwd/pno_fwd.c; the same
 * meanings as the bridge's fault injector, packages/bridge/phy/fault_injector.ts).
 */
export interface Impairments {
  lossPercent?: number;
  /** Delay of every frame, ms. */
  delayMs?: number;
  /** The delay is uniform in [delay - jitter, delay + jitter] ms. */
  jitterMs?: number;
  /** netem's meaning: this share of frames skips the delay, overtaking delayed ones. */
  reorderPercent?: number;
  duplicatePercent?: number;
  /** PRNG seed (default 1): both links draw the same sequence. */
  seed?: number;
}

/** The topology `pno wire up` makes and the README describes. */
export const DEFAULT_WIRE: WireConfig = {
  ns: "pno-client",
  client: "pno0",
  bridge: "pno1",
  clientAddress: "10.88.0.1/24",
  bridgeAddress: "10.88.0.2/24",
  twin: {
    client: "pnok0",
    host: "pnok1",
    clientAddress: "10.89.0.1/24",
    hostAddress: "10.89.0.2/24",
  },
};

/**
 * A wire with names of its own for a test: namespace `pno-<tag>`, veths `<tag>c`/`<tag>b`,
 * subnet 10.<subnet>.0.0/24 (and 10.<subnet+1> for the twin when asked for).
 */
export function testWire(tag: string, subnet: number, twin = false): WireConfig {
  if (tag.length > 12) throw new Error(`wire tag ${tag} is too long for interface names`);
  return {
    ns: `pno-${tag}`,
    client: `${tag}c`,
    bridge: `${tag}b`,
    clientAddress: `10.${subnet}.0.1/24`,
    bridgeAddress: `10.${subnet}.0.2/24`,
    twin: twin
      ? {
        client: `${tag}kc`,
        host: `${tag}kh`,
        clientAddress: `10.${subnet + 1}.0.1/24`,
        hostAddress: `10.${subnet + 1}.0.2/24`,
      }
      : null,
  };
}

/** Runs a command; throws with its stderr when it fails. */
export async function sh(cmd: string[], allowFail = false): Promise<string> {
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success && !allowFail) {
    throw new Error(`${cmd.join(" ")} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Prefix for running a command inside the client namespace. */
export function inNs(w: WireConfig, ...cmd: string[]): string[] {
  return ["ip", "netns", "exec", w.ns, ...cmd];
}

/**
 * Links whose offloads would put partial checksums or GSO super-frames on the wire (or, at a
 * forwarder's AF_PACKET socket, GRO super-frames): `prefix` runs the command in a namespace.
 */
async function completeFrames(dev: string, prefix: string[]): Promise<void> {
  await sh([
    ...prefix,
    "ethtool",
    "-K",
    dev,
    "tx",
    "off",
    "tso",
    "off",
    "gso",
    "off",
    "gro",
    "off",
  ]);
}

/**
 * A veth pair with `client` moved into the namespace (addressed, up) and `host` left in the
 * host namespace (or moved to `hostNs`), up, with `hostAddress` or none (the bridge's end is
 * DPDK's, address-less). IPv6 is off on both ends (no router solicitations on the wire) and so
 * are the offloads.
 */
async function addVethPair(
  w: WireConfig,
  client: string,
  host: string,
  clientAddress: string,
  hostAddress: string | null,
  hostNs: string | null = null,
): Promise<void> {
  const inHost = hostNs === null ? [] : ["ip", "netns", "exec", hostNs];
  await sh(["ip", "link", "add", client, "type", "veth", "peer", "name", host]);
  await sh(["ip", "link", "set", client, "netns", w.ns]);
  if (hostNs !== null) await sh(["ip", "link", "set", host, "netns", hostNs]);
  await sh(inNs(w, "sysctl", "-qw", `net.ipv6.conf.${client}.disable_ipv6=1`));
  await sh([...inHost, "sysctl", "-qw", `net.ipv6.conf.${host}.disable_ipv6=1`]);
  await sh(inNs(w, "ip", "addr", "add", clientAddress, "dev", client));
  await sh(inNs(w, "ip", "link", "set", client, "up"));
  if (hostAddress) await sh([...inHost, "ip", "addr", "add", hostAddress, "dev", host]);
  await sh([...inHost, "ip", "link", "set", host, "up"]);
  await completeFrames(client, inNs(w));
  await completeFrames(host, inHost);
}

/**
 * Creates the wire (removing any leftover of the same names first). With `imp` (even `{}`),
 * both links go through a forwarder each (`forwarders()`), started with the same settings and
 * seed; without it the veths join the ends directly.
 */
export async function wireUp(w: WireConfig, imp?: Impairments): Promise<void> {
  await wireDown(w);
  await sh(["ip", "netns", "add", w.ns]);
  await sh(inNs(w, "ip", "link", "set", "lo", "up"));
  if (imp === undefined) {
    await addVethPair(w, w.client, w.bridge, w.clientAddress, null);
    if (w.twin) {
      await addVethPair(w, w.twin.client, w.twin.host, w.twin.clientAddress, w.twin.hostAddress);
    }
    return;
  }
  checkImpairments(imp);
  try {
    await sh(["ip", "netns", "add", fwdNs(w)]);
    for (const link of links(w)) {
      await addForwardedLink(w, link);
      await startForwarder(w, link, imp);
    }
  } catch (err) {
    await wireDown(w); // all or nothing: no wire that silently lacks the impairments asked for
    throw err;
  }
}

/** The namespace of the forwarders of wire `w`. */
export function fwdNs(w: WireConfig): string {
  return `${w.ns}-fwd`;
}

/** One link of a wire as the forwarder sees it: the client's end and the host's end. */
interface Link {
  /** "pno" (client to the bridge's DPDK port) or "twin" (client to the host kernel). */
  name: "pno" | "twin";
  client: string;
  clientAddress: string;
  host: string;
  hostAddress: string | null;
}

function links(w: WireConfig): Link[] {
  const out: Link[] = [{
    name: "pno",
    client: w.client,
    clientAddress: w.clientAddress,
    host: w.bridge,
    hostAddress: null,
  }];
  if (w.twin) {
    out.push({
      name: "twin",
      client: w.twin.client,
      clientAddress: w.twin.clientAddress,
      host: w.twin.host,
      hostAddress: w.twin.hostAddress,
    });
  }
  return out;
}

/** Rejects impairments the forwarder would refuse, before anything is created. */
export function checkImpairments(imp: Impairments): void {
  for (const [name, v] of Object.entries(imp)) {
    if (v !== undefined && !(Number.isFinite(v) && v >= 0)) {
      throw new RangeError(`${name} must be a number >= 0, not ${v}`);
    }
  }
  for (const p of ["lossPercent", "reorderPercent", "duplicatePercent"] as const) {
    if ((imp[p] ?? 0) > 100) throw new RangeError(`${p} must be at most 100`);
  }
  if ((imp.reorderPercent ?? 0) > 0 && !imp.delayMs) {
    throw new RangeError("reorder makes frames skip the delay: give --delay too");
  }
}

/**
 * A link cut in two at the forwarder: veth `client` (in the client namespace, addressed) to
 * `<client>f`, and `<host>f` to `host` (in the host namespace: the bridge's DPDK end, or the
 * kernel's addressed end). The two `f` ends live in the forwarder's namespace, address-less and
 * without IPv6, so they add no frame of their own to the wire.
 */
async function addForwardedLink(w: WireConfig, link: Link): Promise<void> {
  const ns = fwdNs(w);
  const inFwd = (...cmd: string[]) => ["ip", "netns", "exec", ns, ...cmd];
  await addVethPair(w, link.client, `${link.client}f`, link.clientAddress, null, ns);
  await sh(["ip", "link", "add", `${link.host}f`, "type", "veth", "peer", "name", link.host]);
  await sh(["ip", "link", "set", `${link.host}f`, "netns", ns]);
  await sh(["sysctl", "-qw", `net.ipv6.conf.${link.host}.disable_ipv6=1`]);
  await sh(inFwd("sysctl", "-qw", `net.ipv6.conf.${link.host}f.disable_ipv6=1`));
  if (link.hostAddress) await sh(["ip", "addr", "add", link.hostAddress, "dev", link.host]);
  await sh(["ip", "link", "set", link.host, "up"]);
  await sh(inFwd("ip", "link", "set", `${link.host}f`, "up"));
  await completeFrames(link.host, []);
  await completeFrames(`${link.host}f`, ["ip", "netns", "exec", ns]);
  // A frame the forwarder sends is received (IP, TCP, the receiver's ACK) in its own sendmsg,
  // unless the receiving veth has a NAPI thread of its own: measured, the forwarder alone then
  // needs about half a core at 3 Gbit/s instead of all of it at 1 to 2 Gbit/s. veth runs NAPI
  // only with GRO on, which merges segments before Linux's TCP as a real NIC's GRO would; the
  // bridge's end keeps it off (DPDK must see the frames as sent).
  await receiveThread(link.client, inNs(w));
  if (link.hostAddress) await receiveThread(link.host, []);
}

/**
 * A NAPI thread for the bridge's end of a forwarded link, as the kernel's end has one
 * (addForwardedLink): the bridge's receive path (the veth's XDP program and the copy into the
 * AF_XDP socket) then runs there, not inside the forwarder's sendmsg. A veth has NAPI only with
 * GRO or an XDP program, and GRO stays off at this end (DPDK must see the frames as sent), so
 * this works only after a net_af_xdp bridge has attached its program; false where the veth has
 * no NAPI (net_af_packet). Measured on the clean forwarded wire (`pno bench --tcp`, medians of 3
 * pairs), 256 MiB discard: PnO 0.42 to 0.60 of Linux in 6 runs without it, 0.58 to 0.82 in 4
 * with it.
 */
export async function bridgeReceiveThread(w: WireConfig): Promise<boolean> {
  try {
    await Deno.writeTextFile(`/sys/class/net/${w.bridge}/threaded`, "1");
    return true;
  } catch {
    return false;
  }
}

/** GRO on and a NAPI thread for the receive path of veth `dev` (`prefix`: its namespace). */
async function receiveThread(dev: string, prefix: string[]): Promise<void> {
  await sh([...prefix, "ethtool", "-K", dev, "gro", "on"]);
  await sh([...prefix, "sh", "-c", `echo 1 > /sys/class/net/${dev}/threaded`]);
}

const FWD_BIN = new URL("../ffi/build/pno_fwd", import.meta.url).pathname;

/** Where a forwarder writes its ready line and counters (a file: it outlives `pno wire up`). */
function fwdLog(w: WireConfig, link: Link["name"]): string {
  return `/tmp/pno-fwd-${w.ns}-${link}.log`;
}

/** Starts the forwarder of `link` in its own session and waits for its ready line. */
async function startForwarder(w: WireConfig, link: Link, imp: Impairments): Promise<void> {
  const log = fwdLog(w, link.name);
  await Deno.writeTextFile(log, "");
  const args = [
    ["--a", `${link.client}f`],
    ["--b", `${link.host}f`],
    ["--loss", String(imp.lossPercent ?? 0)],
    ["--delay", String(imp.delayMs ?? 0)],
    ["--jitter", String(imp.jitterMs ?? 0)],
    ["--reorder", String(imp.reorderPercent ?? 0)],
    ["--duplicate", String(imp.duplicatePercent ?? 0)],
    ["--seed", String(imp.seed ?? 1)],
  ].flat();
  const cmd = ["ip", "netns", "exec", fwdNs(w), FWD_BIN, ...args].map((a) => `'${a}'`);
  // setsid -f: the forwarder leaves our session, so it lives on after `pno wire up` returns.
  await sh(["setsid", "-f", "sh", "-c", `exec ${cmd.join(" ")} >>'${log}' 2>&1 </dev/null`]);
  const end = performance.now() + 5000;
  for (;;) {
    const text = await Deno.readTextFile(log);
    if (text.includes('"ready"')) return;
    if (performance.now() > end) {
      throw new Error(`forwarder of the ${link.name} link did not start: ${text.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One direction's counters of a forwarder: "ab" is client to host, "ba" host to client. */
export interface ForwarderDirection {
  framesIn: number;
  framesOut: number;
  bytesOut: number;
  dropped: number;
  duplicated: number;
  delayed: number;
  reordered: number;
  poolFull: number;
  txFailed: number;
  held: number;
}

/** A running forwarder, from its log. */
interface ForwarderLog {
  pid: number;
  lines: Record<string, unknown>[];
}

async function readFwdLog(path: string): Promise<ForwarderLog | null> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return null;
  }
  const lines = text.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l));
  const ready = lines.find((l) => l.event === "ready");
  return ready ? { pid: ready.pid as number, lines } : null;
}

/** True while `pid` is a forwarder process (not a reused PID). */
function isForwarder(pid: number): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0")[0] === FWD_BIN;
  } catch {
    return false;
  }
}

/**
 * The counters of each link's forwarder now (asked for with SIGUSR1): by link, then direction.
 * Empty when the wire has no forwarders.
 */
export async function forwarderCounters(
  w: WireConfig,
): Promise<Record<string, { ab: ForwarderDirection; ba: ForwarderDirection }>> {
  const out: Record<string, { ab: ForwarderDirection; ba: ForwarderDirection }> = {};
  for (const link of links(w)) {
    const path = fwdLog(w, link.name);
    const before = await readFwdLog(path);
    if (before === null || !isForwarder(before.pid)) continue;
    Deno.kill(before.pid, "SIGUSR1");
    const end = performance.now() + 2000;
    for (;;) {
      const now = await readFwdLog(path);
      if (now !== null && now.lines.length > before.lines.length) {
        const last = now.lines[now.lines.length - 1];
        out[link.name] = last as unknown as { ab: ForwarderDirection; ba: ForwarderDirection };
        break;
      }
      if (performance.now() > end) throw new Error(`forwarder ${before.pid} did not report`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  return out;
}

/** Ends the wire's forwarders (by the PIDs their logs hold) and waits until they are gone. */
async function stopForwarders(w: WireConfig): Promise<void> {
  for (const name of ["pno", "twin"] as const) {
    const path = fwdLog(w, name);
    const log = await readFwdLog(path);
    if (log !== null && isForwarder(log.pid)) {
      Deno.kill(log.pid, "SIGTERM");
      const end = performance.now() + 5000;
      while (isForwarder(log.pid) && performance.now() < end) {
        await new Promise((r) => setTimeout(r, 10));
      }
      if (isForwarder(log.pid)) Deno.kill(log.pid, "SIGKILL");
    }
    await Deno.remove(path).catch(() => {});
  }
}

/**
 * Restarts a forwarded wire's forwarders with `imp`: new faults on the same links, or the same
 * faults with each PRNG back at its seed, so that runs compared side by side start alike.
 */
export async function restartForwarders(w: WireConfig, imp: Impairments): Promise<void> {
  checkImpairments(imp);
  await stopForwarders(w);
  for (const link of links(w)) await startForwarder(w, link, imp);
}

/** Removes everything `wireUp` made; quiet about what is already gone. */
export async function wireDown(w: WireConfig): Promise<void> {
  await stopForwarders(w);
  await sh(["ip", "netns", "del", w.ns], true);
  await sh(["ip", "netns", "del", fwdNs(w)], true);
  await sh(["ip", "link", "del", w.bridge], true);
  if (w.twin) await sh(["ip", "link", "del", w.twin.host], true);
}

export const WIRE_HELP = `pno wire: create or remove the emulated wire

Usage: pno wire up [--loss PCT] [--delay MS] [--jitter MS] [--reorder PCT] [--duplicate PCT]
                   [--seed N] [--forward]
       pno wire down

up    namespace pno-client with veth pno0 (10.88.0.1/24); its peer pno1 stays in the host,
      up and address-less, for the bridge's DPDK port (the bridge answers as 10.88.0.2).
      The kernel path's twin: pnok0 (10.89.0.1/24) in pno-client, pnok1 (10.89.0.2/24) on
      the host. Offloads are off on every end, so frames are complete and MTU-sized.
      With any impairment (or --forward for none), each link is cut in two and joined by a
      forwarder (ffi/build/pno_fwd) in namespace pno-client-fwd: pno0 <-> pno0f | pno1f <->
      pno1 and pnok0 <-> pnok0f | pnok1f <-> pnok1. Both forwarders apply the same faults
      with the same seed, in both directions (this kernel has no sch_netem):
        --loss PCT       drop this share of frames
        --delay MS       hold every frame this long
        --jitter MS      the delay is uniform in [delay - jitter, delay + jitter]
        --reorder PCT    netem's meaning: this share skips the delay (needs --delay)
        --duplicate PCT  send this share twice
        --seed N         the PRNG's seed (default 1)
      Their counters: kill -USR1 the PID in /tmp/pno-fwd-pno-client-{pno,twin}.log, which
      then ends with a JSON line of them.
down  removes all of it (the forwarders are ended by PID).`;

/** `pno wire` CLI. */
export async function wireMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["loss", "delay", "jitter", "reorder", "duplicate", "seed"],
    boolean: ["help", "forward"],
    alias: { h: "help" },
    unknown: (arg: string) => {
      if (arg.startsWith("-")) throw new Error(`unknown option ${arg}; see pno wire --help`);
      return true;
    },
  });
  const action = flags._[0];
  if (flags.help || action === undefined) {
    console.log(WIRE_HELP);
    return flags.help ? 0 : 2;
  }
  if (action === "up") {
    const number = (v: string | undefined) => v === undefined ? undefined : Number(v);
    const imp: Impairments = {
      lossPercent: number(flags.loss),
      delayMs: number(flags.delay),
      jitterMs: number(flags.jitter),
      reorderPercent: number(flags.reorder),
      duplicatePercent: number(flags.duplicate),
      seed: number(flags.seed),
    };
    const forwarded = flags.forward || Object.values(imp).some((v) => v !== undefined);
    await wireUp(DEFAULT_WIRE, forwarded ? imp : undefined);
    console.log(
      "wire up: pno-client/pno0 10.88.0.1/24 <-> pno1 (bridge, 10.88.0.2); " +
        "twin pno-client/pnok0 10.89.0.1/24 <-> pnok1 10.89.0.2/24" +
        (forwarded ? `; both through forwarders in ${fwdNs(DEFAULT_WIRE)}` : ""),
    );
    return 0;
  }
  if (action === "down") {
    await wireDown(DEFAULT_WIRE);
    console.log("wire down");
    return 0;
  }
  console.error(`pno wire: unknown action ${action}; see pno wire --help`);
  return 2;
}
