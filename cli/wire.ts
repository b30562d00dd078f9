/**
 * The emulated wire: a client network namespace on one end of a veth pair whose other end the
 * bridge's DPDK port drives, and the kernel path's twin link to the host, the baseline of
 * every comparison. `pno wire up|down` and the integration tests share this code; tests pass
 * their own names and subnets so parallel runs do not collide.
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

/** tc netem impairments applied to the client ends. */
export interface Impairments {
  lossPercent?: number;
  delayMs?: number;
  reorderPercent?: number;
  duplicatePercent?: number;
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

/** Links whose offloads would put partial checksums or GSO super-frames on the wire. */
async function completeFrames(w: WireConfig, dev: string, inNamespace: boolean): Promise<void> {
  const cmd = ["ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro", "off"];
  await sh(inNamespace ? inNs(w, ...cmd) : cmd);
}

/**
 * A veth pair with `client` moved into the namespace (addressed, up) and `host` left in the
 * host namespace, up, with `hostAddress` or none (the bridge's end is DPDK's, address-less).
 * IPv6 is off on both ends (no router solicitations on the wire) and so are the offloads.
 */
async function addVethPair(
  w: WireConfig,
  client: string,
  host: string,
  clientAddress: string,
  hostAddress: string | null,
): Promise<void> {
  await sh(["ip", "link", "add", client, "type", "veth", "peer", "name", host]);
  await sh(["ip", "link", "set", client, "netns", w.ns]);
  await sh(inNs(w, "sysctl", "-qw", `net.ipv6.conf.${client}.disable_ipv6=1`));
  await sh(["sysctl", "-qw", `net.ipv6.conf.${host}.disable_ipv6=1`]);
  await sh(inNs(w, "ip", "addr", "add", clientAddress, "dev", client));
  await sh(inNs(w, "ip", "link", "set", client, "up"));
  if (hostAddress) await sh(["ip", "addr", "add", hostAddress, "dev", host]);
  await sh(["ip", "link", "set", host, "up"]);
  await completeFrames(w, client, true);
  await completeFrames(w, host, false);
}

/** Creates the wire (removing any leftover of the same names first). */
export async function wireUp(w: WireConfig, imp: Impairments = {}): Promise<void> {
  await wireDown(w);
  await sh(["ip", "netns", "add", w.ns]);
  await sh(inNs(w, "ip", "link", "set", "lo", "up"));
  await addVethPair(w, w.client, w.bridge, w.clientAddress, null);
  if (w.twin) {
    await addVethPair(w, w.twin.client, w.twin.host, w.twin.clientAddress, w.twin.hostAddress);
  }
  try {
    await impair(w, imp);
  } catch (err) {
    await wireDown(w); // all or nothing: no wire that silently lacks the impairments asked for
    throw err;
  }
}

/** What tc says when the kernel has no such qdisc (CONFIG_NET_SCH_NETEM unset, no module). */
const NO_QDISC = /Specified qdisc kind is unknown|Unknown qdisc|qdisc kind.*unknown|No such file/i;

/** Thrown by `impair()` on a kernel without sch_netem. */
export class NetemUnavailableError extends Error {
  constructor(detail: string) {
    super(
      "this kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set and no module loads), so " +
        "the wire cannot be impaired with tc netem (" + detail + "). Inject the same " +
        "impairments at the bridge's port instead, in both directions: " +
        "`pno bridge [--loss PCT] [--delay MS] [--jitter MS] [--reorder PCT] [--duplicate PCT]` on a " +
        "clean `pno wire up`. The kernel twin link (pnok0/pnok1) then stays clean.",
    );
    this.name = "NetemUnavailableError";
  }
}

/**
 * Sets (or with no impairments, clears) tc netem on the client ends of both links. Throws
 * NetemUnavailableError when the kernel lacks sch_netem (the bridge's fault injector,
 * `pno bridge --loss/--delay/--reorder/--duplicate`, does the same at the port).
 */
export async function impair(w: WireConfig, imp: Impairments): Promise<void> {
  const args: string[] = [];
  if (imp.delayMs) args.push("delay", `${imp.delayMs}ms`);
  if (imp.lossPercent) args.push("loss", `${imp.lossPercent}%`);
  if (imp.duplicatePercent) args.push("duplicate", `${imp.duplicatePercent}%`);
  if (imp.reorderPercent) {
    if (!imp.delayMs) throw new Error("netem reorders only delayed packets: give --delay too");
    args.push("reorder", `${imp.reorderPercent}%`);
  }
  for (const dev of [w.client, ...(w.twin ? [w.twin.client] : [])]) {
    await sh(inNs(w, "tc", "qdisc", "del", "dev", dev, "root"), true);
    if (args.length > 0) {
      try {
        await sh(
          inNs(w, "tc", "qdisc", "add", "dev", dev, "root", "netem", "limit", "100000", ...args),
        );
      } catch (err) {
        const message = (err as Error).message;
        if (NO_QDISC.test(message)) {
          const detail = message.slice(message.lastIndexOf(": ") + 2).replace(/\.$/, "");
          throw new NetemUnavailableError(detail);
        }
        throw err;
      }
    }
  }
}

/** Removes everything `wireUp` made; quiet about what is already gone. */
export async function wireDown(w: WireConfig): Promise<void> {
  await sh(["ip", "netns", "del", w.ns], true);
  await sh(["ip", "link", "del", w.bridge], true);
  if (w.twin) await sh(["ip", "link", "del", w.twin.host], true);
}

export const WIRE_HELP = `pno wire: create or remove the emulated wire

Usage: pno wire up [--loss PCT] [--delay MS] [--reorder PCT] [--duplicate PCT]
       pno wire down

up    namespace pno-client with veth pno0 (10.88.0.1/24); its peer pno1 stays in the host,
      up and address-less, for the bridge's DPDK port (the bridge answers as 10.88.0.2).
      The kernel path's twin: pnok0 (10.89.0.1/24) in pno-client, pnok1 (10.89.0.2/24) on
      the host. Offloads are off on every end, so frames are complete and MTU-sized.
      --loss, --delay, --reorder, --duplicate set tc netem on pno0 and pnok0 alike.
      A kernel without sch_netem (CONFIG_NET_SCH_NETEM unset, as on this machine and CI)
      refuses them, and nothing is created: run \`pno wire up\` plain and give the same
      flags to the bridge instead (\`pno bridge --loss 1 --delay 10 --reorder 25\`): its
      fault injector impairs pno1's frames both ways, and the twin link stays clean.
down  removes all of it.`;

/** `pno wire` CLI. */
export async function wireMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["loss", "delay", "reorder", "duplicate"],
    boolean: ["help"],
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
    await wireUp(DEFAULT_WIRE, {
      lossPercent: Number(flags.loss ?? 0),
      delayMs: Number(flags.delay ?? 0),
      reorderPercent: Number(flags.reorder ?? 0),
      duplicatePercent: Number(flags.duplicate ?? 0),
    });
    console.log(
      "wire up: pno-client/pno0 10.88.0.1/24 <-> pno1 (bridge, 10.88.0.2); " +
        "twin pno-client/pnok0 10.89.0.1/24 <-> pnok1 10.89.0.2/24",
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
