/**
 * An output constraint (xgrammar structural tags, node/output/plan.ts) as OpenVINO GenAI's `StructuredOutputConfig`.
 * GenAI runs xgrammar natively, and its structural tags are the same model under other names, so the mapping is
 * one to one: `sequence` is `Concat`, `or` is `Union`, a JSON schema travels as JSON text.
 */
import type * as GenAI from 'openvino-genai-node';
import type { Constraint, StructuralTagFormat, TagFormat } from '../output/plan.ts';
import { type GenAiSpelling, spellForGenAi, spellGrammarForGenAi } from './genai-vocabulary.ts';

/** The part of `openvino-genai-node` the mapping uses: its `StructuredOutputConfig` class and static constructors. */
export type StructuredOutputConfigClass = typeof GenAI.StructuredOutputConfig;

type StructuralTag = GenAI.StructuredOutputConfig.StructuralTag;

/**
 * `constraint` as a generation config's `structured_output_config`, built with GenAI's own constructors, its literals
 * spelled as the model's vocabulary reads them in GenAI (genai-vocabulary.ts).
 */
export function structuredOutputConfig(
  Config: StructuredOutputConfigClass,
  constraint: Constraint,
  spelling: GenAiSpelling = { byteFallback: false },
): GenAI.StructuredOutputConfig {
  return new Config({
    structural_tags_config: structuralTag(Config, constraint, (text) => spellForGenAi(text, spelling), spelling),
  });
}

function structuralTag(
  Config: StructuredOutputConfigClass,
  format: StructuralTagFormat,
  spell: (text: string) => string,
  spelling: GenAiSpelling,
): StructuralTag {
  const inner = (f: StructuralTagFormat) => structuralTag(Config, f, spell, spelling);
  const tag = (t: TagFormat): GenAI.StructuredOutputConfig.Tag =>
    Config.Tag({ begin: spell(t.begin), content: inner(t.content), end: spell(t.end) });
  switch (format.type) {
    case 'any_text':
      return Config.AnyText();
    case 'const_string':
      return Config.ConstString(spell(format.value));
    case 'json_schema':
      return Config.JSONSchema(JSON.stringify(format.json_schema));
    case 'grammar':
      return Config.EBNF(spellGrammarForGenAi(format.grammar, spelling));
    case 'regex':
      return Config.Regex(format.pattern);
    case 'sequence':
      return Config.Concat(...format.elements.map(inner));
    case 'or':
      return Config.Union(...format.elements.map(inner));
    case 'tag':
      return tag(format);
    case 'triggered_tags':
      return Config.TriggeredTags({
        triggers: format.triggers.map(spell),
        tags: format.tags.map(tag),
        atLeastOne: format.at_least_one ?? false,
        stopAfterFirst: format.stop_after_first ?? false,
      });
    case 'tags_with_separator':
      return Config.TagsWithSeparator({
        tags: format.tags.map(tag),
        separator: spell(format.separator),
        atLeastOne: format.at_least_one ?? false,
        stopAfterFirst: format.stop_after_first ?? false,
      });
  }
}
