/**
 * Small services on the engine's socket API, for tests and for poking the bridge with real
 * clients: echo (RFC 862, port 7), discard (RFC 863, port 9) and a source on port 19 that sends
 * an endless deterministic stream, byte i being i mod 251 (chargen's port, RFC 864, but a
 * pattern that is easy to verify).
 *
 * @example
 * ```ts
 * import { MemWire } from "./mem_wire.ts";
 * import { TcpEngine } from "./engine.ts";
 * import { startServices } from "./services.ts";
 * const wire = new MemWire();
 * const server = new TcpEngine(wire.b, { localIp: wire.ipB });
 * const client = new TcpEngine(wire.a, { localIp: wire.ipA });
 * wire.attach(client, server);
 * const svc = startServices(server);
 * svc.stop();
 * ```
 * @module
 */

import type { TcpEngine } from "./engine.ts";
import { EV_ACCEPT, LISTEN, type TcpSocket } from "./socket.ts";

export const ECHO_PORT = 7;
export const DISCARD_PORT = 9;
export const SOURCE_PORT = 19;

const CHUNK = 65536;
/** 256 periods of the source pattern: any offset mod 251 starts a long enough run. */
const PATTERN = new Uint8Array(251 * 262);
for (let i = 0; i < PATTERN.length; i++) PATTERN[i] = i % 251;
const PATTERN_RUN = PATTERN.length - 251;

/** The running services. */
export interface Services {
  echo: TcpSocket;
  discard: TcpSocket;
  source: TcpSocket;
  /** Closes the listeners. */
  stop(): void;
}

/** Starts echo (7), discard (9) and source (19) on `engine`. */
export function startServices(engine: TcpEngine, backlog = 128): Services {
  const scratch = new Uint8Array(CHUNK);

  const acceptAll = (l: TcpSocket, pump: (s: TcpSocket) => void) => {
    for (let c = engine.accept(l); c !== null; c = engine.accept(l)) pump(c);
  };

  // Echo: copy what arrives back, never reading more than the send ring can take.
  const echoPump = (s: TcpSocket) => {
    for (;;) {
      const room = engine.sendSpace(s);
      if (room <= 0) break;
      const n = engine.recv(s, scratch, 0, Math.min(room, CHUNK));
      if (n > 0) {
        engine.send(s, scratch, 0, n);
        continue;
      }
      if (n === 0) engine.close(s); // peer finished and everything was echoed
      break;
    }
  };
  const echoEvent = (s: TcpSocket, ev: number) => {
    if (s.state === LISTEN) {
      if (ev & EV_ACCEPT) acceptAll(s, echoPump);
    } else echoPump(s);
  };

  // Discard: read and drop.
  const discardPump = (s: TcpSocket) => {
    for (;;) {
      const n = engine.recv(s, scratch, 0, CHUNK);
      if (n > 0) continue;
      if (n === 0) engine.close(s);
      break;
    }
  };
  const discardEvent = (s: TcpSocket, ev: number) => {
    if (s.state === LISTEN) {
      if (ev & EV_ACCEPT) acceptAll(s, discardPump);
    } else discardPump(s);
  };

  // Source: keep the send ring full with byte i = i mod 251; input is discarded.
  const sourcePump = (s: TcpSocket) => {
    let pos = (s.userData as number | null) ?? 0;
    for (;;) {
      const start = pos % 251;
      const n = engine.send(s, PATTERN, start, PATTERN_RUN);
      if (n <= 0) break;
      pos += n;
    }
    s.userData = pos;
    for (;;) {
      const n = engine.recv(s, scratch, 0, CHUNK);
      if (n > 0) continue;
      if (n === 0) engine.close(s);
      break;
    }
  };
  const sourceEvent = (s: TcpSocket, ev: number) => {
    if (s.state === LISTEN) {
      if (ev & EV_ACCEPT) acceptAll(s, sourcePump);
    } else sourcePump(s);
  };

  const echo = engine.listen(ECHO_PORT, backlog, { onEvent: echoEvent, nodelay: true });
  const discard = engine.listen(DISCARD_PORT, backlog, { onEvent: discardEvent });
  const source = engine.listen(SOURCE_PORT, backlog, { onEvent: sourceEvent });
  return {
    echo,
    discard,
    source,
    stop() {
      engine.close(echo);
      engine.close(discard);
      engine.close(source);
    },
  };
}
