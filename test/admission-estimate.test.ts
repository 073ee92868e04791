/**
 * What admission reserves against a key's budget and tokens per minute, on the real stack (workerd, sqld, the agent
 * with ONNX Runtime on the fixture model): everything the model reads — tools, tool calls and results in history,
 * the stored conversation of `previous_response_id`, the template's own tokens — so the edge's estimate is never
 * below the prompt tokens the agent counts, in any dialect, and keys with small budgets cannot get around them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { createClient } from '@libsql/client';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import type { Agent } from '../node/agent.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { SCRIPTED_MODEL, ScriptedEngine } from './support/scripted-engine.ts';
import { relayStack, startTestAgent } from './support/stack.ts';
import { waitFor } from './support/wait-for.ts';

/** Ten tools of the size real agents declare. */
const TOOLS = Array.from({ length: 10 }, (_, i) => ({
  name: `tool_${i}_lookup`,
  description: `Looks up record kind ${i} in the inventory and returns its fields as JSON.`,
  parameters: {
    type: 'object',
    properties: {
      id: { type: 'string', description: 'The record id' },
      fields: { type: 'array', items: { type: 'string' } },
    },
    required: ['id'],
  },
}));
const openaiTools = TOOLS.map((t) => ({ type: 'function' as const, function: t }));

/** The tokens the edge said it needs for the prompt, from the refusal of a key with a 1-token budget. */
function estimateOf(message: string): number {
  const m = /needs about (\d+) tokens for its prompt/.exec(message);
  assert.ok(m, `the refusal names the estimate: ${message}`);
  return Number(m[1]);
}

