/** Streaming text helpers shared by engines: stop sequences and incremental detokenisation. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Detokenizer } from '../node/engines/detokenizer.ts';
import { StopSequences } from '../node/engines/stop-sequences.ts';

describe('StopSequences', () => {
  test('holds back a possible stop prefix and drops the stop and what follows', () => {
    const s = new StopSequences(['STOP']);
    assert.equal(s.push('hello S'), 'hello ');
    assert.equal(s.push('T'), '');
    assert.equal(s.push('OP and more'), '');
    assert.ok(s.stopped);
    assert.equal(s.flush(), '');
  });
  test('releases held text when it turns out not to be a stop', () => {
    const s = new StopSequences(['STOP']);
    assert.equal(s.push('a ST'), 'a ');
    assert.equal(s.push('ART of it'), 'START of it');
    assert.equal(s.push(' S'), ' ');
    assert.equal(s.flush(), 'S');
    assert.ok(!s.stopped);
  });
  test('the earliest of several stops wins, even across pieces', () => {
    const s = new StopSequences(['\n\n', 'END']);
    assert.equal(s.push('one E') + s.push('ND two\n\n'), 'one ');
  });
  test('no stops: everything passes straight through', () => {
    const s = new StopSequences([]);
    assert.equal(s.push('abc'), 'abc');
    assert.equal(s.flush(), '');
  });
  test('never splits a surrogate pair', () => {
    const s = new StopSequences(['xyz']);
    const out = s.push('a😀');
    assert.ok(!out.endsWith('\uD83D'), 'no lone high surrogate at the end');
    assert.equal(out + s.flush(), 'a😀');
  });
});

describe('Detokenizer', () => {
  // A toy byte-level vocabulary: each id is one UTF-8 byte, so multi-byte characters span several tokens.
  const decode = (ids: readonly bigint[]) => new TextDecoder().decode(Uint8Array.from(ids.map(Number)));
  test('a character split across tokens is emitted once it is complete', () => {
    const d = new Detokenizer(decode);
    const bytes = [...new TextEncoder().encode('é👋!')];
    const out = bytes.map((b) => d.push(BigInt(b)));
    assert.equal(out.join(''), 'é👋!');
    assert.equal(out[0], '', 'first byte of é alone is held');
    assert.ok(
      out.every((o) => !o.includes('\uFFFD')),
      'no replacement characters leak',
    );
  });
});
