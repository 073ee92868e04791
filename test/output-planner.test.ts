/** planOutput: the constraint each tool choice and response format gets, the template's messages, and refusals. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AgentError } from '../node/errors.ts';
import { planOutput } from '../node/output/planner.ts';
import { chat, SEARCH, TRAITS, WEATHER } from './support/output-tasks.ts';

const HERMES_WEATHER = {
  type: 'tag',
  begin: '<tool_call>\n{"name": "get_weather", "arguments": ',
  content: { type: 'json_schema', json_schema: WEATHER.parameters },
  end: '}\n</tool_call>',
};

describe('tool choice', () => {
  test('auto: text or calls, a call constrained once its trigger is written; the template gets the tools', () => {
    const plan = planOutput(chat({ tools: [WEATHER, SEARCH] }), TRAITS.qwen25);
    assert.equal(plan.constraint?.type, 'triggered_tags');
    assert.deepEqual(plan.constraint, {
      type: 'triggered_tags',
      triggers: ['<tool_call>'],
      tags: [
        HERMES_WEATHER,
        {
          ...HERMES_WEATHER,
          begin: '<tool_call>\n{"name": "search", "arguments": ',
          content: { type: 'json_schema', json_schema: SEARCH.parameters },
        },
      ],
      stop_after_first: false,
    });
    assert.deepEqual(plan.tools, [
      { type: 'function', function: WEATHER },
      { type: 'function', function: SEARCH },
    ]);
    assert.equal(plan.parseTools, true);
  });

  test('required: at least one call to any tool; parallelToolCalls false stops after the first', () => {
    const plan = planOutput(chat({ tools: [WEATHER, SEARCH], toolChoice: 'required' }), TRAITS.llama3);
    assert.deepEqual(plan.constraint && { ...plan.constraint, tags: undefined }, {
      type: 'tags_with_separator',
      tags: undefined,
      separator: '; ',
      at_least_one: true,
      stop_after_first: false,
    });
    const single = planOutput(
      chat({ tools: [WEATHER, SEARCH], toolChoice: 'required', parallelToolCalls: false }),
      TRAITS.llama3,
    );
    assert.equal(single.constraint?.type === 'tags_with_separator' && single.constraint.stop_after_first, true);
  });

  test('a named function: only its tag, exactly once', () => {
    const plan = planOutput(chat({ tools: [WEATHER, SEARCH], toolChoice: { name: 'get_weather' } }), TRAITS.qwen25);
    assert.deepEqual(plan.constraint, {
      type: 'tags_with_separator',
      tags: [HERMES_WEATHER],
      separator: '\n',
      at_least_one: true,
      stop_after_first: true,
    });
  });

  test('none: no tools for the template, no grammar, calls not read', () => {
    const plan = planOutput(chat({ tools: [WEATHER], toolChoice: 'none' }), TRAITS.qwen25);
    assert.deepEqual([plan.tools, plan.constraint, plan.parseTools], [undefined, undefined, false]);
  });

  test('a named function that is not among the tools is refused, naming both', () => {
    assert.throws(
      () => planOutput(chat({ tools: [WEATHER], toolChoice: { name: 'get_wether' } }), TRAITS.qwen25),
      (err: unknown) =>
        err instanceof AgentError &&
        err.code === 'invalid_request' &&
        err.message === "tool_choice names 'get_wether', which is not among the tools (get_weather)",
    );
  });

  test('required without tools is refused', () => {
    assert.throws(() => planOutput(chat({ toolChoice: 'required' }), TRAITS.qwen25), {
      code: 'invalid_request',
      message: /tool_choice 'required' needs tools/,
    });
  });
});

describe('response format', () => {
  test('json_object is any JSON object; json_schema is that schema', () => {
    assert.deepEqual(planOutput(chat({ responseFormat: { type: 'json_object' } }), TRAITS.qwen25).constraint, {
      type: 'json_schema',
      json_schema: { type: 'object' },
    });
    const schema = { type: 'object', properties: { n: { type: 'integer' } } };
    assert.deepEqual(planOutput(chat({ responseFormat: { type: 'json_schema', schema } }), TRAITS.qwen25).constraint, {
      type: 'json_schema',
      json_schema: schema,
    });
  });

  test('a thinking model thinks freely first, then answers in the format', () => {
    const plan = planOutput(chat({ responseFormat: { type: 'json_object' } }), TRAITS.qwen3);
    assert.deepEqual(plan.constraint, {
      type: 'sequence',
      elements: [
        { type: 'tag', begin: '<think>', content: { type: 'any_text' }, end: '</think>' },
        { type: 'regex', pattern: '\\s*' },
        { type: 'json_schema', json_schema: { type: 'object' } },
      ],
    });
  });

  test('a model whose prompt opens the block starts inside it', () => {
    const plan = planOutput(chat({ responseFormat: { type: 'json_object' } }), TRAITS.r1Distill);
    assert.equal(
      plan.constraint?.type === 'sequence' &&
        plan.constraint.elements[0]?.type === 'tag' &&
        plan.constraint.elements[0].begin,
      '',
    );
  });

  test('thinking switched off: enable_thinking false, no block in the grammar, no reasoning read', () => {
    const plan = planOutput(chat({ think: false, responseFormat: { type: 'json_object' } }), TRAITS.qwen3);
    assert.deepEqual(plan.templateContext, { enable_thinking: false });
    assert.equal(plan.parseReasoning, false);
    assert.deepEqual(plan.constraint, { type: 'json_schema', json_schema: { type: 'object' } });
  });

  test('a raw completion gets the format, and no parsing', () => {
    const plan = planOutput(
      { task: 'complete', model: 'm', prompt: 'x', sampling: chat().sampling, responseFormat: { type: 'json_object' } },
      TRAITS.qwen3,
    );
    assert.deepEqual(
      [plan.constraint?.type, plan.parseReasoning, plan.parseTools, plan.messages],
      ['json_schema', false, false, undefined],
    );
  });
});

describe('template messages', () => {
  const history = chat({
    tools: [WEATHER],
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Weather in Paris and Rome?' },
      {
        role: 'assistant',
        content: '',
        toolCalls: [
          { id: 'call_1', name: 'get_weather', arguments: '{"city":"Paris"}' },
          { id: 'call_2', name: 'get_weather', arguments: '{"city":"Rome"}' },
        ],
      },
      { role: 'tool', content: '18 C', toolCallId: 'call_1' },
      { role: 'tool', content: '24 C', toolCallId: 'call_2', toolName: 'get_weather' },
    ],
  });

  test('calls in history get object arguments; results keep their call id and name', () => {
    const plan = planOutput(history, TRAITS.qwen25);
    assert.deepEqual(plan.messages?.slice(2), [
      {
        role: 'assistant',
        content: '',
        tool_calls: [
          { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: { city: 'Paris' } } },
          { id: 'call_2', type: 'function', function: { name: 'get_weather', arguments: { city: 'Rome' } } },
        ],
      },
      { role: 'tool', content: '18 C', tool_call_id: 'call_1', name: 'get_weather' },
      { role: 'tool', content: '24 C', tool_call_id: 'call_2', name: 'get_weather' },
    ]);
  });

  test('arguments that are not a JSON object (a call cut by the token limit, sent back) go on as their text', () => {
    const cut = chat({
      messages: [
        { role: 'user', content: 'x' },
        { role: 'assistant', content: '', toolCalls: [{ id: 'c', name: 'f', arguments: '{"city": ' }] },
      ],
    });
    assert.equal(planOutput(cut, TRAITS.qwen25).messages?.[1]?.tool_calls?.[0]?.function.arguments, '{"city": ');
    const list = chat({
      messages: [{ role: 'assistant', content: '', toolCalls: [{ id: 'c', name: 'f', arguments: '[1]' }] }],
    });
    assert.equal(planOutput(list, TRAITS.qwen25).messages?.[0]?.tool_calls?.[0]?.function.arguments, '[1]');
    // Written out by the agent (a template without tools), the text is what the model reads.
    assert.match(
      planOutput(cut, TRAITS.plain).messages?.[1]?.content ?? '',
      /\{"name": "f", "arguments": \{"city": \}?/,
    );
  });

  test('generic layout: the tools and the call format in the system prompt, history written in that format', () => {
    const plan = planOutput(history, TRAITS.plain);
    assert.equal(plan.tools, undefined);
    assert.equal(plan.traits.toolFormat, 'hermes');
    const [system, , assistant, results] = plan.messages ?? [];
    assert.equal(system?.role, 'system');
    assert.ok(system?.content.startsWith('Be brief.\n\n# Tools\n'), system?.content);
    assert.ok(system?.content.includes(JSON.stringify({ type: 'function', function: WEATHER })));
    assert.ok(
      system?.content.includes('<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'),
    );
    assert.equal(
      assistant?.content,
      '<tool_call>\n{"name": "get_weather", "arguments": {"city":"Paris"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city":"Rome"}}\n</tool_call>',
    );
    assert.equal(assistant?.tool_calls, undefined);
    assert.deepEqual(results, {
      role: 'user',
      content: '<tool_response>\n18 C\n</tool_response>\n<tool_response>\n24 C\n</tool_response>',
    });
    assert.equal(plan.messages?.length, 4);
  });

  test('generic layout without a system message: one is put first', () => {
    const plan = planOutput(chat({ tools: [WEATHER] }), TRAITS.plain);
    assert.equal(plan.messages?.[0]?.role, 'system');
    assert.ok(plan.messages?.[0]?.content.startsWith('# Tools'));
    assert.equal(plan.messages?.[1]?.content, 'Weather in Paris?');
  });

  test('Mistral: call ids become the 9 alphanumerics its template demands, the same for a call and its result', () => {
    const plan = planOutput(history, TRAITS.mistral);
    const id = plan.messages?.[2]?.tool_calls?.[0]?.id;
    assert.match(id ?? '', /^[a-zA-Z0-9]{9}$/);
    assert.equal(plan.messages?.[3]?.tool_call_id, id);
    assert.notEqual(plan.messages?.[2]?.tool_calls?.[1]?.id, id);
  });

  test('Phi-4-mini: tools as JSON text on the system message, history calls written as functools', () => {
    const plan = planOutput(history, TRAITS.phi4);
    assert.equal(plan.tools, undefined);
    assert.deepEqual(JSON.parse(plan.messages?.[0]?.tools ?? ''), [WEATHER]);
    assert.equal(
      plan.messages?.[2]?.content,
      'functools[{"name": "get_weather", "arguments": {"city":"Paris"}}, {"name": "get_weather", "arguments": {"city":"Rome"}}]',
    );
  });

  test('reasoning from history is handed to the template', () => {
    const plan = planOutput(
      chat({
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'hello', reasoning: 'greet back' },
        ],
      }),
      TRAITS.qwen3,
    );
    assert.equal(plan.messages?.[1]?.reasoning_content, 'greet back');
  });
});
