/**
 * The proxy's admission policy: which users may offload, and how much each application may
 * take of the bridge.
 *
 * A policy file is JSON:
 *
 * ```json
 * {
 *   "uids": [0, 1000],
 *   "sockets": 4096,
 *   "memory": "1GiB",
 *   "perUid": { "1000": { "sockets": 64, "memory": "64MiB" } }
 * }
 * ```
 *
 * - `uids`: the users whose applications are admitted (SO_PEERCRED); absent: every user.
 * - `sockets`: offloaded sockets per application (the region's socket table); 0 refuses.
 * - `memory`: bytes per application, a number or a string such as "64MiB": the size of its
 *   region, which holds its rings (sealed: the region cannot grow past it). A limit below the
 *   bridge's region lowers the socket count until the region fits.
 * - `perUid`: the same limits for one user, over the ones above.
 *
 * Limits never raise what the bridge offers (its region parameters, from BRIDGE_INFO).
 *
 * @module
 */
import { computeLayout, type RegionParams } from "@pno/rings";

/** What one application may take; undefined: as much as the bridge offers. */
export interface Limits {
  /** Offloaded sockets (0 refuses the application). */
  readonly sockets?: number;
  /** Bytes of region. */
  readonly memory?: number;
}

/** A parsed policy. */
export interface Policy {
  /** Users admitted; null: every user. */
  readonly uids: readonly number[] | null;
  /** Limits of every application. */
  readonly limits: Limits;
  /** Limits of one user's applications, over `limits`. */
  readonly perUid: ReadonlyMap<number, Limits>;
}

/** Every user admitted, no limit but the bridge's. */
export const OPEN_POLICY: Policy = { uids: null, limits: {}, perUid: new Map() };

/** An admitted application's region parameters and the limits that shaped them. */
export interface Admission {
  /** Parameters of the application's region. */
  readonly params: RegionParams;
  /** Sockets it may have offloaded at once. */
  readonly sockets: number;
  /** Bytes of its region. */
  readonly memory: number;
}

const UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
};

/**
 * Bytes from a number or a string with a binary unit ("64MiB", "1g", "4096").
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parseBytes } from "./policy.ts";
 * assertEquals(parseBytes("64MiB"), 64 * 1024 * 1024);
 * ```
 */
export function parseBytes(value: unknown, what = "memory"): number {
  if (typeof value === "number") {
    if (Number.isSafeInteger(value) && value >= 0) return value;
  } else if (typeof value === "string") {
    const m = value.trim().match(/^(\d+(?:\.\d+)?)\s*([a-z]*)$/i);
    const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
    if (m && unit !== undefined) return Math.floor(Number(m[1]) * unit);
  }
  throw new Error(`${what}: ${JSON.stringify(value)} is not a size (bytes, or e.g. "64MiB")`);
}

function count(value: unknown, what: string): number {
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return value;
  throw new Error(`${what}: ${JSON.stringify(value)} is not a whole number >= 0`);
}

function limits(value: unknown, where: string): Limits {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new Error(`${where}: expected an object`);
  }
  const o = value as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (key !== "sockets" && key !== "memory" && !(where === "policy" && isTopKey(key))) {
      throw new Error(`${where}: unknown key "${key}"`);
    }
  }
  return {
    ...(o.sockets !== undefined ? { sockets: count(o.sockets, `${where}.sockets`) } : {}),
    ...(o.memory !== undefined ? { memory: parseBytes(o.memory, `${where}.memory`) } : {}),
  };
}

function isTopKey(key: string): boolean {
  return key === "uids" || key === "perUid";
}

/**
 * Parses a policy (the JSON text of a policy file, or its value); throws naming what is wrong.
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { parsePolicy } from "./policy.ts";
 * const p = parsePolicy('{"uids": [1000], "perUid": {"1000": {"sockets": 8}}}');
 * assertEquals(p.uids, [1000]);
 * assertEquals(p.perUid.get(1000), { sockets: 8 });
 * ```
 */
