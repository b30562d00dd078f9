/**
 * Round-trip time estimation and the retransmission timeout (RFC 6298, RFC 7323 §4).
 *
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import { TICK_MS } from "./timer_wheel.ts";
import type { TcpSocket } from "./socket.ts";

export function rttSample(e: TcpEngine, s: TcpSocket, r: number): void {
  if (!(r >= 0) || r > 3600000) return;
  if (r < s.minRtt) s.minRtt = r;
  s.lastRtt = r;
  if (s.srtt === 0) {
    s.srtt = r > 0 ? r : 0.5;
    s.rttvar = r / 2;
  } else {
    s.rttvar = 0.75 * s.rttvar + 0.25 * Math.abs(s.srtt - r);
    s.srtt = 0.875 * s.srtt + 0.125 * r;
  }
  let rto = s.srtt + Math.max(TICK_MS, 4 * s.rttvar);
  if (rto < e.minRto) rto = e.minRto;
  if (rto > e.maxRto) rto = e.maxRto;
  s.rto = rto;
}
