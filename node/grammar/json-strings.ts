/**
 * Makes the strings of xgrammar's JSON-schema grammar valid JSON strings. xgrammar 0.1.27 writes a string with a
 * `minLength`/`maxLength` as `"\"" [^"\\\r\n]{m,n} "\""` and a `pattern`/`format` string as the regex's character
 * classes between quotes: the first lets raw control characters through (U+0000–U+001F other than CR and LF, which
 * JSON forbids unescaped inside a string: the fixture model wrote U+000B, U+0018 and U+001E there at temperature
 * 1.0), the second lets through those and `"` and `\` too (a regex `.` becomes `[\u0000-\U0010FFFF]`), so the answer
 * is not JSON. Its unbounded strings (`basic_string`) are right and are left alone.
 *
 * The rewrite keeps each rule's shape and only narrows what one character of a string may be: a bounded string's
 * character becomes a JSON string character (any character but controls, `"` and `\`, or an escape, counted as the
 * one character it decodes to: a `maxLength` measured on the parsed value, as JSON Schema measures it, is then never
 * exceeded), and a pattern's or format's character class loses the characters JSON cannot hold raw.
 */

/** One character of a JSON string, as written in the JSON text: a raw character or an escape. */
const JSON_CHAR_RULE = 'relay_json_char';
const JSON_CHAR = `${JSON_CHAR_RULE} ::= [^\\0-\\x1f"\\\\] | "\\\\" (["\\\\/bfnrt] | "u" [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9] [A-Fa-f0-9])`;

/** The character class xgrammar writes for one character of a length-bounded string. */
const BOUNDED_STRING_CHAR = '[^"\\\\\\r\\n]';

/** Code points a JSON string cannot hold raw (controls, `"`, `\`), and the surrogates UTF-8 cannot encode. */
const FORBIDDEN: ReadonlyArray<readonly [number, number]> = [
  [0x00, 0x1f],
  [0x22, 0x22],
  [0x5c, 0x5c],
  [0xd800, 0xdfff],
];
const MAX = 0x10ffff;

/** `ebnf` (xgrammar's grammar for a JSON schema) with every string rule's characters made valid inside JSON. */
export function jsonSafeStrings(ebnf: string): string {
  let changed = false;
  const lines = ebnf.split('\n').map((line) => {
    // A string rule's body starts with the opening quote; `basic_*` rules are xgrammar's correct generic ones.
    const m = /^([A-Za-z_][\w-]*) ::= "\\"" /.exec(line);
    if (!m || m[1]!.startsWith('basic_')) return line;
    const body = line.slice(m[1]!.length + 5);
    const safe = rewriteClasses(body);
    if (safe !== body) changed = true;
    return `${m[1]} ::= ${safe}`;
  });
  return changed ? `${lines.join('\n').trimEnd()}\n${JSON_CHAR}\n` : ebnf;
}

