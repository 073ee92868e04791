/**
 * Constraint literals as OpenVINO GenAI's grammar engine reads them. GenAI gives xgrammar a SentencePiece vocabulary
 * as raw pieces (`▁` for a space, `<0x0A>` for a newline), so a tool-call marker spelled with plain spaces and line
 * breaks cannot be written and the call stalls after its marker (seen on the real runtime); the end-to-end case runs
 * in test/openvino-e2e.test.ts where the runtime is installed.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { genaiSpellingOf, spellForGenAi, spellGrammarForGenAi } from '../../node/engines/genai-vocabulary.ts';
import { CHAT_MODEL, EMBED_MODEL } from '../support/fixtures.ts';
import { locateTestModels } from '../support/test-models.ts';

const models = locateTestModels().dir;

test('a SentencePiece tokenizer with byte fallback (Llama 2) is spelled in pieces; WordPiece and a missing tokenizer.json are plain', () => {
  assert.deepEqual(genaiSpellingOf(path.join(models, CHAT_MODEL)), { space: '\u2581', byteFallback: true });
  assert.deepEqual(genaiSpellingOf(path.join(models, EMBED_MODEL)), { byteFallback: false });
  assert.deepEqual(genaiSpellingOf(path.join(models, 'no-such-model')), { byteFallback: false });
});

test('a tool-call marker: spaces become ▁ and line breaks are left out; plain spelling changes nothing', () => {
  const begin = '<tool_call>\n{"name": "get_weather", "arguments": ';
  assert.equal(
    spellForGenAi(begin, { space: '\u2581', byteFallback: true }),
    '<tool_call>{"name":\u2581"get_weather",\u2581"arguments":\u2581',
  );
  assert.equal(spellForGenAi(begin, { byteFallback: false }), begin);
});

test('an EBNF grammar: spaces inside quoted literals are respelled; grammar syntax and character classes are not', () => {
  const ebnf =
    'basic_escape ::= ["\\\\/bfnrt] | "u"\nroot ::= "{" ("\\"New York\\"" | "\\"a b\\"") (", " [ \\n\\t]*) "}"';
  const spelled = spellGrammarForGenAi(ebnf, { space: '\u2581', byteFallback: true });
  assert.equal(
    spelled,
    'basic_escape ::= ["\\\\/bfnrt] | "u"\nroot ::= "{" ("\\"New\u2581York\\"" | "\\"a\u2581b\\"") (",\u2581" [ \\n\\t]*) "}"',
  );
});
