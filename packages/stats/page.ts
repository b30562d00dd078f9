/**
 * The stats page: a memfd the bridge writes its counters into with plain stores, and that the
 * proxy (or the bridge's own loopback server) maps and reads. Nothing on the data path waits
 * for a reader: each section carries a sequence word that the writer makes odd before it
 * stores and even after (a seqlock, as Linux's `seqcount_t`), and a reader copies the section
 * and retries while the sequence was odd or moved. The writer takes no lock and allocates
 * nothing; a reader can never block it.
 *
 * The page describes itself: at creation the bridge writes a JSON schema (the field names of
 * every section and where each section lives) into the header area, so a reader built from
 * another commit still reads the fields it knows by name. Values are float64 (integers are
 * exact below 2^53).
 *
 * Layout (bytes):
 *
 * ```text
 * 0     u32 magic "PNOS", u32 version, u32 schema length, u32 reserved
 * 64    schema JSON (UTF-8), at most SCHEMA_MAX bytes
 * SECTIONS_AT  the global section, then one section per queue, each SECTION_ALIGN aligned:
 *       +0 u32 sequence (odd while written)   +4 u32 connection-table requests (readers bump)
 *       +8 f64 values...
 * ```
 *
 * A queue section's values are: its fields (`schema.queue`), then `maxApps` application rows
 * of `schema.app` fields, then `maxConns` connection rows of `schema.conn` fields. The bridge
 * writes the connection rows only when a reader asked (the request word moved), so that an
 * unwatched bridge never walks its connection table.
 *
 * @module
 */

/** "PNOS" little-endian. */
export const STATS_MAGIC = 0x534f4e50;
/** Version of the page layout (not of the schema's field lists, which describe themselves). */
export const STATS_VERSION = 1;
const SCHEMA_AT = 64;
const SCHEMA_MAX = 16384 - SCHEMA_AT;
const SECTIONS_AT = 16384;
const SECTION_ALIGN = 4096;
/** Bytes before a section's values: the sequence and the request word. */
const SECTION_HEAD = 8;

/** Values every queue section starts with, before its counters. */
export const QUEUE_HEAD_FIELDS = [
  "updatedMs",
  "apps",
  "connRows",
  "connTotal",
  "connServed",
] as const;

/** Values the global section starts with. */
export const GLOBAL_HEAD_FIELDS = ["updatedMs"] as const;

/** The page's self-description, written once by the bridge. */
export interface StatsSchema {
  version: number;
  /** The bridge's pid, address and MAC, and when it started (ms since the epoch). */
  bridgePid: number;
  address: string;
  mac: string;
  startedAt: number;
  /** How often the bridge publishes, in ms. */
  intervalMs: number;
  queues: number;
  maxApps: number;
  maxConns: number;
  /** Field names of each kind of row, in value order. */
  global: string[];
  queue: string[];
  app: string[];
  conn: string[];
  /** TCP state names by number (the `state` of a connection row). */
  states: string[];
  /** Byte offsets of the global section and of each queue's. */
  globalAt: number;
  queueAt: number[];
}

/** Schema without the parts the page computes. */
export type SchemaInput = Omit<StatsSchema, "version" | "globalAt" | "queueAt">;

/** Places the sections of a page for `input`; returns the full schema and the page size. */
export function planPage(input: SchemaInput): { schema: StatsSchema; size: number } {
  const align = (n: number) => Math.ceil(n / SECTION_ALIGN) * SECTION_ALIGN;
  const globalAt = SECTIONS_AT;
  let at = globalAt + align(SECTION_HEAD + 8 * input.global.length);
  const queueBytes = align(
    SECTION_HEAD +
      8 * (input.queue.length + input.maxApps * input.app.length +
          input.maxConns * input.conn.length),
  );
  const queueAt: number[] = [];
  for (let q = 0; q < input.queues; q++, at += queueBytes) queueAt.push(at);
  return { schema: { ...input, version: STATS_VERSION, globalAt, queueAt }, size: at };
}