describe('admission counts everything the model reads', () => {
  let scriptedAgent: Agent;
  /** Stands in for a model whose template adds a long built-in system prompt: the agent counts 700 tokens for "hi". */
  const longTemplate = new ScriptedEngine(() => ({
    deltas: [{ text: 'ok', tokens: 1 }],
    finishReason: 'stop',
    promptTokens: 700,
  }));
  let rich: string;
  let probe: string;
  const tenant = 'estimate-tenant';

  // Registered before the stack's own hooks (they run in that order), so this agent stops while its edge still runs.
  after(async () => {
    await scriptedAgent?.stop();
  });
  const stack = relayStack();
  before(async () => {
    scriptedAgent = await startTestAgent(stack.edge, longTemplate, { agentId: 'long-template' });
    rich = (await stack.edge.createKey({ name: 'rich', tenant })).key;
    // A 1-token budget admits nothing, and its refusal says what the request would have needed.
    probe = (await stack.edge.createKey({ name: 'probe', tenant, budget: 1 })).key;
  });

  test("the edge's estimate is never below the agent's prompt count: every dialect, with tools, tool history and stored history", async () => {
    const client = (apiKey: string) => stack.edge.openai({ apiKey });
    const anthropic = (apiKey: string) =>
      new Anthropic({ baseURL: stack.edge.url.toString().replace(/\/$/, ''), apiKey, maxRetries: 0 });
    const ollama = (apiKey: string) =>
      new Ollama({ host: stack.edge.url.origin, headers: { Authorization: `Bearer ${apiKey}` } });
    const stored = await client(rich).responses.create({
      model: CHAT_MODEL,
      input: 'Remember the parts list: gear, axle, spring, bolt. '.repeat(8),
      max_output_tokens: 8,
      temperature: 0.7,
    });
    const toolHistory = [
      { role: 'user' as const, content: 'Find record 7.' },
      {
        role: 'assistant' as const,
        content: '',
        tool_calls: [
          {
            id: 'call_1',
            type: 'function' as const,
            function: { name: 'tool_7_lookup', arguments: '{"id":"7","fields":["name","size"]}' },
          },
        ],
      },
      { role: 'tool' as const, tool_call_id: 'call_1', content: '{"name":"gear","size":"large"}' },
    ];
    const cases: Array<[string, (key: string) => Promise<number | undefined>]> = [
      [
        'chat "hi"',
        async (k) =>
          (
            await client(k).chat.completions.create({
              model: CHAT_MODEL,
              messages: [{ role: 'user', content: 'hi' }],
              max_tokens: 1,
              temperature: 0.7,
            })
          ).usage?.prompt_tokens,
      ],
      // Two tools keep the estimate below the model's context (2048), which caps it: this one is compared uncapped.
      [
        'chat "hi" + 2 tools',
        async (k) =>
          (
            await client(k).chat.completions.create({
              model: CHAT_MODEL,
              messages: [{ role: 'user', content: 'hi' }],
              tools: openaiTools.slice(0, 2),
              max_tokens: 1,
              temperature: 0.7,
            })
          ).usage?.prompt_tokens,
      ],
      [
        'chat tool calls and results + 2 tools',
        async (k) =>
          (
            await client(k).chat.completions.create({
              model: CHAT_MODEL,
              messages: toolHistory,
              tools: openaiTools.slice(6, 8),
              max_tokens: 1,
              temperature: 0.7,
            })
          ).usage?.prompt_tokens,
      ],
      [
        'chat "hi" + 10 tools',
        async (k) =>
          (
            await client(k).chat.completions.create({
              model: CHAT_MODEL,
              messages: [{ role: 'user', content: 'hi' }],
              tools: openaiTools,
              max_tokens: 1,
              temperature: 0.7,
            })
          ).usage?.prompt_tokens,
      ],
      [
        'chat tool calls and results + 10 tools',
        async (k) =>
          (
            await client(k).chat.completions.create({
              model: CHAT_MODEL,
              messages: toolHistory,
              tools: openaiTools,
              max_tokens: 1,
              temperature: 0.7,
            })
          ).usage?.prompt_tokens,
      ],
      [
        'responses + instructions + 10 tools',
        async (k) =>
          (
            await client(k).responses.create({
              model: CHAT_MODEL,
              instructions: 'Be brief.',
              input: 'hi',
              tools: TOOLS.map((t) => ({ type: 'function' as const, ...t, strict: false })),
              max_output_tokens: 16,
              temperature: 0.7,
              store: false,
            })
          ).usage?.input_tokens,
      ],
      [
        'responses continuing a stored response',
        async (k) =>
          (
            await client(k).responses.create({
              model: CHAT_MODEL,
              previous_response_id: stored.id,
              input: 'and?',
              max_output_tokens: 16,
              temperature: 0.7,
              store: false,
            })
          ).usage?.input_tokens,
      ],
      [
        'anthropic system + 10 tools',
        async (k) =>
          (
            await anthropic(k).messages.create({
              model: CHAT_MODEL,
              system: 'Be brief.',
              max_tokens: 1,
              messages: [{ role: 'user', content: 'hi' }],
              tools: TOOLS.map((t) => ({
                name: t.name,
                description: t.description,
                input_schema: t.parameters as Anthropic.Tool.InputSchema,
              })),
            })
          ).usage.input_tokens,
      ],
      [
        'ollama chat + 10 tools',
        async (k) =>
          (
            await ollama(k).chat({
              model: CHAT_MODEL,
              messages: [{ role: 'user', content: 'hi' }],
              tools: openaiTools,
              options: { num_predict: 1, temperature: 0.7 },
            })
          ).prompt_eval_count,
      ],
    ];
    const lines: string[] = [];
    for (const [name, run] of cases) {
      const actual = await run(rich);
      assert.ok(actual && actual > 0, `${name}: the agent counted the prompt`);
      const refused = await run(probe).then(
        () => assert.fail(`${name}: a 1-token budget admitted it`),
        (e: unknown) => e as Error & { status?: number; status_code?: number },
      );
      assert.equal(refused.status ?? refused.status_code, 429, `${name}: ${refused.message}`);
      const estimate = estimateOf(refused.message);
      lines.push(`${name}: agent ${actual}, edge ${estimate} (×${(estimate / actual).toFixed(2)})`);
      assert.ok(estimate >= actual, `${name}: the edge's estimate ${estimate} is below the agent's count ${actual}`);
      if (name.includes('2 tools')) assert.ok(estimate < 2048, `${name}: compared below the context cap (${estimate})`);
    }
    console.log(lines.join('\n'));
  });

  test('a 50-token budget sending "hi" with 10 tools is refused (429)', async () => {
    const { key } = await stack.edge.createKey({ name: 'fifty', tenant, budget: 50 });
    const err = await stack.edge
      .openai({ apiKey: key })
      .chat.completions.create({
        model: CHAT_MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        tools: openaiTools,
        max_tokens: 16,
      })
      .then(
        () => assert.fail('served'),
        (e: unknown) => e,
      );
    assert.ok(err instanceof OpenAI.RateLimitError, String(err));
    assert.equal((err.error as { code?: string }).code, 'insufficient_quota');
    console.log(`budget 50 + 10 tools: ${err.status} ${err.message}`);
  });

  test('a 200-token budget / 300 tpm key continuing a long stored response, 8 in parallel: served tokens stay within the budget', async () => {
    const long = await stack.edge.openai({ apiKey: rich }).responses.create({
      model: CHAT_MODEL,
      input: 'Inventory note: the gear sits left of the axle; the spring sits under the bolt. '.repeat(49),
      max_output_tokens: 16,
      temperature: 0.7,
    });
    const storedTokens = (long.usage?.input_tokens ?? 0) + (long.usage?.output_tokens ?? 0);
    assert.ok(storedTokens > 1000, `a long stored conversation (${storedTokens} tokens)`);
    const { id, key } = await stack.edge.createKey({ name: 'small', tenant, budget: 200, tpm: 300 });
    const client = stack.edge.openai({ apiKey: key });
    const maxOutput = 32;
    const outcomes = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) =>
        client.responses.create({
          model: CHAT_MODEL,
          previous_response_id: long.id,
          input: `go on ${i}`,
          max_output_tokens: maxOutput,
          temperature: 0.7,
        }),
      ),
    );
    const db = createClient({ url: stack.edge.sqld.url });
    try {
      const rows = await waitFor('8 usage rows of the small key', async () => {
        const r = (
          await db.execute({
            sql: 'select status, prompt_tokens, completion_tokens from usage where key_id = ?',
            args: [id],
          })
        ).rows;
        return r.length >= 8 ? r : undefined;
      });
      const served = rows.reduce((n, r) => n + Number(r.prompt_tokens) + Number(r.completion_tokens), 0);
      const statuses = outcomes.map((o) =>
        o.status === 'fulfilled' ? 200 : ((o.reason as { status?: number }).status ?? 0),
      );
      // One request's worst case: the stored conversation, its new input and its completion.
      const worstCase = storedTokens + 16 + maxOutput;
      console.log(
        `8 parallel on a ${storedTokens}-token stored response: statuses ${statuses.join(',')}; ${served} tokens served for a 200-token budget (bound ${200 + worstCase})`,
      );
      assert.ok(served <= 200, `${served} tokens served for a 200-token budget`);
      assert.ok(
        statuses.every((s) => s === 429),
        'none fits: the stored history alone is longer than the budget',
      );
    } finally {
      db.close();
    }
  });

  test("a template that adds more than the byte bound sees: the agent's count raises the model's allowance for later requests", async () => {
    const ask = (apiKey: string) =>
      stack.edge.openai({ apiKey }).chat.completions.create({
        model: SCRIPTED_MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 1,
        temperature: 0.7,
      });
    const estimate = async () =>
      estimateOf(
        (
          (await ask(probe).then(
            () => assert.fail('admitted'),
            (e: unknown) => e,
          )) as Error
        ).message,
      );
    const before = await estimate();
    const counted = (await ask(rich)).usage?.prompt_tokens;
    assert.equal(counted, 700);
    const after = await estimate();
    console.log(`long built-in template: edge ${before} before the agent's count of ${counted}, ${after} after`);
    assert.ok(before < 700, 'the byte bound alone cannot see the template');
    assert.ok(after >= 700, `the next estimate (${after}) covers what the agent counted`);
  });
});
