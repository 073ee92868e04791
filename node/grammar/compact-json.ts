/**
 * JSON inside a constraint as compact, strict JSON: every `json_schema` element becomes the EBNF grammar xgrammar
 * derives from the schema with no whitespace at all (one line, `,` and `:` separators, as OpenAI writes tool-call
 * arguments) and only the properties the schema lists. No separator has a space because OpenVINO GenAI builds its
 * grammar vocabulary by decoding each token alone, which drops a SentencePiece token's leading space: with a
 * Llama-2-style tokenizer no token can write `": "`'s space there, and the answer stalls after `{"a":` (seen on the
 * real runtime). Structural tags otherwise allow any whitespace between JSON tokens, and a model can then write
 * whitespace until its token limit (greedy decoding of the fixture model does so at once, inside a tool call as much
 * as in a whole-answer JSON). Both engines apply this, so a constraint means the same on ONNX Runtime and on
 * OpenVINO GenAI (which takes the EBNF as a structural tag of its own), and a schema xgrammar refuses is refused
 * before either runs anything.
 */
import type { Constraint, StructuralTagFormat, TagFormat } from '../output/plan.ts';
import { jsonSafeStrings } from './json-strings.ts';
import { compiling } from './xgrammar-errors.ts';
import { loadXGrammar } from './xgrammar.ts';

/**
 * A top-level object schema that names no properties (`{type: "object"}`, as `json_object` asks) means any object;
 * in xgrammar's strict mode it would mean only `{}`, so it says so explicitly.
 */
export function openAnyObject(schema: Record<string, unknown> | boolean): Record<string, unknown> | boolean {
  if (typeof schema !== 'object' || schema.type !== 'object') return schema;
  const constrains = ['properties', 'patternProperties', 'additionalProperties', 'unevaluatedProperties'].some(
    (k) => k in schema,
  );
  return constrains ? schema : { ...schema, additionalProperties: true };
}

/** Schema text to compact EBNF with JSON-safe strings (json-strings.ts), once per distinct schema: tool schemas repeat on every request of a client. */
const ebnfOf = new Map<string, Promise<string>>();
const EBNF_CACHE = 256;

export async function schemaGrammar(schema: Record<string, unknown> | boolean, what: string): Promise<string> {
  const text = JSON.stringify(openAnyObject(schema));
  let ebnf = ebnfOf.get(text);
  if (!ebnf) {
    const xgrammar = await loadXGrammar();
    ebnf = compiling(what, async () =>
      jsonSafeStrings(await xgrammar.Testings._jsonSchemaToEBNF(text, false, -1, [',', ':'], true)),
    );
    ebnf.catch(() => ebnfOf.delete(text));
    if (ebnfOf.size >= EBNF_CACHE) ebnfOf.delete(ebnfOf.keys().next().value!);
    ebnfOf.set(text, ebnf);
  }
  return ebnf;
}

/** `constraint` with every `json_schema` element replaced by its compact grammar; `what` names it in errors. */
export async function compactJson(constraint: Constraint, what: string): Promise<Constraint> {
  const tag = async (t: TagFormat): Promise<TagFormat> => ({ ...t, content: await compactJson(t.content, what) });
  const format: StructuralTagFormat = constraint;
  switch (format.type) {
    case 'json_schema':
      return { type: 'grammar', grammar: await schemaGrammar(format.json_schema, what) };
    case 'tag':
      return tag(format);
    case 'sequence':
    case 'or':
      return { ...format, elements: await Promise.all(format.elements.map((e) => compactJson(e, what))) };
    case 'triggered_tags':
    case 'tags_with_separator':
      return { ...format, tags: await Promise.all(format.tags.map(tag)) };
    default:
      return format;
  }
}
