/**
 * Whether a text can still become JSON (RFC 8259): a checker for partial output that knows nothing of xgrammar, so a
 * grammar and this can disagree. It walks the text once with a stack of open containers; a complete text is then
 * checked with `JSON.parse`.
 */
type Expect =
  | 'value' // a value (after `:`, `,` in an array, or at the start)
  | 'value-or-close' // after `[`
  | 'key-or-close' // after `{`
  | 'key' // after `,` in an object
  | 'colon'
  | 'after' // after a value: `,`, a closer, or the end
  | 'string'
  | 'escape'
  | 'number'
  | 'literal';

const WS = new Set([' ', '\t', '\n', '\r']);

export function isJsonPrefix(text: string): boolean {
  const stack: Array<'{' | '['> = [];
  let expect: Expect = 'value';
  let inKey = false;
  let hex = 0; // hex digits left in a \u escape
  let number = ''; // the number so far
  let literal = ''; // what a literal (true, false, null) still needs
  const closeValue = () => {
    expect = 'after';
  };
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    switch (expect) {
      case 'string':
        if (c === '"') {
          if (inKey) expect = 'colon';
          else closeValue();
        } else if (c === '\\') expect = 'escape';
        else if (c.charCodeAt(0) < 0x20) return false;
        continue;
      case 'escape':
        if (hex > 0) {
          if (!/[0-9a-fA-F]/.test(c)) return false;
          if (--hex === 0) expect = 'string';
        } else if (c === 'u') hex = 4;
        else if ('"\\/bfnrt'.includes(c)) expect = 'string';
        else return false;
        continue;
      case 'literal':
        if (c !== literal[0]) return false;
        literal = literal.slice(1);
        if (!literal) closeValue();
        continue;
      case 'number': {
        const next = number + c;
        if (
          /^-?(0|[1-9][0-9]*)?(\.[0-9]*)?([eE][+-]?[0-9]*)?$/.test(next) &&
          !/^-?\.|^-?0[0-9]|\.[eE]|^-[eE]/.test(next)
        ) {
          number = next;
          continue;
        }
        // The number ends here; it must be whole.
        if (!/^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/.test(number)) return false;
        expect = 'after';
        break;
      }
    }
    if (WS.has(c)) continue;
    switch (expect) {
      case 'value':
      case 'value-or-close':
        if (expect === 'value-or-close' && c === ']') {
          stack.pop();
          closeValue();
        } else if (c === '{' || c === '[') {
          stack.push(c);
          expect = c === '{' ? 'key-or-close' : 'value-or-close';
        } else if (c === '"') {
          inKey = false;
          expect = 'string';
        } else if (c === '-' || (c >= '0' && c <= '9')) {
          number = c;
          expect = 'number';
        } else if (c === 't' || c === 'f' || c === 'n') {
          literal = (c === 't' ? 'true' : c === 'f' ? 'false' : 'null').slice(1);
          expect = 'literal';
        } else return false;
        break;
      case 'key-or-close':
      case 'key':
        if (expect === 'key-or-close' && c === '}') {
          stack.pop();
          closeValue();
        } else if (c === '"') {
          inKey = true;
          expect = 'string';
        } else return false;
        break;
      case 'colon':
        if (c !== ':') return false;
        expect = 'value';
        break;
      case 'after': {
        const top = stack.at(-1);
        if (top === undefined) return false;
        if (c === ',') expect = top === '{' ? 'key' : 'value';
        else if ((c === '}' && top === '{') || (c === ']' && top === '[')) {
          stack.pop();
          closeValue();
        } else return false;
        break;
      }
      default:
        return false;
    }
  }
  return expect !== 'number' || /^-?(0|[1-9][0-9]*)?(\.[0-9]*)?([eE][+-]?[0-9]*)?$/.test(number);
}
