/**
 * Where the stats routes get their figures: a reader over the bridge's page, or nothing yet
 * (a proxy whose bridge has not answered). Routes answer 503 while there is none.
 *
 * @module
 */
import type { ConnectionPage, ConnectionQuery, StatsSnapshot } from "./reader.ts";

/** The figures the routes serve. */
export interface StatsSource {
  snapshot(): StatsSnapshot;
  connections(query?: ConnectionQuery): Promise<ConnectionPage>;
}

/** Returns the current source, or null while there is none. */
export type SourceRef = () => StatsSource | null;

/** What a route answers when there is no page to read. */
export const NO_BRIDGE = { error: "no bridge stats page (is the bridge running and linked?)" };
