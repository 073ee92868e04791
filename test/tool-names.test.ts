/**
 * Tools at the edges of their format, through the real edge (workerd, sqld) and a real agent over the tunnel: tool
 * names outside OpenAI's rule `^[A-Za-z0-9_-]{1,64}$` are refused in every dialect with that dialect's error, and a
 * call the token limit cuts while the model writes it never leaks its raw `<tool_call>` markup into the answer (the
 * raw-text engine hands its text through the agent's real output parser, as both engines do).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import { Ollama } from 'ollama';
import OpenAI from 'openai';
import type { Agent } from '../node/agent.ts';
import { RAW_TEXT_MODEL, RawTextEngine } from './support/raw-text-engine.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';

const BAD_NAMES = ['\u0000', 'x\ny', '</tool_call>', 'get weather', 'a'.repeat(65), 'wetter-für-morgen'];
const RULE = '^[A-Za-z0-9_-]{1,64}$';
const PARAMETERS = { type: 'object', properties: { city: { type: 'string' } } };

describe('tool names and cut tool calls', () => {
  let edge: TestEdge;
  let agent: Agent;
  const engine = new RawTextEngine();

  before(async () => {
    edge = await startTestEdge();
    agent = await startTestAgent(edge, engine);
  });
  after(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  test('a tool name outside ^[A-Za-z0-9_-]{1,64}$ is a 400 naming the rule, in each dialect', async () => {
    const openai = edge.openai();
    const anthropic = new Anthropic({
      baseURL: edge.url.toString().replace(/\/$/, ''),
      apiKey: edge.apiKey,
      maxRetries: 0,
    });
    const ollama = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${edge.apiKey}` } });
    const user = [{ role: 'user' as const, content: 'weather?' }];
    for (const name of BAD_NAMES) {
      const label = JSON.stringify(name);
      const refusals = {
        chat: () =>
          openai.chat.completions.create({
            model: RAW_TEXT_MODEL,
            messages: user,
            tools: [{ type: 'function', function: { name, parameters: PARAMETERS } }],
          }),
        responses: () =>
          openai.responses.create({
            model: RAW_TEXT_MODEL,
            input: 'weather?',
            tools: [{ type: 'function', name, parameters: PARAMETERS, strict: false }],
          }),
        anthropic: () =>
          anthropic.messages.create({
            model: RAW_TEXT_MODEL,
            max_tokens: 20,
            messages: user,
            tools: [{ name, input_schema: { type: 'object', properties: {} } }],
          }),
        ollama: () =>
          ollama.chat({
            model: RAW_TEXT_MODEL,
            messages: user,
            tools: [
              { type: 'function', function: { name, description: '', parameters: { type: 'object', properties: {} } } },
            ],
          }),
      };
      for (const [dialect, call] of Object.entries(refusals)) {
        const err = await call().then(
          () => assert.fail(`${dialect} accepted tool name ${label}`),
          (e: unknown) => e,
        );
        if (dialect === 'ollama') {
          assert.equal((err as { status_code?: number }).status_code, 400, `${dialect} ${label}: ${String(err)}`);
          assert.ok(
            (err as Error).message.includes(RULE),
            `${dialect} ${label} names the rule: ${(err as Error).message}`,
          );
          continue;
        }
        const api = err as InstanceType<typeof OpenAI.APIError> | InstanceType<typeof Anthropic.APIError>;
        assert.equal(api.status, 400, `${dialect} ${label}: ${String(err)}`);
        assert.ok(
          api instanceof (dialect === 'anthropic' ? Anthropic.BadRequestError : OpenAI.BadRequestError),
          `${dialect}: the client's own 400 class`,
        );
        assert.ok(api.message.includes(RULE), `${dialect} ${label} names the rule: ${api.message}`);
        if (dialect === 'anthropic')
          assert.equal((api.error as { error?: { type?: string } }).error?.type, 'invalid_request_error');
        else assert.match(String((api as InstanceType<typeof OpenAI.APIError>).param), /tools\.0/);
      }
    }
    // The rule's own edge: 64 characters of every allowed kind pass.
    const ok = 'A-z_0-9'.padEnd(64, 'x');
    engine.text = 'fine';
    const served = await openai.chat.completions.create({
      model: RAW_TEXT_MODEL,
      messages: user,
      max_tokens: 5,
      tools: [{ type: 'function', function: { name: ok, parameters: PARAMETERS } }],
    });
    assert.equal(served.choices[0]!.message.content, 'fine');
  });

  test('a call cut by the token limit while written: finish_reason length, no markup in content (streamed and not)', async () => {
    const prose = 'Let me look that up.';
    // Three characters a token: 12 tokens end inside the call's name, before it is committed.
    engine.text = `${prose}\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>`;
    engine.charsPerToken = 3;
    const openai = edge.openai();
    const tools = [{ type: 'function' as const, function: { name: 'get_weather', parameters: PARAMETERS } }];
    const request = {
      model: RAW_TEXT_MODEL,
      messages: [{ role: 'user' as const, content: 'weather in Paris?' }],
      tools,
      max_tokens: 12,
      temperature: 0.5,
    };
    try {
      const whole = await openai.chat.completions.create(request);
      const choice = whole.choices[0]!;
      assert.equal(choice.finish_reason, 'length');
      assert.equal(
        choice.message.content?.trim(),
        prose,
        `no markup in content: ${JSON.stringify(choice.message.content)}`,
      );
      assert.equal(choice.message.tool_calls, undefined);

      let content = '';
      let finish: string | null = null;
      for await (const chunk of await openai.chat.completions.create({ ...request, stream: true, seed: 2 })) {
        content += chunk.choices[0]?.delta?.content ?? '';
        finish = chunk.choices[0]?.finish_reason ?? finish;
      }
      assert.equal(finish, 'length');
      assert.equal(content.trim(), prose, `no markup in streamed content: ${JSON.stringify(content)}`);

      // Cut at the marker itself (`<tool_c` held back as a possible marker).
      const atMarker = await openai.chat.completions.create({ ...request, max_tokens: 9, seed: 3 });
      assert.equal(atMarker.choices[0]!.finish_reason, 'length');
      assert.doesNotMatch(atMarker.choices[0]!.message.content ?? '', /<tool|<\/?tool_call|"name"/);

      // Without tools the same text is plain answer text, markup and all: only a call in the making is dropped.
      const plain = await openai.chat.completions.create({
        model: RAW_TEXT_MODEL,
        messages: request.messages,
        max_tokens: 12,
        temperature: 0.5,
      });
      assert.match(plain.choices[0]!.message.content ?? '', /<tool_call>/);
    } finally {
      engine.charsPerToken = 3;
    }
  });
});
