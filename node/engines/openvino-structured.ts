/**
 * An output constraint (xgrammar structural tags, node/output/plan.ts) as OpenVINO GenAI's `StructuredOutputConfig`.
 * GenAI runs xgrammar natively, and its structural tags are the same model under other names, so the mapping is
 * one to one: `sequence` is `Concat`, `or` is `Union`, a JSON schema travels as JSON text.
 */
import type * as GenAI from 'openvino-genai-node';
import type { Constraint, StructuralTagFormat, TagFormat } from '../output/plan.ts';

/** The part of `openvino-genai-node` the mapping uses: its `StructuredOutputConfig` class and static constructors. */
export type StructuredOutputConfigClass = typeof GenAI.StructuredOutputConfig;

type StructuralTag = GenAI.StructuredOutputConfig.StructuralTag;

/** `constraint` as a generation config's `structured_output_config`, built with GenAI's own constructors. */
export function structuredOutputConfig(Config: StructuredOutputConfigClass, constraint: Constraint): GenAI.StructuredOutputConfig {
  return new Config({ structural_tags_config: structuralTag(Config, constraint) });
}

function structuralTag(Config: StructuredOutputConfigClass, format: StructuralTagFormat): StructuralTag {
  const tag = (t: TagFormat): GenAI.StructuredOutputConfig.Tag => Config.Tag({ begin: t.begin, content: structuralTag(Config, t.content), end: t.end });
  switch (format.type) {
    case 'any_text':
      return Config.AnyText();
    case 'const_string':
      return Config.ConstString(format.value);
    case 'json_schema':
      return Config.JSONSchema(JSON.stringify(format.json_schema));
    case 'grammar':
      return Config.EBNF(format.grammar);
    case 'regex':
      return Config.Regex(format.pattern);
    case 'sequence':
      return Config.Concat(...format.elements.map((e) => structuralTag(Config, e)));
    case 'or':
      return Config.Union(...format.elements.map((e) => structuralTag(Config, e)));
    case 'tag':
      return tag(format);
    case 'triggered_tags':
      return Config.TriggeredTags({ triggers: format.triggers, tags: format.tags.map(tag), atLeastOne: format.at_least_one ?? false, stopAfterFirst: format.stop_after_first ?? false });
    case 'tags_with_separator':
      return Config.TagsWithSeparator({ tags: format.tags.map(tag), separator: format.separator, atLeastOne: format.at_least_one ?? false, stopAfterFirst: format.stop_after_first ?? false });
  }
}
