/**
 * Ollama's client libraries for JavaScript applications, unchanged but for base URL and key, against the edge:
 * the AI SDK's `ollama-ai-provider-v2` (its completion model reads `/api/generate`'s `context` and throws without
 * it; its chat model streams `/api/chat`) and LangChain's `ChatOllama`.
 */
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { HumanMessage } from '@langchain/core/messages';
import { ChatOllama } from '@langchain/ollama';
import { generateText, streamText } from 'ai';
import { createOllama } from 'ollama-ai-provider-v2';
import { CHAT_MODEL } from './support/fixtures.ts';
import { relayStack } from './support/stack.ts';

describe('Ollama client libraries against the edge', () => {
  const stack = relayStack();
  let provider: ReturnType<typeof createOllama>;

  before(async () => {
    provider = createOllama({
      baseURL: new URL('/api', stack.edge.url).toString(),
      headers: { Authorization: `Bearer ${stack.edge.apiKey}` },
    });
  });

  test('AI SDK (ollama-ai-provider-v2): completion model', async () => {
    const result = await generateText({
      model: provider.completion(CHAT_MODEL),
      prompt: 'Why is the sky blue?',
      maxOutputTokens: 5,
      temperature: 0,
    });
    assert.equal(typeof result.text, 'string');
    assert.equal(result.usage.outputTokens, 5);
    assert.ok((result.usage.inputTokens ?? 0) > 0);
    // The provider validates /api/generate's body with `context` required: without it generateText throws.
    assert.ok(result.text.length > 0);
  });

  test('AI SDK (ollama-ai-provider-v2): chat model, whole and streamed', async () => {
    const whole = await generateText({
      model: provider.chat(CHAT_MODEL),
      prompt: 'hello',
      maxOutputTokens: 6,
      temperature: 0,
    });
    assert.equal(whole.usage.outputTokens, 6);
    const streamed = streamText({ model: provider(CHAT_MODEL), prompt: 'hello', maxOutputTokens: 6, temperature: 0 });
    let text = '';
    for await (const part of streamed.textStream) text += part;
    assert.equal(text, whole.text, 'the same greedy answer');
    assert.equal((await streamed.usage).outputTokens, 6);
    assert.equal(await streamed.finishReason, 'length');
  });

  test('LangChain ChatOllama: invoke and stream', async () => {
    const chat = new ChatOllama({
      model: CHAT_MODEL,
      baseUrl: stack.edge.url.origin,
      headers: { Authorization: `Bearer ${stack.edge.apiKey}` },
      temperature: 0,
      numPredict: 6,
    });
    const reply = await chat.invoke([new HumanMessage('hello')]);
    assert.equal(typeof reply.content, 'string');
    // The package's types lose usage_metadata's type on invoke's result.
    const usage = reply.usage_metadata as { input_tokens: number; output_tokens: number } | undefined;
    assert.equal(usage?.output_tokens, 6);
    assert.ok((usage?.input_tokens ?? 0) > 0);
    let streamed = '';
    for await (const chunk of await chat.stream([new HumanMessage('hello')])) streamed += String(chunk.content);
    assert.equal(streamed, reply.content);
  });
});
