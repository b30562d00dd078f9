/**
 * The shim's offload policy file (PNO_POLICY): which sockets of a program go to PnO. The shim
 * reads it in C when the program first binds, listens or connects; `pno run --policy FILE`
 * checks it here first, so a mistake is reported before the program starts rather than as a
 * warning in its output.
 *
 * One directive a line, `#` starts a comment:
 *
 * | line                        | meaning                                                        |
 * | --------------------------- | -------------------------------------------------------------- |
 * | `offload NET/LEN`           | connect() to NET/LEN goes to PnO (default: the bridge's /24)   |
 * | `kernel NET/LEN`            | connect() to NET/LEN stays in the kernel (wins over offload)   |
 * | `listen any\|bridge\|none`    | bind/listen offloads for INADDR_ANY and the bridge's address (any, the default), only the bridge's address, or never |
 * | `kernel-port PORT`          | bind, listen and connect on PORT stay in the kernel            |
 * | `loopback on\|off`           | an offloaded INADDR_ANY listener also answers on 127.0.0.1     |
 * | `required yes\|no`           | exit (status 111) when the bridge cannot be reached            |
 * | `spin-us N`                 | a waiter looks for work N µs before it sleeps                  |
 *
 * Loopback, AF_UNIX, UDP and IPv6 sockets always stay in the kernel.
 *
 * @example
 * ```ts
 * import { checkPolicy } from "./policy.ts";
 * const problems = checkPolicy("offload 10.88.0.0/24\nkernel-port 6380\nloopback off\n");
 * if (problems.length !== 0) throw new Error(problems.join("; "));
 * ```
 * @module
 */

const CIDR = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:\/(\d{1,2}))?$/;

function validCidr(text: string): boolean {
  const m = CIDR.exec(text);
  if (m === null) return false;
  const octets = m.slice(1, 5).map(Number);
  const len = m[5] === undefined ? 32 : Number(m[5]);
  return octets.every((o) => o <= 255) && len <= 32;
}

const CHECKS: Record<string, (value: string) => boolean> = {
  offload: validCidr,
  kernel: validCidr,
  listen: (v) => v === "any" || v === "bridge" || v === "none",
  "kernel-port": (v) => /^\d+$/.test(v) && Number(v) > 0 && Number(v) < 65536,
  loopback: (v) => v === "on" || v === "off",
  required: (v) => v === "yes" || v === "no",
  "spin-us": (v) => /^\d+$/.test(v) && Number(v) <= 1_000_000,
};

/** The shim takes at most this many network lines and kernel ports (as it reads them). */
const MAX_NETS = 32, MAX_PORTS = 32;

/** Returns what is wrong with a policy file's text, one message per problem (empty: fine). */
export function checkPolicy(text: string): string[] {
  const problems: string[] = [];
  let nets = 0, ports = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/#.*/, "").trim();
    if (line === "") return;
    const words = line.split(/\s+/);
    const check = CHECKS[words[0]];
    if (check === undefined) {
      problems.push(`line ${i + 1}: unknown directive ${words[0]}`);
    } else if (words.length !== 2 || !check(words[1])) {
      problems.push(`line ${i + 1}: bad value for ${words[0]}: ${words.slice(1).join(" ")}`);
    } else if (words[0] === "offload" || words[0] === "kernel") {
      if (++nets > MAX_NETS) problems.push(`line ${i + 1}: more than ${MAX_NETS} networks`);
    } else if (words[0] === "kernel-port") {
      if (++ports > MAX_PORTS) problems.push(`line ${i + 1}: more than ${MAX_PORTS} ports`);
    }
  });
  return problems;
}
