/**
 * The special-token texts of an OpenVINO GenAI tokenizer, to be marked in the client's strings (user-text.ts).
 * GenAI names its BOS, EOS and PAD tokens; those are the ones a client could use to end a turn or start one.
 */
import type * as GenAI from 'openvino-genai-node';
import { specialTokenPattern } from './user-text.ts';

const known = new WeakMap<object, RegExp | undefined>();

export function openVinoSpecials(tokenizer: GenAI.Tokenizer): RegExp | undefined {
  if (known.has(tokenizer)) return known.get(tokenizer);
  const read = (get: (() => string) | undefined) => {
    try {
      return get?.call(tokenizer) ?? '';
    } catch {
      return '';
    }
  };
  const pattern = specialTokenPattern(
    [read(tokenizer.getBosToken), read(tokenizer.getEosToken), read(tokenizer.getPadToken)].filter(Boolean),
  );
  known.set(tokenizer, pattern);
  return pattern;
}