export function parsePolicy(input: string | unknown): Policy {
  let value = input;
  if (typeof input === "string") {
    try {
      value = JSON.parse(input);
    } catch (err) {
      throw new Error(`policy is not JSON: ${(err as Error).message}`);
    }
  }
  const top = limits(value, "policy");
  const o = value as Record<string, unknown>;
  let uids: number[] | null = null;
  if (o.uids !== undefined) {
    if (!Array.isArray(o.uids)) throw new Error("policy.uids: expected a list of user ids");
    uids = o.uids.map((u, i) => count(u, `policy.uids[${i}]`));
  }
  const perUid = new Map<number, Limits>();
  if (o.perUid !== undefined) {
    if (typeof o.perUid !== "object" || o.perUid === null || Array.isArray(o.perUid)) {
      throw new Error("policy.perUid: expected an object keyed by user id");
    }
    for (const [key, v] of Object.entries(o.perUid)) {
      if (!/^\d+$/.test(key)) throw new Error(`policy.perUid: "${key}" is not a user id`);
      perUid.set(Number(key), limits(v, `policy.perUid.${key}`));
    }
  }
  return { uids, limits: top, perUid };
}

/** Reads and parses a policy file. */
export async function loadPolicy(path: string): Promise<Policy> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw new Error(`policy ${path}: ${(err as Error).message}`);
  }
  try {
    return parsePolicy(text);
  } catch (err) {
    throw new Error(`policy ${path}: ${(err as Error).message}`);
  }
}

function regionBytes(params: RegionParams): number {
  return computeLayout(params).totalSize;
}

function mib(n: number): string {
  return n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : `${n} bytes`;
}

/**
 * Admits or refuses an application of user `uid` under `policy`, given the bridge's region
 * parameters. Returns its region parameters, or why it is refused (a sentence for the user).
 *
 * @example
 * ```ts
 * import { assertEquals } from "@std/assert";
 * import { admit, parsePolicy } from "./policy.ts";
 * const bridge = { maxThreads: 8, maxWaiters: 8, maxProcs: 4, maxSockets: 1024, cmdSlots: 64,
 *   cplSlots: 64, evSlots: 256, txBytes: 65536, rxBytes: 65536 };
 * const a = admit(parsePolicy({ sockets: 16 }), 1000, bridge);
 * assertEquals(typeof a === "string" ? a : a.sockets, 16);
 * ```
 */
export function admit(policy: Policy, uid: number, bridge: RegionParams): Admission | string {
  if (policy.uids !== null && !policy.uids.includes(uid)) {
    return `uid ${uid} is not allowed to offload by the proxy's policy (allowed: ${
      policy.uids.length > 0 ? policy.uids.join(", ") : "nobody"
    })`;
  }
  const l = { ...policy.limits, ...policy.perUid.get(uid) };
  const sockets = Math.min(l.sockets ?? bridge.maxSockets, bridge.maxSockets);
  if (sockets < 1) {
    return `the proxy's policy allows uid ${uid} no offloaded sockets (sockets: ${sockets})`;
  }
  let params: RegionParams = { ...bridge, maxSockets: sockets };
  if (l.memory !== undefined && regionBytes(params) > l.memory) {
    const smallest = regionBytes({ ...params, maxSockets: 1 });
    if (smallest > l.memory) {
      return `the proxy's policy gives uid ${uid} ${mib(l.memory)} of memory, less than the ` +
        `smallest region (${mib(smallest)}, one socket)`;
    }
    // The largest socket count whose region fits: the size grows with the count.
    let lo = 1, hi = sockets;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (regionBytes({ ...params, maxSockets: mid }) <= l.memory) lo = mid;
      else hi = mid - 1;
    }
    params = { ...params, maxSockets: lo };
  }
  return { params, sockets: params.maxSockets, memory: regionBytes(params) };
}
