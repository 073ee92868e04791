/**
 * Conversations stay with their cache (worker/tunnel/affinity.ts), on the real stack: the Worker in workerd, sqld,
 * two agents with ONNX Runtime, the official openai and ollama clients. Two conversations open at once, so their first
 * turns land on different agents; each next turn — a chat history sent again, a Responses `previous_response_id`, an
 * Ollama `context` — goes to the agent that served the first, and that agent takes the earlier turn's tokens from
 * its cache. (Without affinity both second turns go to the same idle agent, and one conversation loses its cache.)
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Ollama } from 'ollama';
import type { Agent } from '../node/agent.ts';
import { CHAT_MODEL } from './support/fixtures.ts';
import { PacedEngine, type PacedRun } from './support/paced-engine.ts';
import { createOrtEngine, startTestAgent, startTestEdge, type TestEdge } from './support/stack.ts';

const WORDS = 'a courier crosses the river at dawn and counts every bridge twice on the way back'.split(' ');

/** A first turn of about 600 tokens, starting with `salt` so each conversation's runs can be told apart. */
function firstTurn(salt: string): string {
  const parts = [salt];
  for (let i = 0; parts.length < 360; i++) parts.push(i % 7 === 0 ? `${salt}${i}` : WORDS[(i * 5) % WORDS.length]!);
  return parts.join(' ');
}

describe('conversation affinity in a pool of two agents', () => {
  let edge: TestEdge;
  const engines: PacedEngine[] = [];
  const agents: Agent[] = [];
  before(async () => {
    edge = await startTestEdge();
    for (const id of ['holder-a', 'holder-b']) {
      // Paced a little, so the two first turns are surely in flight together and the picker spreads them.
      const engine = new PacedEngine(await createOrtEngine(), 15);
      engines.push(engine);
      agents.push(await startTestAgent(edge, engine, { agentId: id }));
    }
  });
  after(async () => {
    for (const a of agents) await a.stop();
    await edge?.stop();
  });

  /** Which agent served each run of conversation `salt` (in order), with the run. */
  const runsOf = (salt: string): Array<{ agent: number; run: PacedRun }> =>
    engines
      .flatMap((e, agent) => e.runs.map((run) => ({ agent, run })))
      .filter(({ run }) => run.firstMessage.includes(salt))
      .sort((x, y) => (x.run.endedAt ?? 0) - (y.run.endedAt ?? 0));

  /** Both conversations' turns: the first ones on different agents, each next one on its first one's agent, cached. */
  function assertStayed(salts: string[]): void {
    const served = salts.map((s) => runsOf(s));
    for (const [i, runs] of served.entries()) assert.equal(runs.length, 2, `conversation ${salts[i]}: two turns ran`);
    assert.notEqual(served[0]![0]!.agent, served[1]![0]!.agent, 'the first turns ran on different agents');
    for (const [i, [first, second]] of served.entries()) {
      assert.equal(second!.agent, first!.agent, `conversation ${salts[i]}: the next turn ran where the first did`);
      const cached = second!.run.done?.usage.cachedPromptTokens ?? 0;
      assert.ok(cached > 300, `conversation ${salts[i]}: the next turn took the first from the cache (${cached})`);
    }
  }

  test('a chat history sent again goes to the agent that served its beginning', async () => {
    const client = edge.openai();
    const salts = ['chatx', 'chaty'];
    const firsts = await Promise.all(
      salts.map((s) =>
        client.chat.completions.create({
          model: CHAT_MODEL,
          messages: [{ role: 'user', content: firstTurn(s) }],
          max_tokens: 6,
          temperature: 0,
        }),
      ),
    );
    for (const [i, s] of salts.entries()) {
      await client.chat.completions.create({
        model: CHAT_MODEL,
        messages: [
          { role: 'user', content: firstTurn(s) },
          { role: 'assistant', content: firsts[i]!.choices[0]!.message.content ?? '' },
          { role: 'user', content: 'and then?' },
        ],
        max_tokens: 2,
        temperature: 0,
      });
    }
    assertStayed(salts);
  });

  test('a Responses request with previous_response_id goes to the agent that served the response', async () => {
    const client = edge.openai();
    const salts = ['respx', 'respy'];
    const firsts = await Promise.all(
      salts.map((s) =>
        client.responses.create({ model: CHAT_MODEL, input: firstTurn(s), max_output_tokens: 6, temperature: 0 }),
      ),
    );
    for (const first of firsts) {
      await client.responses.create({
        model: CHAT_MODEL,
        previous_response_id: first.id,
        input: 'and then?',
        max_output_tokens: 2,
        temperature: 0,
      });
    }
    assertStayed(salts);
  });

  test('an Ollama generate with context goes to the agent whose answer returned it', async () => {
    const ollama = new Ollama({ host: edge.url.origin, headers: { Authorization: `Bearer ${edge.apiKey}` } });
    const salts = ['ctxx', 'ctxy'];
    const firsts = await Promise.all(
      salts.map((s) =>
        ollama.generate({ model: CHAT_MODEL, prompt: firstTurn(s), options: { num_predict: 6, temperature: 0 } }),
      ),
    );
    for (const [i, s] of salts.entries()) {
      await ollama.generate({
        model: CHAT_MODEL,
        prompt: `and then, ${s}?`,
        context: firsts[i]!.context,
        options: { num_predict: 2, temperature: 0 },
      });
    }
    assertStayed(salts);
  });
});
