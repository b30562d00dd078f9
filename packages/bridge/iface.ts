/**
 * The interface layer (smoltcp's iface): one Ethernet interface with one IPv4 address.
 *
 * It takes frames from a FrameDevice, answers ARP and ICMP echo itself, hands TCP segments to
 * the transport handler, and offers the transport layer a way to send IPv4 packets written in
 * place into device memory. Every frame is validated before a field is trusted; anything
 * malformed or not for us is counted under a reason and dropped. Nothing here throws on input
 * or allocates per frame.
 *
 * @module
 */
import { ArpCache } from "./arp_cache.ts";
import type { FrameDevice } from "./phy/device.ts";
import { ARP_LEN, ARP_REPLY, ARP_REQUEST, ArpPacket, emitArp } from "./wire/arp.ts";
import {
  emitEthernet,
  ETHERNET_HEADER_LEN,
  EthernetFrame,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
} from "./wire/ethernet.ts";
import {
  emitEchoReply,
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REQUEST,
  ICMP_FRAG_NEEDED,
  IcmpMessage,
} from "./wire/icmp.ts";
import {
  emitIpv4,
  IP_PROTO_ICMP,
  IP_PROTO_TCP,
  IP_PROTO_UDP,
  IPV4_ERROR_NAMES,
  IPV4_HEADER_LEN,
  Ipv4Error,
  Ipv4Packet,
  readU32,
} from "./wire/ipv4.ts";
import { UdpDatagram } from "./wire/udp.ts";

/** Receives a validated TCP segment: `len` bytes at `off` of `buf`. */
export type TcpHandler = (
  buf: Uint8Array,
  off: number,
  len: number,
  src: number,
  dst: number,
  nowMs: number,
) => void;

/**
 * ICMP "fragmentation needed" about a TCP segment we sent: its addresses and ports as we sent
 * them, the sequence number it carried, and the next hop's MTU.
 */
export type TcpPmtuHandler = (
  localIp: number,
  localPort: number,
  remoteIp: number,
  remotePort: number,
  seq: number,
  mtu: number,
) => void;

/** Address configuration of the interface. */
export interface InterfaceConfig {
  mac: Uint8Array;
  ip: number;
  prefix: number;
}

/** Frame and drop counters of the interface. Field names are the names reported in stats. */
export class InterfaceCounters {
  rxFrames = 0;
  rxBytes = 0;
  txFrames = 0;
  txBytes = 0;
  arpRequestsIn = 0;
  arpRepliesIn = 0;
  arpRepliesOut = 0;
  arpRequestsOut = 0;
  icmpEchoIn = 0;
  icmpEchoOut = 0;
  /** ICMP "fragmentation needed" messages about our TCP segments, passed to TCP. */
  icmpFragNeeded = 0;
  tcpIn = 0;
  tcpOut = 0;
  udpIn = 0;
  dropTruncatedFrame = 0;
  dropNotForUs = 0;
  dropUnknownEtherType = 0;
  dropBadArp = 0;
  dropIpv4: Float64Array = new Float64Array(IPV4_ERROR_NAMES.length);
  dropNotOurAddress = 0;
  dropBadIcmp = 0;
  dropIcmpUnhandled = 0;
  dropBadUdp = 0;
  dropUnknownProtocol = 0;
  dropNoTcpHandler = 0;
  dropNoTxBuffer = 0;
  dropNoRoute = 0;
  dropArpUnresolved = 0;
  /** Packets the bridge sent to its own address (an application reaching another's listener). */
  loopbackFrames = 0;
  /** Packets to its own address lost because the loopback queue was full. */
  dropLoopbackFull = 0;
  /** IPv4 packets from the wire claiming our own address as their source. */
  dropSpoofedSource = 0;

  /** A plain-object copy, with IPv4 drops by reason name. */
  snapshot(): Record<string, number | Record<string, number>> {
    const out: Record<string, number | Record<string, number>> = {};
    for (const [key, value] of Object.entries(this)) {
      if (typeof value === "number") out[key] = value;
    }
    const ipv4: Record<string, number> = {};
    IPV4_ERROR_NAMES.forEach((name, i) => {
      if (i > 0) ipv4[name] = this.dropIpv4[i];
    });
    out.dropIpv4 = ipv4;
    return out;
  }

  /** Every frame dropped, whatever the reason. */
  get dropped(): number {
    let sum = this.dropTruncatedFrame + this.dropNotForUs + this.dropUnknownEtherType +
      this.dropBadArp + this.dropNotOurAddress + this.dropBadIcmp + this.dropIcmpUnhandled +
      this.dropBadUdp + this.dropUnknownProtocol + this.dropNoTcpHandler + this.dropLoopbackFull +
      this.dropSpoofedSource;
    for (let i = 1; i < this.dropIpv4.length; i++) sum += this.dropIpv4[i];
    return sum;
  }
}

