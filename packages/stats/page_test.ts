import { assertEquals, assertThrows } from "@std/assert";
import { planPage, readHeader, SectionReader, SectionWriter, writeHeader } from "./page.ts";
import { StatsReader } from "./reader.ts";
import { metricsText } from "./metrics.ts";

const input = {
  bridgePid: 1,
  address: "10.0.0.2/24",
  mac: "02:00:00:00:00:01",
  startedAt: 0,
  intervalMs: 100,
  queues: 2,
  maxApps: 2,
  maxConns: 3,
  global: ["updatedMs", "port.ipackets", "cpuUserMs", "cpuSystemMs", "rssBytes"],
  queue: ["updatedMs", "apps", "connRows", "connTotal", "connServed", "cpuMs", "tcp.segsIn"],
  app: ["id", "pid"],
  conn: ["app", "slot", "ino", "localIp", "localPort", "peerIp", "peerPort", "state"],
  states: ["CLOSED", "LISTEN", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED"],
};

Deno.test("stats page: a reader sees what the writers published, per queue, summed", () => {
  const { schema, size } = planPage(input);
  const buf = new SharedArrayBuffer(size);
  writeHeader(buf, schema);
  const count = 7 + 2 * 2 + 3 * 8;
  const q = schema.queueAt.map((at) => new SectionWriter(buf, at, count));
  q.forEach((w, i) => {
    w.begin();
    w.values[6] = 10 * (i + 1); // tcp.segsIn
    w.end();
  });
  const snap = new StatsReader(buf).snapshot();
  assertEquals(snap.tcp.segsIn, 30);
  assertEquals(snap.workers.map((w) => w.tcp.segsIn), [10, 20]);
  assertEquals(metricsText(snap).includes('pno_tcp_segs_in_total{worker="1"} 20\n'), true);
});

Deno.test("stats page: a reader never takes a section the writer is in the middle of", () => {
  const { schema, size } = planPage(input);
  const buf = new SharedArrayBuffer(size);
  writeHeader(buf, schema);
  const w = new SectionWriter(buf, schema.queueAt[0], 7);
  const r = new SectionReader(buf, schema.queueAt[0], 7);
  w.begin();
  w.values[6] = 5;
  assertEquals(r.read(), false); // odd sequence: retried, then given up
  w.end();
  assertEquals(r.read(), true);
  assertEquals(r.copy[6], 5);
});

Deno.test("stats page: connection rows come when a reader asks for them", async () => {
  const { schema, size } = planPage({ ...input, queues: 1 });
  const buf = new SharedArrayBuffer(size);
  writeHeader(buf, schema);
  const w = new SectionWriter(buf, schema.queueAt[0], 7 + 2 * 2 + 3 * 8);
  const reader = new StatsReader(buf);
  // The writer serves requests as the bridge's loop does, on its own schedule.
  const timer = setInterval(() => {
    const asked = w.requests();
    w.begin();
    w.values[2] = 1; // connRows
    w.values[3] = 1; // connTotal
    w.values[4] = asked; // connServed
    w.values.set([0, 0, 0, 0x0a000002, 7, 0x0a000001, 40000, 4], 11);
    w.end();
  }, 20);
  try {
    const page = await reader.connections();
    assertEquals(page.rows.length, 1);
    assertEquals(page.rows[0].local, "10.0.0.2:7");
    assertEquals(page.rows[0].remote, "10.0.0.1:40000");
    assertEquals(page.rows[0].state, "ESTABLISHED");
    assertEquals((await reader.connections({ state: "LISTEN" })).rows.length, 0);
  } finally {
    clearInterval(timer);
  }
});

Deno.test("stats page: a page that is not one is refused with the reason", () => {
  assertEquals(readHeader(new ArrayBuffer(16384)), "not a stats page (bad magic)");
  assertThrows(() => new StatsReader(new ArrayBuffer(100)), Error, "stats page of 100 bytes");
});