/** Every character class outside string literals in a rule body, narrowed to what a JSON string holds raw. */
function rewriteClasses(body: string): string {
  let out = '';
  let i = 0;
  while (i < body.length) {
    const c = body[i]!;
    if (c === '"') {
      const end = literalEnd(body, i);
      out += body.slice(i, end);
      i = end;
    } else if (c === '[') {
      const end = classEnd(body, i);
      const cls = body.slice(i, end);
      out += cls === BOUNDED_STRING_CHAR ? JSON_CHAR_RULE : narrowed(cls);
      i = end;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** The index just past the string literal opening at `start`. */
function literalEnd(s: string, start: number): number {
  let i = start + 1;
  while (i < s.length && s[i] !== '"') i += s[i] === '\\' ? 2 : 1;
  return i + 1;
}

/** The index just past the character class opening at `start`. */
function classEnd(s: string, start: number): number {
  let i = start + 1;
  while (i < s.length && s[i] !== ']') i += s[i] === '\\' ? 2 : 1;
  return i + 1;
}

const ESCAPES: Record<string, number> = { n: 0x0a, r: 0x0d, t: 0x09, f: 0x0c, v: 0x0b, b: 0x08, '0': 0 };

/** A class (`[...]` or `[^...]`) as the code-point ranges it matches. */
function parseClass(cls: string): Array<[number, number]> {
  let i = 1;
  const negated = cls[i] === '^';
  if (negated) i++;
  const end = cls.length - 1;
  const next = (): number => {
    const c = cls[i]!;
    if (c !== '\\') {
      const cp = cls.codePointAt(i)!;
      i += cp > 0xffff ? 2 : 1;
      return cp;
    }
    const e = cls[i + 1]!;
    const hex = (n: number) => {
      const v = Number.parseInt(cls.slice(i + 2, i + 2 + n), 16);
      i += 2 + n;
      return v;
    };
    if (e === 'x') return hex(2);
    if (e === 'u') return hex(4);
    if (e === 'U') return hex(8);
    i += 2;
    return ESCAPES[e] ?? e.codePointAt(0)!;
  };
  const ranges: Array<[number, number]> = [];
  while (i < end) {
    const lo = next();
    if (cls[i] === '-' && i + 1 < end) {
      i++;
      ranges.push([lo, next()]);
    } else ranges.push([lo, lo]);
  }
  return negated ? subtract([[0, MAX]], ranges) : ranges;
}

/** `ranges` without any code point in `minus`. */
function subtract(
  ranges: ReadonlyArray<readonly [number, number]>,
  minus: ReadonlyArray<readonly [number, number]>,
): Array<[number, number]> {
  let out = ranges.map(([a, b]) => [a, b] as [number, number]);
  for (const [ma, mb] of minus) {
    out = out.flatMap(([a, b]): Array<[number, number]> => {
      if (mb < a || ma > b) return [[a, b]];
      const parts: Array<[number, number]> = [];
      if (a < ma) parts.push([a, ma - 1]);
      if (mb < b) parts.push([mb + 1, b]);
      return parts;
    });
  }
  return out.sort((x, y) => x[0] - y[0]);
}

const point = (cp: number) =>
  cp < 0x80 ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`;
const list = (ranges: ReadonlyArray<readonly [number, number]>) =>
  ranges.map(([a, b]) => (a === b ? point(a) : `${point(a)}-${point(b)}`)).join('');

/**
 * `ranges` (none of them forbidden) as an EBNF class xgrammar reads right. Its WebAssembly build matches non-ASCII
 * ranges loosely and mis-reads some outright (a range ending at `\U0010ffff`, or at U+10FFFF written raw, also lets
 * `"` and U+0010 through; one ending at `\u0800` lets nothing through), while a class of ASCII characters, or one
 * that refuses ASCII characters only (`[^\0-\x1f"\\]`, xgrammar's own string character), is exact. So a class
 * holding every non-ASCII character is written as the ASCII it refuses, and any other keeps its non-ASCII part
 * within the Basic Multilingual Plane, where the looseness never reaches ASCII.
 */
function classOf(ranges: ReadonlyArray<readonly [number, number]>): string | undefined {
  if (ranges.length === 0) return undefined;
  const ascii = subtract(ranges, [[0x80, MAX]]);
  const wide = subtract(ranges, [[0, 0x7f]]);
  if (subtract([[0x80, MAX]], [...wide, [0xd800, 0xdfff]]).length === 0)
    return `[^${list(subtract([[0, 0x7f]], ascii))}]`;
  const bmp = subtract(wide, [[0x10000, MAX]]);
  return ascii.length + bmp.length ? `[${list([...ascii, ...bmp])}]` : undefined;
}

/** JSON's short escapes, by the character they stand for. */
const SHORT = new Map<number, string>([
  [0x22, '"'],
  [0x5c, '\\'],
  [0x08, 'b'],
  [0x0c, 'f'],
  [0x0a, 'n'],
  [0x0d, 'r'],
  [0x09, 't'],
]);

/**
 * `cls` as a JSON string holds it: the characters it may hold raw, and the others (controls, `"`, `\`) escaped, so
 * the parsed string still matches the class (a JSON escape is one character of the value).
 */
function narrowed(cls: string): string {
  const ranges = parseClass(cls);
  const raw = subtract(ranges, FORBIDDEN);
  const escaped: number[] = [];
  for (const [a, b] of ranges)
    for (let cp = a; cp <= Math.min(b, 0x5c); cp++) if (cp < 0x20 || cp === 0x22 || cp === 0x5c) escaped.push(cp);
  const rawClass = classOf(raw);
  if (escaped.length === 0) {
    if (rawClass) return rawClass;
    throw new Error(
      `the character class ${cls} holds only characters outside the Basic Multilingual Plane, which the grammar engine cannot match exactly`,
    );
  }
  const controls = escaped.filter((cp) => cp < 0x20);
  const alternatives = rawClass ? [rawClass] : [];
  // Each as an EBNF literal of the JSON text: a backslash, then the escape's letter (or `u` and four hex digits).
  const literal = (rest: string) => `"\\\\${rest}"`;
  for (const cp of escaped) {
    const short = SHORT.get(cp);
    if (short && (cp >= 0x20 || controls.length < 32))
      alternatives.push(literal(short === '"' ? '\\"' : short === '\\' ? '\\\\' : short));
  }
  if (controls.length === 32) alternatives.push(`${literal('')} [bfnrt]`, `${literal('u00')} [01] [0-9A-Fa-f]`);
  else for (const cp of controls) alternatives.push(literal(`u${cp.toString(16).padStart(4, '0')}`));
  return `(${alternatives.join(' | ')})`;
}