const ZERO_MAC = new Uint8Array(6);
/**
 * Packets to the bridge's own address (an offloaded HAProxy connecting to an offloaded
 * backend) never reach the wire: they wait in a queue of frames, as Linux's lo does, and are
 * received at the next poll. 256 frames of the MTU: as many as two full bursts of the port.
 */
const LOOPBACK_FRAMES = 256;
const LOOPBACK_FRAME_ROOM = 1514;
const BROADCAST_MAC = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

export class Interface {
  readonly counters = new InterfaceCounters();
  readonly arp: ArpCache;
  /** The transport layer's entry for TCP; unset, TCP segments are counted and dropped. */
  tcpHandler: TcpHandler | null = null;
  /** TCP's entry for path MTU discovery (ICMP "fragmentation needed"). */
  tcpPmtuHandler: TcpPmtuHandler | null = null;
  private readonly eth = new EthernetFrame();
  private readonly arpPkt = new ArpPacket();
  private readonly ip = new Ipv4Packet();
  private readonly icmp = new IcmpMessage();
  private readonly udp = new UdpDatagram();
  private readonly netmask: number;
  private ident = 1;
  /** Offset of the frame reserved by `reserveIp`, -1 when none. */
  private txFrame = -1;
  /** The clock of the current poll round, for sends made from inside it. */
  nowMs = 0;
  /** Frames sent to our own address, received at the next poll (a FIFO of fixed slots). */
  private readonly loopBuf = new Uint8Array(LOOPBACK_FRAMES * LOOPBACK_FRAME_ROOM);
  private readonly loopLen = new Uint16Array(LOOPBACK_FRAMES);
  private loopHead = 0;
  private loopCount = 0;
  private receivingLoopback = false;

  constructor(
    readonly device: FrameDevice,
    readonly config: InterfaceConfig,
    arp?: ArpCache,
  ) {
    this.arp = arp ?? new ArpCache();
    this.netmask = config.prefix === 0 ? 0 : (0xffffffff << (32 - config.prefix)) >>> 0;
  }

  /** Frames the device returned at the last `poll` (a full burst: more may be waiting). */
  lastBurst = 0;

  /** Receives one burst from the device and processes every frame in it; returns its size. */
  poll(nowMs: number): number {
    this.nowMs = nowMs;
    const dev = this.device;
    const n = this.lastBurst = dev.receive();
    for (let i = 0; i < n; i++) this.receive(dev.rxBuf, dev.rxOffset(i), dev.rxLength(i), nowMs);
    return n + this.receiveLoopback(nowMs);
  }

  /** Frames sent to our own address and not received yet: work for the next poll. */
  get loopbackPending(): number {
    return this.loopCount;
  }

  /**
   * Receives the frames queued for our own address before this call; the answers they cause
   * are queued behind them and wait for the next poll, so one poll does bounded work.
   */
  private receiveLoopback(nowMs: number): number {
    const n = this.loopCount;
    this.receivingLoopback = true;
    for (let i = 0; i < n; i++) {
      const at = this.loopHead;
      this.loopHead = (at + 1) % LOOPBACK_FRAMES;
      this.loopCount--;
      this.receive(this.loopBuf, at * LOOPBACK_FRAME_ROOM, this.loopLen[at], nowMs);
    }
    this.receivingLoopback = false;
    return n;
  }

  /**
   * Moves the reserved frame, addressed to ourselves, into the loopback queue; the device
   * slot stays uncommitted and is lent again by the next reserve().
   */
  private loopBack(frame: number, protocol: number, src: number, payloadLength: number): void {
    const c = this.counters;
    if (this.loopCount === LOOPBACK_FRAMES) {
      c.dropLoopbackFull++;
      return;
    }
    const tx = this.device.txBuf;
    const mac = this.config.mac;
    const at = emitEthernet(tx, frame, mac, 0, mac, ETHERTYPE_IPV4);
    emitIpv4(tx, at, src, this.config.ip, protocol, payloadLength, this.ident);
    this.ident = (this.ident + 1) & 0xffff;
    const len = ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + payloadLength;
    const slot = (this.loopHead + this.loopCount) % LOOPBACK_FRAMES;
    const buf = this.loopBuf, base = slot * LOOPBACK_FRAME_ROOM;
    for (let i = 0; i < len; i++) buf[base + i] = tx[frame + i];
    this.loopLen[slot] = len;
    this.loopCount++;
    c.loopbackFrames++;
    if (protocol === IP_PROTO_TCP) c.tcpOut++;
  }

