/**
 * Text as OpenVINO GenAI's grammar engine reads it. GenAI hands xgrammar the vocabulary stored in the detokenizer
 * model unchanged, as a RAW vocabulary (openvino.genai `src/cpp/src/sampling/structured_output/xgrammar_backend.cpp`),
 * and for a SentencePiece tokenizer those are pieces: `▁Paris` for " Paris", `<0x0A>` for a newline. A constraint
 * that spells a space or a newline plainly asks for text no token has, and the answer stalls there (on the real
 * runtime a forced tool call ended at `<tool_call>` and ran empty tokens to the limit). So the literals a constraint
 * gives GenAI are spelled in pieces; what the model writes still decodes to the plain text the parsers read.
 * Byte-level BPE (Llama 3, Qwen) and WordPiece vocabularies need no respelling here.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** How literal text is spelled for GenAI's grammar engine with one model's tokenizer. */
export interface GenAiSpelling {
  /** The piece that stands for a space (`▁` in SentencePiece), when the vocabulary has one. */
  space?: string;
  /** True when bytes no piece spells are byte-fallback tokens `<0xHH>` (control characters, in SentencePiece). */
  byteFallback: boolean;
}

const PLAIN: GenAiSpelling = { byteFallback: false };
const METASPACE = '\u2581';

/** The spelling of the tokenizer in `dir`, read from its `tokenizer.json` (the export keeps it); plain when absent. */
export function genaiSpellingOf(dir: string): GenAiSpelling {
  let tokenizer: { decoder?: unknown; pre_tokenizer?: unknown; model?: { byte_fallback?: unknown } };
  try {
    tokenizer = JSON.parse(readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
  } catch {
    return PLAIN;
  }
  // A decoder (or pre-tokenizer) that maps ▁ to a space is SentencePiece's metaspace, in either of its spellings
  // (`Metaspace`, or `Replace` ▁ → " " as Llama 2's tokenizer.json has it).
  const metaspace = [tokenizer.decoder, tokenizer.pre_tokenizer].some(
    (part) => JSON.stringify(part ?? null).includes(METASPACE) || JSON.stringify(part ?? null).includes('"Metaspace"'),
  );
  return { ...(metaspace ? { space: METASPACE } : {}), byteFallback: tokenizer.model?.byte_fallback === true };
}

/** `text` spelled as GenAI's grammar engine reads it with `spelling`. */
export function spellForGenAi(text: string, spelling: GenAiSpelling): string {
  if (!spelling.space && !spelling.byteFallback) return text;
  let out = '';
  for (const char of text) {
    if (char === ' ' && spelling.space) out += spelling.space;
    // A control character has no piece of its own in a SentencePiece vocabulary, only a byte token such as <0x0A>, and
    // spelling that out lets xgrammar write it as six one-character tokens instead (the literal text "<0x0A>" came out
    // on the real runtime). So a literal's line breaks are left out: the tool-call markers they sit between parse the
    // same without them.
    else if (!(spelling.byteFallback && char < ' ')) out += char;
  }
  return out;
}

/**
 * An EBNF grammar with the spaces of its quoted literals respelled (`", "` in xgrammar's rules for any JSON, `"New
 * York"` in an enum). Character classes stay as they are: a negated class (every JSON string) already admits the
 * pieces, and a `"` inside a class does not open a literal.
 */
export function spellGrammarForGenAi(ebnf: string, spelling: GenAiSpelling): string {
  const space = spelling.space;
  if (!space) return ebnf;
  let out = '';
  let inClass = false;
  let inLiteral = false;
  for (let i = 0; i < ebnf.length; i++) {
    const char = ebnf[i]!;
    if (char === '\\') {
      out += char + (ebnf[i + 1] ?? '');
      i++;
    } else if (inLiteral) {
      if (char === '"') inLiteral = false;
      out += char === ' ' ? space : char;
    } else {
      if (inClass && char === ']') inClass = false;
      else if (!inClass && char === '[') inClass = true;
      else if (!inClass && char === '"') inLiteral = true;
      out += char;
    }
  }
  return out;
}
