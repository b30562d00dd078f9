/**
 * The connection table: 4-tuple -> socket, open addressing with linear probing and
 * backward-shift deletion, over parallel typed arrays so that a lookup touches numbers only.
 *
 * The hash is HalfSipHash under a secret key (isn.ts): a remote peer chooses its address and
 * port, and with an unkeyed hash it could aim thousands of connections at one probe chain and
 * turn every lookup into a scan (the hash-flooding attack Linux answers with a keyed jhash of
 * the 4-tuple, `inet_ehashfn`).
 *
 * @module
 */

import { hash4Masked } from "./isn.ts";

/** What the table needs of an entry: its 4-tuple and the slot it occupies (-1 when out). */
export interface TableEntry {
  localIp: number;
  localPort: number;
  remoteIp: number;
  remotePort: number;
  slot: number;
}

/** An open-addressed, keyed hash table of connections; grows at half full. */
export class ConnTable<T extends TableEntry> {
  private mask = 0;
  private local = new Int32Array(0);
  private remote = new Int32Array(0);
  private ports = new Int32Array(0);
  private home = new Int32Array(0);
  private entries: (T | null)[] = [];
  /** Entries in the table. */
  count = 0;
  /**
   * The entry the last lookup found, by its 4-tuple: a bulk flow's segments come in runs of
   * the same connection, and the keyed hash is the lookup's cost (HalfSipHash, 1.2% of the
   * bridge's samples in a bulk discard), as Linux's early demux keeps the socket of a flow.
   */
  private lastEntry: T | null = null;
  private lastLocal = 0;
  private lastRemote = 0;
  private lastPorts = 0;

  /** `size` is rounded up to a power of two (at least 16); `k0`, `k1` key the hash. */
  constructor(size: number, private readonly k0: number, private readonly k1: number) {
    let n = 16;
    while (n < size) n *= 2;
    this.init(n);
  }

  /** Slots in the table (a power of two). */
  get capacity(): number {
    return this.mask + 1;
  }

  private init(size: number): void {
    this.mask = size - 1;
    this.local = new Int32Array(size);
    this.remote = new Int32Array(size);
    this.ports = new Int32Array(size);
    this.home = new Int32Array(size);
    this.entries = new Array(size).fill(null);
  }

  /** The home slot of a 4-tuple. */
  hash(lip: number, lport: number, rip: number, rport: number): number {
    return hash4Masked(this.k0, this.k1, lip, rip, (lport << 16) | rport, 3, this.mask);
  }

  /** The entry for a 4-tuple, or null. */
  lookup(lip: number, lport: number, rip: number, rport: number): T | null {
    const ports = (lport << 16) | rport;
    if (
      this.lastEntry !== null && this.lastPorts === ports && this.lastRemote === (rip | 0) &&
      this.lastLocal === (lip | 0)
    ) {
      return this.lastEntry;
    }
    const mask = this.mask;
    let i = this.hash(lip, lport, rip, rport);
    for (;;) {
      const s = this.entries[i];
      if (s === null) return null;
      if (
        this.ports[i] === ports && this.remote[i] === (rip | 0) && this.local[i] === (lip | 0)
      ) {
        this.lastEntry = s;
        this.lastLocal = lip | 0;
        this.lastRemote = rip | 0;
        this.lastPorts = ports;
        return s;
      }
      i = (i + 1) & mask;
    }
  }

  /** Adds an entry (its 4-tuple must not be in the table). */
  insert(s: T): void {
    if ((this.count + 1) * 2 > this.mask + 1) this.grow();
    const h = this.hash(s.localIp, s.localPort, s.remoteIp, s.remotePort);
    let i = h;
    while (this.entries[i] !== null) i = (i + 1) & this.mask;
    this.entries[i] = s;
    this.local[i] = s.localIp | 0;
    this.remote[i] = s.remoteIp | 0;
    this.ports[i] = (s.localPort << 16) | s.remotePort;
    this.home[i] = h;
    s.slot = i;
    this.count++;
  }

  /** Removes an entry that is in the table. */
  remove(s: T): void {
    if (s === this.lastEntry) this.lastEntry = null;
    const mask = this.mask;
    let i = s.slot;
    s.slot = -1;
    this.entries[i] = null;
    this.count--;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const m = this.entries[j];
      if (m === null) return;
      const k = this.home[j];
      // Move m back to i if its home is not cyclically within (i, j].
      const inRange = i <= j ? k > i && k <= j : k > i || k <= j;
      if (!inRange) {
        this.entries[i] = m;
        this.local[i] = this.local[j];
        this.remote[i] = this.remote[j];
        this.ports[i] = this.ports[j];
        this.home[i] = k;
        m.slot = i;
        this.entries[j] = null;
        i = j;
      }
    }
  }

  /** The entry in slot `i` (0 <= i < capacity), or null. */
  at(i: number): T | null {
    return this.entries[i];
  }

  private grow(): void {
    const old = this.entries;
    this.init((this.mask + 1) * 2);
    this.count = 0;
    for (const s of old) if (s !== null) this.insert(s);
  }
}
