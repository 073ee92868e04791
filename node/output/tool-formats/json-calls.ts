/**
 * The incremental reader shared by the families whose calls are JSON objects `{"name": …, "arguments"|"parameters":
 * {…}}` after a marker (hermes `<tool_call>`, Mistral `[TOOL_CALLS]`, Phi-4-mini `functools`, Llama's bare `{`),
 * alone or in a JSON array. It reads one character at a time, so a piece may end anywhere: inside a marker, a key,
 * an escape. What could still become a call is held back; the rest is answer text at once.
 *
 * A call is committed (its `id` and `name` sent) once its name and the `{` opening its arguments are read; from then
 * on the arguments stream as they come, and their fragments concatenate to exactly the arguments' JSON text. Until
 * then, anything that stops fitting the format (prose after `<tool_call`, a key other than the call's, a name that
 * is not a string) turns the held text back into answer text, read again from its second character so a real marker
 * inside it is still found.
 */
import { randomBytes } from 'node:crypto';
import type { ToolCallParser, ToolParse } from './tool-format.ts';

export interface CallBlock {
  /** Text that opens a block of calls. */
  open: string;
  /** Text that closes the block, if the format has one; its absence is tolerated (the model may stop after `}`). */
  close?: string;
  /** `open` is the call object's own `{` (Llama's bare JSON): its first key must then be `name`. */
  openIsObject?: boolean;
  /**
   * The block may also hold one call written as its bare name, this marker (when the decoder kept it) and the
   * arguments object: Mistral's tokenizer v11 and later, `[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}`.
   */
  namedArgs?: string;
}

export interface CallSyntax {
  blocks: readonly CallBlock[];
  /** Characters that may stand between blocks; after a call they are dropped unless answer text follows them. */
  gap: RegExp;
}

/** A fresh tool-call id, unique per call (`call_` and 24 hex digits, OpenAI's shape). */
export function newCallId(): string {
  return `call_${randomBytes(12).toString('hex')}`;
}

const CALL_KEYS = new Set(['name', 'arguments', 'parameters', 'id', 'type']);
const WS = /\s/;
const SCALAR = /[-+0-9a-zA-Z.]/;
const NAME_CHAR = /[a-zA-Z0-9_.-]/;
/** Longer keys or names than these cannot be a call's, so holding them back any longer only delays the text. */
const MAX_KEY = 16;
const MAX_NAME_RAW = 300;

/** Follows one JSON value's nesting and strings, without validating it (the grammar does that). */
class ValueScanner {
  #depth = 0;
  #inString = false;
  #escaped = false;
  #scalar = false;
  #started = false;

