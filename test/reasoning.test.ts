/**
 * Reasoning end to end: a model that writes `<think>…</think>` before its answer, its raw text separated by the
 * agent's output parser (the raw-text engine hands its text through `planOutput` and `structured()`, as both real
 * engines do — test/support/raw-text-engine.ts), carried as typed parts through the real tunnel and edge, and read
 * by the official `openai` and `ollama` clients: `reasoning_content` and `message.thinking` apart from the answer,
 * streamed and not, with the reasoning tokens counted.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';
import type OpenAI from 'openai';
import type { Agent } from '../node/agent.ts';
import { RAW_TEXT_MODEL, RawTextEngine } from './support/raw-text-engine.ts';
import { startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';

const THOUGHT = 'The user greets me. A short, friendly answer — 短く. 🙂';
const ANSWER = 'Hello! How can I help?';
const RAW = `<think>\n${THOUGHT}\n</think>\n\n${ANSWER}`;

type WithReasoning = { reasoning_content?: string | null };

describe('reasoning through the edge', () => {
  let edge: TestEdge;
  let agent: Agent;
  let openai: OpenAI;
  let ollama: Ollama;
  const engine = new RawTextEngine();

  before(async () => {
    edge = await startTestEdge();
    agent = await startTestAgent(edge, engine);
    openai = edge.openai();
    ollama = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${edge.apiKey}` } });
    engine.text = RAW;
  });
  after(async () => {
    await agent?.stop();
    await edge?.stop();
  });

  test('OpenAI chat: reasoning_content apart from the content, streamed and not, reasoning tokens counted', async () => {
    const request = {
      model: RAW_TEXT_MODEL,
      messages: [{ role: 'user' as const, content: 'hi' }],
      max_tokens: 200,
      temperature: 0.5,
    };
    const whole = await openai.chat.completions.create(request);
    const message = whole.choices[0]!.message as (typeof whole.choices)[0]['message'] & WithReasoning;
    assert.equal(message.content, ANSWER);
    assert.equal(message.reasoning_content?.trim(), THOUGHT);
    assert.equal(whole.choices[0]!.finish_reason, 'stop');
    const reasoningTokens = whole.usage?.completion_tokens_details?.reasoning_tokens ?? 0;
    assert.ok(
      reasoningTokens > 0 && reasoningTokens < (whole.usage?.completion_tokens ?? 0),
      `reasoning ${reasoningTokens} of ${whole.usage?.completion_tokens} tokens`,
    );

    let content = '';
    let reasoning = '';
    let reasoningChunks = 0;
    let sawAnswerBeforeReasoningEnded = false;
    for await (const chunk of await openai.chat.completions.create({ ...request, stream: true })) {
      const delta = (chunk.choices[0]?.delta ?? {}) as { content?: string | null } & WithReasoning;
      if (delta.reasoning_content) {
        reasoningChunks++;
        reasoning += delta.reasoning_content;
        if (content) sawAnswerBeforeReasoningEnded = true;
      }
      content += delta.content ?? '';
    }
    assert.equal(content, ANSWER);
    assert.equal(reasoning.trim(), THOUGHT);
    assert.ok(reasoningChunks > 1, `the reasoning streamed in ${reasoningChunks} pieces`);
    assert.equal(sawAnswerBeforeReasoningEnded, false, 'no answer text arrives before the reasoning ends');
    console.log(
      `openai: ${reasoningChunks} reasoning deltas, ${reasoningTokens} reasoning tokens of ${whole.usage?.completion_tokens}`,
    );
  });

  test('Ollama chat with think: message.thinking apart from the content, streamed and not; think:false reaches the template', async () => {
    const request = {
      model: RAW_TEXT_MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      think: true,
      options: { num_predict: 200 },
    };
    const whole = await ollama.chat({ ...request, stream: false });
    assert.equal(whole.message.content, ANSWER);
    assert.equal(whole.message.thinking?.trim(), THOUGHT);
    assert.equal(whole.done_reason, 'stop');

    let content = '';
    let thinking = '';
    let parts = 0;
    for await (const part of await ollama.chat({ ...request, stream: true })) {
      parts++;
      thinking += part.message.thinking ?? '';
      content += part.message.content;
    }
    assert.equal(content, ANSWER);
    assert.equal(thinking.trim(), THOUGHT);
    assert.equal(
      engine.plans.at(-1)!.templateContext.enable_thinking,
      true,
      'think: true switches thinking on in the template',
    );

    // think: false switches thinking off through the template (Qwen3's enable_thinking): the answer comes alone.
    const off = await ollama.chat({ ...request, think: false, stream: false });
    assert.equal(engine.plans.at(-1)!.templateContext.enable_thinking, false);
    assert.equal(off.message.content, ANSWER);
    assert.ok(!off.message.thinking, 'no thinking when it is off');
    console.log(`ollama: ${parts} stream parts`);
  });

  test('a think block cut off by max_tokens is all reasoning, and the answer is empty', async () => {
    const r = await openai.chat.completions.create({
      model: RAW_TEXT_MODEL,
      messages: [{ role: 'user', content: 'hi' }],
      max_tokens: 5,
    });
    const message = r.choices[0]!.message as (typeof r.choices)[0]['message'] & WithReasoning;
    assert.equal(r.choices[0]!.finish_reason, 'length');
    assert.ok(!message.content, `no answer text: ${JSON.stringify(message.content)}`);
    assert.ok(
      THOUGHT.startsWith(message.reasoning_content!.trim().slice(0, 5)),
      JSON.stringify(message.reasoning_content),
    );
  });
});
