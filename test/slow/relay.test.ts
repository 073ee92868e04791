/**
 * Tokens reach the client as they are produced, not at the end: the gaps between chunks at the client follow the
 * engine's pace (150 ms a token) through the whole relay. A timing measurement, so it runs where files run one at a
 * time (test/relay.test.ts has the rest of the walking skeleton).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CHAT_MODEL } from '../support/fixtures.ts';
import { PacedEngine } from '../support/paced-engine.ts';
import { relayStack } from '../support/stack.ts';

const ask = (content: string) => [{ role: 'user' as const, content }];

describe('relay', () => {
  const stack = relayStack({ serve: (engine) => new PacedEngine(engine, 0) });

  test('tokens reach the client as they are produced, not at the end', async () => {
    stack.served.delayMs = 150;
    try {
      const started = stack.served.runs.length;
      const arrivals: number[] = [];
      const stream = await stack.edge.openai().chat.completions.create({
        model: CHAT_MODEL,
        messages: ask('pace me'),
        stream: true,
        temperature: 0,
        max_tokens: 8,
      });
      for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) arrivals.push(performance.now());
      const produced = stack.served.runs[started]!.produced;
      assert.equal(arrivals.length, produced.length, 'one client chunk per produced delta');
      const gaps = arrivals.slice(1).map((t, i) => t - arrivals[i]!);
      const producedSpread = produced.at(-1)! - produced[0]!;
      const arrivalSpread = arrivals.at(-1)! - arrivals[0]!;
      console.log(
        `arrival gaps (ms): ${gaps.map((g) => g.toFixed(0)).join(', ')}; spread produced ${producedSpread.toFixed(0)} ms, arrived ${arrivalSpread.toFixed(0)} ms`,
      );
      for (const g of gaps)
        assert.ok(g >= 75, `chunks arrive spread out (gap ${g.toFixed(0)} ms, tokens 150 ms apart)`);
      assert.ok(
        Math.abs(arrivalSpread - producedSpread) < 0.25 * producedSpread,
        'arrival spread matches production spread',
      );
      // Each chunk arrives soon after it was produced: the lag does not grow over the stream.
      const lags = arrivals.map((t, i) => t - produced[i]!);
      assert.ok(
        Math.max(...lags) - Math.min(...lags) < 100,
        `lag stays flat (lags ${lags.map((l) => l.toFixed(0)).join(', ')} ms)`,
      );
    } finally {
      stack.served.delayMs = 0;
    }
  });
});
