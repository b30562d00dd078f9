/**
 * Classic BPF for capture filters: the expression (pcap-filter(7) syntax, as tcpdump takes
 * it) is compiled by tcpdump itself (`tcpdump -ddd -y EN10MB EXPR`, the program as decimal
 * numbers), and this interpreter runs it over each frame in place: no copy, no allocation.
 * The instruction set is the one of Linux's Documentation/networking/filter.rst (classic
 * part) and FreeBSD's bpf_filter.c; a load past the frame rejects it, as theirs do.
 *
 * @module
 */

/** A compiled filter: four numbers (code, jt, jf, k) per instruction. */
export interface BpfProgram {
  readonly expr: string;
  readonly insns: Int32Array;
}

/** Compiles `expr` with tcpdump; throws with tcpdump's message on a bad expression. */
export async function compileFilter(expr: string): Promise<BpfProgram> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("tcpdump", {
      args: ["-ddd", "-y", "EN10MB", expr],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).output();
  } catch (err) {
    throw new Error(`capture filters are compiled by tcpdump: ${(err as Error).message}`);
  }
  const d = new TextDecoder();
  if (!out.success) {
    throw new Error(`filter ${JSON.stringify(expr)}: ${d.decode(out.stderr).trim()}`);
  }
  return parseProgram(expr, d.decode(out.stdout));
}

/** Parses `tcpdump -ddd` output (a count, then "code jt jf k" per line). */
export function parseProgram(expr: string, text: string): BpfProgram {
  const lines = text.trim().split("\n");
  const n = Number(lines[0]);
  if (!Number.isInteger(n) || n < 1 || n > 4096 || lines.length !== n + 1) {
    throw new Error(`filter ${JSON.stringify(expr)}: unexpected program from tcpdump`);
  }
  const insns = new Int32Array(4 * n);
  for (let i = 0; i < n; i++) {
    const f = lines[i + 1].trim().split(/\s+/).map(Number);
    if (f.length !== 4 || f.some((x) => !Number.isFinite(x))) {
      throw new Error(`filter ${JSON.stringify(expr)}: bad instruction ${lines[i + 1]}`);
    }
    insns.set([f[0], f[1], f[2], f[3] | 0], 4 * i);
  }
  return { expr, insns };
}

const mem = new Int32Array(16);

/** Runs `prog` over `len` bytes of `buf` at `off`; true when the filter accepts the frame. */
export function bpfMatch(prog: BpfProgram, buf: Uint8Array, off: number, len: number): boolean {
  const p = prog.insns;
  let a = 0, x = 0;
  for (let pc = 0; pc < p.length; pc += 4) {
    const code = p[pc], jt = p[pc + 1], jf = p[pc + 2], k = p[pc + 3];
    switch (code & 0x07) {
      case 0x00: // LD
      case 0x01: { // LDX
        const mode = code & 0xe0, size = code & 0x18;
        let v: number;
        if (mode === 0x00) v = k; // IMM
        else if (mode === 0x80) v = len; // LEN
        else if (mode === 0x60) v = mem[k & 15]; // MEM
        else if (mode === 0xa0) { // MSH: 4 * (P[k] & 0xf), the IP header length
          if (k >>> 0 >= len) return false;
          v = (buf[off + k] & 0xf) << 2;
        } else {
          const at = mode === 0x40 ? (x + k) >>> 0 : k >>> 0; // IND or ABS
          const bytes = size === 0x00 ? 4 : size === 0x08 ? 2 : 1;
          if (at + bytes > len) return false;
          const o = off + at;
          v = bytes === 4
            ? (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3]
            : bytes === 2
            ? (buf[o] << 8) | buf[o + 1]
            : buf[o];
        }
        if ((code & 0x07) === 0x00) a = v | 0;
        else x = v | 0;
        break;
      }
      case 0x02: // ST
        mem[k & 15] = a;
        break;
      case 0x03: // STX
        mem[k & 15] = x;
        break;
      case 0x04: { // ALU
        const v = code & 0x08 ? x : k;
        switch (code & 0xf0) {
          case 0x00:
            a = (a + v) | 0;
            break;
          case 0x10:
            a = (a - v) | 0;
            break;
          case 0x20:
            a = Math.imul(a, v);
            break;
          case 0x30:
            if (v === 0) return false;
            a = ((a >>> 0) / (v >>> 0)) | 0;
            break;
          case 0x40:
            a |= v;
            break;
          case 0x50:
            a &= v;
            break;
          case 0x60:
            a <<= v;
            break;
          case 0x70:
            a >>>= v;
            break;
          case 0x80:
            a = -a | 0;
            break;
          case 0x90:
            if (v === 0) return false;
            a = ((a >>> 0) % (v >>> 0)) | 0;
            break;
          case 0xa0:
            a ^= v;
            break;
          default:
            return false;
        }
        break;
      }
      case 0x05: { // JMP
        const op = code & 0xf0;
        if (op === 0x00) {
          pc += 4 * k;
          break;
        }
        const v = (code & 0x08 ? x : k) >>> 0, ua = a >>> 0;
        const taken = op === 0x10
          ? ua === v
          : op === 0x20
          ? ua > v
          : op === 0x30
          ? ua >= v
          : op === 0x40
          ? (ua & v) !== 0
          : false;
        pc += 4 * (taken ? jt : jf);
        break;
      }
      case 0x06: // RET
        return ((code & 0x18) === 0x10 ? a : k) !== 0;
      case 0x07: // MISC
        if ((code & 0xf8) === 0x00) x = a; // TAX
        else a = x; // TXA
        break;
    }
  }
  return false;
}
