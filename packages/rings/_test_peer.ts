/**
 * The child process of the two-process tests: plays the host (application) side of a region
 * shared with the parent test process. Prints one JSON line with what it saw.
 *
 * Usage: deno run -A --unstable-ffi _test_peer.ts <mode> ...
 * - control <socket path> <version>
 * - stream <region path> <socket id> <bytes> <seed>
 * - desc <region path> <thread> <count> <seed>
 *
 * @module
 */

import { createHash } from "node:crypto";
import { hostGRings, hostSRings } from "./attach.ts";
import { requestRegion } from "./control.ts";
import { CMD_DATA, DATA_REQ, DESC_BODY, readReqId, writeHeader } from "./descriptors.ts";
import { DESC_SIZE } from "./desc_ring.ts";
import { sockOffset } from "./layout.ts";
import { closeRegion, mapRegionFd, openRegionPath } from "./region.ts";
import { checkPattern, fillPattern, jitter, patternByte, Rng } from "./_test_pattern.ts";

const [mode, ...args] = Deno.args;
const deadline = Date.now() + 60_000;

function out(v: unknown): void {
  console.log(JSON.stringify(v));
}

if (mode === "control") {
  try {
    const grant = await requestRegion(args[0], Number(args[1]));
    const region = mapRegionFd(grant.fd);
    const marker = new DataView(region.buffer).getUint32(sockOffset(region.layout, 0), true);
    // Answer through the shared memory: the parent reads our pid there.
    new DataView(region.buffer).setUint32(sockOffset(region.layout, 1), Deno.pid, true);
    out({
      ok: true,
      marker,
      params: region.layout.params,
      totalSize: grant.totalSize,
      serverPid: grant.server.pid,
    });
    closeRegion(region);
  } catch (e) {
    out({ ok: false, error: (e as Error).message });
  }
} else if (mode === "stream") {
  const [path, sockArg, totalArg, seedArg] = args;
  const region = openRegionPath(path);
  const { tx, rx } = hostSRings(region.buffer, region.layout, Number(sockArg));
  const total = Number(totalArg);
  const rng = new Rng(Number(seedArg));
  const txHash = createHash("sha256");
  const rxHash = createHash("sha256");
  const chunk = new Uint8Array(70000);
  let written = 0;
  let read = 0;
  let rxBad = -1;
  while ((written < total || read < total) && Date.now() < deadline) {
    if (written < total) {
      const len = Math.min(total - written, 1 + rng.below(rng.below(4) === 0 ? 65536 : 300));
      fillPattern(chunk, 0, written, len);
      const n = tx.write(chunk, 0, len);
      if (n > 0) txHash.update(chunk.subarray(0, n));
      written += Math.max(n, 0);
    }
    jitter(rng);
    if (read < total) {
      const len = 1 + rng.below(rng.below(4) === 0 ? 65536 : 300);
      const n = rx.read(chunk, 0, len);
      if (n > 0) {
        const bad = checkPattern(chunk, 0, read, n);
        if (bad >= 0 && rxBad < 0) rxBad = read + bad;
        rxHash.update(chunk.subarray(0, n));
        read += n;
      }
    }
  }
  out({
    written,
    read,
    rxBad,
    txSha: txHash.digest("hex"),
    rxSha: rxHash.digest("hex"),
    faults: tx.faults + rx.faults,
  });
  closeRegion(region);
} else if (mode === "desc") {
  const [path, threadArg, countArg, seedArg] = args;
  const region = openRegionPath(path);
  const { commands, completions } = hostGRings(region.buffer, region.layout, Number(threadArg));
  const count = Number(countArg);
  const rng = new Rng(Number(seedArg));
  let sent = 0;
  let got = 0;
  let bad = -1;
  while ((sent < count || got < count) && Date.now() < deadline) {
    const k = commands.reserve(Math.min(count - sent, 1 + rng.below(40)));
    for (let i = 0; i < k; i++) {
      const at = commands.slotOffset(i);
      const seq = sent + i;
      writeHeader(commands.view, at, CMD_DATA, seq % 7, seq >>> 3, seq);
      commands.view.setUint32(at + DATA_REQ, Math.imul(seq, 0x9e3779b1) >>> 0, true);
      for (let b = DATA_REQ + 4; b < DESC_SIZE; b++) {
        commands.view.setUint8(at + b, patternByte(seq + b));
      }
    }
    if (k > 0) commands.publish(k);
    sent += Math.max(k, 0);
    jitter(rng);
    const n = completions.peek(1 + rng.below(40));
    for (let i = 0; i < n; i++) {
      const at = completions.slotOffset(i);
      const seq = got + i;
      if (readReqId(completions.view, at) !== seq && bad < 0) bad = seq;
      for (let b = DESC_BODY; b < DESC_SIZE; b++) {
        if (completions.view.getUint8(at + b) !== patternByte(seq * 3 + b) && bad < 0) bad = seq;
      }
    }
    if (n > 0) completions.release(n);
    got += Math.max(n, 0);
  }
  out({ sent, got, bad, faults: commands.faults + completions.faults });
  closeRegion(region);
} else {
  out({ ok: false, error: `unknown mode ${mode}` });
  Deno.exit(2);
}