  /** `in`: part of the value, more to come; `last`: ends it; `after`: the value ended before this character. */
  feed(c: string): 'in' | 'last' | 'after' | 'bad' {
    if (!this.#started) {
      this.#started = true;
      if (c === '"') this.#inString = true;
      else if (c === '{' || c === '[') this.#depth = 1;
      else if (SCALAR.test(c)) this.#scalar = true;
      else return 'bad';
      return 'in';
    }
    if (this.#inString) {
      if (this.#escaped) this.#escaped = false;
      else if (c === '\\') this.#escaped = true;
      else if (c === '"') {
        this.#inString = false;
        if (this.#depth === 0) return 'last';
      }
      return 'in';
    }
    if (this.#scalar) return SCALAR.test(c) ? 'in' : 'after';
    if (c === '"') this.#inString = true;
    else if (c === '{' || c === '[') this.#depth++;
    else if (c === '}' || c === ']') {
      this.#depth--;
      if (this.#depth === 0) return 'last';
    }
    return 'in';
  }
}

type Phase =
  | 'bareName'
  | 'argsMarker'
  | 'start'
  | 'arrayItem'
  | 'arrayNext'
  | 'key'
  | 'keyString'
  | 'colon'
  | 'value'
  | 'name'
  | 'args'
  | 'skip'
  | 'afterValue'
  | 'close';

/** The call object being read. */
interface CallObject {
  nameFirst: boolean;
  keys: number;
  key: string;
  keyEscaped: boolean;
  nameRaw?: string;
  nameEscaped: boolean;
  name?: string;
  args?: string;
  argsScanner?: ValueScanner;
  argsSent: number;
  /** Written as name, marker, arguments (see `CallBlock.namedArgs`): the call ends with its arguments. */
  bare?: boolean;
  skip?: ValueScanner;
  index?: number;
}

/** A `ToolCallParser` for a `CallSyntax`; see the module comment. */
export class JsonCallParser implements ToolCallParser {
  readonly #syntax: CallSyntax;
  readonly #longestOpen: number;
  #calls = 0;
  #out: ToolParse = { text: '', toolCalls: [] };

  // text mode
  #inBlock = false;
  #tail = '';
  #gap = '';
  #afterCall = false;

  // block mode
  #block: CallBlock | undefined;
  #held = '';
  #phase: Phase = 'start';
  #inArray = false;
  #blockCommitted = false;
  #object: CallObject | undefined;
  #closeMatched = 0;
  #markerMatched = 0;

  constructor(syntax: CallSyntax) {
    this.#syntax = syntax;
    this.#longestOpen = Math.max(...syntax.blocks.map((b) => b.open.length));
  }

  get calls(): number {
    return this.#calls;
  }

  push(piece: string): ToolParse {
    this.#feed(piece);
    this.#sendArguments();
    return this.#take();
  }

  end(cut = false): ToolParse {
    this.#sendArguments();
    if (this.#inBlock) {
      // A call already sent stands (cut short by the length limit, or missing its close marker); anything else held
      // was never a call — unless the length limit cut it while it was being written: then it is the call's markup
      // (a marker, or Llama's bare `{` once its first key said `name`), which never becomes answer text.
      const held = this.#held;
      const committed = this.#blockCommitted || this.#object?.index !== undefined;
      const markup = cut && (!this.#block?.openIsObject || (this.#object?.keys ?? 0) > 0);
      this.#leaveBlock();
      this.#afterCall = committed;
      if (!markup) this.#text(committed ? held.replace(/^\s+/, '') : held);
    }
    // Held back because it might begin a marker: cut there, it is the start of one.
    if (!cut) this.#text(this.#tail);
    this.#tail = '';
    this.#gap = '';
    return this.#take();
  }

  #take(): ToolParse {
    const out = this.#out;
    this.#out = { text: '', toolCalls: [] };
    return out;
  }

  #feed(s: string): void {
    for (const c of s) {
      if (this.#inBlock) this.#blockChar(c);
      else this.#textChar(c);
    }
  }

  #text(t: string): void {
    if (!t) return;
    if (this.#afterCall) {
      this.#out.text += this.#gap;
      this.#gap = '';
      this.#afterCall = false;
    }
    this.#out.text += t;
  }

  #textChar(c: string): void {
    if (this.#tail === '' && this.#afterCall && this.#syntax.gap.test(c)) {
      this.#gap += c;
      return;
    }
    const s = this.#tail + c;
    for (const block of this.#syntax.blocks) {
      if (s.endsWith(block.open)) {
        this.#text(s.slice(0, s.length - block.open.length));
        this.#tail = '';
        this.#gap = '';
        this.#enterBlock(block);
        return;
      }
    }
    let keep = Math.min(s.length, this.#longestOpen - 1);
    while (keep > 0 && !this.#syntax.blocks.some((b) => b.open.startsWith(s.slice(s.length - keep)))) keep--;
    this.#text(s.slice(0, s.length - keep));
    this.#tail = s.slice(s.length - keep);
  }

  #enterBlock(block: CallBlock): void {
    this.#inBlock = true;
    this.#block = block;
    this.#held = block.open;
    this.#inArray = false;
    this.#blockCommitted = false;
    this.#phase = 'start';
    if (block.openIsObject) this.#beginObject(true);
  }

  #leaveBlock(): void {
    this.#inBlock = false;
    this.#block = undefined;
    this.#object = undefined;
    this.#held = '';
  }

  /** The held text does not fit the format: it is text, unless a call of this block was already sent. */
  #fail(): void {
    const held = this.#held;
    const committed = this.#blockCommitted || this.#object?.index !== undefined;
    if (committed) this.#finishCall();
    this.#leaveBlock();
    if (committed) {
      this.#afterCall = true;
      this.#feed(held);
    } else {
      this.#text(held.slice(0, 1));
      this.#feed(held.slice(1));
    }
  }

  #beginObject(nameFirst: boolean): void {
    this.#object = { nameFirst, keys: 0, key: '', keyEscaped: false, nameEscaped: false, argsSent: 0 };
    this.#phase = 'key';
  }

