/**
 * Conversation affinity (worker/tunnel/affinity.ts): which agent served which conversation, and the margin by which
 * the holder of a conversation's cache may be busier than the least loaded agent and still get its next turn (the
 * picker, worker/tunnel/agent-picker.ts, applies it; test/conversation-affinity.test.ts runs it on the real stack).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ChatMessage, ChatTask, CompleteTask } from '../../shared/protocol/frames.ts';
import {
  AFFINITY_MARGIN_ROUNDS,
  AFFINITY_TTL_MS,
  ConversationAffinity,
  holderWithinMargin,
} from '../../worker/tunnel/affinity.ts';

const MODEL = 'm';
const sampling = { maxTokens: 8, temperature: 0.7, topP: 1, stop: [] };
const chat = (messages: ChatMessage[], extra: Partial<ChatTask> = {}): ChatTask => ({
  task: 'chat',
  model: MODEL,
  messages,
  sampling,
  ...extra,
});
const user = (content: string): ChatMessage => ({ role: 'user', content });
const assistant = (content: string): ChatMessage => ({ role: 'assistant', content });

describe('ConversationAffinity', () => {
  test('a history that continues a served one finds its agent; its turns and other conversations do not mix', () => {
    const affinity = new ConversationAffinity();
    const first = [{ role: 'system', content: 'be brief' } as ChatMessage, user('hello')];
    affinity.remember(chat(first), 'a', undefined, 0);
    affinity.remember(chat([user('other')]), 'b', undefined, 0);
    assert.equal(affinity.holder(chat([...first, assistant('hi'), user('more')]), 1), 'a');
    assert.equal(affinity.holder(chat([user('other'), assistant('x'), user('y')]), 1), 'b');
    // The same system prompt with another first message is another conversation.
    assert.equal(affinity.holder(chat([first[0]!, user('hello!'), assistant('hi'), user('more')]), 1), undefined);
    // Another model, other tools: another prompt, so another cache.
    assert.equal(affinity.holder(chat([...first, user('more')], { model: 'n' }), 1), undefined);
    const tools = [{ name: 'f', description: '', parameters: { type: 'object' } }];
    assert.equal(affinity.holder(chat([...first, user('more')], { tools } as Partial<ChatTask>), 1), undefined);
  });

  test('the longest served prefix wins, and a conversation is forgotten after the TTL', () => {
    const affinity = new ConversationAffinity();
    const t1 = [user('q1')];
    const t2 = [...t1, assistant('a1'), user('q2')];
    affinity.remember(chat(t1), 'a', undefined, 0);
    affinity.remember(chat(t2), 'b', undefined, 10);
    assert.equal(affinity.holder(chat([...t2, assistant('a2'), user('q3')]), 20), 'b');
    assert.equal(affinity.holder(chat([...t2, assistant('a2'), user('q3')]), 10 + AFFINITY_TTL_MS + 1), undefined);
  });

  test('an Ollama context finds the agent whose answer returned it', () => {
    const affinity = new ConversationAffinity();
    const task: CompleteTask = { task: 'complete', model: MODEL, prompt: 'hi', sampling, returnContext: true };
    affinity.remember(task, 'a', [1, 2, 3, 4], 0);
    assert.equal(affinity.holder({ ...task, prompt: 'next', context: [1, 2, 3, 4] }, 1), 'a');
    assert.equal(affinity.holder({ ...task, prompt: 'next', context: [1, 2, 3, 5] }, 1), undefined);
  });
});

describe('the margin', () => {
  test('the holder keeps a turn while it would wait at most the margin longer than on the least loaded agent', () => {
    assert.equal(holderWithinMargin(0, 0), true);
    assert.equal(holderWithinMargin(AFFINITY_MARGIN_ROUNDS, 0), true);
    assert.equal(holderWithinMargin(AFFINITY_MARGIN_ROUNDS + 0.5, 0), false);
    assert.equal(holderWithinMargin(3, 2), true);
  });

  test('with affinity off nothing is remembered', () => {
    const affinity = new ConversationAffinity(() => false);
    affinity.remember(chat([user('q')]), 'a', undefined, 0);
    assert.equal(affinity.holder(chat([user('q'), assistant('a'), user('q2')]), 1), undefined);
  });
});
