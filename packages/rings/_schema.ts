/**
 * A tiny description of C-compatible structs, so one table drives the TypeScript offsets, the
 * generated C header and the test that compiles it.
 *
 * @module
 */

/** Scalar field types, all little-endian. */
export type ScalarType = "u8" | "u16" | "u32" | "i32" | "u64";

/** One field of a struct: a scalar, an array of scalars, or a nested struct. */
export interface FieldSpec {
  /** C field name. */
  readonly name: string;
  /** Scalar type or nested struct. */
  readonly type: ScalarType | StructSpec;
  /** Byte offset inside the struct. */
  readonly offset: number;
  /** Array length; absent for a single element. */
  readonly count?: number;
  /** One-line meaning, copied into the C header. */
  readonly doc?: string;
}

/** A struct with explicit offsets and size; gaps become padding in C. */
export interface StructSpec {
  /** C struct name (without `struct`). */
  readonly name: string;
  /** Total size in bytes. */
  readonly size: number;
  /** Alignment the C compiler must give it. */
  readonly align: number;
  /** Fields in increasing offset order. */
  readonly fields: readonly FieldSpec[];
  /** One-line meaning, copied into the C header. */
  readonly doc: string;
}

/** Size in bytes of a scalar type. */
export function scalarSize(t: ScalarType): number {
  return t === "u8" ? 1 : t === "u16" ? 2 : t === "u64" ? 8 : 4;
}

/** Size in bytes of a field. */
export function fieldSize(f: FieldSpec): number {
  const one = typeof f.type === "string" ? scalarSize(f.type) : f.type.size;
  return one * (f.count ?? 1);
}

/** Byte offset of `field` in `spec`; throws on a typo so mistakes fail at load time. */
export function offsetOf(spec: StructSpec, field: string): number {
  const f = spec.fields.find((x) => x.name === field);
  if (!f) throw new Error(`${spec.name} has no field ${field}`);
  return f.offset;
}

/** Throws unless fields are in order, aligned, non-overlapping and inside the struct. */
export function checkStruct(spec: StructSpec): void {
  let end = 0;
  for (const f of spec.fields) {
    const align = typeof f.type === "string" ? scalarSize(f.type) : f.type.align;
    if (f.offset < end || f.offset % align !== 0) {
      throw new Error(`${spec.name}.${f.name} at ${f.offset} overlaps or is misaligned`);
    }
    end = f.offset + fieldSize(f);
  }
  if (end > spec.size || spec.size % spec.align !== 0) {
    throw new Error(`${spec.name} fields end at ${end}, past size ${spec.size}`);
  }
}
