/**
 * Conformance against OpenAI's published OpenAPI document (test data in ../shared/specs/, never copied into the
 * project). The document is YAML and this project has no YAML parser, so this reads the subset the schemas use
 * (maps, lists, scalars, block scalars) and checks values against a schema's types, enums, required and declared
 * properties, following `$ref`, `anyOf`, `oneOf` and `allOf`. Enough to catch a misnamed or mistyped field; not a
 * full JSON Schema validator.
 */
import { readFileSync } from 'node:fs';

interface Line {
  indent: number;
  text: string;
}
type Node = unknown;
type Schema = Record<string, unknown>;

function scalar(text: string): unknown {
  const t = text.trim();
  if (/^".*"$/.test(t) || /^'.*'$/.test(t)) return t.slice(1, -1);
  if (t === 'true' || t === 'false') return t === 'true';
  if (t === 'null' || t === '~') return null;
  if (/^-?\d+(\.\d+)?$/.test(t)) return Number(t);
  if (t === '[]') return [];
  if (t === '{}') return {};
  return t;
}

/** Skips the lines deeper than `indent` (a block scalar's or a folded scalar's continuation). */
function skipDeeper(lines: Line[], i: number, indent: number): number {
  while (i < lines.length && lines[i]!.indent > indent) i++;
  return i;
}

function parse(lines: Line[], i: number, indent: number): [Node, number] {
  return lines[i]!.text.startsWith('- ') ? parseList(lines, i, indent) : parseMap(lines, i, indent);
}

function parseMap(lines: Line[], i: number, indent: number): [Node, number] {
  const out: Record<string, Node> = {};
  while (i < lines.length && lines[i]!.indent === indent && !lines[i]!.text.startsWith('- ')) {
    const m = /^("[^"]*"|'[^']*'|[^:]+):(?:\s+(.*))?$/.exec(lines[i]!.text);
    if (!m) throw new Error(`openapi-spec: cannot read line '${lines[i]!.text}'`);
    const key = scalar(m[1]!) as string;
    const rest = m[2];
    i++;
    if (rest === undefined || rest === '') {
      const next = lines[i];
      if (next && (next.indent > indent || (next.indent === indent && next.text.startsWith('- '))))
        [out[key], i] = parse(lines, i, next.indent);
      else out[key] = null;
    } else {
      out[key] = /^[|>][-+]?$/.test(rest) ? '' : scalar(rest);
      i = skipDeeper(lines, i, indent);
    }
  }
  return [out, i];
}

function parseList(lines: Line[], i: number, indent: number): [Node, number] {
  const out: Node[] = [];
  while (i < lines.length && lines[i]!.indent === indent && lines[i]!.text.startsWith('- ')) {
    const item = lines[i]!.text.slice(2);
    if (/^("[^"]*"|[^:"]+):(\s|$)/.test(item)) {
      // A map inside a list item: its first key sits two columns right of the dash.
      const sub = [{ indent: indent + 2, text: item }, ...lines.slice(i + 1)];
      const [value, used] = parseMap(sub, 0, indent + 2);
      out.push(value);
      i += used;
    } else {
      out.push(scalar(item));
      i = skipDeeper(lines, i + 1, indent);
    }
  }
  return [out, i];
}

export class OpenApiSpec {
  readonly #lines: string[];
  readonly #cache = new Map<string, Schema>();

  constructor(path: string) {
    this.#lines = readFileSync(path, 'utf8').split('\n');
  }

  /** `components.schemas[name]`, read on demand. */
  schema(name: string): Schema {
    const cached = this.#cache.get(name);
    if (cached) return cached;
    const start = this.#lines.indexOf(`    ${name}:`);
    if (start < 0) throw new Error(`openapi-spec: no schema '${name}'`);
    const lines: Line[] = [];
    for (let i = start + 1; i < this.#lines.length; i++) {
      const raw = this.#lines[i]!;
      if (!raw.trim() || raw.trim().startsWith('#')) continue;
      const indent = raw.length - raw.trimStart().length;
      if (indent <= 4) break;
      lines.push({ indent, text: raw.trim() });
    }
    const schema = parse(lines, 0, lines[0]!.indent)[0] as Schema;
    this.#cache.set(name, schema);
    return schema;
  }