/** Writes the header and schema of a fresh page (zeroed memory of `planPage`'s size). */
export function writeHeader(buffer: ArrayBufferLike, schema: StatsSchema): void {
  const text = new TextEncoder().encode(JSON.stringify(schema));
  if (text.length > SCHEMA_MAX) throw new Error(`stats schema of ${text.length} bytes`);
  new Uint8Array(buffer, SCHEMA_AT, text.length).set(text);
  const head = new Uint32Array(buffer, 0, 4);
  head[1] = STATS_VERSION;
  head[2] = text.length;
  Atomics.store(head, 0, STATS_MAGIC);
}

/** Reads and checks the schema of a mapped page; a string says what is wrong. */
export function readHeader(buffer: ArrayBufferLike): StatsSchema | string {
  if (buffer.byteLength < SECTIONS_AT) return `stats page of ${buffer.byteLength} bytes`;
  const head = new Uint32Array(buffer, 0, 4);
  if (Atomics.load(head, 0) !== STATS_MAGIC) return "not a stats page (bad magic)";
  if (head[1] !== STATS_VERSION) return `stats page version ${head[1]}, reader ${STATS_VERSION}`;
  const len = head[2];
  if (len === 0 || len > SCHEMA_MAX) return `stats schema length ${len}`;
  try {
    const schema = JSON.parse(
      new TextDecoder().decode(new Uint8Array(buffer, SCHEMA_AT, len)),
    ) as StatsSchema;
    const end = schema.queueAt.length > 0
      ? schema.queueAt[schema.queueAt.length - 1]
      : schema.globalAt;
    if (end >= buffer.byteLength) return "stats schema places sections past the page";
    return schema;
  } catch (err) {
    return `stats schema: ${(err as Error).message}`;
  }
}

/**
 * One section as its single writer sees it: `begin()`, plain stores into `values`, `end()`.
 * Allocates nothing after construction.
 */
export class SectionWriter {
  readonly values: Float64Array;
  private readonly words: Int32Array;

  constructor(buffer: ArrayBufferLike, at: number, count: number) {
    this.words = new Int32Array(buffer, at, 2);
    this.values = new Float64Array(buffer, at + SECTION_HEAD, count);
  }

  /** Readers retry from here until `end()`. */
  begin(): void {
    Atomics.add(this.words, 0, 1);
  }

  end(): void {
    Atomics.add(this.words, 0, 1);
  }

  /** The readers' connection-table request count (theirs to write: only compared). */
  requests(): number {
    return Atomics.load(this.words, 1);
  }
}

/** One section as a reader sees it: a consistent copy, taken without stopping the writer. */
export class SectionReader {
  private readonly words: Int32Array;
  private readonly live: Float64Array;
  readonly copy: Float64Array;

  constructor(buffer: ArrayBufferLike, at: number, count: number) {
    this.words = new Int32Array(buffer, at, 2);
    this.live = new Float64Array(buffer, at + SECTION_HEAD, count);
    this.copy = new Float64Array(count);
  }

  /** Copies the first `count` values consistently; false if the writer kept it busy. */
  read(count = this.live.length): boolean {
    for (let attempt = 0; attempt < 1000; attempt++) {
      const before = Atomics.load(this.words, 0);
      if (before & 1) continue;
      this.copy.set(count === this.live.length ? this.live : this.live.subarray(0, count));
      if (Atomics.load(this.words, 0) === before) return true;
    }
    return false;
  }

  /** Asks the writer to fill the connection rows; returns the request number. */
  requestConnections(): number {
    return Atomics.add(this.words, 1, 1) + 1;
  }
}

/** Turns row `r` of `names`-shaped values at `base` of `values` into an object. */
export function rowObject(
  values: Float64Array,
  base: number,
  names: readonly string[],
): Record<string, number> {
  const out: Record<string, number> = {};
  for (let i = 0; i < names.length; i++) out[names[i]] = values[base + i];
  return out;
}
