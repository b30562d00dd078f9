import { assertEquals } from "@std/assert";
import { type Schema, validate } from "./json_schema.ts";

const schema = JSON.parse(
  Deno.readTextFileSync(new URL("./stats.schema.json", import.meta.url)),
) as Schema;

Deno.test("json schema: the checker finds missing, extra, mistyped and negative fields", () => {
  const small: Schema = {
    type: "object",
    required: ["a", "b"],
    additionalProperties: false,
    properties: {
      a: { type: "integer", minimum: 0 },
      b: { type: "array", minItems: 1, items: { type: "string", pattern: "^x" } },
    },
  };
  assertEquals(validate({ a: 1, b: ["xy"] }, small), []);
  assertEquals(validate({ a: -1, b: [], c: 1 }, small), [
    "$.a: -1 < 0",
    "$.b: fewer than 1 items",
    "$.c: not allowed",
  ]);
  assertEquals(validate({ b: ["y"] }, small), ["$.a: missing", '$.b[0]: "y" does not match ^x']);
});

Deno.test("json schema: stats.schema.json refuses a snapshot without its workers", () => {
  const faults = validate({ version: 1 }, schema);
  assertEquals(faults.includes("$.workers: missing"), true);
});
