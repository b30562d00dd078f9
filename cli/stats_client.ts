/**
 * How `pno ls` and `pno stats` find the live stats: `--stats URL` if given, else the proxy's
 * live stats server (http://127.0.0.1:9464/, `pno proxy --stats-address`), else the bridge's
 * own (http://127.0.0.1:7081/live/, `pno bridge --stats-port`). Both serve the same app.
 *
 * @module
 */
import type { ConnectionPage, ConnectionRow, StatsSnapshot } from "@pno/stats";

/** Where the stats are looked for, in order, when no --stats is given. */
export const DEFAULT_STATS_URLS = ["http://127.0.0.1:9464/", "http://127.0.0.1:7081/live/"];

/** A live stats server that answered. */
export interface StatsEndpoint {
  base: string;
  snapshot(): Promise<StatsSnapshot>;
  /** Every row of the connection table (all pages). */
  connections(): Promise<ConnectionRow[]>;
}

async function getJson<T>(url: string, timeoutMs = 3000): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${await res.text()}`);
  return await res.json() as T;
}

/** The first server of `urls` (or `given`) whose /stats answers; throws naming all tried. */
export async function findStats(given?: string): Promise<StatsEndpoint> {
  const urls = given ? [given.endsWith("/") ? given : `${given}/`] : DEFAULT_STATS_URLS;
  const faults: string[] = [];
  for (const base of urls) {
    try {
      await getJson(`${base}stats`, 1500);
      return {
        base,
        snapshot: () => getJson<StatsSnapshot>(`${base}stats`),
        async connections() {
          const rows: ConnectionRow[] = [];
          for (let offset = 0;;) {
            const page = await getJson<ConnectionPage>(
              `${base}connections?limit=1000&offset=${offset}`,
            );
            rows.push(...page.rows);
            offset += page.rows.length;
            if (page.rows.length === 0 || offset >= page.total) return rows;
          }
        },
      };
    } catch (err) {
      faults.push(`${base}: ${(err as Error).message}`);
    }
  }
  throw new Error(
    `no live stats server answered (${faults.join("; ")}); start pno bridge or pno proxy, ` +
      `or give --stats URL`,
  );
}
