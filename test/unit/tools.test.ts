/** Tool results linked to the calls they answer (shared/api/tools.ts), as every dialect's history reaches the agent. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { linkToolResults, toolDef, toolFields } from '../../shared/api/tools.ts';
import type { ChatMessage } from '../../shared/protocol/frames.ts';

const ask: ChatMessage = { role: 'user', content: 'Weather in Paris and Oslo?' };
const calls: ChatMessage = {
  role: 'assistant',
  content: '',
  toolCalls: [
    { id: 'c1', name: 'get_weather', arguments: '{"city":"Paris"}' },
    { id: 'c2', name: 'get_weather', arguments: '{"city":"Oslo"}' },
    { id: 'c3', name: 'get_time', arguments: '{}' },
  ],
};

test('a result with a call id gets the tool name of that call', () => {
  const out = linkToolResults([ask, calls, { role: 'tool', content: '4 °C', toolCallId: 'c2' }]);
  assert.deepEqual(out[2], { role: 'tool', content: '4 °C', toolCallId: 'c2', toolName: 'get_weather' });
});

test('results without ids (Ollama) answer the earliest open call of their tool, else the earliest open call', () => {
  const out = linkToolResults([
    ask,
    calls,
    { role: 'tool', content: '12:00', toolName: 'get_time' },
    { role: 'tool', content: '21 °C', toolName: 'get_weather' },
    { role: 'tool', content: '4 °C' },
  ]);
  assert.deepEqual(
    out.slice(2).map((m) => [m.toolCallId, m.toolName]),
    [
      ['c3', 'get_time'],
      ['c1', 'get_weather'],
      ['c2', 'get_weather'],
    ],
  );
});

test('a result for no open call is passed on as it came; a new assistant turn closes the previous calls', () => {
  const stray: ChatMessage = { role: 'tool', content: 'late', toolCallId: 'c9' };
  assert.deepEqual(linkToolResults([ask, calls, stray])[2], stray);
  const out = linkToolResults([
    ask,
    calls,
    { role: 'assistant', content: 'Let me check.' },
    { role: 'tool', content: 'x' },
  ]);
  assert.deepEqual(
    out[3],
    { role: 'tool', content: 'x' },
    'the calls of an earlier turn are not answered by a later result',
  );
  assert.notEqual(linkToolResults([ask, calls])[1], undefined);
});

test('tool defaults: parameters default to an empty object schema; choice auto and parallel calls only with tools', () => {
  assert.deepEqual(toolDef({ name: 'now', description: null }), {
    name: 'now',
    parameters: { type: 'object', properties: {} },
  });
  const a = toolDef({ name: 'a' });
  const b = toolDef({ name: 'b' });
  (a.parameters.properties as Record<string, unknown>).x = 1;
  assert.deepEqual(b.parameters, { type: 'object', properties: {} }, 'each tool gets its own default schema object');
  assert.deepEqual(toolFields([], 'required', false), {});
  assert.deepEqual(toolFields([b], undefined, null), { tools: [b], toolChoice: 'auto', parallelToolCalls: true });
});
