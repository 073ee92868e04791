/**
 * Output constraints as OpenVINO GenAI's StructuredOutputConfig, built with GenAI's own class and static
 * constructors (the pure-JavaScript part of openvino-genai-node, which loads without the native runtime).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { structuredOutputConfig } from '../node/engines/openvino-structured.ts';
import type { Constraint } from '../node/output/plan.ts';
import { genaiUtils } from './support/fake-openvino.ts';

const { StructuredOutputConfig } = genaiUtils;
const schema = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };

describe('constraints as GenAI structural tags', () => {
  test('every structural-tag type maps onto its GenAI counterpart, nested', () => {
    const constraint: Constraint = {
      type: 'sequence',
      elements: [
        { type: 'tag', begin: '<think>', content: { type: 'any_text' }, end: '</think>' },
        {
          type: 'or',
          elements: [
            {
              type: 'triggered_tags',
              triggers: ['<tool_call>'],
              tags: [
                {
                  type: 'tag',
                  begin: '<tool_call>',
                  content: { type: 'json_schema', json_schema: schema },
                  end: '</tool_call>',
                },
              ],
              stop_after_first: true,
            },
            {
              type: 'tags_with_separator',
              tags: [{ type: 'tag', begin: '[', content: { type: 'regex', pattern: '[a-z]+' }, end: ']' }],
              separator: ',',
              at_least_one: true,
            },
            { type: 'const_string', value: 'none' },
            { type: 'grammar', grammar: 'root ::= "yes" | "no"' },
          ],
        },
      ],
    };
    const config = structuredOutputConfig(StructuredOutputConfig, constraint);
    assert.ok(config instanceof StructuredOutputConfig);
    assert.equal(config.json_schema, undefined);
    assert.deepEqual(config.structural_tags_config, {
      structuralTagType: 'Concat',
      elements: [
        { structuralTagType: 'Tag', begin: '<think>', content: { structuralTagType: 'AnyText' }, end: '</think>' },
        {
          structuralTagType: 'Union',
          elements: [
            {
              structuralTagType: 'TriggeredTags',
              triggers: ['<tool_call>'],
              tags: [
                {
                  structuralTagType: 'Tag',
                  begin: '<tool_call>',
                  content: { structuralTagType: 'JSONSchema', value: JSON.stringify(schema) },
                  end: '</tool_call>',
                },
              ],
              atLeastOne: false,
              stopAfterFirst: true,
            },
            {
              structuralTagType: 'TagsWithSeparator',
              tags: [
                {
                  structuralTagType: 'Tag',
                  begin: '[',
                  content: { structuralTagType: 'Regex', value: '[a-z]+' },
                  end: ']',
                },
              ],
              separator: ',',
              atLeastOne: true,
              stopAfterFirst: false,
            },
            { structuralTagType: 'ConstString', value: 'none' },
            { structuralTagType: 'EBNF', value: 'root ::= "yes" | "no"' },
          ],
        },
      ],
    });
  });

  test('a JSON schema travels as JSON text', () => {
    const config = structuredOutputConfig(StructuredOutputConfig, { type: 'json_schema', json_schema: schema });
    assert.deepEqual(config.structural_tags_config, {
      structuralTagType: 'JSONSchema',
      value: '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}',
    });
  });
});
