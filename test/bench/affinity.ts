/**
 * Conversation affinity (worker/tunnel/affinity.ts): the time to the first token of a conversation's second turn in
 * a pool of two agents, with the edge sending it to the agent that holds the first turn's KV cache, against the same
 * pool with affinity off (`NPU_RELAY_CONVERSATION_AFFINITY=off`). Each round opens two conversations at once, so
 * their first turns land on different agents (the picker spreads load); then each sends its second turn. Without
 * affinity both second turns go to the same idle agent, so one of them prefills its whole history again.
 *
 * Run: `node test/bench/affinity.ts [--rounds N]`; prints one Markdown row for docs/BENCHMARKS.md. Real stack: the
 * Worker in workerd, sqld, two agents with ONNX Runtime and the fixture model, the official openai client.
 */
import { parseArgs } from 'node:util';
import type OpenAI from 'openai';
import type { Agent } from '../../node/agent.ts';
import { CHAT_MODEL } from '../support/fixtures.ts';
import { createOrtEngine, startTestAgent, startTestEdge } from '../support/stack.ts';
import { summarize, type Summary } from './summary.ts';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '15' } } });
const ROUNDS = Number(values.rounds);

const WORDS =
  'the relay carries each message between two towns across a river, and every courier counts the bridges twice before dawn'.split(
    ' ',
  );

/** A first turn of about 1,000 tokens on the fixture's tokenizer, different for each conversation. */
function firstTurn(salt: string): string {
  const parts = [salt];
  for (let i = 0; parts.length < 1040 * 0.6; i++)
    parts.push(i % 7 === 0 ? `${salt}${i}` : WORDS[(i * 5) % WORDS.length]!);
  return parts.join(' ');
}

type Message = OpenAI.Chat.Completions.ChatCompletionMessageParam;

/** Streams a chat; the time to its first chunk with content, and the answer. */
async function turn(client: OpenAI, messages: Message[], maxTokens: number): Promise<{ ttftMs: number; text: string }> {
  const started = performance.now();
  let ttftMs = 0;
  let text = '';
  const stream = await client.chat.completions.create({
    model: CHAT_MODEL,
    messages,
    max_tokens: maxTokens,
    temperature: 0,
    stream: true,
  });
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta.content ?? '';
    if (delta && !ttftMs) ttftMs = performance.now() - started;
    text += delta;
  }
  return { ttftMs: ttftMs || performance.now() - started, text };
}

/** Second-turn TTFTs of `rounds` rounds of two concurrent conversations on a fresh two-agent pool. */
async function measure(affinity: boolean, rounds: number): Promise<number[]> {
  const edge = await startTestEdge(affinity ? {} : { NPU_RELAY_CONVERSATION_AFFINITY: 'off' });
  const agents: Agent[] = [];
  try {
    for (const id of ['bench-a', 'bench-b'])
      agents.push(await startTestAgent(edge, await createOrtEngine(), { agentId: id }));
    const client = edge.openai();
    // Both agents load the model before anything is timed.
    await Promise.all([0, 1].map((i) => turn(client, [{ role: 'user', content: `warm ${i}` }], 2)));
    const ttfts: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const conversations: Message[][] = [0, 1].map((c) => [
        { role: 'user', content: firstTurn(`${affinity ? 'on' : 'off'}${r}x${c}`) },
      ]);
      const firsts = await Promise.all(conversations.map((m) => turn(client, m, 8)));
      for (const [c, messages] of conversations.entries()) {
        messages.push({ role: 'assistant', content: firsts[c]!.text }, { role: 'user', content: 'and then?' });
        ttfts.push((await turn(client, messages, 1)).ttftMs);
      }
    }
    return ttfts;
  } finally {
    for (const a of agents) await a.stop();
    await edge.stop();
  }
}

// The mean as well: without affinity the sample is two populations (turns that stayed, turns that moved).
const fmt = (s: Summary) =>
  `median ${s.median.toFixed(1)} ms, mean ${s.mean.toFixed(1)} ms, p99 ${s.p99.toFixed(1)} ms`;
const withAffinity = summarize(await measure(true, ROUNDS));
const without = summarize(await measure(false, ROUNDS));
console.log(
  `| A1 | Conversation affinity: second-turn TTFT in a pool of two ONNX Runtime agents (${CHAT_MODEL}), ~1,000-token first turns, two conversations opened at once per round, ${ROUNDS} rounds, ${withAffinity.n} second turns each way | ${fmt(withAffinity)} | affinity off: ${fmt(without)} | mean ${((withAffinity.mean / without.mean) * 100).toFixed(1)} % of without | — (report) | info |`,
);