  #blockChar(c: string): void {
    const o = this.#object;
    if (!(this.#phase === 'args' && o?.index !== undefined)) this.#held += c;
    switch (this.#phase) {
      case 'start':
        if (WS.test(c)) return;
        if (c === '{') return this.#beginObject(false);
        if (c === '[') {
          this.#inArray = true;
          this.#phase = 'arrayItem';
          return;
        }
        if (this.#block?.namedArgs && NAME_CHAR.test(c)) {
          this.#beginObject(true);
          if (this.#object) Object.assign(this.#object, { bare: true, nameRaw: c });
          this.#phase = 'bareName';
          return;
        }
        return this.#fail();
      case 'bareName':
        return this.#bareNameChar(c);
      case 'argsMarker': {
        const marker = this.#block?.namedArgs ?? '';
        if (c !== marker[this.#markerMatched]) return this.#fail();
        if (++this.#markerMatched === marker.length) this.#phase = 'value';
        return;
      }
      case 'arrayItem':
        if (WS.test(c)) return;
        if (c === '{') return this.#beginObject(false);
        return this.#fail();
      case 'arrayNext':
        if (WS.test(c)) return;
        if (c === ',') {
          this.#phase = 'arrayItem';
          return;
        }
        if (c === ']') return this.#afterBody();
        return this.#fail();
      case 'key':
        if (WS.test(c)) return;
        if (c === '"' && o) {
          o.key = '';
          this.#phase = 'keyString';
          return;
        }
        if (c === '}') return this.#endObject();
        return this.#fail();
      case 'keyString':
        return this.#keyChar(c);
      case 'colon':
        if (WS.test(c)) return;
        if (c === ':') {
          this.#phase = 'value';
          return;
        }
        return this.#fail();
      case 'value':
        return this.#valueStart(c);
      case 'name':
        return this.#nameChar(c);
      case 'args': {
        if (!o?.argsScanner) return this.#fail();
        o.args += c;
        if (o.argsScanner.feed(c) !== 'last') return;
        if (o.bare) return this.#endObject();
        this.#phase = 'afterValue';
        return;
      }
      case 'skip': {
        const r = o?.skip?.feed(c);
        if (r === 'last') this.#phase = 'afterValue';
        else if (r === 'after') {
          this.#phase = 'afterValue';
          this.#held = this.#held.slice(0, -1);
          this.#blockChar(c);
        } else if (r !== 'in') this.#fail();
        return;
      }
      case 'afterValue':
        if (WS.test(c)) return;
        if (c === ',') {
          this.#phase = 'key';
          return;
        }
        if (c === '}') return this.#endObject();
        return this.#fail();
      case 'close':
        return this.#closeChar(c);
    }
  }

  #bareNameChar(c: string): void {
    const o = this.#object;
    if (!o || o.nameRaw === undefined) return this.#fail();
    if (NAME_CHAR.test(c) && o.nameRaw.length < 128) {
      o.nameRaw += c;
      return;
    }
    o.name = o.nameRaw;
    o.key = 'arguments';
    if (c === '[') {
      this.#markerMatched = 1;
      this.#phase = 'argsMarker';
      if (this.#block?.namedArgs?.[0] !== '[') this.#fail();
      return;
    }
    if (c === '{') return this.#valueStart(c);
    this.#fail();
  }

  #keyChar(c: string): void {
    const o = this.#object;
    if (!o) return this.#fail();
    if (o.keyEscaped) {
      o.keyEscaped = false;
      o.key += c;
    } else if (c === '\\') {
      // Call keys are plain ASCII: an escaped key is never one of them.
      return this.#fail();
    } else if (c === '"') {
      const key = o.key;
      const first = o.keys++ === 0;
      if (!CALL_KEYS.has(key) || (o.nameFirst && first && key !== 'name')) return this.#fail();
      if (
        (key === 'name' && o.nameRaw !== undefined) ||
        ((key === 'arguments' || key === 'parameters') && o.args !== undefined)
      )
        return this.#fail();
      this.#phase = 'colon';
    } else {
      o.key += c;
      if (o.key.length > MAX_KEY) return this.#fail();
    }
  }

  #valueStart(c: string): void {
    const o = this.#object;
    if (!o) return this.#fail();
    if (WS.test(c)) return;
    if (o.key === 'name') {
      if (c !== '"') return this.#fail();
      o.nameRaw = '"';
      this.#phase = 'name';
      return;
    }
    if (o.key === 'arguments' || o.key === 'parameters') {
      if (c !== '{') return this.#fail();
      o.argsScanner = new ValueScanner();
      o.argsScanner.feed(c);
      o.args = c;
      this.#phase = 'args';
      this.#commit();
      return;
    }
    o.skip = new ValueScanner();
    const r = o.skip.feed(c);
    if (r === 'bad') return this.#fail();
    this.#phase = r === 'last' ? 'afterValue' : 'skip';
  }

  #nameChar(c: string): void {
    const o = this.#object;
    if (!o || o.nameRaw === undefined) return this.#fail();
    o.nameRaw += c;
    if (o.nameRaw.length > MAX_NAME_RAW) return this.#fail();
    if (o.nameEscaped) {
      o.nameEscaped = false;
      return;
    }
    if (c === '\\') {
      o.nameEscaped = true;
      return;
    }
    if (c !== '"') return;
    let name: unknown;
    try {
      name = JSON.parse(o.nameRaw);
    } catch {
      return this.#fail();
    }
    if (typeof name !== 'string' || name.length === 0 || name.length > 128) return this.#fail();
    o.name = name;
    this.#phase = 'afterValue';
    this.#commit();
  }

  /** Sends the call's id and name once both its name and the start of its arguments are known. */
  #commit(): void {
    const o = this.#object;
    if (!o || o.index !== undefined || o.name === undefined || o.args === undefined) return;
    o.index = this.#calls++;
    this.#out.toolCalls.push({ index: o.index, id: newCallId(), name: o.name });
    this.#held = '';
    this.#sendArguments();
  }

  #sendArguments(): void {
    const o = this.#object;
    if (!o || o.index === undefined || o.args === undefined || o.args.length === o.argsSent) return;
    const fragment = o.args.slice(o.argsSent);
    o.argsSent = o.args.length;
    const last = this.#out.toolCalls.at(-1);
    if (last && last.index === o.index) last.arguments = (last.arguments ?? '') + fragment;
    else this.#out.toolCalls.push({ index: o.index, arguments: fragment });
  }

  #finishCall(): void {
    this.#sendArguments();
    this.#object = undefined;
    this.#blockCommitted = true;
  }

  #endObject(): void {
    const o = this.#object;
    if (!o || o.name === undefined || o.args === undefined || (this.#phase === 'args' && !o.bare)) return this.#fail();
    this.#commit();
    this.#finishCall();
    this.#held = '';
    if (this.#inArray) this.#phase = 'arrayNext';
    else this.#afterBody();
  }

  #afterBody(): void {
    if (this.#block?.close) {
      this.#phase = 'close';
      this.#closeMatched = 0;
      this.#held = '';
      return;
    }
    this.#leaveBlock();
    this.#afterCall = true;
  }

  #closeChar(c: string): void {
    const close = this.#block?.close ?? '';
    if (this.#closeMatched === 0 && WS.test(c)) return;
    if (c === close[this.#closeMatched]) {
      this.#closeMatched++;
      if (this.#closeMatched === close.length) {
        this.#leaveBlock();
        this.#afterCall = true;
      }
      return;
    }
    this.#fail();
  }
}
