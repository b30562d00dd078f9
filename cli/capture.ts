/**
 * `pno capture`: records what a running bridge sends and receives, in pcapng, from the
 * bridge's GET /capture (the bridge filters with BPF compiled by tcpdump and streams the
 * frames; nothing is written on the bridge's side). Ends after --count frames, --seconds, or
 * Ctrl-C; the file is whole blocks at any of these points, so tshark reads it.
 *
 * @module
 */
import { parseArgs } from "@std/cli";

export const CAPTURE_HELP =
  `pno capture: record a running bridge's frames in pcapng (tshark -r FILE)

Usage: pno capture --out FILE.pcapng [--count N] [--filter EXPR] [--seconds S] [--bridge URL]

  --out FILE     the pcapng file to write (truncated)
  --count N      stop after N frames (default: until --seconds or Ctrl-C)
  --filter EXPR  pcap-filter(7) expression, e.g. "tcp port 7" (compiled by tcpdump)
  --seconds S    stop after S seconds
  --bridge URL   the bridge's stats server (pno bridge --stats-port; default http://127.0.0.1:7081)

The bridge must run with a single worker. Frames longer than 2,048 bytes are truncated
(their length is kept); frames lost because the capture could not keep up are counted in
the closing statistics block (isb_ifdrop), never lost from the wire.`;

/** Cuts a byte stream of pcapng blocks (each says its total length at offset 4) into whole blocks. */
export class BlockAssembler {
  private pending = new Uint8Array(0);

  /** Adds `chunk`; returns the whole blocks now complete (possibly none). */
  push(chunk: Uint8Array): Uint8Array {
    const buf = new Uint8Array(this.pending.length + chunk.length);
    buf.set(this.pending);
    buf.set(chunk, this.pending.length);
    let end = 0;
    while (buf.length - end >= 8) {
      const len = new DataView(buf.buffer, end + 4, 4).getUint32(0, true);
      if (len < 12 || len % 4 !== 0) throw new Error(`the bridge sent a block of length ${len}`);
      if (buf.length - end < len) break;
      end += len;
    }
    this.pending = buf.slice(end);
    return buf.subarray(0, end);
  }
}

/** Runs `pno capture`. */
export async function captureMain(args: string[]): Promise<number> {
  const flags = parseArgs(args, {
    string: ["out", "count", "filter", "seconds", "bridge"],
    boolean: ["help"],
    alias: { h: "help" },
    default: { bridge: "http://127.0.0.1:7081" },
    unknown: (arg: string) => {
      throw new Error(`unknown option ${arg}; see pno capture --help`);
    },
  });
  if (flags.help) {
    console.log(CAPTURE_HELP);
    return 0;
  }
  if (!flags.out) throw new Error("--out FILE.pcapng is required; see pno capture --help");
  const query = new URLSearchParams();
  if (flags.count !== undefined) {
    const n = Number(flags.count);
    if (!(Number.isInteger(n) && n >= 1)) throw new Error(`--count ${flags.count}: at least 1`);
    query.set("count", String(n));
  }
  if (flags.filter) query.set("filter", flags.filter);
  const seconds = flags.seconds === undefined ? Infinity : Number(flags.seconds);
  if (!(seconds > 0)) throw new Error(`--seconds ${flags.seconds}: above 0`);
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  Deno.addSignalListener("SIGINT", onSignal);
  const timer = Number.isFinite(seconds) ? setTimeout(onSignal, seconds * 1000) : undefined;
  const base = flags.bridge.replace(/\/$/, "");
  let file: Deno.FsFile | null = null;
  let bytes = 0;
  try {
    const res = await fetch(`${base}/capture?${query}`, { signal: stop.signal });
    if (!res.ok || !res.body) {
      const text = await res.text();
      let why = text;
      try {
        why = JSON.parse(text).error ?? text;
      } catch {
        // plain text
      }
      throw new Error(`the bridge at ${base} refused the capture: ${why}`);
    }
    file = await Deno.open(flags.out, { write: true, create: true, truncate: true });
    try {
      // HTTP may split the stream anywhere: only whole pcapng blocks reach the file, so that
      // stopping at any moment leaves a file tshark reads to its end.
      const blocks = new BlockAssembler();
      for await (const chunk of res.body) {
        const whole = blocks.push(chunk);
        for (let done = 0; done < whole.length;) done += await file.write(whole.subarray(done));
        bytes += whole.length;
      }
    } catch (err) {
      if (!stop.signal.aborted) throw err;
    }
  } catch (err) {
    if (!stop.signal.aborted || file === null) {
      throw new Error(
        (err as Error).name === "TypeError"
          ? `cannot reach the bridge at ${base} (pno bridge --stats-port): ${
            (err as Error).message
          }`
          : (err as Error).message,
      );
    }
  } finally {
    file?.close();
    clearTimeout(timer);
    Deno.removeSignalListener("SIGINT", onSignal);
  }
  console.error(`pno capture: ${bytes} bytes of pcapng in ${flags.out}`);
  return 0;
}