  /** Processes one received frame. */
  receive(buf: Uint8Array, off: number, len: number, nowMs: number): void {
    const c = this.counters;
    c.rxFrames++;
    c.rxBytes += len;
    const eth = this.eth;
    if (!eth.wrap(buf, off, len)) {
      c.dropTruncatedFrame++;
      return;
    }
    if (!eth.isFor(this.config.mac)) {
      c.dropNotForUs++;
      return;
    }
    const type = eth.etherType;
    if (type === ETHERTYPE_IPV4) this.receiveIpv4(nowMs);
    else if (type === ETHERTYPE_ARP) this.receiveArp(nowMs);
    else c.dropUnknownEtherType++;
  }

  private receiveArp(nowMs: number): void {
    const c = this.counters, eth = this.eth, arp = this.arpPkt;
    if (!arp.wrap(eth.buf, eth.payloadOffset, eth.payloadLength)) {
      c.dropBadArp++;
      return;
    }
    const sender = arp.senderIp;
    const forUs = arp.targetIp === this.config.ip;
    if (arp.operation === ARP_REQUEST) c.arpRequestsIn++;
    else c.arpRepliesIn++;
    if (!forUs) {
      c.dropNotOurAddress++;
      return;
    }
    if (!this.onLink(sender) || !eth.srcIsUnicast) {
      c.dropBadArp++;
      return;
    }
    // RFC 826's merge: whoever asks us learns our address and teaches us theirs.
    this.arp.update(sender, arp.buf, arp.senderMacOffset, nowMs);
    if (arp.operation !== ARP_REQUEST) return;
    const frame = this.device.reserve();
    if (frame < 0) {
      c.dropNoTxBuffer++;
      return;
    }
    const tx = this.device.txBuf;
    const at = emitEthernet(
      tx,
      frame,
      arp.buf,
      arp.senderMacOffset,
      this.config.mac,
      ETHERTYPE_ARP,
    );
    emitArp(
      tx,
      at,
      ARP_REPLY,
      this.config.mac,
      this.config.ip,
      arp.buf,
      arp.senderMacOffset,
      sender,
    );
    this.commitFrame(frame, ETHERNET_HEADER_LEN + ARP_LEN);
    c.arpRepliesOut++;
  }

  private receiveIpv4(nowMs: number): void {
    const c = this.counters, eth = this.eth, ip = this.ip;
    const err = ip.wrap(eth.buf, eth.payloadOffset, eth.payloadLength);
    if (err !== Ipv4Error.Ok) {
      c.dropIpv4[err]++;
      return;
    }
    const dst = ip.dst;
    if (dst !== this.config.ip) {
      c.dropNotOurAddress++;
      return;
    }
    const src = ip.src;
    // Our own address as the source is a spoof unless the frame came round our loopback
    // (Linux drops such martians too).
    if (src === this.config.ip && !this.receivingLoopback) {
      c.dropSpoofedSource++;
      return;
    }
    if (this.onLink(src) && eth.srcIsUnicast) this.arp.update(src, eth.buf, eth.srcOffset, nowMs);
    const proto = ip.protocol;
    if (proto === IP_PROTO_TCP) {
      c.tcpIn++;
      if (this.tcpHandler === null) c.dropNoTcpHandler++;
      else this.tcpHandler(ip.buf, ip.payloadOffset, ip.payloadLength, src, dst, nowMs);
    } else if (proto === IP_PROTO_ICMP) {
      this.receiveIcmp(src, nowMs);
    } else if (proto === IP_PROTO_UDP) {
      if (this.udp.wrap(ip.buf, ip.payloadOffset, ip.payloadLength, src, dst)) c.udpIn++;
      else c.dropBadUdp++;
    } else {
      c.dropUnknownProtocol++;
    }
  }

  /**
   * Passes "fragmentation needed" to TCP when it quotes a TCP segment from our address (IPv4
   * header and at least the 8 bytes with ports and sequence number, RFC 792). False if not.
   */
  private fragNeeded(icmp: IcmpMessage): boolean {
    const b = icmp.buf, q = icmp.quoteOffset, end = icmp.offset + icmp.length;
    if (q + 20 > end || (b[q] >> 4) !== 4) return false;
    const ihl = (b[q] & 15) * 4;
    if (ihl < 20 || q + ihl + 8 > end || b[q + 9] !== IP_PROTO_TCP) return false;
    const from = readU32(b, q + 12), to = readU32(b, q + 16);
    if (from !== this.config.ip || this.tcpPmtuHandler === null) return false;
    const t = q + ihl;
    this.counters.icmpFragNeeded++;
    this.tcpPmtuHandler(
      from,
      (b[t] << 8) | b[t + 1],
      to,
      (b[t + 2] << 8) | b[t + 3],
      readU32(b, t + 4),
      icmp.nextHopMtu,
    );
    return true;
  }

