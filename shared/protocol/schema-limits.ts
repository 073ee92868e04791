/**
 * Limits on the JSON Schemas clients send (`response_format`, tool parameters, Ollama `format`, Anthropic
 * `input_schema` and `output_format`), checked at the edge before anything reaches an agent. Every schema becomes a
 * grammar that xgrammar compiles, and its compile time and memory grow with these measures: a schema nested ~64
 * objects deep crashes xgrammar's WebAssembly, 3,000 optional properties compile for ~5 s, a 10,000-string enum for
 * ~2 s (2 cores). Within these limits a compile can still be slow; the agent's grammar time limit
 * (`NPU_RELAY_GRAMMAR_TIMEOUT_MS`) bounds that. Each limit is named in the 400 a schema past it gets.
 */
import type * as z from 'zod';

export const SCHEMA_LIMITS = {
  /** Nesting of the schema document (objects and arrays; one level of `properties` is two). */
  depth: 64,
  /** Property names declared in the whole schema (`properties`, `patternProperties`, in every sub-schema). */
  properties: 1000,
  /** Values of one `enum`. */
  enumValues: 1000,
  /** `minLength`, `maxLength`, `minItems`, `maxItems`, `minProperties`, `maxProperties`: xgrammar unrolls them. */
  lengthBound: 1000,
  /** The schema as JSON text, in characters. */
  size: 64 * 1024,
} as const;

const LENGTH_KEYS = ['minLength', 'maxLength', 'minItems', 'maxItems', 'minProperties', 'maxProperties'];

/** The first limit `schema` exceeds, as a sentence for the client; undefined when it is within all of them. */
export function schemaLimitExceeded(schema: unknown): string | undefined {
  let size: number;
  try {
    size = JSON.stringify(schema)?.length ?? 0;
  } catch {
    return 'cannot be read as JSON';
  }
  if (size > SCHEMA_LIMITS.size)
    return `is ${size} characters of JSON; schemas are limited to ${SCHEMA_LIMITS.size} (schema size limit)`;
  let properties = 0;
  // Iterative, so a schema nested past any limit cannot overflow this check's own stack.
  const stack: Array<{ node: unknown; depth: number }> = [{ node: schema, depth: 1 }];
  while (stack.length) {
    const { node, depth } = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    if (depth > SCHEMA_LIMITS.depth)
      return `nests deeper than ${SCHEMA_LIMITS.depth} levels of JSON (schema depth limit)`;
    if (Array.isArray(node)) {
      for (const child of node) stack.push({ node: child, depth: depth + 1 });
      continue;
    }
    const record = node as Record<string, unknown>;
    for (const key of ['properties', 'patternProperties']) {
      const declared = record[key];
      if (declared && typeof declared === 'object' && !Array.isArray(declared))
        properties += Object.keys(declared).length;
    }
    if (properties > SCHEMA_LIMITS.properties)
      return `declares more than ${SCHEMA_LIMITS.properties} properties (schema properties limit)`;
    if (Array.isArray(record.enum) && record.enum.length > SCHEMA_LIMITS.enumValues) {
      return `has an enum of ${record.enum.length} values; at most ${SCHEMA_LIMITS.enumValues} are accepted (enum size limit)`;
    }
    for (const key of LENGTH_KEYS) {
      const bound = record[key];
      if (typeof bound === 'number' && bound > SCHEMA_LIMITS.lengthBound)
        return `sets ${key} to ${bound}; at most ${SCHEMA_LIMITS.lengthBound} is accepted (${key} range limit)`;
    }
    for (const child of Object.values(record)) stack.push({ node: child, depth: depth + 1 });
  }
  return undefined;
}

/** A zod refinement adding `schemaLimitExceeded`'s sentence as an issue. */
export function checkSchemaLimits(schema: unknown, ctx: z.RefinementCtx): void {
  const why = schemaLimitExceeded(schema);
  if (why) ctx.addIssue({ code: 'custom', message: why });
}
