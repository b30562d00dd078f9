/**
 * The TCP engine's IpLink over the interface: segments are written straight into a reserved
 * device frame (an mbuf), behind room for the Ethernet and IPv4 headers the interface adds.
 *
 * @module
 */
import type { Interface } from "./iface.ts";
import type { IpLink } from "./tcp/link.ts";
import { IP_PROTO_TCP } from "./wire/ipv4.ts";

export class InterfaceTcpLink implements IpLink {
  readonly mtu: number;

  constructor(private readonly iface: Interface) {
    this.mtu = iface.ipPayloadRoom + 20;
  }

  get buf(): Uint8Array {
    return this.iface.device.txBuf;
  }

  reserve(): number {
    return this.iface.reserveIp();
  }

  send(srcIp: number, dstIp: number, tcpLen: number): void {
    this.iface.sendIp(srcIp, dstIp, IP_PROTO_TCP, tcpLen, this.iface.nowMs);
  }
}
