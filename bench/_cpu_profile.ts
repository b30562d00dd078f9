/**
 * A summary of a V8 CPU profile (`deno run --cpu-prof`, a `.cpuprofile` JSON): self time per
 * function, summed over the profile's nodes, as a share of the time the thread was not idle.
 * The poll loop's sleep on its own thread (`WireWake.waitHere`, a blocking FFI call that V8
 * samples as running) counts as idle.
 *
 * @module
 */

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const SLEEPING = new Set(["(idle)", "waitHere"]);

/** The `top` functions by self time, one line each ("12.3% name file:line"). */
export function summariseCpuProfile(json: string, top = 15): string[] {
  const p = JSON.parse(json) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  for (const n of p.nodes) byId.set(n.id, n);
  const self = new Map<string, number>();
  let busy = 0;
  // timeDeltas[i] is the time since the previous sample: it is charged to sample i's node.
  for (let i = 0; i < p.samples.length; i++) {
    const node = byId.get(p.samples[i]);
    const dt = p.timeDeltas[i] ?? 0;
    if (node === undefined || SLEEPING.has(node.callFrame.functionName)) continue;
    const f = node.callFrame;
    const file = f.url.replace(/^file:\/\/.*?\/(packages|ffi|bench|cli)\//, "$1/");
    const key = f.url === ""
      ? f.functionName
      : `${f.functionName || "(anonymous)"} ${file}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + dt);
    busy += dt;
  }
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
  return [
    `${(busy / 1e6).toFixed(2)} s on the thread, not idle; self time:`,
    ...rows.map(([k, us]) => `${((100 * us) / busy).toFixed(1).padStart(5)}% ${k}`),
  ];
}

if (import.meta.main) {
  console.log(summariseCpuProfile(await Deno.readTextFile(Deno.args[0])).join("\n"));
}