  /** Problems with `value` against schema `name`, each with its path; empty when it conforms. */
  check(value: unknown, name: string, extensions: string[] = []): string[] {
    const problems: string[] = [];
    this.#check(value, this.schema(name), name, problems, new Set(extensions));
    return problems;
  }

  /** An allOf of object schemas as one object schema (properties and required lists joined); undefined otherwise. */
  #merge(schema: Schema): Schema | undefined {
    const properties: Record<string, Schema> = {};
    const required: string[] = [];
    const parts: Schema[] = [];
    const collect = (s: Schema): boolean => {
      if (typeof s.$ref === 'string') return collect(this.schema(s.$ref.split('/').pop()!));
      if (s.anyOf || s.oneOf) return false;
      if (s.allOf) return (s.allOf as Schema[]).every(collect);
      if (!(s.type === 'object' || s.properties)) return false;
      parts.push(s);
      return true;
    };
    if (!collect({ allOf: schema.allOf })) return undefined;
    for (const p of parts) {
      Object.assign(properties, p.properties ?? {});
      required.push(...((p.required as string[] | undefined) ?? []));
    }
    return { type: 'object', properties, required, additionalProperties: parts.some((p) => p.additionalProperties) };
  }

  #check(value: unknown, schema: Schema, path: string, problems: string[], extensions: Set<string>): void {
    // OpenAPI 3.0 puts `nullable` beside a `$ref` to allow null in place of the referenced object.
    if (value === null && schema.nullable === true) return;
    if (typeof schema.$ref === 'string')
      return this.#check(value, this.schema(schema.$ref.split('/').pop()!), path, problems, extensions);
    if (schema.allOf) {
      // The members of an allOf describe one object together: a property declared by any of them is in the spec.
      const merged = this.#merge(schema);
      if (merged) return this.#check(value, merged, path, problems, extensions);
      for (const s of schema.allOf as Schema[]) this.#check(value, s, path, problems, extensions);
    }
    const alternatives = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
    if (alternatives) {
      const fits = alternatives.some((s) => {
        const p: string[] = [];
        this.#check(value, s, path, p, extensions);
        return p.length === 0;
      });
      if (!fits) problems.push(`${path}: ${JSON.stringify(value)?.slice(0, 80)} fits none of the alternatives`);
      return;
    }
    if (value === null) {
      if (schema.nullable !== true && schema.type !== 'null' && schema.type !== undefined)
        problems.push(`${path}: null is not allowed`);
      return;
    }
    if (Array.isArray(schema.enum) && !schema.enum.includes(value))
      problems.push(`${path}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
    switch (schema.type) {
      case 'null':
        problems.push(`${path}: expected null`);
        return;
      case 'string':
      case 'boolean':
        if (typeof value !== schema.type) problems.push(`${path}: expected a ${schema.type}`);
        return;
      case 'integer':
      case 'number':
        if (typeof value !== 'number' || (schema.type === 'integer' && !Number.isInteger(value)))
          problems.push(`${path}: expected an ${schema.type}`);
        return;
      case 'array':
        if (!Array.isArray(value)) problems.push(`${path}: expected an array`);
        else if (schema.items)
          for (const [i, v] of value.entries())
            this.#check(v, schema.items as Schema, `${path}[${i}]`, problems, extensions);
        return;
    }
    if (schema.type === 'object' || schema.properties) {
      if (typeof value !== 'object' || Array.isArray(value)) return void problems.push(`${path}: expected an object`);
      const props = (schema.properties ?? {}) as Record<string, Schema>;
      for (const key of (schema.required as string[] | undefined) ?? [])
        if (!(key in value)) problems.push(`${path}.${key}: required`);
      for (const [key, v] of Object.entries(value)) {
        if (props[key]) this.#check(v, props[key], `${path}.${key}`, problems, extensions);
        else if (!schema.additionalProperties && !extensions.has(key)) problems.push(`${path}.${key}: not in the spec`);
      }
    }
  }
}