  private receiveIcmp(src: number, nowMs: number): void {
    const c = this.counters, ip = this.ip, icmp = this.icmp;
    if (!icmp.wrap(ip.buf, ip.payloadOffset, ip.payloadLength)) {
      c.dropBadIcmp++;
      return;
    }
    if (icmp.type === ICMP_DEST_UNREACHABLE && icmp.code === ICMP_FRAG_NEEDED) {
      if (!this.fragNeeded(icmp)) c.dropIcmpUnhandled++;
      return;
    }
    if (icmp.type !== ICMP_ECHO_REQUEST || icmp.code !== 0) {
      c.dropIcmpUnhandled++;
      return;
    }
    c.icmpEchoIn++;
    const l4 = this.reserveIp();
    if (l4 < 0) return;
    if (IPV4_HEADER_LEN + ETHERNET_HEADER_LEN + icmp.length > this.device.frameRoom) {
      c.dropBadIcmp++;
      return;
    }
    const len = emitEchoReply(this.device.txBuf, l4, icmp);
    if (this.sendIp(this.config.ip, src, IP_PROTO_ICMP, len, nowMs)) c.icmpEchoOut++;
  }

  /**
   * Reserves a transmit frame for an IPv4 packet and returns the offset in `device.txBuf`
   * where its payload goes, or -1 (counted) when the device has no buffer.
   */
  reserveIp(): number {
    const frame = this.device.reserve();
    if (frame < 0) {
      this.counters.dropNoTxBuffer++;
      this.txFrame = -1;
      return -1;
    }
    this.txFrame = frame;
    return frame + ETHERNET_HEADER_LEN + IPV4_HEADER_LEN;
  }

  /** Largest IPv4 payload a reserved frame holds (the MTU less the IPv4 header). */
  get ipPayloadRoom(): number {
    return Math.min(this.device.frameRoom - ETHERNET_HEADER_LEN, 1500) - IPV4_HEADER_LEN;
  }

  /**
   * Completes the packet whose payload was written at `reserveIp()`'s offset: resolves the
   * next hop, writes the Ethernet and IPv4 headers, and queues the frame. Returns false
   * (counted) when the neighbour is not known yet; an ARP request is then sent instead.
   */
  sendIp(
    src: number,
    dst: number,
    protocol: number,
    payloadLength: number,
    nowMs: number,
  ): boolean {
    const frame = this.txFrame;
    if (frame < 0) return false;
    this.txFrame = -1;
    const c = this.counters;
    if (dst === this.config.ip && payloadLength <= LOOPBACK_FRAME_ROOM - 34) {
      this.loopBack(frame, protocol, src, payloadLength);
      return true;
    }
    if (!this.onLink(dst)) {
      c.dropNoRoute++;
      return false;
    }
    const tx = this.device.txBuf;
    const macAt = this.arp.lookup(dst, nowMs);
    if (macAt < 0) {
      c.dropArpUnresolved++;
      if (this.arp.shouldRequest(dst, nowMs)) {
        // The reserved frame is reused for the request; the packet is lost, and TCP's own
        // retransmission resends it once the neighbour answers.
        const at = emitEthernet(tx, frame, BROADCAST_MAC, 0, this.config.mac, ETHERTYPE_ARP);
        emitArp(tx, at, ARP_REQUEST, this.config.mac, this.config.ip, ZERO_MAC, 0, dst);
        this.commitFrame(frame, ETHERNET_HEADER_LEN + ARP_LEN);
        c.arpRequestsOut++;
      }
      return false;
    }
    const at = emitEthernet(tx, frame, this.arp.macs, macAt, this.config.mac, ETHERTYPE_IPV4);
    emitIpv4(tx, at, src, dst, protocol, payloadLength, this.ident);
    this.ident = (this.ident + 1) & 0xffff;
    if (protocol === IP_PROTO_TCP) c.tcpOut++;
    this.commitFrame(frame, ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + payloadLength);
    return true;
  }

  /** True if `addr` is in the interface's subnet. */
  onLink(addr: number): boolean {
    return ((addr ^ this.config.ip) & this.netmask) === 0 && addr !== this.config.ip;
  }

  private commitFrame(frame: number, len: number): void {
    // Ethernet's minimum frame is 60 bytes before the FCS; pad short frames with zeros.
    if (len < 60) {
      this.device.txBuf.fill(0, frame + len, frame + 60);
      len = 60;
    }
    this.device.commit(len);
    this.counters.txFrames++;
    this.counters.txBytes += len;
  }
}
