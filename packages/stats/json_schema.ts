/**
 * A small JSON Schema checker for the subset stats.schema.json uses (type, const, required,
 * properties, additionalProperties, items, minItems, minimum, exclusiveMinimum, pattern):
 * enough to hold /stats to its documented shape in tests. Returns every fault, with its path.
 *
 * @module
 */

/** A schema node of the supported subset. */
export interface Schema {
  type?: "object" | "array" | "number" | "integer" | "string" | "boolean";
  const?: unknown;
  required?: string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  items?: Schema;
  minItems?: number;
  minimum?: number;
  exclusiveMinimum?: number;
  pattern?: string;
}

/** Faults of `value` against `schema`; empty when it conforms. */
export function validate(value: unknown, schema: Schema, path = "$"): string[] {
  const faults: string[] = [];
  const t = schema.type;
  if (schema.const !== undefined && value !== schema.const) {
    faults.push(`${path}: ${JSON.stringify(value)} is not ${JSON.stringify(schema.const)}`);
  }
  if (t === "object") {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return [`${path}: not an object`];
    }
    const o = value as Record<string, unknown>;
    for (const k of schema.required ?? []) if (!(k in o)) faults.push(`${path}.${k}: missing`);
    for (const [k, v] of Object.entries(o)) {
      const sub = schema.properties?.[k];
      if (sub) faults.push(...validate(v, sub, `${path}.${k}`));
      else if (schema.additionalProperties === false) faults.push(`${path}.${k}: not allowed`);
      else if (typeof schema.additionalProperties === "object") {
        faults.push(...validate(v, schema.additionalProperties, `${path}.${k}`));
      }
    }
  } else if (t === "array") {
    if (!Array.isArray(value)) return [`${path}: not an array`];
    if (schema.minItems !== undefined && value.length < schema.minItems) {
      faults.push(`${path}: fewer than ${schema.minItems} items`);
    }
    if (schema.items) {
      value.forEach((v, i) => faults.push(...validate(v, schema.items!, `${path}[${i}]`)));
    }
  } else if (t === "number" || t === "integer") {
    if (typeof value !== "number" || !Number.isFinite(value)) return [`${path}: not a number`];
    if (t === "integer" && !Number.isInteger(value)) faults.push(`${path}: not an integer`);
    if (schema.minimum !== undefined && value < schema.minimum) {
      faults.push(`${path}: ${value} < ${schema.minimum}`);
    }
    if (schema.exclusiveMinimum !== undefined && value <= schema.exclusiveMinimum) {
      faults.push(`${path}: ${value} <= ${schema.exclusiveMinimum}`);
    }
  } else if (t === "string") {
    if (typeof value !== "string") return [`${path}: not a string`];
    if (schema.pattern && !new RegExp(schema.pattern).test(value)) {
      faults.push(`${path}: ${JSON.stringify(value)} does not match ${schema.pattern}`);
    }
  } else if (t === "boolean" && typeof value !== "boolean") faults.push(`${path}: not a boolean`);
  return faults;
}
