/** Helpers for the output tests: random splits of a text, and the calls a stream of tool-call deltas adds up to. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ToolCallDelta } from '../../shared/protocol/frames.ts';

/** `text` cut at the given positions (taken modulo its length, in code points). */
export function splitAt(text: string, cuts: readonly number[]): string[] {
  const chars = Array.from(text);
  const at = [...new Set(cuts.map((c) => (chars.length ? c % (chars.length + 1) : 0)))].sort((a, b) => a - b);
  const pieces: string[] = [];
  let from = 0;
  for (const to of [...at, chars.length]) {
    pieces.push(chars.slice(from, to).join(''));
    from = to;
  }
  return pieces;
}

/** Cut positions for `splitAt`: from none (the whole text at once) to one piece per character. */
export const cuts = fc.array(fc.nat({ max: 10_000 }), { maxLength: 200 });

export interface Call {
  id: string;
  name: string;
  arguments: string;
}

/** The calls that deltas stream, checking the protocol's rules on the way: index order, id and name first. */
export function assemble(deltas: readonly ToolCallDelta[]): Call[] {
  const calls: Call[] = [];
  for (const d of deltas) {
    if (d.index === calls.length) {
      assert.ok(d.id && d.name, `the first piece of call ${d.index} has its id and name: ${JSON.stringify(d)}`);
      calls.push({ id: d.id, name: d.name, arguments: d.arguments ?? '' });
      continue;
    }
    const call = calls[d.index];
    assert.ok(call, `a piece for call ${d.index} after ${calls.length} calls`);
    assert.equal(d.id, undefined, 'only the first piece of a call has an id');
    call.arguments += d.arguments ?? '';
  }
  return calls;
}
